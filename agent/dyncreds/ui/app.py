"""The console's Starlette app: its routes, the error page, and the Guard in front.

The app is a client of the agent like the CLI: it holds no credentials of its
own, asks the agent's socket for leases and writes configuration with the CLI's
own functions (through `writers`, the one seam to the configuration writers).
"""

from __future__ import annotations

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from dyncreds import paths
from dyncreds.config import format_duration
from dyncreds.ui import configure, pages, roles
from dyncreds.ui.guard import Guard, Sessions
from dyncreds.ui.web import HERE, Console, render


def routes() -> list[Route | Mount]:
    return [
        Route("/", pages.overview),
        Route("/leases", pages.leases),
        Route("/audit", pages.audit_page),
        Route("/lock", pages.lock_page),
        Route("/lock", pages.lock, methods=["POST"]),
        Route("/unlock", pages.unlock, methods=["POST"]),
        Route("/rotate-root", pages.rotate_root, methods=["POST"]),
        Route("/configure", configure.page),
        Route("/configure", configure.save, methods=["POST"]),
        Route("/roles", roles.index),
        Route("/roles/new", roles.new),
        Route("/roles/new", roles.create, methods=["POST"]),
        Route("/roles/{name}", roles.show),
        Route("/roles/{name}/edit", roles.edit),
        Route("/roles/{name}/edit", roles.update, methods=["POST"]),
        Route("/roles/{name}/delete", roles.delete, methods=["POST"]),
        Route("/roles/{name}/generate", roles.generate, methods=["POST"]),
        Route("/roles/{name}/renew", roles.renew, methods=["POST"]),
        Route("/roles/{name}/rotate", roles.rotate, methods=["POST"]),
        Route("/roles/{name}/revoke", roles.revoke, methods=["POST"]),
        Route("/roles/{name}/login", roles.login, methods=["POST"]),
        Route("/revoke", pages.revoke_lease, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if "session" not in request.scope.get("state", {}):
        return Response(f"{exc.detail}\n", exc.status_code, media_type="text/plain")
    return render(request, "error.html", exc.status_code, message=exc.detail)


def build(p: paths.Paths, sessions: Sessions) -> Guard:
    """The whole console: the Guard in front of the Starlette app."""
    templates = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    templates.filters["duration"] = lambda seconds: format_duration(float(seconds))
    app = Starlette(routes=routes(), exception_handlers={HTTPException: _http_error})
    app.state.console = Console(p, templates)
    return Guard(app, sessions)
