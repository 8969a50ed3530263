"""Configure AWS: the seed's page. The form is ``dyncreds configure root``'s flags;
saving goes through the CLI's own ``apply_root`` - the new root checked with
sts:GetCallerIdentity before anything is written, config.toml keeping its
comments. The secret is a password field and is never sent back to the browser."""

from __future__ import annotations

import argparse
import tomllib
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import Response

from dyncreds.aws.rootkeys import StaticKeys, read_credentials_file
from dyncreds.client import ClientError
from dyncreds.commands.roles import reload_agent
from dyncreds.commands.root import apply_root
from dyncreds.leases import Secret
from dyncreds.protocol import DyncredsError
from dyncreds.ui.web import console, form, render

FIELDS = ("region", "iam_endpoint", "sts_endpoint", "mfa_serial", "unlock_for", "rotate_every")


def current(request: Request) -> dict[str, Any]:
    """What config.toml's [root] says now, as written (defaults stay placeholders),
    and the stored key's id (never its secret)."""
    p = console(request).paths
    values: dict[str, Any] = {key: "" for key in FIELDS}
    values.update(store="file", keyring_item="root", profile="", access_key_id="")
    try:
        root = tomllib.loads(p.config_file.read_text(encoding="utf-8")).get("root") or {}
    except (OSError, ValueError):
        return values
    for key in FIELDS:
        if key in root:
            values[key] = str(root[key])
    if root.get("keyring"):
        values.update(store="keyring", keyring_item=str(root["keyring"]))
    elif root.get("profile"):
        values.update(store="profile", profile=str(root["profile"]))
    elif root.get("credentials_file"):
        try:
            keys = read_credentials_file(p.config_dir / str(root["credentials_file"]))
            values["access_key_id"] = keys.access_key_id
        except DyncredsError:
            pass
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
