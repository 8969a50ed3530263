"""The console's read-mostly pages: Overview, Leases, Audit, Lock/unlock, and
the agent-wide actions (lock, unlock, rotate the root, revoke a lease)."""

from __future__ import annotations

import time
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import Response

from dyncreds import audit, config
from dyncreds.client import CliError
from dyncreds.protocol import parse_rfc3339
from dyncreds.ui import charts, writers
from dyncreds.ui.web import agent_status, ask, console, form, render

START = "dyncreds agent   (or: systemctl --user start dyncreds-agent.socket)"


def warnings(status: dict[str, Any] | None, error: str | None) -> list[dict[str, str]]:
    """Everything ``status`` warns about, each with its fix: a page to go to, or a command."""
    if status is None:
        return [{"text": error or "the agent is not running", "command": START}]
    root, agent = status["root"], status["agent"]
    found = []
    if root.get("locked"):
        found.append(
            {
                "text": "the root is locked: every credential request is refused",
                "link": "/lock",
                "action": "Unlock",
            }
        )
    if root.get("warning"):
        found.append({"text": root["warning"], "link": "/configure", "action": "Configure AWS"})
    for key in ("error", "rotation_error"):
        if root.get(key):
            found.append(
                {"text": f"root: {root[key]}", "link": "/configure", "action": "Check the root"}
            )
    if agent.get("reload_error"):
        found.append(
            {"text": f"last reload rejected: {agent['reload_error']}", "command": "dyncreds check"}
        )
    for role in status["roles"]:
        if role.get("last_error"):
            found.append(
                {
                    "text": f"{role['name']}: {role['last_error']}",
                    "link": f"/roles/{role['name']}",
                    "action": f"Open {role['name']}",
                }
            )
    for item in status.get("retiring") or []:
        if item.get("irrevocable"):
            found.append(
                {
                    "text": f"lease {item['lease_id']} cannot be revoked: "
                    f"{item.get('last_error') or 'AWS refuses'}",
                    "link": "/leases",
                    "action": "See the leases",
                }
            )
    fleet = status.get("fleet")
    if fleet and not fleet.get("reachable", True):
        found.append(
            {
                "text": f"fleet table unreachable: {fleet.get('error')}",
                "command": "dyncreds fleet status",
            }
        )
    return found


async def overview(request: Request, note: str | None = None) -> Response:
    status, error = await agent_status(request)
    p = console(request).paths
    rows, problems = await trio.to_thread.run_sync(writers.role_rows, p)
    return render(
        request,
        "overview.html",
        status=status,
        error=error,
        socket=p.socket,
        warnings=warnings(status, error),
        roles=rows,
        problems=problems,
        note=note,
    )


def spans(status: dict[str, Any], min_remaining: float) -> list[charts.Span]:
    """The timeline's rows: current leases, then the retiring ones."""
    out = []
    for role in status["roles"]:
        if role.get("expires_at"):
            expires = parse_rfc3339(role["expires_at"])
            issued = parse_rfc3339(role["issued_at"]) if role.get("issued_at") else None
            out.append(charts.Span(role["name"], issued, expires - min_remaining, expires))
    for item in status.get("retiring") or []:
        label = f"{item['role']} (retiring)"
        out.append(charts.Span(label, None, None, parse_rfc3339(item["revoke_at"])))
    return out


async def leases(request: Request, note: str | None = None) -> Response:
    status, error = await agent_status(request)
    chart = ""
    if status is not None:
        try:
            cfg = config.load(console(request).paths.config_dir)
            min_remaining = float(cfg.main.agent.min_remaining)
        except config.ConfigError:
            min_remaining = 0.0
        chart = charts.timeline(spans(status, min_remaining), time.time())
    return render(request, "leases.html", status=status, error=error, chart=chart, note=note)


def _filtered(entries: list[dict[str, Any]], query: Any) -> list[dict[str, Any]]:
    role, op, process = query.get("role"), query.get("op"), query.get("process")
    since = 0.0
    if query.get("since"):
        try:
            since = time.time() - config.parse_duration(query["since"])
        except ValueError:
            since = 0.0
    out = []
    for e in entries:
        peer = e.get("peer") or {}
        who = f"{peer.get('pid', '')} {peer.get('exe') or ''} {peer.get('cmdline') or ''}"
        if (role and e.get("role") != role) or (op and e.get("op") != op):
            continue
        if process and process not in who:
            continue
        if audit.entry_time(e) >= since:
            out.append(e)
    return out


async def audit_page(request: Request) -> Response:
    p = console(request).paths
    problems: list[config.Problem] = []
    main = config.load_main(p.config_file, problems)  # a bad role file is no matter here
    path = p.state_dir / main.audit.file if main and main.audit.file else None
    entries = await trio.to_thread.run_sync(audit.read, path) if path else []
    shown = _filtered(entries, request.query_params)
    handed = [
        (audit.entry_time(e), str(e.get("role")))
        for e in shown
        if e.get("op") in ("credentials", "credential_process", "endpoint")
        and e.get("outcome") == "ok"
    ]
    now = time.time()
    # The last hour, or back to the first hand-out shown if that is older.
    start = min([w for w, _ in handed] + [now - 3600])
    chart = charts.handouts(charts.bucket(handed, start, now))
    return render(
        request,
        "audit.html",
        entries=shown[-200:][::-1],
        total=len(shown),
        chart=chart,
        path=path,
        problems=problems if main is None else [],
        query=request.query_params,
        roles=sorted({str(e.get("role")) for e in entries if e.get("role")}),
        ops=sorted({str(e.get("op")) for e in entries}),
    )


async def lock_page(request: Request) -> Response:
    status, error = await agent_status(request)
    return render(request, "lock.html", status=status, error=error, message=None)


async def _act(request: Request, op: str, **fields: Any) -> tuple[dict[str, Any] | None, str]:
    try:
        return await ask(request, op, **fields), ""
    except CliError as exc:
        return None, str(exc)


async def unlock(request: Request) -> Response:
    data = await form(request)
    code = str(data.get("code") or "").strip()
    body, error = await _act(request, "unlock", code=code)
    status, _ = await agent_status(request)
    message = f"unlocked until {body['unlocked_until']}" if body else error
    return render(
        request, "lock.html", 200 if body else 400, status=status, error=None, message=message
    )


async def lock(request: Request) -> Response:
    await form(request)
    _, error = await _act(request, "lock")
    status, _ = await agent_status(request)
    message = error or "locked: every credential request is refused until you unlock"
    return render(request, "lock.html", status=status, error=None, message=message)


async def rotate_root(request: Request) -> Response:
    await form(request)
    body, error = await _act(request, "rotate_root")
    return await overview(
        request, f"root rotated; new access key {body['access_key_id']}" if body else error
    )


async def revoke_lease(request: Request) -> Response:
    data = await form(request)
    body, error = await _act(request, "revoke", lease_id=str(data.get("lease_id") or ""))
    results = (body or {}).get("results") or []
    note = "; ".join(f"{r['lease_id']}: {r['outcome']}" for r in results) or error
    return await leases(request, note or "revoked")
