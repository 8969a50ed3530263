"""Where ``dyncreds unlock`` gets the MFA code, the way people have one:

1. ``--code`` (kept for scripts; never in examples: argv is visible to every
   process on the machine);
2. ``[root] mfa_process``: any command printing the code (aws-vault's
   ``mfa_process``), e.g. ``ykman oath accounts code --single NAME``; run by
   ``/bin/sh -c``, its stderr (a "touch your key" line) goes to ours;
3. a terminal on stdin: asked there;
4. stdin piped or redirected from a file: its first line;
5. no terminal and nothing piped (a desktop launcher, a keyboard shortcut): a
   desktop prompt, zenity or kdialog, when a display and one of them exist;
6. else a clear error saying which of these to use.

The code never appears in an error or on stdout: a failure says what failed.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Mapping
from typing import TextIO

from dyncreds.client import EXIT_USAGE, CliError

PROCESS_TIMEOUT = 120.0  # a hardware key waits for a touch
NO_SOURCE = (
    "no terminal to ask for the MFA code on, nothing on stdin and no desktop prompt "
    "(zenity or kdialog with a display): pipe the code on stdin, or set [root] mfa_process "
    '(e.g. `dyncreds configure root --mfa-process "ykman oath accounts code --single NAME"`)'
)


def mfa_code(
    *,
    given: str | None,
    process: str | None,
    serial: str | None,
    stdin: TextIO | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """The current MFA code, from the first source that applies (see above)."""
    stdin = sys.stdin if stdin is None else stdin
    env = os.environ if env is None else env
    if given is not None:
        return given.strip()
    if process:
        return from_process(process)
    kind = _stdin_kind(stdin)
    if kind == "terminal":
        print(f"MFA code{_for(serial)}: ", end="", file=sys.stderr, flush=True)
        return stdin.readline().strip()
    if kind == "piped":
        line = stdin.readline().strip()
        if not line:
            raise CliError("stdin was empty: pipe the MFA code, one line", EXIT_USAGE)
        return line
    return from_desktop(serial, env)


def _for(serial: str | None) -> str:
    return f" for {serial}" if serial else ""


def _stdin_kind(stdin: TextIO) -> str:
    """terminal, piped (a pipe, a file, a socket), or none (closed, /dev/null)."""
    try:
        fd = stdin.fileno()
        if os.isatty(fd):
            return "terminal"
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError):
        return "none"
    if stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISSOCK(mode):
        return "piped"
    return "none"


def last_token(output: str) -> str:
    """The code in a command's output: the last word of its last non-empty line
    (``ykman oath accounts code`` without ``--single`` prints ``NAME  CODE``)."""
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1].split()[-1] if lines else ""


def from_process(command: str) -> str:
    try:
        done = subprocess.run(
            ["/bin/sh", "-c", command],
            stdout=subprocess.PIPE,
            text=True,
            timeout=PROCESS_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CliError(
            f"[root] mfa_process did not print a code within {PROCESS_TIMEOUT:g}s: {command}",
            EXIT_USAGE,
        ) from None
    except OSError as exc:
        raise CliError(f"[root] mfa_process could not run: {exc.strerror}", EXIT_USAGE) from None
    if done.returncode != 0:
        raise CliError(
            f"[root] mfa_process exited {done.returncode}: {command} (run it yourself to see why)",
            EXIT_USAGE,
        )
    code = last_token(done.stdout)
    if not code:
        raise CliError(f"[root] mfa_process printed nothing: {command}", EXIT_USAGE)
    return code


def desktop_prompt(serial: str | None, env: Mapping[str, str]) -> list[str] | None:
    """The command line of a desktop prompt for the code, when one can be shown."""
    if not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")):
        return None
    text = f"MFA code{_for(serial)}"
    path = env.get("PATH", os.defpath)
    if zenity := shutil.which("zenity", path=path):
        return [zenity, "--entry", "--title=dyncreds unlock", f"--text={text}"]
    if kdialog := shutil.which("kdialog", path=path):
        return [kdialog, "--title", "dyncreds unlock", "--inputbox", text]
    return None


def from_desktop(serial: str | None, env: Mapping[str, str]) -> str:
    argv = desktop_prompt(serial, env)
    if argv is None:
        raise CliError(NO_SOURCE, EXIT_USAGE)
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            timeout=PROCESS_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        raise CliError(f"the desktop prompt ({argv[0]}) failed", EXIT_USAGE) from None
    code = last_token(done.stdout)
    if done.returncode != 0 or not code:
        raise CliError("the MFA prompt was cancelled; nothing was sent", EXIT_USAGE)
    return code
