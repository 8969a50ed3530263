"""Root commands: ``init``, ``configure root`` (Vault's config/root),
``rotate-root``, ``unlock`` (the code from commands/mfa.py) and ``lock``.
``configure root`` is rootconfig.py's function (the console calls it too); the key
is written with aws/rootkeys.py, which does not import boto3."""

from __future__ import annotations

import argparse
import os
import sys

from dyncreds.client import EXIT_OK, EXIT_USAGE, Client, CliError
from dyncreds.commands.common import Commands, get_paths, print_json
from dyncreds.commands.roles import reload_agent

TYPE_CHECKING = False  # `typing` stays unimported at run time (see commands/common.py)
if TYPE_CHECKING:
    from dyncreds.aws.rootkeys import StaticKeys


def cmd_init(args: argparse.Namespace) -> int:
    from dyncreds.files import atomic_write
    from dyncreds.rootconfig import STARTER_CONFIG

    p = get_paths(args)
    if p.config_file.exists() and not args.force:
        print(f"dyncreds: {p.config_file} exists (use --force to overwrite)", file=sys.stderr)
        return EXIT_USAGE
    p.config_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(p.config_file, STARTER_CONFIG, 0o644)
    p.roles_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"wrote {p.config_file}; next: `dyncreds configure root`, then "
        f"`dyncreds role create NAME --type iam_user --policy-file policy.json`"
    )
    return EXIT_OK


def cmd_configure_root(args: argparse.Namespace) -> int:
    """Vault's config/root: the agent's own identity, region and endpoints.

    Everything is checked before anything is written - the flags, the resulting
    config.toml, and (unless --no-check) the root itself with sts:GetCallerIdentity -
    and then each file is replaced atomically, config.toml keeping its comments.
    The work is rootconfig.configure_root's; this reads the flags and the key."""
    from dyncreds import rootconfig
    from dyncreds.rootconfig import RootChange

    p = get_paths(args)
    if args.profile and (args.access_key_id or args.secret_stdin):
        raise CliError(
            "--profile and --access-key-id/--secret-stdin exclude each other", EXIT_USAGE
        )
    change = RootChange(
        profile=args.profile,
        store=args.store,
        keyring_item=args.keyring_item,
        settings={key: getattr(args, key) for key in rootconfig.SETTINGS},
        check=not args.no_check,
    )
    root = rootconfig.load_document(p.config_file).get("root") or {}
    if args.access_key_id or args.secret_stdin or rootconfig.wants_key(change, root):
        change.new_key = _read_key(args)
    rootconfig.configure_root(p, change, print)
    print(f"wrote {p.config_file}; {reload_agent(p)}")
    return EXIT_OK


def _read_key(args: argparse.Namespace) -> StaticKeys:
    import getpass

    from dyncreds.aws.rootkeys import StaticKeys
    from dyncreds.leases import Secret

    key_id = args.access_key_id or os.environ.get("DYNCREDS_ROOT_ACCESS_KEY_ID")
    if args.secret_stdin:
        if not key_id:
            raise CliError("--secret-stdin needs --access-key-id", EXIT_USAGE)
        secret = sys.stdin.readline().strip()
    else:
        if not sys.stdin.isatty():
            raise CliError(
                "no terminal to prompt on; pass --access-key-id and pipe the secret with "
                "--secret-stdin (or use --profile)",
                EXIT_USAGE,
            )
        key_id = key_id or input("AWS access key id: ").strip()
        secret = getpass.getpass("AWS secret access key (not echoed): ").strip()
    if not key_id or not secret:
        raise CliError("both the access key id and the secret are required", EXIT_USAGE)
    return StaticKeys(key_id, Secret(secret))


def cmd_rotate_root(args: argparse.Namespace) -> int:
    with Client(get_paths(args).socket) as client:
        key = client.request("rotate_root")["access_key_id"]
    if args.json:
        print_json({"access_key_id": key})
    else:
        print(f"root rotated; new access key {key}")
    return EXIT_OK


def cmd_unlock(args: argparse.Namespace) -> int:
    """Give the agent an MFA session, the code from [root] mfa_process, the
    terminal, stdin or a desktop prompt (commands/mfa.py says in which order)."""
    from dyncreds import config
    from dyncreds.commands.mfa import mfa_code

    p = get_paths(args)
    problems: list[config.Problem] = []
    main = config.load_main(p.config_file, problems)  # a broken file: no mfa_process
    root = main.root if main else None
    with Client(p.socket) as client:  # not running, or no lock: said before a YubiKey
        lock = client.request("status").get("root") or {}  # is touched or a code asked
    if lock.get("mfa") is False:
        raise CliError(
            "unlock needs root.mfa_serial in config.toml; this agent has no lock", EXIT_USAGE
        )
    code = mfa_code(
        given=args.code,
        process=root.mfa_process if root else None,
        serial=root.mfa_serial if root else None,
    )
    with Client(p.socket, timeout=60.0) as client:
        until = client.request("unlock", code=code)["unlocked_until"]
    if args.json:
        print_json({"unlocked_until": until})
    else:
        print(f"unlocked until {until}")
    return EXIT_OK


def cmd_lock(args: argparse.Namespace) -> int:
    with Client(get_paths(args).socket) as client:
        client.request("lock")
    if args.json:
        print_json({"locked": True})
    else:
        print("locked: every credential request is refused until `dyncreds unlock`")
    return EXIT_OK


def add_commands(cli: Commands) -> None:
    p = cli.add("init", cmd_init, "write a commented starter config.toml")
    p.add_argument("--force", action="store_true", help="overwrite an existing config.toml")
    configure = cli.group("configure", "configure the root identity", "WHAT")
    p = configure.add(
        "root",
        cmd_configure_root,
        "root AWS identity: a profile, or an access key whose secret "
        "is read from a prompt or stdin (never from the command line)",
    )
    _configure_root_flags(p)
    cli.add("rotate-root", cmd_rotate_root, "rotate the agent's own static access key")
    p = cli.add(
        "unlock",
        cmd_unlock,
        "give the agent an MFA session (root.mfa_serial); the code comes from "
        "[root] mfa_process, else the terminal, else stdin, else a desktop prompt",
    )
    p.add_argument(
        "--code",
        help="the code itself (visible to other processes while it runs: prefer stdin)",
    )
    cli.add("lock", cmd_lock, "forget the MFA session and refuse every credential request")


def _configure_root_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", help="use this ~/.aws/config profile as the root")
    p.add_argument("--access-key-id", help="the root's access key id")
    p.add_argument(
        "--secret-stdin",
        action="store_true",
        help="read the secret access key from the first line of stdin",
    )
    p.add_argument("--region", help="the root's region")
    p.add_argument("--iam-endpoint", dest="iam_endpoint", help='IAM endpoint URL ("" removes it)')
    p.add_argument("--sts-endpoint", dest="sts_endpoint", help='STS endpoint URL ("" removes it)')
    p.add_argument(
        "--store",
        choices=["file", "keyring"],
        help="where the key lives: a 0600 file, or the OS keyring (Secret Service); "
        "the current key moves there (old place emptied) unless a new one is given",
    )
    p.add_argument(
        "--keyring-item", default="root", help="the keyring item's name (service dyncreds)"
    )
    p.add_argument(
        "--mfa-serial",
        dest="mfa_serial",
        help='MFA device ARN: the agent starts locked ("" removes it)',
    )
    p.add_argument(
        "--mfa-process",
        dest="mfa_process",
        help="a command printing the current MFA code, run by `dyncreds unlock` "
        '(e.g. "ykman oath accounts code --single NAME"; "" removes it)',
    )
    p.add_argument("--unlock-for", dest="unlock_for", help="MFA session length (15m to 36h)")
    p.add_argument(
        "--rotate-every", dest="rotate_every", help='rotate the root key this often ("" never)'
    )
    p.add_argument(
        "--no-check",
        action="store_true",
        help="do not check the new root with sts:GetCallerIdentity before saving it",
    )
