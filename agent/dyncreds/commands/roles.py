"""Configuration commands: check, aws-config, reload, and the seed's
``role create|edit|list|show|delete``.

Every role file is validated with the agent's own loader before it is written
(roleconfig.py), so these commands never leave a configuration the agent would
refuse; their flags come from the role file's schema (roleflags.py). After a
change, a running agent is asked to reload.
"""

from __future__ import annotations

import argparse
import os
import sys

from dyncreds.client import EXIT_NOT_RUNNING, EXIT_OK, EXIT_USAGE, Client, CliError
from dyncreds.commands.common import Commands, built, get_paths, load, print_json
from dyncreds.commands.completion import offer_files, offer_roles

TYPE_CHECKING = False  # `typing` stays unimported at run time (see commands/common.py)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path
    from typing import Any

    from dyncreds import config, paths


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def reload_agent(p: paths.Paths) -> str:
    """Ask a running agent to reload - if it is the agent of this configuration -
    and say what happened, in words."""
    from pathlib import Path  # (pathlib: a tenth of the CLI's start-up; only when needed)

    try:
        with Client(p.socket, timeout=30) as client:
            theirs = client.request("status")["agent"].get("config_dir")
            if theirs and Path(theirs) != p.config_dir:
                return (
                    f"the agent on {p.socket} reads {theirs}, not {p.config_dir}; "
                    "it was not reloaded"
                )
            roles = client.request("reload")["roles"]
        return f"agent reloaded ({plural(len(roles), 'role')})"
    except CliError as exc:
        if exc.status == EXIT_NOT_RUNNING:
            return "agent not running; it will read the change when it starts"
        return f"agent did not reload: {exc}"


def cmd_reload(args: argparse.Namespace) -> int:
    with Client(get_paths(args).socket) as client:
        roles = client.request("reload")["roles"]
    if args.json:
        print_json({"roles": roles})
    else:
        print(f"reloaded; {plural(len(roles), 'role')}: {', '.join(roles) or '-'}")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from dyncreds import config
    from dyncreds.aws.rootkeys import read_credentials_file
    from dyncreds.commands import imds
    from dyncreds.protocol import DyncredsError
    from dyncreds.views import root_source, root_warning

    p = get_paths(args)
    problems: list[str] = []
    roles: list[str] = []
    try:
        cfg = config.load(p.config_dir)
    except config.ConfigError as exc:
        problems = [str(x) for x in exc.problems]
    else:
        roles = sorted(cfg.roles)
        creds_file = cfg.credentials_file()
        if creds_file is not None:
            try:
                read_credentials_file(creds_file)
            except DyncredsError as exc:
                problems.append(exc.message)
    if args.json:
        print_json({"ok": not problems, "problems": problems, "roles": roles})
    elif problems:
        print("\n".join(problems), file=sys.stderr)
    else:
        listed = f" ({', '.join(roles)})" if roles else ""
        print(f"{p.config_dir}: ok, {plural(len(roles), 'role')}{listed}")
        if warning := root_warning(cfg.main.root):
            print(f"warning: {warning}", file=sys.stderr)
        if warning := imds.check_warning(cfg.main.agent.mode, root_source(cfg.main.root)):
            print(f"warning: {warning}", file=sys.stderr)
    return EXIT_USAGE if problems else EXIT_OK


def shim_path() -> Path | None:
    """The dyncreds-shim of this installation: beside this Python (a venv, pipx),
    in the user scripts dir (pip --user), or on PATH - whichever exists."""
    import shutil
    import sysconfig
    from pathlib import Path

    candidates = [Path(sys.executable).parent / "dyncreds-shim"]
    user_scripts = sysconfig.get_path("scripts", f"{os.name}_user")
    if user_scripts:
        candidates.append(Path(user_scripts) / "dyncreds-shim")
    found = shutil.which("dyncreds-shim")
    if found:
        candidates.append(Path(found).absolute())
    return next((c for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)


def shim_command(shim: Path) -> str:
    """What a profile's credential_process runs. The shim of this Python's own
    install is run by this Python with -I -S -X utf8, directly: no /bin/sh hop to
    find an interpreter (pip cannot write those flags into a script's shebang). UTF-8
    mode spares the interpreter decoding its paths and arguments through the C
    locale (~5 % of its start); the shim reads only bytes and ASCII role names. Any
    other shim is run as a command."""
    import shlex
    import sysconfig
    from pathlib import Path

    own = [Path(sys.executable).parent / "dyncreds-shim"]
    user_scripts = sysconfig.get_path("scripts", f"{os.name}_user")
    if user_scripts:
        own.append(Path(user_scripts) / "dyncreds-shim")
    if any(shim == candidate.absolute() for candidate in own):
        return f"{shlex.quote(sys.executable)} -I -S -X utf8 {shlex.quote(str(shim))}"
    return shlex.quote(str(shim))


def aws_config_sections(
    roles: Sequence[tuple[str, str | None]], default_region: str, command: str
) -> str:
    sections = []
    for name, region in roles:
        sections.append(
            f"[profile {name}]\ncredential_process = {command} {name}\n"
            f"region = {region or default_region}\n"
        )
    return "\n".join(sections)


def cmd_aws_config(args: argparse.Namespace) -> int:
    import shlex

    cfg = load(args)
    regions = {name: role.region for name, role in cfg.roles.items()}
    unasked = ""
    if not regions or any(name not in regions for name in args.roles):
        served, unasked = served_roles(args)
        regions = {**served, **regions}
    if not regions:
        where = " (and no agent answered to say which it serves)" if unasked else ""
        raise CliError(
            f"no roles in {get_paths(args).roles_dir}{where}: "
            "create one with `dyncreds role create NAME --type TYPE …`",
            EXIT_USAGE,
        )
    wanted = []
    for name in args.roles or sorted(regions):
        if name not in regions:
            known = ", ".join(sorted(regions)) or "none"
            raise CliError(f"unknown role {name!r} (known: {known})", EXIT_USAGE)
        wanted.append((name, regions[name]))
    from pathlib import Path

    shim = Path(args.shim) if args.shim else shim_path()
    if args.shim and shim is not None and not (shim.is_file() and os.access(shim, os.X_OK)):
        found = shim_path()
        hint = f" (this install's is {found})" if found else ""
        raise CliError(
            f"--shim {args.shim}: not an executable file; name an installed dyncreds-shim{hint}",
            EXIT_USAGE,
        )
    if shim is None or not (shim.is_file() and os.access(shim, os.X_OK)):
        raise CliError(
            f"no dyncreds-shim found ({shim or 'not beside ' + sys.executable + ' nor on PATH'}); "
            "reinstall dyncreds, or name it with --shim PATH",
            EXIT_USAGE,
        )
    command = shim_command(shim.absolute()) if not args.shim else shlex.quote(str(shim.absolute()))
    print(aws_config_sections(wanted, cfg.main.root.region, command), end="")
    return EXIT_OK


def served_roles(args: argparse.Namespace) -> tuple[dict[str, str | None], str]:
    """The roles the agent serves this user (a system agent's, whose configuration
    the user cannot read), by name, with their regions; or none and why not."""
    try:
        with Client(get_paths(args).socket, timeout=30) as client:
            listed = client.request("roles")["roles"]
    except CliError as exc:
        return {}, str(exc)
    return {str(r["name"]): r.get("region") for r in listed}, ""


def cmd_role_create(args: argparse.Namespace) -> int:
    """The seed's "Create Role": every field of roles/NAME.toml from flags."""
    from dyncreds import roleconfig
    from dyncreds.commands.roleflags import changes_from

    p = get_paths(args)
    spec = changes_from(args, credential_type=args.field_credential_type)
    spec = {k: v for k, v in spec.items() if v not in (None, [], {})}
    target = roleconfig.write_role(p, args.name, spec, replace=args.force)
    print(f"wrote {target}; {reload_agent(p)}")
    return EXIT_OK


def cmd_role_edit(args: argparse.Namespace) -> int:
    """Change the fields given, keep the rest of the file (comments too) as written."""
    from dyncreds import roleconfig
    from dyncreds.commands.roleflags import changes_from

    p = get_paths(args)
    current, _ = roleconfig.read_role(p, args.name)
    changes = changes_from(args, credential_type=current.get("credential_type"))
    if not changes:
        raise CliError("nothing to change: give a field's flag (see --help)", EXIT_USAGE)
    target = roleconfig.edit_role(p, args.name, changes)
    print(f"wrote {target}; {reload_agent(p)}")
    return EXIT_OK


def cmd_role_list(args: argparse.Namespace) -> int:
    """The configured roles, read from the files (no agent needed): ``role list``
    and ``roles`` give the same answer."""
    from dyncreds.timefmt import format_duration

    p = get_paths(args)
    rows, problems = role_rows(p)
    if args.json:
        print_json(rows)
    elif not rows:
        print(f"no roles in {p.roles_dir} (add one with `dyncreds role create`)")
    else:
        for row in rows:
            ttl = format_duration(row["ttl"]) if row["ttl"] else "-"
            print(f"{row['name']:24} {row['type']:17} ttl={ttl:7} {row['file']}")
    if problems and not args.json:
        print(f"({plural(len(problems), 'problem')}; run `dyncreds check`)", file=sys.stderr)
    return EXIT_OK


def role_rows(p: paths.Paths) -> tuple[list[dict[str, Any]], list[config.Problem]]:
    """Each role file's name, type, ttl, region and path (``invalid`` where the
    loader refuses it), and the problems found."""
    from dyncreds import config

    problems: list[config.Problem] = []
    main = config.load_main(p.config_file, problems)
    defaults = main.lease if main else config.LeaseDefaults()
    rows: list[dict[str, Any]] = []
    for path in config.role_files(p.roles_dir, problems):
        role = config.load_role(path, defaults, problems)
        rows.append(
            {
                "name": path.stem,
                "type": role.credential_type if role else "invalid",
                "ttl": role.ttl if role else None,
                "region": role.region if role else None,
                "file": str(path),
            }
        )
    return rows, problems


def cmd_role_show(args: argparse.Namespace) -> int:
    """The file as written, byte for byte (comments, layout, durations as typed)."""
    from dyncreds import roleconfig

    _, text = roleconfig.read_role(get_paths(args), args.name)
    sys.stdout.write(text)
    return EXIT_OK


def cmd_role_delete(args: argparse.Namespace) -> int:
    from dyncreds import roleconfig

    p = get_paths(args)
    path = roleconfig.delete_role(p, args.name)
    print(f"removed {path}; {reload_agent(p)}")
    return EXIT_OK


def add_commands(cli: Commands) -> None:
    cli.add("roles", cmd_role_list, "configured roles and their types (same as `role list`)")
    cli.add("reload", cmd_reload, "re-read configuration (same as SIGHUP)")
    cli.add("check", cmd_check, "validate configuration offline")
    p = cli.add("aws-config", cmd_aws_config, "print ~/.aws/config profiles that use the shim")
    offer_roles(p.add_argument("roles", nargs="*", help="roles to print (default: all)"))
    offer_files(
        p.add_argument("--shim", help="the dyncreds-shim path to write (default: this install's)")
    )

    roles = cli.group("role", "create, edit, list, show or delete roles", "ACTION")
    p = roles.add(
        "create", cmd_role_create, "write roles/NAME.toml (every field has a flag) and reload"
    )
    p.add_argument("name", help="the role's name: [A-Za-z0-9][A-Za-z0-9_-]{0,63}")
    _role_flags(p, edit=False)
    p.add_argument("--force", action="store_true", help="replace an existing role")
    p = roles.add(
        "edit",
        cmd_role_edit,
        'change fields of roles/NAME.toml ("" removes one), keep the rest, and reload',
    )
    offer_roles(p.add_argument("name", help="the role's name"))
    _role_flags(p, edit=True)
    roles.add("list", cmd_role_list, "roles in the config directory")
    p = roles.add("show", cmd_role_show, "print roles/NAME.toml")
    offer_roles(p.add_argument("name", help="the role's name"))
    p = roles.add("delete", cmd_role_delete, "remove roles/NAME.toml and reload")
    offer_roles(p.add_argument("name", help="the role's name"))


def _role_flags(p: argparse.ArgumentParser, *, edit: bool) -> None:
    """The flags derived from the role file's schema: read (msgspec, kinds) only
    when the role commands are built."""
    if built(p):
        from dyncreds.commands.roleflags import add_role_flags

        add_role_flags(p, edit=edit)
