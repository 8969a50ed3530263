"""What every page of the console uses: ``ask`` (one request to the agent's
socket, off the event loop, with the CLI's client), ``form`` (a POST's fields,
refused without the session's CSRF token) and ``render`` (a Jinja2 template).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import trio
from jinja2 import Environment
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from dyncreds import __version__, paths
from dyncreds.client import Client, CliError
from dyncreds.ui.guard import Session, csrf_ok

HERE = Path(str(resources.files("dyncreds") / "ui"))
Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class Console:
    """What the pages share: where the agent and the configuration are."""

    paths: paths.Paths
    templates: Environment


def console(request: Request) -> Console:
    found: Console = request.app.state.console
    return found


async def ask(request: Request, op: str, wait: float = 120.0, **fields: Any) -> dict[str, Any]:
    """One request to the agent; an error answer raises CliError."""
    socket = console(request).paths.socket

    def call() -> dict[str, Any]:
        with Client(socket, wait) as client:
            return client.request(op, **fields)

    return await trio.to_thread.run_sync(call)


async def form(request: Request) -> FormData:
    """A POST's fields; without this session's CSRF token, 403 and nothing done."""
    data = await request.form()
    session: Session = request.scope["state"]["session"]
    offered = data.get("csrf")
    if not csrf_ok(session, offered if isinstance(offered, str) else None):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
    return data


def render(request: Request, page: str, code: int = 200, /, **context: Any) -> HTMLResponse:
    session: Session = request.scope["state"]["session"]
    template = console(request).templates.get_template(page)
    html = template.render(
        csrf=session.csrf,
        version=__version__,
        here=request.url.path,
        partial=request.headers.get("hx-request") == "true",
        **context,
    )
    return HTMLResponse(html, code)


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, 303)


async def agent_status(request: Request) -> tuple[dict[str, Any] | None, str | None]:
    """The agent's ``status``, or None and what went wrong (in words)."""
    try:
        return await ask(request, "status", wait=10), None
    except CliError as exc:
        return None, str(exc)
