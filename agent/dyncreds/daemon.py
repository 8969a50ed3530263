"""The agent's process: hardening, configuration, the socket (bound or passed
by systemd), signals, sd_notify, and the start/stop order. The parts themselves
are built by wiring.py, in dependency order.

Start: harden the process -> load config (exit 2 on problems) -> open the
journal -> build the AWS backend (exit 2 if the root is unusable, e.g. a
credentials file readable by others) -> take the socket -> start the agent
(recovery begins) -> serve -> READY=1.

SIGHUP reloads (RELOADING=1 ... READY=1). SIGTERM/SIGINT: STOPPING=1, stop
accepting, let requests in flight finish (bounded), stop the agent's tasks,
close the journal (every write is already durable), exit 0. Leases stay valid
until their announced expiry; the next start revokes what is then due.
"""

from __future__ import annotations

import ctypes
import functools
import os
import resource
import signal
import socket as stdsocket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from dyncreds import __version__, config, logs, statedir, wiring
from dyncreds.agent import Agent
from dyncreds.audit import AuditLog
from dyncreds.client import EXIT_OK, EXIT_USAGE
from dyncreds.connections import raise_nofile
from dyncreds.gate import Door
from dyncreds.journal.sqlite import SqliteJournal
from dyncreds.paths import Paths
from dyncreds.protocol import DyncredsError
from dyncreds.server import Server, SocketSetupError, bind_unix
from dyncreds.service import make_handler
from dyncreds.watchers import Watchers
from dyncreds.wiring import StartupError

log = logs.get("daemon")

DRAIN_TIMEOUT = 25.0
SWITCH_INTERVAL = 0.0005
STATUS_EVERY = 30.0
SD_LISTEN_FDS_START = 3


# --------------------------------------------------------------------------- process


def harden() -> None:
    """No core dumps and no ptrace/proc access to our memory by other processes of
    the same user that are not our parent (ssh-agent's PR_SET_DUMPABLE 0). The
    descriptor limit goes up to the hard one: idle connections cannot use it up."""
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError):
        pass
    raise_nofile()
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_dumpable = 4
        libc.prctl(pr_set_dumpable, 0, 0, 0, 0)


@functools.cache  # fixed once harden() has run; no dlopen per status request
def dumpable() -> bool | None:
    """PR_GET_DUMPABLE for this process (None where prctl is unavailable)."""
    if sys.platform != "linux":
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    pr_get_dumpable = 3
    return bool(libc.prctl(pr_get_dumpable, 0, 0, 0, 0))


def sd_notify(message: str, env: dict[str, str] | os._Environ[str] | None = None) -> bool:
    """Send a state line to systemd's NOTIFY_SOCKET (no libsystemd needed)."""
    env = os.environ if env is None else env
    address = env.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError as exc:
        log.warning("agent.sd_notify_failed", error=exc.strerror or str(exc))
        return False


def watchdog_interval(env: dict[str, str] | os._Environ[str] | None = None) -> float | None:
    """Half of WATCHDOG_USEC, if the watchdog is meant for us."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(int(usec) / 2e6, 0.01)
    except ValueError:
        return None


def systemd_socket(env: dict[str, str] | os._Environ[str] | None = None) -> stdsocket.socket | None:
    """The listening socket passed by systemd socket activation, if any."""
    env = os.environ if env is None else env
    if env.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    names = (env.get("LISTEN_FDNAMES") or "").split(":")
    chosen: stdsocket.socket | None = None
    for index in range(count):
        fd = SD_LISTEN_FDS_START + index
        sock = stdsocket.socket(fileno=fd)
        name = names[index] if index < len(names) else ""
        if (
            sock.family == stdsocket.AF_UNIX
            and sock.type == stdsocket.SOCK_STREAM
            and (chosen is None or name == "agent")
        ):
            chosen = sock
        else:
            sock.detach()
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(key, None)  # not for our children
    if chosen is not None:
        chosen.setblocking(False)
    return chosen


# --------------------------------------------------------------------------- main


def prepare(
    paths: Paths, system_paths: Paths | None = None
) -> tuple[config.Config, SqliteJournal, str, Paths]:
    """Configuration, then the state dir and journal - a system-mode agent's own
    (``system_paths``) when config.toml says ``mode = "system"``."""
    try:
        cfg = config.load(paths.config_dir)
    except config.ConfigError as exc:
        lines = "\n".join(str(p) for p in exc.problems)
        raise StartupError(f"invalid configuration:\n{lines}") from None
    if cfg.main.agent.mode == "system" and system_paths is not None:
        paths = system_paths
    try:
        statedir.prepare(paths.state_dir)
        statedir.lock(paths.state_dir)
        ident = statedir.agent_id(paths.state_dir)
        journal, aside = statedir.open_journal(paths.state_dir)
    except statedir.StateError as exc:
        raise StartupError(str(exc)) from None
    if aside is not None:
        print(
            f"dyncreds agent: the journal was not a database; moved aside to {aside}. "
            "The orphan sweep will revoke what it held at the expiry each user announced.",
            file=sys.stderr,
        )
    return cfg, journal, ident, paths


def run(
    paths: Paths,
    *,
    log_format: str | None = None,
    log_level: str | None = None,
    backend_factory: Callable[..., Any] | None = None,
    system_paths: Paths | None = None,
) -> int:
    harden()
    # boto3's worker threads (signing, parsing) hold the GIL in slices of the switch
    # interval; the event loop, which answers every cached request, waits for the
    # GIL behind them. A shorter slice bounds that wait (5 ms by default).
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        cfg, journal, ident, paths = prepare(paths, system_paths)
    except StartupError as exc:
        print(f"dyncreds agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logs.setup(log_level or cfg.main.agent.log_level, log_format or cfg.main.agent.log_format)
    cycles = wiring.Cycles()  # the parts that need each other
    try:
        journal, table = wiring.open_journal(cfg, journal, ident, cycles)
    except StartupError as exc:
        print(f"dyncreds agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        backend = wiring.backend(cfg, journal, ident, paths, cycles, backend_factory)
    except DyncredsError as exc:
        print(f"dyncreds agent: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    system = cfg.main.agent.mode == "system"
    sock = systemd_socket()
    activated = sock is not None
    if sock is None:
        try:
            sock = bind_unix(paths.socket, public=system)
        except SocketSetupError as exc:
            print(f"dyncreds agent: {exc}", file=sys.stderr)
            return EXIT_USAGE
    audit_log = wiring.audit_log(cfg, paths)
    agent = wiring.agent(
        cfg, journal, backend, ident, paths, table, audit_log, cycles, on_status=_show_status
    )
    try:
        trio.run(_main, agent, audit_log, sock, paths, activated)
    finally:
        journal.close_now()
        if not activated:
            _unlink_own_socket(paths.socket, sock)
    return EXIT_OK


def _show_status(summary: str) -> None:
    """`systemctl --user status` shows a lock or an unlock at once, not at the next tick."""
    sd_notify(f"STATUS={summary}")


def _unlink_own_socket(path: Path, sock: stdsocket.socket) -> None:
    try:
        if os.stat(path).st_ino == os.fstat(sock.fileno()).st_ino:
            os.unlink(path)
    except OSError:
        pass
    sock.close()


async def _main(
    agent: Agent, audit_log: AuditLog, sock: stdsocket.socket, paths: Paths, activated: bool
) -> None:
    async def reload() -> list[str]:
        sd_notify("RELOADING=1\nSTATUS=reloading configuration")
        try:
            return await agent.reload()
        finally:
            sd_notify(f"READY=1\nSTATUS={agent.summary()}")

    def process_status() -> dict[str, Any]:
        return {
            "dumpable": dumpable(),
            "config_dir": str(paths.config_dir),
            "state_dir": str(paths.state_dir),
            "socket": str(paths.socket),
            "audit_dropped": audit_log.dropped,
        }

    # System mode: every local user may connect; the rules decide.
    door = Door(lambda: agent.config.main.access) if agent.mode == "system" else None
    watchers = Watchers()  # the endpoints' watches: the lock fence
    server = Server(
        make_handler(agent, reload, process_status, audit_log, watchers),
        door=door,
        audit=audit_log.record,  # refused peers
    )
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as outer:
            await outer.start(agent.run)
            outer.start_soon(audit_log.run)
            async with trio.open_nursery() as connections:
                accept = trio.CancelScope()

                async def accept_loop(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                    with accept:
                        await server.serve(sock, connections, task_status=task_status)

                await connections.start(accept_loop)
                _ready(agent, paths, activated, outer)
                signum = await _until_stopped(signals, reload)
                log.info("agent.stopping", signal=signal.Signals(signum).name)
                sd_notify("STOPPING=1\nSTATUS=stopping")
                accept.cancel()
                server.drain()
                watchers.close()
                with trio.move_on_after(DRAIN_TIMEOUT):
                    await server.wait_idle()
                agent.stopping = True
                connections.cancel_scope.cancel()
            outer.cancel_scope.cancel()
    log.info("agent.stopped")


def _ready(agent: Agent, paths: Paths, activated: bool, nursery: trio.Nursery) -> None:
    """Serving: tell the log and systemd (READY=1), then keep systemd's STATUS= and
    watchdog fed."""
    log.info(
        "agent.ready",
        socket=str(paths.socket),
        activated=activated,
        pid=os.getpid(),
        version=__version__,
    )
    sd_notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS={agent.summary()}")
    nursery.start_soon(_status_updates, agent)
    interval = watchdog_interval()
    if interval:
        nursery.start_soon(_watchdog, interval)


async def _until_stopped(
    signals: AsyncIterator[int], reload: Callable[[], Awaitable[list[str]]]
) -> int:
    """Reload on each SIGHUP (a bad configuration is logged and the old one kept);
    return the signal that stops the agent."""
    async for signum in signals:
        if signum != signal.SIGHUP:
            return signum
        try:
            await reload()
        except DyncredsError as exc:
            log.error("config.sighup_reload_failed", error=exc.message)
    raise AssertionError("the signal receiver never ends")


async def _status_updates(agent: Agent) -> None:
    while True:
        await trio.sleep(STATUS_EVERY)
        sd_notify(f"STATUS={agent.summary()}")


async def _watchdog(interval: float) -> None:
    while True:
        sd_notify("WATCHDOG=1")
        await trio.sleep(interval)
