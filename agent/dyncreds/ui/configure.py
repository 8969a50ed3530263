"""Configure AWS: the seed's page. The form is ``dyncreds configure root``'s flags;
saving goes through the CLI's own ``apply_root`` - the new root checked with
sts:GetCallerIdentity before anything is written, config.toml keeping its
comments. The secret is a password field and is never sent back to the browser."""

from __future__ import annotations

import argparse
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import Response

from dyncreds import config
from dyncreds.aws.rootkeys import StaticKeys
from dyncreds.client import ClientError
from dyncreds.commands.roles import reload_agent
from dyncreds.commands.root import apply_root
from dyncreds.leases import Secret
from dyncreds.ui.web import console, form, render

FIELDS = ("region", "iam_endpoint", "sts_endpoint", "mfa_serial", "unlock_for", "rotate_every")


def current(request: Request) -> dict[str, Any]:
    """What config.toml says now (for the form's initial values; never a secret)."""
    p = console(request).paths
    problems: list[config.Problem] = []
    main = config.load_main(p.config_file, problems)
    root = main.root if main else None
    values: dict[str, Any] = {key: "" for key in FIELDS}
    values.update(store="file", keyring_item="root", profile="", access_key_id="")
    if root is None:
        return values
    for key in FIELDS:
        value = getattr(root, key, None)
        if key in ("unlock_for", "rotate_every"):
            value = config.format_duration(value) if value else ""
        values[key] = value or ""
    if root.keyring:
        values.update(store="keyring", keyring_item=root.keyring)
    elif root.profile:
        values.update(store="profile", profile=root.profile)
    return values


async def page(request: Request) -> Response:
    return render(request, "configure.html", values=current(request), errors=[], done=[])


def _args(data: Any) -> argparse.Namespace:
    """The form as ``configure root``'s flags (argparse's names and defaults)."""
    store = str(data.get("store") or "file")
    values = {key: str(data.get(key) or "").strip() or None for key in FIELDS}
    return argparse.Namespace(
        profile=str(data.get("profile") or "").strip() if store == "profile" else None,
        store="keyring" if store == "keyring" else "file",
        keyring_item=str(data.get("keyring_item") or "root").strip() or "root",
        no_check=False,
        **values,
    )


async def save(request: Request) -> Response:
    data = await form(request)
    args = _args(data)
    values = {**current(request), **{k: v for k, v in vars(args).items() if v}}
    values["store"] = str(data.get("store") or "file")
    keys = None
    errors: list[str] = []
    if values["store"] == "profile":
        if not args.profile:
            errors.append("name the ~/.aws/config profile to use")
    else:
        key_id = str(data.get("access_key_id") or "").strip()
        secret = str(data.get("secret_access_key") or "").strip()
        values["access_key_id"] = key_id
        if not key_id or not secret:
            errors.append("both the access key id and the secret access key are required")
        keys = StaticKeys(key_id, Secret(secret))
    if errors:
        return render(request, "configure.html", 400, values=values, errors=errors, done=[])
    p = console(request).paths
    done: list[str] = []
    try:
        problems = await trio.to_thread.run_sync(apply_root, p, None, keys, args, done.append)
    except ClientError as exc:
        problems, errors = [], [str(exc)]
    if problems or errors:
        errors += [str(x) for x in problems]
        if problems:
            errors.append("nothing was written")
        return render(request, "configure.html", 400, values=values, errors=errors, done=[])
    done.append(f"wrote {p.config_file}; {await trio.to_thread.run_sync(reload_agent, p)}")
    return render(request, "configure.html", values=current(request), errors=[], done=done)
