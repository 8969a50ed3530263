"""``dyncreds``: the control client, plus ``agent``, ``check``, ``role`` and ``demo``.

Talks to the agent with plain blocking sockets (no trio needed). Exit codes:
0 success, 1 the agent answered with an error, 2 usage or configuration error,
3 the agent is not running (the message says how to start it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dyncreds import __version__, config, paths
from dyncreds.config import format_duration
from dyncreds.protocol import parse_rfc3339

EXIT_OK, EXIT_AGENT_ERROR, EXIT_USAGE, EXIT_NOT_RUNNING = 0, 1, 2, 3
START_HINT = "start it with `systemctl --user start dyncreds-agent.socket` or `dyncreds agent`"


class CliError(Exception):
    def __init__(self, message: str, status: int = EXIT_AGENT_ERROR):
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------- client


class Client:
    def __init__(self, path: Path, timeout: float = 120.0):
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._sock is not None:
            self._sock.close()

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(str(self.path))
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                raise CliError(
                    f"the dyncreds agent is not running (no socket at {self.path}); {START_HINT}",
                    EXIT_NOT_RUNNING,
                ) from None
            except OSError as exc:
                sock.close()
                raise CliError(
                    f"cannot connect to {self.path}: {exc.strerror or exc}", EXIT_NOT_RUNNING
                ) from None
            self._sock = sock
        return self._sock

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        sock = self._connect()
        try:
            sock.sendall(json.dumps({"op": op, **fields}).encode() + b"\n")
            while b"\n" not in self._buffer:
                chunk = sock.recv(65536)
                if not chunk:
                    raise CliError("the agent closed the connection without answering")
                self._buffer += chunk
        except TimeoutError:
            raise CliError(f"the agent did not answer within {self.timeout:g}s") from None
        except OSError as exc:
            raise CliError(f"talking to the agent failed: {exc.strerror or exc}") from None
        line, _, self._buffer = self._buffer.partition(b"\n")
        response: dict[str, Any] = json.loads(line)
        if not response.get("ok", "Version" in response):
            error = response.get("error") or {}
            raise CliError(f"{error.get('message', 'error')} ({error.get('code', '?')})")
        return response


# --------------------------------------------------------------------------- output


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))


def _ago(now: float, stamp: str | None) -> str:
    if not stamp:
        return "-"
    return format_duration(now - parse_rfc3339(stamp)) + " ago"


def _left(now: float, stamp: str | None) -> str:
    if not stamp:
        return "-"
    seconds = parse_rfc3339(stamp) - now
    return format_duration(seconds) if seconds > 0 else "expired"


def render_status(status: dict[str, Any], now: float | None = None, color: bool = False) -> str:
    now = time.time() if now is None else now
    agent, root = status["agent"], status["root"]
    bold = (lambda s: f"\033[1m{s}\033[0m") if color else (lambda s: s)
    red = (lambda s: f"\033[31m{s}\033[0m") if color else (lambda s: s)
    lines = [
        f"{bold('dyncreds')} {agent['version']}  agent {agent['id']}  pid {agent['pid']}  "
        f"up {format_duration(agent['uptime'])}",
        f"root: {root['arn'] or red('unknown: ' + str(root['error']))}  ({root['source']}, "
        f"{root['region']})",
    ]
    if agent.get("reload_error"):
        lines.append(red(f"last reload rejected: {agent['reload_error']}"))
    lines.append("")
    headers = ["ROLE", "TYPE", "STATE", "LEASE", "KEY", "AGE", "LEFT", "NEXT"]
    rows = []
    for role in status["roles"]:
        rows.append(
            [
                role["name"],
                role["type"],
                role["state"],
                role["lease_id"] or "-",
                role["access_key_id"] or "-",
                _ago(now, role["issued_at"]).replace(" ago", ""),
                _left(now, role["expires_at"]),
                role["next_action"],
            ]
        )
    if rows:
        widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows, strict=False)]
        lines.append("  ".join(bold(h.ljust(w)) for h, w in zip(headers, widths, strict=True)))
        for row in rows:
            lines.append("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)))
    else:
        lines.append("no roles configured (add one with `dyncreds role create`)")
    for role in status["roles"]:
        if role["last_error"]:
            lines.append(red(f"  {role['name']}: last error: {role['last_error']}"))
    if status.get("retiring"):
        lines.append("")
        lines.append(bold("retiring leases (revoked at their announced expiry):"))
        for item in status["retiring"]:
            flag = red(" IRREVOCABLE") if item["irrevocable"] else ""
            error = f"  last error: {item['last_error']}" if item["last_error"] else ""
            lines.append(
                f"  {item['lease_id']}  {item['user_name']}  revoke in "
                f"{_left(now, item['revoke_at'])}{flag}{error}"
            )
    counters = status.get("counters") or {}
    if counters:
        lines.append("")
        lines.append("counters: " + "  ".join(f"{k}={v}" for k, v in sorted(counters.items())))
    return "\n".join(lines)


def format_credentials(body: dict[str, Any], fmt: str, region: str | None, profile: str) -> str:
    creds = body["credentials"]
    if fmt == "json":
        return json.dumps({"credentials": creds, "lease": body["lease"]}, indent=2)
    if fmt == "credential-process":
        return json.dumps(creds)
    pairs = [
        ("AWS_ACCESS_KEY_ID", creds["AccessKeyId"]),
        ("AWS_SECRET_ACCESS_KEY", creds["SecretAccessKey"]),
    ]
    if creds.get("SessionToken"):
        pairs.append(("AWS_SESSION_TOKEN", creds["SessionToken"]))
    pairs.append(("AWS_CREDENTIAL_EXPIRATION", creds["Expiration"]))
    if fmt == "env":
        if region:
            pairs += [("AWS_REGION", region), ("AWS_DEFAULT_REGION", region)]
        return "\n".join(f"export {k}={_shell_quote(v)}" for k, v in pairs)
    # ini: a ~/.aws/credentials section
    keys = {
        "AWS_ACCESS_KEY_ID": "aws_access_key_id",
        "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
        "AWS_SESSION_TOKEN": "aws_session_token",
    }
    lines = [f"[{profile}]"] + [f"{keys[k]} = {v}" for k, v in pairs if k in keys]
    lines.append(f"# expires {creds['Expiration']}")
    if region:
        lines.append(f"region = {region}")
    return "\n".join(lines)


def _shell_quote(value: str) -> str:
    import shlex

    return shlex.quote(value)


def shim_path() -> str:
    """The absolute path of dyncreds-shim beside this interpreter (or on PATH)."""
    beside = Path(sys.executable).parent / "dyncreds-shim"
    if beside.exists():
        return str(beside)
    found = shutil.which("dyncreds-shim")
    return str(Path(found).absolute()) if found else str(beside)


def aws_config_sections(roles: Sequence[tuple[str, str | None]], default_region: str) -> str:
    shim = shim_path()
    sections = []
    for name, region in roles:
        sections.append(
            f"[profile {name}]\ncredential_process = {shim} {name}\n"
            f"region = {region or default_region}\n"
        )
    return "\n".join(sections)


# --------------------------------------------------------------------------- commands


def _paths(args: argparse.Namespace) -> paths.Paths:
    return paths.resolve(args.config_dir, args.state_dir, args.socket)


def _load(args: argparse.Namespace) -> config.Config:
    try:
        return config.load(_paths(args).config_dir)
    except config.ConfigError as exc:
        raise CliError("\n".join(str(p) for p in exc.problems), EXIT_USAGE) from None


def cmd_agent(args: argparse.Namespace) -> int:
    from dyncreds import daemon

    return daemon.run(_paths(args), log_format=args.log_format, log_level=args.log_level)


def cmd_status(args: argparse.Namespace) -> int:
    with Client(_paths(args).socket) as client:
        if args.watch and not args.json:
            try:
                while True:
                    status = client.request("status")
                    sys.stdout.write("\033[H\033[2J" + render_status(status, color=True) + "\n")
                    sys.stdout.flush()
                    time.sleep(args.interval)
            except KeyboardInterrupt:
                return EXIT_OK
        status = client.request("status")
        status.pop("ok", None)
        if args.json:
            _print_json(status)
        else:
            print(render_status(status, color=sys.stdout.isatty()))
    return EXIT_OK


def cmd_roles(args: argparse.Namespace) -> int:
    with Client(_paths(args).socket) as client:
        roles = client.request("roles")["roles"]
    if args.json:
        _print_json(roles)
    else:
        for role in roles:
            print(f"{role['name']:24} {role['type']:17} ttl={format_duration(role['ttl'])}")
    return EXIT_OK


def cmd_creds(args: argparse.Namespace) -> int:
    p = _paths(args)
    with Client(p.socket) as client:
        body = client.request("credentials", role=args.role)
    fmt = "json" if args.json else args.format
    print(format_credentials(body, fmt, _role_region(args), args.role))
    return EXIT_OK


def _role_region(args: argparse.Namespace) -> str | None:
    try:
        cfg = config.load(_paths(args).config_dir)
    except config.ConfigError:
        return None
    role = cfg.roles.get(args.role)
    return (role.region if role else None) or cfg.main.root.region


def cmd_exec(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise CliError("usage: dyncreds exec ROLE -- CMD [ARG...]", EXIT_USAGE)
    with Client(_paths(args).socket) as client:
        creds = client.request("credentials", role=args.role)["credentials"]
    env = dict(os.environ)
    for key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        env.pop(key, None)
    env["AWS_ACCESS_KEY_ID"] = creds["AccessKeyId"]
    env["AWS_SECRET_ACCESS_KEY"] = creds["SecretAccessKey"]
    if creds.get("SessionToken"):
        env["AWS_SESSION_TOKEN"] = creds["SessionToken"]
    env["AWS_CREDENTIAL_EXPIRATION"] = creds["Expiration"]
    region = _role_region(args)
    if region:
        env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = region
    env["DYNCREDS_ROLE"] = args.role
    try:
        os.execvpe(command[0], command, env)
    except FileNotFoundError:
        raise CliError(f"command not found: {command[0]}", 127) from None
    except PermissionError:
        raise CliError(f"cannot execute {command[0]}: permission denied", 126) from None


def cmd_revoke(args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {"force": args.force} if args.force else {}
    if args.all:
        fields["all"] = True
    elif args.role:
        fields["role"] = args.role
    elif args.lease_id:
        fields["lease_id"] = args.lease_id
    else:
        raise CliError("usage: dyncreds revoke LEASE_ID | --role ROLE | --all", EXIT_USAGE)
    with Client(_paths(args).socket) as client:
        revoked = client.request("revoke", **fields)["revoked"]
    if args.json:
        _print_json({"revoked": revoked})
    elif revoked:
        print("\n".join(f"revoked {lease}" for lease in revoked))
    else:
        print("nothing to revoke")
    return EXIT_OK


def cmd_renew(args: argparse.Namespace) -> int:
    with Client(_paths(args).socket) as client:
        lease = client.request("renew", role=args.role)["lease"]
    if args.json:
        _print_json(lease)
    else:
        print(f"{lease['id']} expires {lease['expires_at']}")
    return EXIT_OK


def cmd_rotate_root(args: argparse.Namespace) -> int:
    with Client(_paths(args).socket) as client:
        key = client.request("rotate_root")["access_key_id"]
    if args.json:
        _print_json({"access_key_id": key})
    else:
        print(f"root rotated; new access key {key}")
    return EXIT_OK


def cmd_reload(args: argparse.Namespace) -> int:
    with Client(_paths(args).socket) as client:
        roles = client.request("reload")["roles"]
    if args.json:
        _print_json({"roles": roles})
    else:
        print(f"reloaded; {len(roles)} roles: {', '.join(roles) or '-'}")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    p = _paths(args)
    try:
        cfg = config.load(p.config_dir)
    except config.ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        if args.json:
            _print_json({"ok": False, "problems": [str(x) for x in exc.problems]})
        return EXIT_USAGE
    root_problems: list[str] = []
    creds_file = cfg.credentials_file()
    if creds_file is not None:
        from dyncreds.aws.session import read_credentials_file
        from dyncreds.protocol import DyncredsError

        try:
            read_credentials_file(creds_file)
        except DyncredsError as exc:
            root_problems.append(exc.message)
    if root_problems:
        for message in root_problems:
            print(message, file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        _print_json({"ok": True, "roles": sorted(cfg.roles)})
    else:
        print(
            f"{p.config_dir}: ok, {len(cfg.roles)} roles"
            + (f" ({', '.join(sorted(cfg.roles))})" if cfg.roles else "")
        )
    return EXIT_OK


def cmd_aws_config(args: argparse.Namespace) -> int:
    cfg = _load(args)
    wanted = []
    for name in args.roles or sorted(cfg.roles):
        role = cfg.roles.get(name)
        if role is None:
            raise CliError(
                f"unknown role {name!r} (known: {', '.join(sorted(cfg.roles))})", EXIT_USAGE
            )
        wanted.append((name, role.region))
    print(aws_config_sections(wanted, cfg.main.root.region), end="")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from dyncreds import demo

    return demo.main(keep=args.keep)


def cmd_version(args: argparse.Namespace) -> int:
    print(f"dyncreds {__version__}")
    return EXIT_OK


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    # Global flags may stand before or after the command. SUPPRESS keeps a
    # subcommand's parser from resetting a flag given before it; main() fills in
    # the defaults afterwards.
    common = argparse.ArgumentParser(add_help=False)
    hide = argparse.SUPPRESS
    common.add_argument(
        "--config-dir", default=hide, help="configuration directory (DYNCREDS_CONFIG_DIR)"
    )
    common.add_argument("--state-dir", default=hide, help="state directory (DYNCREDS_STATE_DIR)")
    common.add_argument("--socket", default=hide, help="agent socket path (DYNCREDS_SOCKET)")
    common.add_argument("--json", action="store_true", default=hide, help="machine-readable output")

    parser = argparse.ArgumentParser(
        prog="dyncreds",
        parents=[common],
        description="Short-lived AWS credentials for the programs on this machine.",
    )
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
    sub.required = True

    def add(name: str, fn: Any, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(fn=fn)
        return p

    p = add("agent", cmd_agent, "run the agent in the foreground (systemd runs it this way)")
    p.add_argument("--log-format", choices=["text", "json"])
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p = add("status", cmd_status, "agent identity, root identity, each role's lease")
    p.add_argument("--watch", action="store_true", help="refresh in place")
    p.add_argument("--interval", type=float, default=2.0)
    add("roles", cmd_roles, "configured roles and their types")
    p = add("creds", cmd_creds, "print credentials of the role's current lease ('Generate')")
    p.add_argument("role")
    p.add_argument("--format", choices=["json", "env", "ini", "credential-process"], default="json")
    p = add("exec", cmd_exec, "run a command with the role's credentials in its environment")
    p.add_argument("role")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p = add("revoke", cmd_revoke, "revoke a lease, a role's leases, or all leases now")
    p.add_argument("lease_id", nargs="?")
    p.add_argument("--role")
    p.add_argument("--all", action="store_true")
    p.add_argument(
        "--force",
        action="store_true",
        help="forget leases that cannot be revoked in AWS (they stay in AWS)",
    )
    p = add("renew", cmd_renew, "replace the role's lease now")
    p.add_argument("role")
    add("rotate-root", cmd_rotate_root, "rotate the agent's own static access key")
    add("reload", cmd_reload, "re-read configuration (same as SIGHUP)")
    add("check", cmd_check, "validate configuration offline")
    p = add("aws-config", cmd_aws_config, "print ~/.aws/config profiles that use the shim")
    p.add_argument("roles", nargs="*")
    from dyncreds import manage

    manage.add_commands(sub, common)
    p = add("demo", cmd_demo, "the whole flow, offline, on an embedded AWS stand-in")
    p.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    add("version", cmd_version, "print the version")
    return parser


GLOBAL_DEFAULTS: dict[str, Any] = {
    "config_dir": None,
    "state_dir": None,
    "socket": None,
    "json": False,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # `exec ROLE -- CMD`: argparse must not read CMD's own flags.
    if "exec" in argv and "--" in argv:
        split = argv.index("--")
        args = parser.parse_args(argv[:split])
        args.command = argv[split + 1 :]
    else:
        args = parser.parse_args(argv)
    for flag, default in GLOBAL_DEFAULTS.items():
        if not hasattr(args, flag):
            setattr(args, flag, default)
    try:
        status: int = args.fn(args)
        return status
    except CliError as exc:
        print(f"dyncreds: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
