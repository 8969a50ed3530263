"""Configure AWS: the seed's page. The form is ``dyncreds configure root``'s flags;
saving goes through the CLI's own code (``writers.save_root``) - the new root checked with
sts:GetCallerIdentity before anything is written, config.toml keeping its
comments. The secret is a password field and is never sent back to the browser."""

from __future__ import annotations

import tomllib
from functools import partial
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import Response

from dyncreds.aws.rootkeys import StaticKeys, read_credentials_file
from dyncreds.client import CliError
from dyncreds.leases import Secret
from dyncreds.protocol import DyncredsError
from dyncreds.ui import writers
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


def _posted(data: Any) -> dict[str, Any]:
    """The form's values, trimmed (the secret is not among them)."""
    values = {key: str(data.get(key) or "").strip() for key in FIELDS}
    for key in ("store", "profile", "keyring_item", "access_key_id"):
        values[key] = str(data.get(key) or "").strip()
    values["store"] = values["store"] or "file"
    values["keyring_item"] = values["keyring_item"] or "root"
    return values


async def save(request: Request) -> Response:
    data = await form(request)
    values = _posted(data)
    keys = None
    errors: list[str] = []
    if values["store"] == "profile":
        if not values["profile"]:
            errors.append("name the ~/.aws/config profile to use")
    else:
        # No secret: the key that is configured stays (moved if the store changed).
        secret = str(data.get("secret_access_key") or "").strip()
        if secret and not values["access_key_id"]:
            errors.append("a new secret access key needs its access key id")
        elif secret:
            keys = StaticKeys(values["access_key_id"], Secret(secret))
    if errors:
        return render(request, "configure.html", 400, values=values, errors=errors, done=[])
    p = console(request).paths
    done: list[str] = []
    save = partial(
        writers.save_root,
        p,
        settings={key: values[key] for key in FIELDS},  # "" removes a setting
        keys=keys,
        profile=values["profile"] if values["store"] == "profile" else None,
        store=values["store"],
        keyring_item=values["keyring_item"],
        say=done.append,
    )
    try:
        errors = await trio.to_thread.run_sync(save)
    except CliError as exc:
        errors = [str(exc)]
    if errors:
        return render(request, "configure.html", 400, values=values, errors=errors, done=[])
    reloaded = await trio.to_thread.run_sync(writers.reload_agent, p)
    done.append(f"wrote {p.config_file}; {reloaded}")
    return render(request, "configure.html", values=current(request), errors=[], done=done)
