"""What the console's tests share: a real ``dyncreds ui`` process, a real Chromium
driven by Selenium, and plain HTTP requests with any Host, cookie or form."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from tests.conftest import wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REQUIRE = os.environ.get("DYNCREDS_REQUIRE_CLIENTS") == "1"
SHOTS = os.environ.get("DYNCREDS_SCREENSHOTS")  # `make screenshots`: docs/screenshots
URL = re.compile(r"http://(127\.0\.0\.1:\d+)/\?token=([\w-]+)")


class Console:
    """``dyncreds ui --no-open`` in a child process; its output is its log."""

    def __init__(self, env: dict[str, str], log: Path):
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dyncreds", "ui", "--no-open"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        found = wait_for(self._address, message=f"the console's address (log: {log})")
        self.host, self.token = found.group(1), found.group(2)

    def _address(self) -> re.Match[str] | None:
        if self.process.poll() is not None:
            raise AssertionError(f"dyncreds ui exited: {self.log()}")
        return URL.search(self.log())

    @property
    def url(self) -> str:
        return f"http://{self.host}/?token={self.token}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self._log.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        host: str | None = None,
        cookie: str | None = None,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], str]:
        """One request on a connection of its own: status, headers (lower-case), body."""
        address, port = self.host.split(":")
        conn = http.client.HTTPConnection(address, int(port), timeout=60)
        sent = {"Host": host or self.host, **(headers or {})}
        if cookie:
            sent["Cookie"] = f"dyncreds_ui_{self.host.split(':')[1]}={cookie}"
        body = None
        if form is not None:
            body = urlencode(form)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            got = {k.lower(): v for k, v in response.getheaders()}
            return response.status, got, response.read().decode(errors="replace")
        finally:
            conn.close()

    def sign_in(self) -> str:
        """The session cookie the token is exchanged for."""
        status, headers, _ = self.request("GET", f"/?token={self.token}")
        assert status == 303 and headers["location"] == "/"
        match = re.match(r"dyncreds_ui_\d+=([\w-]+)", headers["set-cookie"])
        assert match
        return match.group(1)

    def csrf(self, cookie: str) -> str:
        _, _, body = self.request("GET", "/configure", cookie=cookie)
        match = re.search(r'name="csrf" value="([\w-]+)"', body)
        assert match
        return match.group(1)


@contextmanager
def console(env: dict[str, str], log: Path) -> Iterator[Console]:
    running = Console(env, log)
    try:
        yield running
    finally:
        running.stop()
        # Shown when a test fails; the sign-in token is a secret, even in test output.
        print(f"--- the console's log\n{running.log().replace(running.token, '<token>')}")


def browser_missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed (pip install -e '.[test]')"
    return None


@contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[Any]:
    """Debian's Chromium through its chromedriver, both named explicitly: Selenium
    Manager is never asked to find (or download) anything."""
    missing = browser_missing()
    if missing:
        if REQUIRE:
            pytest.fail(f"{missing} (DYNCREDS_REQUIRE_CLIENTS=1)")
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="dc-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # CSP reports land here
    os.environ["SE_OFFLINE"] = "true"  # belt and braces: no Selenium Manager downloads
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: Any, name: str, tmp: Path) -> Path:
    """Every page the tests see is saved (under docs/screenshots for `make screenshots`)."""
    folder = Path(SHOTS) if SHOTS else tmp / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    # The whole page, not the window: as tall as the document.
    size = driver.get_window_size()
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(size["width"], min(max(int(height) + 140, 600), 2400))
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(size["width"], size["height"])
    return path


def path_of(driver: Any) -> str:
    return str(urlsplit(driver.current_url).path)
