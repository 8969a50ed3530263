"""``dyncreds login ROLE``: the AWS console, signed in with the role's credentials.

AWS's federation endpoint turns temporary credentials into a console sign-in
URL (``getSigninToken``, then ``login``). STS leases are used directly; an IAM
user's long-term key cannot sign in that way, so for iam_user leases the key
first gets a federation token (sts:GetFederationToken, which the role's policy
must allow) scoped to what the user may do. The URL works for 15 minutes and
lets whoever holds it act as the role: it is printed only with ``--print`` and
never logged.
"""

from __future__ import annotations

import argparse
import json
import sys

from dyncreds.client import EXIT_OK, EXIT_USAGE, CliError
from dyncreds.commands.common import Commands, get_paths
from dyncreds.commands.completion import offer_roles
from dyncreds.commands.lease import fetch_credentials

TYPE_CHECKING = False  # `typing` stays unimported at run time (see commands/common.py)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from dyncreds import config, paths

CONSOLE = "https://console.aws.amazon.com/"
SESSION_SECONDS = 3600


def signin_url(endpoint: str, creds: dict[str, Any], destination: str = CONSOLE) -> str:
    """getSigninToken with the session, then the login URL that carries the token."""
    import urllib.error
    import urllib.parse
    import urllib.request

    session = json.dumps(
        {
            "sessionId": creds["AccessKeyId"],
            "sessionKey": creds["SecretAccessKey"],
            "sessionToken": creds["SessionToken"],
        }
    )
    query = urllib.parse.urlencode({"Action": "getSigninToken", "Session": session})
    try:
        with urllib.request.urlopen(f"{endpoint}?{query}", timeout=20) as response:
            token = json.loads(response.read())["SigninToken"]
    except urllib.error.HTTPError as exc:  # it answered: a refusal
        raise CliError(
            f"the sign-in endpoint {endpoint} refused the session: HTTP {exc.code}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:  # it never answered
        reason = getattr(exc, "reason", None) or exc
        raise CliError(
            f"the sign-in endpoint {endpoint} could not be reached ({_why(reason)}); check the "
            "network, or [root] signin_endpoint"
        ) from None
    except (ValueError, KeyError):
        raise CliError(
            f"the sign-in endpoint {endpoint} answered without a sign-in token"
        ) from None
    login = urllib.parse.urlencode(
        {"Action": "login", "Issuer": "dyncreds", "Destination": destination, "SigninToken": token}
    )
    return f"{endpoint}?{login}"


def _why(reason: object) -> str:
    import socket  # only on a failure: its enums cost start-up time

    if isinstance(reason, socket.gaierror):
        return f"DNS lookup failed: {reason.strerror or reason}"
    if isinstance(reason, OSError):
        return str(reason.strerror or type(reason).__name__)
    return str(reason)


def _federate(role_name: str, cfg: config.Config, creds: dict[str, Any]) -> dict[str, Any]:
    """An IAM user's key cannot sign in: it gets a federation token first."""
    from dyncreds.aws.probe import federation_token  # boto3: only here
    from dyncreds.protocol import DyncredsError

    try:
        return federation_token(
            region=cfg.main.root.region,
            sts_endpoint=cfg.main.root.sts_endpoint,
            access_key_id=creds["AccessKeyId"],
            secret=creds["SecretAccessKey"],
            name=f"dyncreds-{role_name}"[:32],
            seconds=SESSION_SECONDS,
        )
    except DyncredsError as exc:
        code = getattr(exc, "aws_code", None)
        hint = (
            f"; the role's policy must allow sts:GetFederationToken (add it to roles/{role_name}"
            ".toml) for an iam_user role to sign in"
            if code in ("AccessDenied", "AccessDeniedException")
            else ""
        )
        raise CliError(f"login {role_name}: {exc.message}{hint}") from None


def cmd_login(args: argparse.Namespace) -> int:
    import webbrowser

    url = console_url(get_paths(args), args.role, lambda: fetch_credentials(args)["credentials"])
    if args.print or not webbrowser.open(url):
        print(url)
    else:
        print(f"opened the AWS console as {args.role} in your browser", file=sys.stderr)
    return EXIT_OK


def console_url(p: paths.Paths, name: str, fetch: Callable[[], dict[str, Any]]) -> str:
    """The role's console sign-in URL (a secret for 15 minutes); ``fetch`` gets the
    role's credentials from the agent. ``login`` and the web console use this."""
    from dyncreds import config

    try:
        cfg = config.load(p.config_dir)
    except config.ConfigError as exc:
        raise CliError("\n".join(str(x) for x in exc.problems), EXIT_USAGE) from None
    role = cfg.roles.get(name)
    if role is None:
        raise CliError(f"unknown role {name!r} (see `dyncreds roles`)", EXIT_USAGE)
    if role.kind.login_refused:
        raise CliError(role.kind.login_refused, EXIT_USAGE)
    creds: dict[str, Any] = fetch()
    if not creds.get("SessionToken"):  # an IAM user's key: federate it first
        creds = _federate(role.name, cfg, creds)
    return signin_url(cfg.main.root.signin_endpoint, creds)


def add_commands(cli: Commands) -> None:
    p = cli.add("login", cmd_login, "open (or print) an AWS console sign-in URL for the role")
    offer_roles(p.add_argument("role", help="the role's name"))
    p.add_argument("--print", action="store_true", help="print the URL instead of opening it")
