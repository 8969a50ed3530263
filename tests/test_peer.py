"""The kernel's answer to "who is on the other end" (dyncreds.peer)."""

from __future__ import annotations

import os
import socket

import pytest

from dyncreds import peer


@pytest.mark.parametrize(
    ("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]
)
def test_tcp_peer_uid_is_the_connecting_process_owner(family: int, host: str) -> None:
    try:
        server = socket.socket(family)
        server.bind((host, 0))
    except OSError:
        pytest.skip(f"no {host} here")
    with server:
        server.listen()
        with socket.create_connection(server.getsockname()[:2]) as _client:
            accepted, _ = server.accept()
            with accepted:
                assert peer.tcp_peer_uid(accepted) == os.geteuid()
                # Both lookups agree: netlink first, the /proc tables as the fallback.
                ends = (accepted.getpeername(), accepted.getsockname())
                assert peer._netlink_lookup(family, *ends) == os.geteuid()
                assert peer._proc_lookup(family, *ends) == os.geteuid()


def test_unknown_connection_has_no_owner() -> None:
    assert peer._netlink_lookup(socket.AF_INET, ("127.0.0.1", 1), ("127.0.0.1", 2)) is None
    assert peer._proc_lookup(socket.AF_INET, ("127.0.0.1", 1), ("127.0.0.1", 2)) is None


def test_loopback_addresses() -> None:
    assert peer.is_loopback("127.0.0.1")
    assert peer.is_loopback("127.8.9.10")
    assert peer.is_loopback("::1")
    assert peer.is_loopback("::ffff:127.0.0.1")
    assert not peer.is_loopback("10.0.0.1")
    assert not peer.is_loopback("localhost")
    assert not peer.is_loopback("0.0.0.0")


def test_unix_peer_is_this_process() -> None:
    a, b = socket.socketpair()
    with a, b:
        got = peer.unix_peer(a)
        assert got is not None
        assert (got.pid, got.uid, got.gid) == (os.getpid(), os.geteuid(), os.getegid())
