"""Roles: the list, Create/Edit (a form per credential type, written through the
CLI's ``write_role`` so the agent's own loader validates it first), Delete, and a
role's page - Generate, Renew, Rotate, Revoke, Open the AWS console."""

from __future__ import annotations

import tomllib
from functools import partial
from typing import Any
from urllib.parse import urlencode

import trio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from dyncreds import config
from dyncreds.client import CliError
from dyncreds.commands.lease import format_credentials
from dyncreds.commands.roles import aws_config_sections, shim_command, shim_path
from dyncreds.kinds import KINDS, names
from dyncreds.ui import forms, writers
from dyncreds.ui.web import agent_status, ask, console, form, render, see_other


def _role_file(request: Request, name: str) -> Any:
    if not config.ROLE_NAME.fullmatch(name):
        raise HTTPException(404, f"no role {name!r}")
    path = console(request).paths.role_file(name)
    if not path.exists():
        raise HTTPException(404, f"no role {name!r} in {path.parent}")
    return path


async def index(request: Request) -> Response:
    p = console(request).paths
    rows, problems = await trio.to_thread.run_sync(writers.role_rows, p)
    status, error = await agent_status(request)
    live = {r["name"]: r for r in (status or {}).get("roles", [])}
    return render(request, "roles.html", roles=rows, problems=problems, live=live, error=error)


async def new(request: Request) -> Response:
    kind = request.query_params.get("type", "iam_user")
    if kind not in KINDS:
        kind = "iam_user"
    values = {"credential_type": kind, "name": ""}
    return _form_page(request, values, editing=None)


def _form_page(
    request: Request,
    values: dict[str, Any],
    editing: str | None,
    errors: list[str] | None = None,
    policy_error: forms.PolicyError | None = None,
    status: int = 200,
) -> Response:
    kind = KINDS[values["credential_type"]]
    return render(
        request,
        "role_form.html",
        status,
        values=values,
        editing=editing,
        kind=kind,
        types=names(),
        fields=forms.fields_for(kind),
        errors=errors or [],
        policy_error=policy_error,
        templates=forms.POLICY_TEMPLATES,
        written_policy_file=values.get("written_policy_file"),
    )


async def create(request: Request) -> Response:
    return await _save(request, None)


async def edit(request: Request) -> Response:
    name = request.path_params["name"]
    path = _role_file(request, name)
    try:
        spec = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HTTPException(400, f"{path}: {exc}; fix it with `dyncreds check`") from None
    values = forms.values_from_file(spec)
    values["name"] = name
    values["written_policy_file"] = spec.get("policy_file")
    return _form_page(request, values, editing=name)


async def update(request: Request) -> Response:
    return await _save(request, request.path_params["name"])


async def _save(request: Request, editing: str | None) -> Response:
    data = await form(request)
    if editing:
        _role_file(request, editing)
    values = forms.values_from_form(data)
    if editing:
        values["name"] = editing
    if values["credential_type"] not in KINDS:
        raise HTTPException(400, "choose a credential type")
    name = values["name"]
    policy_error = forms.check_policy(values.get("policy_document", ""))
    if policy_error is not None:
        return _form_page(request, values, editing, [policy_error.message], policy_error, 400)
    p = console(request).paths
    try:
        spec = forms.spec_from_values(values)
        if editing:  # what the form does not show (a policy_file) stays as written
            spec = forms.keep_unshown(spec, tomllib.loads(p.role_file(name).read_text("utf-8")))
        save = partial(writers.save_role, p, name, spec, replace=editing is not None)
        problems = await trio.to_thread.run_sync(save)
    except (ValueError, OSError, CliError) as exc:
        return _form_page(request, values, editing, [str(exc)], None, 400)
    if problems:
        return _form_page(request, values, editing, problems, None, 400)
    note = await trio.to_thread.run_sync(writers.reload_agent, p)
    saved = urlencode({"saved": "updated" if editing else "created", "agent": note})
    return see_other(f"/roles/{name}?{saved}")


async def delete(request: Request) -> Response:
    await form(request)
    name = request.path_params["name"]
    _role_file(request, name)
    p = console(request).paths
    await trio.to_thread.run_sync(writers.delete_role, p, name)
    await trio.to_thread.run_sync(writers.reload_agent, p)
    return see_other("/roles")


async def show(
    request: Request,
    generated: dict[str, Any] | None = None,
    message: str | None = None,
    code: int = 200,
) -> Response:
    name = request.path_params["name"]
    path = _role_file(request, name)
    status, error = await agent_status(request)
    live = next((r for r in (status or {}).get("roles", []) if r["name"] == name), None)
    return render(
        request,
        "role.html",
        code,
        name=name,
        text=path.read_text(encoding="utf-8"),
        live=live,
        error=error,
        generated=generated,
        message=message,
        saved=request.query_params.get("saved"),
        agent_note=request.query_params.get("agent"),
    )


def _region(request: Request, name: str) -> str | None:
    try:
        cfg = config.load(console(request).paths.config_dir)
    except config.ConfigError:
        return None
    role = cfg.roles.get(name)
    return (role.region if role else None) or cfg.main.root.region


async def generate(request: Request) -> Response:
    """The role's current lease, shown once: keys, export lines, profile, JSON."""
    await form(request)
    name = request.path_params["name"]
    _role_file(request, name)
    try:
        body = await ask(request, "credentials", role=name)
    except CliError as exc:
        if request.headers.get("hx-request") == "true":
            return render(request, "generated.html", 200, generated=None, message=str(exc))
        return await show(request, message=str(exc), code=400)
    region = _region(request, name)
    shim = shim_path()
    generated = {
        "creds": body["credentials"],
        "lease": body["lease"],
        "export": format_credentials(body, "env", region, name),
        "json": format_credentials(body, "json", region, name),
        "profile": aws_config_sections([(name, region)], region or "us-east-1", shim_command(shim))
        if shim
        else None,
    }
    if request.headers.get("hx-request") == "true":  # and the lease card, out of band
        status, _ = await agent_status(request)
        live = next((r for r in (status or {}).get("roles", []) if r["name"] == name), None)
        return render(
            request, "generated.html", generated=generated, message=None, name=name, live=live
        )
    return await show(request, generated=generated)


async def _op(request: Request, op: str, **fields: Any) -> Response:
    await form(request)
    name = request.path_params["name"]
    _role_file(request, name)
    try:
        body = await ask(request, op, **fields)
    except CliError as exc:
        return await show(request, message=str(exc), code=400)
    if op == "revoke":
        results = body.get("results") or [
            {"lease_id": x, "outcome": "revoked"} for x in body["revoked"]
        ]
        text = "; ".join(f"{r['lease_id']}: {r['outcome']}" for r in results)
        message = text or "nothing to revoke"
    else:
        lease = body["lease"]
        message = f"new keys: lease {lease['id']}, valid until {lease['expires_at']}"
        if body.get("replaced"):
            old = body["replaced"]
            message += f"; the old keys stay valid until {old['expires_at']}"
    return await show(request, message=message)


async def renew(request: Request) -> Response:
    return await _op(request, "renew", role=request.path_params["name"])


async def rotate(request: Request) -> Response:
    return await _op(request, "rotate", role=request.path_params["name"])


async def revoke(request: Request) -> Response:
    return await _op(request, "revoke", role=request.path_params["name"])


async def login(request: Request) -> Response:
    """Off to the AWS console, signed in as the role (the URL is never shown or logged)."""
    await form(request)
    name = request.path_params["name"]
    _role_file(request, name)
    p = console(request).paths

    def fetch() -> dict[str, Any]:
        from dyncreds.client import Client

        with Client(p.socket) as client:
            creds: dict[str, Any] = client.request("credentials", role=name)["credentials"]
            return creds

    try:
        url = await trio.to_thread.run_sync(writers.console_url, p, name, fetch)
    except (CliError, config.ConfigError) as exc:
        return await show(request, message=str(exc), code=400)
    return RedirectResponse(url, 303)
