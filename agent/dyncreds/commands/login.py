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
from typing import Any

from dyncreds.client import EXIT_OK, EXIT_USAGE
from dyncreds.commands.common import CliError, Commands, get_paths
from dyncreds.commands.completion import offer_roles
from dyncreds.commands.lease import fetch_credentials

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
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise CliError(f"the sign-in endpoint {endpoint} refused the session: {reason}") from None
    login = urllib.parse.urlencode(
        {"Action": "login", "Issuer": "dyncreds", "Destination": destination, "SigninToken": token}
    )
    return f"{endpoint}?{login}"


def cmd_login(args: argparse.Namespace) -> int:
    import webbrowser

    from dyncreds import config

    cfg = config.load(get_paths(args).config_dir)
    role = cfg.roles.get(args.role)
    if role is None:
        raise CliError(f"unknown role {args.role!r} (see `dyncreds roles`)", EXIT_USAGE)
    if role.credential_type == "session_token":
        raise CliError(
            "GetSessionToken credentials cannot sign in to the console (AWS refuses them); "
            "use an assumed_role or federation_token role",
            EXIT_USAGE,
        )
    creds: dict[str, Any] = fetch_credentials(args)["credentials"]
    if not creds.get("SessionToken"):  # an IAM user's key: federate it first
        from dyncreds.aws.probe import federation_token  # boto3: only here

        creds = federation_token(
            region=cfg.main.root.region,
            sts_endpoint=cfg.main.root.sts_endpoint,
            access_key_id=creds["AccessKeyId"],
            secret=creds["SecretAccessKey"],
            name=f"dyncreds-{role.name}"[:32],
            seconds=SESSION_SECONDS,
        )
    url = signin_url(cfg.main.root.signin_endpoint, creds)
    if args.print or not webbrowser.open(url):
        print(url)
    else:
        print(f"opened the AWS console as {role.name} in your browser", file=sys.stderr)
    return EXIT_OK


def add_commands(cli: Commands) -> None:
    p = cli.add("login", cmd_login, "open (or print) an AWS console sign-in URL for the role")
    offer_roles(p.add_argument("role", help="the role's name"))
    p.add_argument("--print", action="store_true", help="print the URL instead of opening it")
