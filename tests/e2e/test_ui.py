"""The web console, end to end: a real ``dyncreds ui`` process in front of a real
agent on moto with IAM enforcement, driven by Debian's Chromium (Selenium), and
probed with plain HTTP for what a browser would not send (a foreign Host, a form
without its CSRF token, another user's connection)."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import pwd
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import botocore.exceptions
import pytest

from dyncreds.aws.standin import StandIn
from dyncreds.rootconfig import STARTER_CONFIG
from tests.conftest import EC2_ONLY, make_assumable_role, temp_users, wait_for
from tests.e2e.uikit import Console, chromium, console, path_of, screenshot

pytestmark = pytest.mark.e2e

# The policy as the AWS console shows it, with a comma missing at line 4.
BROKEN_POLICY = """{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": "ec2:*" "Resource": "*"}
  ]
}"""


class Setup:
    """A config dir with the starter config.toml (comments and all), no root yet,
    and an agent running on it."""

    def __init__(self, base: Path, aws: StandIn):
        self.base = base
        self.config_dir = base / "config"
        (self.config_dir / "roles").mkdir(parents=True)
        # The starter file, as `dyncreds init` writes it, with fast propagation checks.
        text = STARTER_CONFIG.replace("# propagation_checks = 3", "propagation_checks = 1")
        (self.config_dir / "config.toml").write_text(text)
        self.env = dict(
            os.environ,
            DYNCREDS_CONFIG_DIR=str(self.config_dir),
            DYNCREDS_STATE_DIR=str(base / "state"),
            DYNCREDS_SOCKET=str(base / "agent.sock"),
        )


@pytest.fixture
def setup(short_dir: Path, aws: StandIn) -> Iterator[Setup]:
    made = Setup(short_dir, aws)
    log = open(short_dir / "agent.log", "ab")  # noqa: SIM115
    agent = subprocess.Popen(
        [sys.executable, "-m", "dyncreds", "agent"], env=made.env, stdout=log, stderr=log
    )
    try:
        wait_for(lambda: (short_dir / "agent.sock").exists(), message="the agent's socket")
        yield made
    finally:
        agent.terminate()
        agent.wait(timeout=30)
        log.close()


def by_id(driver: Any, name: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, name)


def text_of(driver: Any) -> str:
    """The page's main text ("" while a new page replaces the old one)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return str(driver.find_element(By.TAG_NAME, "main").text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def go(driver: Any, link: str) -> None:
    """Follow a navigation link by its text, as a person would."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.LINK_TEXT, link).click()


def fill(driver: Any, field: str, value: str) -> None:
    element = by_id(driver, field)
    element.clear()
    element.send_keys(value)


def submit(driver: Any, button_text: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.XPATH, f"//main//button[normalize-space()='{button_text}']").click()


def configure_aws(driver: Any, aws: StandIn, setup: Setup) -> None:
    """Configure AWS: the service account's key, region, IAM (and STS) endpoint."""
    go(driver, "Configure AWS")
    fill(driver, "access_key_id", aws.admin_keys["AccessKeyId"])
    fill(driver, "secret_access_key", aws.admin_keys["SecretAccessKey"])
    fill(driver, "region", "us-east-1")
    fill(driver, "iam_endpoint", aws.endpoint)
    fill(driver, "sts_endpoint", aws.endpoint)
    submit(driver, "Check with AWS and save")
    wait_for(lambda: "Saved." in text_of(driver), message="configure saved")
    assert "checked: the root is arn:aws:iam::" in text_of(driver)
    assert aws.admin_keys["SecretAccessKey"] not in driver.page_source  # never echoed back
    assert by_id(driver, "secret_access_key").get_attribute("value") == ""
    assert by_id(driver, "access_key_id").get_attribute("value") == aws.admin_keys["AccessKeyId"]
    assert by_id(driver, "unlock_for").get_attribute("value") == ""  # a default stays unwritten
    config_toml = (setup.config_dir / "config.toml").read_text()
    assert "# dyncreds configuration." in config_toml  # comments kept
    assert f'iam_endpoint = "{aws.endpoint}"' in config_toml


def create_role(driver: Any, setup: Setup, tmp_path: Path) -> None:
    """Create role ec2-full from a pasted policy: first with a typo, shown at its line."""
    from selenium.webdriver.common.by import By

    go(driver, "Roles")
    go(driver, "Create role")
    fill(driver, "name", "ec2-full")
    fill(driver, "policy_document", BROKEN_POLICY)
    fill(driver, "ttl", "1h")
    submit(driver, "Create role")
    error = by_id(driver, "policy-error")
    assert "Line 4" in error.text
    bad = error.find_element(By.CSS_SELECTOR, "li.bad")
    assert bad.get_attribute("data-line") == "4" and '"ec2:*" "Resource"' in bad.text
    assert not (setup.config_dir / "roles" / "ec2-full.toml").exists()  # nothing written
    screenshot(driver, "role-policy-error", tmp_path)
    fill(driver, "policy_document", json.dumps(EC2_ONLY, indent=2))
    submit(driver, "Create role")
    wait_for(lambda: path_of(driver) == "/roles/ec2-full", message="the role's page")
    assert "agent reloaded (1 role)" in text_of(driver)


def generate(driver: Any) -> dict[str, str]:
    """Generate: the keys, once, with copy buttons, export lines and the profile."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    by_id(driver, "generate").send_keys(Keys.ENTER)  # from the keyboard
    wait_for(lambda: driver.find_elements(By.ID, "k-secret"), timeout=60, message="keys")
    key_id = by_id(driver, "k-id").text
    secret = by_id(driver, "k-secret").text
    assert f"export AWS_ACCESS_KEY_ID={key_id}" in by_id(driver, "k-export").text
    assert "credential_process = " in by_id(driver, "k-profile").text
    assert "in " in driver.find_element(By.CSS_SELECTOR, "#generated [data-expires]").text
    assert key_id in by_id(driver, "lease").text  # the lease card followed
    return {"aws_access_key_id": key_id, "aws_secret_access_key": secret}


def copy_buttons_copy(driver: Any, origin: str, keys: dict[str, str]) -> None:
    """A Copy button puts exactly its value on the clipboard (compared by digest: a
    failure must not print the secret)."""
    from selenium.webdriver.common.by import By

    grant = {"origin": origin, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]}
    driver.execute_cdp_cmd("Browser.grantPermissions", grant)
    read = "navigator.clipboard.readText().then(arguments[0], e => arguments[0]('!' + e))"
    for source, expected in (("k-secret", keys["aws_secret_access_key"]), ("k-export", None)):
        button = driver.find_element(By.CSS_SELECTOR, f'button[data-copy="{source}"]')
        button.click()
        wait_for(partial(_shows, button, "Copied"), message=f"{source} copied")
        copied = driver.execute_async_script(read)
        want = expected if expected is not None else by_id(driver, source).text
        same = hashlib.sha256(copied.encode()).digest() == hashlib.sha256(want.encode()).digest()
        assert same, f"the clipboard does not hold {source}'s text"


def _shows(element: Any, text: str) -> bool:
    return bool(element.text == text)


def keyboard_first_stop(driver: Any) -> None:
    """The first Tab lands on "Skip to content", visible when focused."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    active = driver.switch_to.active_element
    assert active.text == "Skip to content" and active.is_displayed()


def visit(driver: Any, tmp_path: Path, *pages: tuple[str, str]) -> None:
    for link, name in pages:
        go(driver, link)
        screenshot(driver, name, tmp_path)


def role_forms(driver: Any, tmp_path: Path) -> None:
    """Edit shows the role as written; Create has a form per credential type, whose
    policy box a template fills."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    go(driver, "Edit")
    assert by_id(driver, "ttl").get_attribute("value") == "1h"
    screenshot(driver, "role-edit", tmp_path)
    go(driver, "Roles")
    go(driver, "Create role")
    go(driver, "assumed_role")
    assert driver.find_elements(By.ID, "role_arns")
    assert not driver.find_elements(By.ID, "iam_groups")
    Select(by_id(driver, "policy-template")).select_by_visible_text("S3 read-only")
    assert '"s3:Get*"' in by_id(driver, "policy_document").get_attribute("value")
    screenshot(driver, "role-new-assumed-role", tmp_path)


def test_seed_flow_in_a_browser(setup: Setup, aws: StandIn, tmp_path: Path) -> None:
    with console(setup.env, tmp_path / "ui.log") as ui, chromium() as driver:
        # The printed address signs in and is dropped from the address bar.
        driver.get(ui.url)
        assert path_of(driver) == "/" and "token" not in driver.current_url
        keyboard_first_stop(driver)
        screenshot(driver, "overview-before", tmp_path)
        configure_aws(driver, aws, setup)
        screenshot(driver, "configure-aws", tmp_path)
        create_role(driver, setup, tmp_path)
        keys = generate(driver)
        screenshot(driver, "role-generated", tmp_path)
        copy_buttons_copy(driver, f"http://{ui.host}", keys)
        # The keys work: they are the new user's, EC2 is allowed, S3 denied.
        (user,) = temp_users(aws)
        assert aws.client("sts", **keys).get_caller_identity()["Arn"].endswith(user)
        aws.client("ec2", **keys).describe_instances()
        with pytest.raises(botocore.exceptions.ClientError):
            aws.client("s3", **keys).list_buckets()
        role_forms(driver, tmp_path)
        visit(driver, tmp_path, ("Overview", "overview"), ("Roles", "roles"), ("Leases", "leases"))
        assert "ec2-full" in text_of(driver) and "<svg" in driver.page_source
        driver.set_window_size(390, 844)  # a phone
        visit(driver, tmp_path, ("Overview", "overview-phone"))
        driver.set_window_size(1280, 900)
        dark = [{"name": "prefers-color-scheme", "value": "dark"}]
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": dark})
        visit(driver, tmp_path, ("Leases", "leases-dark"))
        background = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(21, 23, 26)"  # the system's dark scheme is followed
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
        # Revoke: the IAM user is gone.
        driver.get(f"http://{ui.host}/roles/ec2-full")
        by_id(driver, "revoke").click()
        driver.switch_to.alert.accept()
        wait_for(lambda: "deleted" in text_of(driver), timeout=60, message="revoked")
        assert temp_users(aws) == []
        visit(driver, tmp_path, ("Audit", "audit"))
        assert "credentials" in text_of(driver) and "revoke" in text_of(driver)
        go(driver, "Overview")
        submit(driver, "Rotate the root key")
        driver.switch_to.alert.accept()
        wait_for(lambda: "root rotated; new access key" in text_of(driver), message="rotated")
        visit(driver, tmp_path, ("Lock", "lock"))
        # The strict Content-Security-Policy broke nothing: the browser refused nothing.
        console_lines = [str(e.get("message")) for e in driver.get_log("browser")]
        refused = [m for m in console_lines if "Content Security Policy" in m or "Refused" in m]
        assert not refused, refused
    log = ui.log()
    for leaked in (aws.admin_keys["SecretAccessKey"], keys["aws_secret_access_key"]):
        assert leaked not in log, "a secret is in the console's log"
    assert log.count(ui.token) == 1  # printed once, to sign in; never logged after


@pytest.fixture
def running(setup: Setup, aws: StandIn, tmp_path: Path) -> Iterator[tuple[Console, Setup]]:
    with console(setup.env, tmp_path / "ui.log") as ui:
        yield ui, setup


PAGES = ["/", "/configure", "/roles", "/roles/new", "/leases", "/audit", "/lock", "/static/app.js"]
POSTS = ["/configure", "/roles/new", "/lock", "/unlock", "/rotate-root", "/revoke"]


def test_nothing_answers_without_the_token_or_its_cookie(
    running: tuple[Console, Setup],
) -> None:
    ui, _ = running
    for path in PAGES:
        status, headers, body = ui.request("GET", path)
        assert status == 401 and "role" not in body.lower(), path
        assert "default-src 'none'" in headers["content-security-policy"]
    for path in POSTS:
        assert ui.request("POST", path, form={"x": "y"})[0] == 401, path
    assert ui.request("GET", "/?token=" + "A" * 43)[0] == 401
    assert ui.request("GET", "/", cookie="made-up")[0] == 401
    cookie = ui.sign_in()
    for path in PAGES:
        status, headers, _ = ui.request("GET", path, cookie=cookie)
        assert status == 200, path
        assert headers["cache-control"] == "no-store"
        assert "script-src 'self'" in headers["content-security-policy"]
    _, headers, _ = ui.request("GET", f"/?token={ui.token}")
    cookie_line = headers["set-cookie"]
    assert "HttpOnly" in cookie_line and "SameSite=Strict" in cookie_line


def test_a_foreign_host_or_origin_is_refused(running: tuple[Console, Setup]) -> None:
    ui, _ = running
    cookie = ui.sign_in()
    port = ui.host.split(":")[1]
    for host in (f"evil.example:{port}", f"localhost.evil.example:{port}", "127.0.0.1"):
        assert ui.request("GET", "/", host=host, cookie=cookie)[0] == 400, host
        assert ui.request("GET", f"/?token={ui.token}", host=host)[0] == 400, host
    csrf = ui.csrf(cookie)
    status, _, _ = ui.request(
        "POST", "/lock", cookie=cookie, form={"csrf": csrf}, headers={"Origin": "http://evil"}
    )
    assert status == 403


def test_a_form_without_its_csrf_token_changes_nothing(running: tuple[Console, Setup]) -> None:
    ui, setup = running
    cookie = ui.sign_in()
    role = {
        "name": "sneaky",
        "credential_type": "iam_user",
        "policy_document": json.dumps(EC2_ONLY),
    }
    for csrf in (None, "wrong", ui.csrf(ui.sign_in())):  # none, made up, another session's
        form = dict(role, **({"csrf": csrf} if csrf else {}))
        status, _, body = ui.request("POST", "/roles/new", cookie=cookie, form=form)
        assert status == 403 and "CSRF" in body
    assert not (setup.config_dir / "roles" / "sneaky.toml").exists()
    config_before = (setup.config_dir / "config.toml").read_text()
    form = {"access_key_id": "AKIAX", "secret_access_key": "x", "region": "eu-west-1"}
    assert ui.request("POST", "/configure", cookie=cookie, form=form)[0] == 403
    assert (setup.config_dir / "config.toml").read_text() == config_before
    # With its token the same form goes through: the check above was the token.
    form = dict(role, csrf=ui.csrf(cookie))
    status, headers, _ = ui.request("POST", "/roles/new", cookie=cookie, form=form)
    assert status == 303 and headers["location"].startswith("/roles/sneaky")


def test_another_user_is_refused(running: tuple[Console, Setup], tmp_path: Path) -> None:
    """The kernel's owner of the connecting socket must be the console's user."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as another user")
    ui, _ = running
    name = f"dcui{os.getpid() % 100000}"
    subprocess.run(["useradd", "--no-create-home", name], check=True)
    try:
        user = pwd.getpwnam(name)
        address, port = ui.host.split(":")
        probe = (
            f"import http.client as h; c = h.HTTPConnection({address!r}, {port}); "
            f"c.request('GET', '/?token={ui.token}'); print(c.getresponse().status)"
        )
        result = subprocess.run(
            [
                "setpriv",
                f"--reuid={user.pw_uid}",
                f"--regid={user.pw_gid}",
                "--clear-groups",
                # The system's Python: another user may not reach this venv's.
                "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable,
                "-I",
                "-c",
                probe,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
        )
        assert result.stdout.strip() == "403", result.stderr
    finally:
        subprocess.run(["userdel", name], check=False)
    assert ui.request("GET", f"/?token={ui.token}")[0] == 303  # its own user still gets in


SERIAL = "arn:aws:iam::123456789012:mfa/vaultuser"


def configure_over_http(
    ui: Console, cookie: str, setup: Setup, aws: StandIn, mfa: bool = False
) -> None:
    """A key AWS refuses writes nothing; the right one is checked and saved."""
    csrf = ui.csrf(cookie)
    form = {
        "csrf": csrf,
        "store": "file",
        "access_key_id": aws.admin_keys["AccessKeyId"],
        "secret_access_key": "not-the-secret",
        "region": "us-east-1",
        "iam_endpoint": aws.endpoint,
        "sts_endpoint": aws.endpoint,
    }
    if mfa:
        form.update(mfa_serial=SERIAL, unlock_for="1h")
    before = (setup.config_dir / "config.toml").read_text()
    status, _, body = ui.request("POST", "/configure", cookie=cookie, form=form)
    assert status == 400 and "AWS refused the new root" in body, body
    assert "not-the-secret" not in body
    assert (setup.config_dir / "config.toml").read_text() == before
    form["secret_access_key"] = aws.admin_keys["SecretAccessKey"]
    status, _, body = ui.request("POST", "/configure", cookie=cookie, form=form)
    assert status == 200 and "Saved." in body and "agent reloaded" in body, body
    assert aws.admin_keys["SecretAccessKey"] not in body


def lock_and_unlock(ui: Console, cookie: str, aws: StandIn) -> None:
    """With root.mfa_serial the agent starts locked; unlock takes the code, lock refuses.
    moto's IAM enforcement does not know the MFA session's keys, and unlock proves the
    session before it says so: under enforcement the page names AWS's refusal; with
    enforcement off (as tests/e2e/test_root_lock.py runs) the unlock goes through."""
    csrf = ui.csrf(cookie)
    status, _, body = ui.request("GET", "/lock", cookie=cookie)
    assert "LOCKED" in body
    form = {"csrf": csrf, "code": "12"}
    status, _, body = ui.request("POST", "/unlock", cookie=cookie, form=form)
    assert status == 400 and "6 digits" in body
    form = {"csrf": csrf, "code": "123456"}
    status, _, body = ui.request("POST", "/unlock", cookie=cookie, form=form)
    assert status == 400 and "InvalidClientTokenId" in body, body
    aws.enforce_iam(unauthenticated_requests=1_000_000_000)  # off for the session's proof
    try:
        status, _, body = ui.request("POST", "/unlock", cookie=cookie, form=form)
    finally:
        aws.enforce_iam()
    assert status == 200 and "unlocked until" in body, body
    status, _, body = ui.request("POST", "/lock", cookie=cookie, form={"csrf": csrf})
    assert "LOCKED" in body and "(by Lock)" in body
    form = {"csrf": csrf}
    status, _, body = ui.request("POST", "/roles/ec2/generate", cookie=cookie, form=form)
    assert status == 400 and "locked" in body.lower()


def edit_keeps_the_policy_file(ui: Console, cookie: str, setup: Setup, tmp_path: Path) -> None:
    """A role whose policy is a file: the form does not show it, an edit keeps it."""
    policy = tmp_path / "ec2.json"
    policy.write_text(json.dumps(EC2_ONLY))
    by_file = setup.config_dir / "roles" / "byfile.toml"
    by_file.write_text(f'credential_type = "iam_user"\npolicy_file = "{policy}"\n')
    assert str(policy) in ui.request("GET", "/roles/byfile/edit", cookie=cookie)[2]
    form = {"csrf": ui.csrf(cookie), "credential_type": "iam_user", "ttl": "3h"}
    assert ui.request("POST", "/roles/byfile/edit", cookie=cookie, form=form)[0] == 303
    assert f'policy_file = "{policy}"' in by_file.read_text()
    assert 'ttl = "3h"' in by_file.read_text()


def test_every_page_works_over_http(
    running: tuple[Console, Setup], aws: StandIn, tmp_path: Path
) -> None:
    """Configure, create, edit (comments kept), renew, audit filters, MFA unlock and
    lock, delete: the forms a browser would post, checked in the files and the agent."""
    ui, setup = running
    cookie = ui.sign_in()
    configure_over_http(ui, cookie, setup, aws)
    csrf = ui.csrf(cookie)
    role = {
        "csrf": csrf,
        "name": "ec2",
        "credential_type": "iam_user",
        "policy_document": json.dumps(EC2_ONLY),
        "ttl": "1h",
    }
    assert ui.request("POST", "/roles/new", cookie=cookie, form=role)[0] == 303
    path = setup.config_dir / "roles" / "ec2.toml"
    path.write_text("# mine: keep me\n" + path.read_text())
    status, _, body = ui.request("GET", "/roles/ec2/edit", cookie=cookie)
    assert status == 200 and "ec2:*" in body
    edited = dict(role, ttl="2h", name="ignored")
    assert ui.request("POST", "/roles/ec2/edit", cookie=cookie, form=edited)[0] == 303
    text = path.read_text()
    assert 'ttl = "2h"' in text and text.startswith("# mine: keep me")
    edit_keeps_the_policy_file(ui, cookie, setup, tmp_path)
    form = {"csrf": csrf}
    status, headers, body = ui.request("POST", "/roles/ec2/generate", cookie=cookie, form=form)
    assert status == 200 and 'id="k-secret"' in body  # without htmx: the whole page
    assert headers["cache-control"] == "no-store"
    status, _, body = ui.request("POST", "/roles/ec2/renew", cookie=cookie, form=form)
    assert status == 200 and "new keys: lease ec2/" in body, body
    assert "the old keys stay valid until" in body

    def renewals() -> str:  # the audit log is written in batches, just after
        page = ui.request("GET", "/audit?role=ec2&op=renew", cookie=cookie)[2]
        return page if "1 entries" in page else ""

    assert "<svg" not in wait_for(renewals, message="the renew in the audit log")
    status, _, body = ui.request("GET", "/audit?role=nobody", cookie=cookie)
    assert "0 entries" in body
    _, _, body = ui.request("GET", "/leases", cookie=cookie)
    match = re.search(r'name="lease_id" value="([^"]+)"', body)
    assert match and "<svg" in body
    assert "ec2 (retiring)" in body  # the renewed lease's predecessor, on the timeline too
    status, _, body = ui.request(
        "POST", "/revoke", cookie=cookie, form={"csrf": csrf, "lease_id": match.group(1)}
    )
    assert status == 200 and f"{match.group(1)}: deleted" in body, body
    configure_over_http(ui, cookie, setup, aws, mfa=True)
    lock_and_unlock(ui, cookie, aws)
    form = {"csrf": csrf}
    status, _, _ = ui.request("POST", "/roles/ec2/delete", cookie=cookie, form=form)
    assert status == 303 and not path.exists()
    assert ui.request("GET", "/roles/ec2", cookie=cookie)[0] == 404
    form = dict(role, ttl="1 fortnight")
    status, _, body = ui.request("POST", "/roles/new", cookie=cookie, form=form)
    assert status == 400 and "ttl" in body and not path.exists()


class Federation(http.server.BaseHTTPRequestHandler):
    """AWS's federation endpoint, as far as getSigninToken goes."""

    sessions: ClassVar[list[dict[str, Any]]] = []

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        self.sessions.append(json.loads(query["Session"][0]))
        body = json.dumps({"SigninToken": "the-signin-token"}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_open_the_aws_console(running: tuple[Console, Setup], aws: StandIn, tmp_path: Path) -> None:
    """Open the AWS console: the role's session becomes a sign-in URL the browser is
    sent to (a 303; never shown on a page, never in the console's log)."""
    ui, setup = running
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Federation)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cookie = ui.sign_in()
        configure_over_http(ui, cookie, setup, aws)
        endpoint = f"http://127.0.0.1:{server.server_address[1]}/federation"
        config_file = setup.config_dir / "config.toml"
        config_file.write_text(
            config_file.read_text().replace("[root]\n", f'[root]\nsignin_endpoint = "{endpoint}"\n')
        )
        role = {
            "csrf": ui.csrf(cookie),
            "name": "deploy",
            "credential_type": "assumed_role",
            "role_arns": make_assumable_role(aws),
        }
        assert ui.request("POST", "/roles/new", cookie=cookie, form=role)[0] == 303
        form = {"csrf": role["csrf"]}
        status, headers, _ = ui.request("POST", "/roles/deploy/login", cookie=cookie, form=form)
        assert status == 303, headers
        target = urlsplit(headers["location"])
        assert f"{target.scheme}://{target.netloc}{target.path}" == endpoint
        assert parse_qs(target.query)["SigninToken"] == ["the-signin-token"]
        assert parse_qs(target.query)["Action"] == ["login"]
        (session,) = Federation.sessions
        assert session["sessionToken"]  # the role's STS session
        form = {"csrf": role["csrf"]}
        assert ui.request("POST", "/roles/nope/login", cookie=cookie, form=form)[0] == 404
    finally:
        server.shutdown()
    assert "the-signin-token" not in ui.log() and session["sessionKey"] not in ui.log()


def test_a_broken_config_toml_is_shown_and_left_alone(
    running: tuple[Console, Setup], aws: StandIn
) -> None:
    ui, setup = running
    cookie = ui.sign_in()
    config_file = setup.config_dir / "config.toml"
    config_file.write_text("[root\nregion = 'x'\n")
    for page in ("/", "/audit", "/roles"):
        status, _, body = ui.request("GET", page, cookie=cookie)
        assert status == 200 and "invalid TOML" in body, page
    form = {
        "csrf": ui.csrf(cookie),
        "access_key_id": aws.admin_keys["AccessKeyId"],
        "secret_access_key": aws.admin_keys["SecretAccessKey"],
        "region": "us-east-1",
    }
    status, _, body = ui.request("POST", "/configure", cookie=cookie, form=form)
    assert status == 400 and "invalid TOML" in body and "fix it first" in body
    assert config_file.read_text() == "[root\nregion = 'x'\n"
    assert not (setup.config_dir / "root-credentials.toml").exists()
