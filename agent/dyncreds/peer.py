"""Who is on the other end of a local connection, as the kernel says.

One home for the question every listener of dyncreds asks: the agent's Unix socket
(SO_PEERCRED) and the loopback TCP listeners of ``exec``, ``serve`` and ``ui`` (the
owner of the connecting socket, read from the kernel's socket table). Nothing a client
sends takes part in the answer, and an answer the kernel cannot give is ``None``: the
callers refuse such a connection rather than guess.

For TCP the lookup is one NETLINK_SOCK_DIAG request for exactly the peer's 4-tuple
(what ``ss`` uses; no privilege needed), with the tables under /proc/net as the
fallback where netlink is not allowed. It costs tens of microseconds: callers ask once
per connection, never per request.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import NamedTuple

__all__ = ["Peer", "is_loopback", "tcp_connection_uid", "tcp_peer_uid", "unix_peer"]

# <linux/sock_diag.h>, <linux/inet_diag.h>, <linux/netlink.h>
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_NLMSG_ERROR = 2
_NLMSG_HDR = struct.Struct("=IHHII")
# inet_diag_req_v2: family, protocol, ext, pad, states, then inet_diag_sockid:
# sport, dport (big endian), src[16], dst[16], interface, cookie[2]
_REQ = struct.Struct("=BBBxI")
_SOCKID = struct.Struct("!HH16s16s")
_SOCKID_TAIL = struct.Struct("=III")
_NOCOOKIE = 0xFFFFFFFF
# inet_diag_msg: family, state, timer, retrans, sockid (48 bytes), expires, rqueue,
# wqueue, uid, inode
_MSG_UID_OFFSET = 4 + 48 + 12


class Peer(NamedTuple):
    """A Unix-socket peer as SO_PEERCRED reports it."""

    pid: int
    uid: int
    gid: int


def unix_peer(sock: socket.socket) -> Peer | None:
    """SO_PEERCRED of a connected Unix socket (None where the kernel has none)."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ::ffff:127.x (never for a name)."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def tcp_peer_uid(sock: socket.socket) -> int | None:
    """The uid owning the other end of a connected loopback TCP socket, or None.

    The other end is the socket whose local address is our peer's and whose
    remote address is ours; on loopback it lives in this kernel's table.
    """
    try:
        local = sock.getsockname()
        remote = sock.getpeername()
    except OSError:
        return None
    return tcp_connection_uid(sock.family, local, remote)


def tcp_connection_uid(family: int, local: tuple[str, int], remote: tuple[str, int]) -> int | None:
    """As ``tcp_peer_uid``, for a connection known by its addresses (an ASGI
    server's ``server`` and ``client``, read from the accepted socket): the 4-tuple
    names one open connection, so the answer is the same."""
    if not is_loopback(remote[0]):
        return None
    uid = _netlink_lookup(family, remote, local)
    if uid is None:
        uid = _proc_lookup(family, remote, local)
    return uid


def _packed(family: int, host: str) -> bytes:
    return socket.inet_pton(family, host.split("%", 1)[0]).ljust(16, b"\0")


def _netlink_lookup(family: int, src: tuple[str, int], dst: tuple[str, int]) -> int | None:
    """One SOCK_DIAG_BY_FAMILY request for the socket (src -> dst); its uid."""
    try:
        sockid = _SOCKID.pack(
            src[1], dst[1], _packed(family, src[0]), _packed(family, dst[0])
        ) + _SOCKID_TAIL.pack(0, _NOCOOKIE, _NOCOOKIE)
        body = _REQ.pack(family, socket.IPPROTO_TCP, 0, 0xFFFFFFFF) + sockid
        head = _NLMSG_HDR.pack(
            _NLMSG_HDR.size + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0
        )
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
            nl.settimeout(1.0)
            nl.sendto(head + body, (0, 0))
            reply = nl.recv(8192)
    except (OSError, ValueError, AttributeError):
        return None
    if len(reply) < _NLMSG_HDR.size:
        return None
    _length, kind, _flags, _seq, _pid = _NLMSG_HDR.unpack_from(reply)
    if kind != _SOCK_DIAG_BY_FAMILY:  # NLMSG_ERROR: no such socket (or not allowed)
        return None
    offset = _NLMSG_HDR.size + _MSG_UID_OFFSET
    if len(reply) < offset + 4:
        return None
    (uid,) = struct.unpack_from("=I", reply, offset)
    return int(uid)


def _proc_hex(family: int, host: str, port: int) -> str:
    """An address as /proc/net/tcp{,6} prints it (host-order 32-bit words)."""
    raw = socket.inet_pton(family, host.split("%", 1)[0])
    words = [raw[i : i + 4][::-1].hex().upper() for i in range(0, len(raw), 4)]
    return "{}:{:04X}".format("".join(words), port)


def _proc_lookup(family: int, src: tuple[str, int], dst: tuple[str, int]) -> int | None:
    """The same question asked of /proc/net/tcp or tcp6 (slower: a whole table)."""
    name = "/proc/net/tcp6" if family == socket.AF_INET6 else "/proc/net/tcp"
    want = (_proc_hex(family, *src[:2]), _proc_hex(family, *dst[:2]))
    try:
        with open(name, encoding="ascii") as table:
            next(table, None)
            for line in table:
                fields = line.split()
                if len(fields) > 7 and (fields[1], fields[2]) == want:
                    return int(fields[7])
    except (OSError, ValueError):
        return None
    return None
