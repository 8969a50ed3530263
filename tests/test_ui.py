"""The web console's parts that decide, without a browser: sessions and their
idle expiry, the CSRF check on every state change, the role form, the charts,
and what the console's process imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Route

from dyncreds import paths
from dyncreds.client import CliError
from dyncreds.kinds import KINDS
from dyncreds.ui import charts, forms
from dyncreds.ui.app import build, routes
from dyncreds.ui.guard import Sessions, csrf_ok
from dyncreds.ui.serve import parse_listen


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_expires_after_its_idle_time_and_activity_keeps_it() -> None:
    clock = Clock()
    sessions = Sessions(idle_after=900, clock=clock)
    assert len(sessions.token) >= 43  # 32 random bytes: 256 bits
    assert sessions.token_ok(sessions.token) and not sessions.token_ok(sessions.token[:-1] + "x")
    sid = sessions.open()
    clock.now += 800
    assert sessions.get(sid) is not None  # touched: the idle clock starts again
    clock.now += 800
    assert sessions.get(sid) is not None
    clock.now += 901
    assert sessions.get(sid) is None
    assert sessions.live == {}  # gone, not just refused
    assert sessions.get(None) is None and sessions.get("made-up") is None


def test_csrf_tokens_are_per_session() -> None:
    sessions = Sessions()
    one, two = sessions.get(sessions.open()), sessions.get(sessions.open())
    assert one and two and one.csrf != two.csrf
    assert csrf_ok(one, one.csrf)
    assert not csrf_ok(one, two.csrf) and not csrf_ok(one, None) and not csrf_ok(one, "")


async def _post(app: Any, path: str, session: Any) -> int:
    """One POST straight into the Starlette app, as the Guard forwards it."""
    sent: list[dict[str, Any]] = []
    body = [{"type": "http.request", "body": b"name=x&credential_type=iam_user"}]

    async def receive() -> dict[str, Any]:
        return body.pop() if body else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/x-www-form-urlencoded")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
        "state": {"session": session},
    }
    await app(scope, receive, send)
    return int(sent[0]["status"])


async def test_every_state_change_wants_the_csrf_token(tmp_path: Path) -> None:
    p = paths.resolve(tmp_path / "config", tmp_path / "state", tmp_path / "agent.sock")
    (tmp_path / "config" / "roles").mkdir(parents=True)
    (tmp_path / "config" / "roles" / "x.toml").write_text('credential_type = "session_token"\n')
    guard = build(p, Sessions())
    session = guard.sessions.get(guard.sessions.open())
    posts = [
        r.path.replace("{name}", "x")
        for r in routes()
        if isinstance(r, Route) and "POST" in (r.methods or ())
    ]
    assert len(posts) == 13  # a new one joins this test by itself
    for path in posts:
        assert await _post(guard.app, path, session) == 403, path
    assert (tmp_path / "config" / "roles" / "x.toml").exists()  # delete refused
    assert not (tmp_path / "config" / "config.toml").exists()  # configure refused


def test_a_policy_error_names_its_line_and_column() -> None:
    text = '{\n  "Version": "2012-10-17",\n  "Statement": [\n'
    text += '    {"Effect": "Allow" "Action": "*"}\n  ]\n}'
    error = forms.check_policy(text)
    assert error is not None and (error.line, error.column) == (4, 24)
    assert "line 4 column 24" in error.message
    assert forms.check_policy('{"Version": "2012-10-17"}') is not None  # no Statement
    assert forms.check_policy('{"Statement": []}') is None
    assert forms.check_policy("") is None  # no policy: other fields may do


def test_each_credential_type_gets_its_own_fields() -> None:
    keys = {kind: {f[0] for f in forms.fields_for(KINDS[kind])} for kind in KINDS}
    assert {"policy_document", "iam_groups", "iam_tags"} <= keys["iam_user"]
    assert "role_arns" in keys["assumed_role"] and "iam_groups" not in keys["assumed_role"]
    assert keys["session_token"] == {"ttl", "max_ttl", "region", "prefetch"}
    assert "username" in keys["static_user"] and "policy_document" not in keys["static_user"]
    assert forms.fields_for(KINDS["assumed_role"])[0][0] == "role_arns"  # what it needs, first
    assert forms.fields_for(KINDS["iam_user"])[0][0] == "policy_document"


def test_the_form_and_the_role_file_agree() -> None:
    values = {
        "name": "deploy",
        "credential_type": "assumed_role",
        "role_arns": "arn:aws:iam::123456789012:role/a\n\narn:aws:iam::123456789012:role/b",
        "session_tags": "team=blue\nenv = prod",
        "policy_document": '{"Statement": []}',
        "ttl": " 1h ",
        "prefetch": True,
    }
    spec = forms.spec_from_values(values)
    assert spec["role_arns"] == [
        "arn:aws:iam::123456789012:role/a",
        "arn:aws:iam::123456789012:role/b",
    ]
    assert spec["session_tags"] == {"team": "blue", "env": "prod"}
    assert spec["ttl"] == "1h" and spec["prefetch"] is True
    back = forms.values_from_file(spec)
    assert back["role_arns"].splitlines() == spec["role_arns"]
    with pytest.raises(ValueError, match="KEY=VALUE"):
        forms.spec_from_values(dict(values, session_tags="no-equals-sign"))


def test_the_charts_are_plain_svg_with_their_text_escaped() -> None:
    now = 1_800_000_000.0
    spans = [
        charts.Span("<b>role</b>", now - 600, now + 1800, now + 3000),
        charts.Span("old (retiring)", None, None, now + 60),
    ]
    svg = charts.timeline(spans, now)
    handed = charts.handouts(charts.bucket([(now - 30, "a<"), (now - 20, "b")], now - 3600, now))
    for out in (svg, handed):
        assert out.startswith("<svg") and "<title>" in out
        assert "style=" not in out and "<script" not in out and "on" + "load" not in out
    assert "&lt;b&gt;role&lt;/b&gt;" in svg and "<b>" not in svg
    assert "a&lt;" in handed
    assert charts.timeline([], now) == "" and charts.handouts(charts.bucket([], 0, 1)) == ""


@pytest.mark.process
def test_the_console_loads_no_boto3_and_no_agent() -> None:
    """boto3 comes only with configure's key check, lazily, as for the CLI."""
    code = (
        "import sys, dyncreds.ui.serve; "
        "print(sorted(m for m in ('boto3', 'botocore', 'dyncreds.agent', 'dyncreds.daemon') "
        "if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_an_edit_keeps_what_the_form_does_not_show() -> None:
    written = {"credential_type": "iam_user", "policy_file": "/etc/p.json", "ttl": "1h"}
    from_form = forms.spec_from_values(forms.values_from_form({"credential_type": "iam_user"}))
    assert forms.keep_unshown(dict(from_form, ttl="2h"), written)["policy_file"] == "/etc/p.json"
    typed = dict(from_form, policy_document='{"Statement": []}')
    assert "policy_file" not in forms.keep_unshown(typed, written)  # the box replaces it
    assert "ttl" not in forms.keep_unshown(from_form, written)  # cleared in the form: gone


@pytest.mark.process
def test_the_console_listens_on_loopback_only() -> None:
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:8765") == ("::1", 8765)
    for listen in ("0.0.0.0:8080", "[::]:8080", "192.168.1.2:80", "localhost:80", "127.0.0.1"):
        with pytest.raises(CliError, match="--listen") as refused:
            parse_listen(listen)
        assert refused.value.status == 2
    result = subprocess.run(  # and the command says so, exit status 2
        [sys.executable, "-m", "dyncreds", "ui", "--no-open", "--listen", "0.0.0.0:8080"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("dyncreds: --listen '0.0.0.0:8080': the console listens")


@pytest.mark.process
@pytest.mark.parametrize("argv", [["ui", "--no-open"], ["demo", "--console"]])
def test_without_the_ui_extra_the_command_says_what_to_install(argv: list[str]) -> None:
    """Before anything runs (the demo's whole walk, too), and with an install from
    the checkout: dyncreds is not on PyPI."""
    code = (
        "import sys; sys.modules['starlette'] = None\n"  # as if not installed
        f"from dyncreds.commands import main; sys.exit(main({argv!r}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stdout == ""  # the demo did not start
    assert result.stderr == (
        "dyncreds: the web console needs starlette (the [ui] extra): `pipx install --force "
        "'./dyncreds[demo,ui]'` beside the checkout, or `pip install './dyncreds[ui]'` "
        "into its venv\n"
    )
