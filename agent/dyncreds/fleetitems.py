"""The fleet table's items as typed data, and their validation.

Every item read from the table - a roster entry or a journal record - is decoded
from DynamoDB's typed JSON and checked against a msgspec schema here. An item
that does not fit (a ``heartbeat`` that is a string, a ``pid`` that is a list, a
``revoke_at`` that is not a number) is a ``BadItem``: the caller logs it once,
shows it in ``fleet status`` and skips it, and the agent goes on. Nothing else
in the fleet ever sees an unchecked value.

Pure: no I/O (import-linter).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import msgspec

from dyncreds.journal import Record

_INTEGER = re.compile(r"-?\d+", re.ASCII)


class AgentItem(msgspec.Struct, frozen=True, kw_only=True):
    """One agent's heartbeat item.

    ``token`` is this run's start token and ``beat`` its heartbeat counter: the
    pair changes at every heartbeat, and a peer is judged by whether it changes
    (over the observer's monotonic clock), never by the wall-clock ``heartbeat``,
    which is only shown. ``skew`` is the agent's clock minus AWS's, as measured
    from the ``Date`` of AWS's answers. ``finished``: the takeover by ``taken_by``
    adopted everything (until then, it is resumed)."""

    agent_id: str
    host: str = "?"
    pid: int = 0
    heartbeat: float = 0.0
    beat: int = 0
    token: str = ""
    skew: float | None = None
    started_at: float = 0.0
    leases: int = 0
    taken_by: str | None = None
    taken_at: float | None = None
    finished: bool = False
    adopted: frozenset[str] = frozenset()

    @property
    def pulse(self) -> tuple[str, int, float]:
        """What changes while the agent lives (a 0.2 agent: only ``heartbeat``)."""
        return (self.token, self.beat, self.heartbeat)


class RecordMeta(msgspec.Struct, frozen=True):
    """What a record item carries beside the Record: who owns it, where it lives."""

    owner: str
    origin: str
    version: int = 0


class BadItem(Exception):
    """An item that does not fit its schema: ``where`` names it, ``why`` says how."""

    def __init__(self, where: str, why: str):
        super().__init__(f"{where}: {why}")
        self.where = where
        self.why = why


class AgentConflict(Exception):
    """A conditional write on an agent's item failed, and an earlier attempt of
    it had not applied either: ``current`` is the item now (None: missing or bad;
    ``missing``: not there at all)."""

    def __init__(self, current: AgentItem | None, *, missing: bool = False):
        super().__init__(current.agent_id if current else "missing")
        self.current = current
        self.missing = missing


def plain(item: dict[str, Any]) -> dict[str, Any]:
    """DynamoDB's typed JSON -> plain values (N -> int or float, SS -> list)."""
    out: dict[str, Any] = {}
    for key, typed in item.items():
        if not isinstance(typed, dict) or len(typed) != 1:
            out[key] = typed  # not typed JSON: the schema rejects it by name
            continue
        ((kind, value),) = typed.items()
        if kind == "N":
            out[key] = int(value) if _INTEGER.fullmatch(value) else float(value)
        elif kind in ("SS", "NS", "L"):
            out[key] = list(value)
        elif kind == "NULL":
            out[key] = None
        else:  # S, BOOL, and anything else, as it is: the schema decides
            out[key] = value
    return out


def where(item: dict[str, Any]) -> str:
    key = plain({k: v for k, v in item.items() if k in ("pk", "sk")})
    return f"{key.get('pk', '?')}/{key.get('sk', '?')}"


def agent_item(item: dict[str, Any]) -> AgentItem:
    values = plain(item)
    values["agent_id"] = values.pop("sk", None)
    for extra in ("pk", "expires"):
        values.pop(extra, None)
    try:
        return msgspec.convert(values, AgentItem)
    except msgspec.ValidationError as exc:
        raise BadItem(where(item), str(exc)) from None


def record_item(item: dict[str, Any]) -> tuple[Record, RecordMeta]:
    values = plain(item)
    values.setdefault("access_key_id", None)  # written only once known
    try:
        meta = msgspec.convert(values, RecordMeta)
        record = msgspec.convert(values, Record)
    except msgspec.ValidationError as exc:
        raise BadItem(where(item), str(exc)) from None
    if record.lease_id != values.get("sk"):
        raise BadItem(where(item), "lease_id differs from the item's key")
    return record, meta


# ---------------------------------------------------------------------- writing


RECORD_FIELDS = (
    "lease_id", "role", "user_name", "access_key_id", "state", "created_at", "revoke_at",
    "attempts", "next_attempt", "last_error", "settle_until", "thing", "detail",
)  # fmt: skip


def number(value: float | int) -> Decimal:
    return Decimal(str(round(value, 3)))


def value(v: Any) -> dict[str, Any] | None:
    """One Python value as DynamoDB typed JSON (None: leave the attribute out)."""
    if v is None:
        return None
    if isinstance(v, bool):
        return {"BOOL": v}
    if isinstance(v, int):
        return {"N": str(v)}
    if isinstance(v, (float, Decimal)):
        return {"N": str(number(float(v)))}
    return {"S": str(v)}


def encode_record(record: Record, owner: str, origin: str, fleet: str) -> dict[str, Any]:
    item: dict[str, Any] = {
        "pk": {"S": f"{fleet}#records#{origin}"},
        "sk": {"S": record.lease_id},
    }
    for name in RECORD_FIELDS:
        encoded = value(getattr(record, name))
        if encoded is not None:
            item[name] = encoded
    item.update(owner={"S": owner}, origin={"S": origin}, version={"N": "1"})
    return item
