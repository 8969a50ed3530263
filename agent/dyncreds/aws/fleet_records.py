"""The fleet table's plumbing and its journal records (fleet_table.py has the
roster and ``fleet init``; the module docstring there describes the table).

**Every conditional write is re-read when its condition fails** (a consistent
GetItem): botocore retries a write whose reply was lost, and the retry meets the
condition the first attempt already changed. If the item now says what this
write meant to say ("already mine"), that is success.

Every item read is validated (fleetitems.py): a bad one is logged once, kept in
``bad`` for ``fleet status``, and skipped. Every answer's ``Date`` is a sample of
AWS's clock (``skew``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

from dyncreds import logs
from dyncreds.aws.session import AwsSession
from dyncreds.config import FleetSettings
from dyncreds.fleetclock import SkewMeter
from dyncreds.fleetitems import (
    BadItem,
    RecordMeta,
    encode_record,
    plain,
    record_item,
    value,
)
from dyncreds.journal import Record, RecordGone, TakenOver
from dyncreds.protocol import Upstream

log = logs.get("fleet")

TTL_ATTRIBUTE = "expires"
KEEP_DEAD_FOR = 30 * 86400  # a dead agent's item stays visible this long (TTL)
MAX_BAD = 50  # bad items remembered for `fleet status`

Held = tuple[Record, RecordMeta]


class _ConditionFailed(Exception):
    pass


class FleetRecords:
    """The table's plumbing and the record operations: each one AWS call through
    the root's session (in a worker thread, bounded, mapped errors:
    ``AwsSession.call_client``, i.e. calls.py and errors.py)."""

    def __init__(
        self,
        settings: FleetSettings,
        session: Callable[[], AwsSession],
        *,
        wall: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self.name = settings.name
        self._session = session  # late-bound: the backend rebuilds it on reload
        self.wall = wall
        self.meter = SkewMeter()
        self.bad: dict[str, str] = {}  # item -> why it was skipped (logged once)

    @property
    def agents_pk(self) -> str:
        return f"{self.name}#agents"

    def records_pk(self, origin: str) -> str:
        return f"{self.name}#records#{origin}"

    def skew(self) -> float | None:
        return self.meter.value

    async def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        aws = self._session()
        try:
            result = await aws.call_client(
                aws.dynamodb, operation, TableName=self.settings.table, **params
            )
        except Upstream as exc:
            if exc.aws_code == "ConditionalCheckFailedException":
                raise _ConditionFailed() from None
            if exc.aws_code == "ResourceNotFoundException":
                raise Upstream(
                    f"the fleet table {self.settings.table} does not exist in "
                    f"{self.settings.region}: run `dyncreds fleet init`",
                    aws_code=exc.aws_code,
                ) from None
            raise Upstream(
                f"the fleet table {self.settings.table} cannot be used: {exc.message}",
                aws_code=exc.aws_code,
                retryable=exc.retryable,
                sent=exc.sent,
            ) from None
        self._sample(result)
        return result

    def _sample(self, result: dict[str, Any]) -> None:
        date = result.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        if not date:
            return
        try:
            aws_time = parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            return
        self.meter.sample(self.wall(), aws_time)

    def _skip(self, exc: BadItem) -> None:
        if exc.where not in self.bad:
            log.error("fleet.bad_item", item=exc.where, error=exc.why[:300])
            if len(self.bad) >= MAX_BAD:
                self.bad.pop(next(iter(self.bad)))
            self.bad[exc.where] = exc.why[:300]

    async def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        result = await self._call("get_item", Key=_key(pk, sk), ConsistentRead=True)
        item: dict[str, Any] | None = result.get("Item")
        return item

    async def _conditional(
        self,
        operation: str,
        pk: str,
        sk: str,
        mine: Callable[[dict[str, Any] | None], bool],
        **params: Any,
    ) -> tuple[bool, dict[str, Any] | None]:
        """A conditional write: (True, None) if it applied; (True, item) if an
        earlier attempt of it did (its reply was lost: the item says ``mine``);
        (False, item) if not, with the item as it is now (None: missing)."""
        key = {} if operation == "put_item" else {"Key": _key(pk, sk)}
        try:
            await self._call(operation, **key, **params)
            return True, None
        except _ConditionFailed:
            current = await self._get(pk, sk)
        if mine(None if current is None else plain(current)):
            log.info("fleet.write_already_applied", op=operation, item=f"{pk}/{sk}")
            return True, current
        return False, current

    # ------------------------------------------------------------------ records

    def _lost(self, lease_id: str, current: dict[str, Any] | None) -> Exception:
        """Why a write on our record failed: taken over by a peer, or gone."""
        if current is None:
            return RecordGone(
                f"journal record {lease_id} is gone from the fleet table "
                f"{self.settings.table} (deleted by hand, or the table was re-created)"
            )
        owner = plain(current).get("owner")
        return TakenOver(f"journal record {lease_id} is now owned by agent {owner}")

    async def put_new(self, record: Record, owner: str) -> None:
        def mine(item: dict[str, Any] | None) -> bool:
            return (
                item is not None
                and item.get("owner") == owner
                and item.get("origin") == owner
                and item.get("created_at") == record.created_at
            )

        done, current = await self._conditional(
            "put_item",
            self.records_pk(owner),
            record.lease_id,
            mine,
            Item=encode_record(record, owner, owner, self.name),
            ConditionExpression="attribute_not_exists(pk)",
        )
        if not done:
            raise self._lost(record.lease_id, current)

    async def update(self, origin: str, lease_id: str, owner: str, changes: dict[str, Any]) -> None:
        """SET ``changes`` on a record we own."""
        names = {f"#{k}": k for k in changes}
        values = {f":{k}": value(v) for k, v in changes.items() if v is not None}
        sets = [f"#{k} = :{k}" for k, v in changes.items() if v is not None]
        removes = [f"#{k}" for k, v in changes.items() if v is None]
        expression = ("SET " + ", ".join([*sets, "version = version + :one"])) + (
            " REMOVE " + ", ".join(removes) if removes else ""
        )

        def mine(item: dict[str, Any] | None) -> bool:  # condition failed: never ours
            return False

        done, current = await self._conditional(
            "update_item",
            self.records_pk(origin),
            lease_id,
            mine,
            UpdateExpression=expression,
            ConditionExpression="#owner = :me",
            ExpressionAttributeNames={**names, "#owner": "owner"},
            ExpressionAttributeValues={**values, ":me": {"S": owner}, ":one": {"N": "1"}},
        )
        if not done:
            raise self._lost(lease_id, current)

    async def delete(self, origin: str, lease_id: str, owner: str) -> None:
        """Forget a record we own; already gone (our own retried delete) is success."""
        done, current = await self._conditional(
            "delete_item",
            self.records_pk(origin),
            lease_id,
            lambda item: item is None,
            ConditionExpression="#owner = :me",
            ExpressionAttributeNames={"#owner": "owner"},
            ExpressionAttributeValues={":me": {"S": owner}},
        )
        if not done:
            raise self._lost(lease_id, current)

    async def adopt(
        self, held: Held, new_owner: str, changes_for: Callable[[Record], dict[str, Any]]
    ) -> Held | None:
        """Take one record over, on condition that it is still as it was read
        (owner and version): exactly one peer's write succeeds, and a record its
        old owner changed meanwhile is read again (``changes_for`` it, again).
        Returns the record as adopted;
        None if it is not ours to adopt (another peer's now, gone, or bad)."""
        record, meta = held
        for _ in range(5):
            changes = changes_for(record)
            names = {"#owner": "owner", **{f"#c_{k}": k for k in changes}}
            values = {
                ":new": {"S": new_owner},
                ":old": {"S": meta.owner},
                ":one": {"N": "1"},
                ":version": {"N": str(meta.version)},
                **{f":c_{k}": value(v) or {"NULL": True} for k, v in changes.items()},
            }
            sets = ["#owner = :new", "version = version + :one"]
            sets += [f"#c_{k} = :c_{k}" for k in changes]
            done, current = await self._conditional(
                "update_item",
                self.records_pk(meta.origin),
                record.lease_id,
                lambda item: item is not None and item.get("owner") == new_owner,
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression="#owner = :old AND version = :version",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
            if done and current is None:
                adopted = dataclasses.replace(record, **changes)
                return adopted, RecordMeta(new_owner, meta.origin, meta.version + 1)
            if current is None:
                return None
            try:
                record, meta = record_item(current)
            except BadItem as exc:
                self._skip(exc)
                return None
            if done:  # an earlier attempt applied; its reply was lost
                return record, meta
            if meta.owner != held[1].owner:
                return None  # another peer's now
            # Its owner wrote to it between our read and our write: again, as it is now.
        return None

    async def record(self, origin: str, lease_id: str) -> Held | None:
        """One record, as it is now (consistent); None if missing or bad."""
        item = await self._get(self.records_pk(origin), lease_id)
        if item is None:
            return None
        try:
            return record_item(item)
        except BadItem as exc:
            self._skip(exc)
            return None

    async def exists(self, origin: str, lease_id: str) -> bool:
        """Is there a record (good or bad) at this key? (consistent)"""
        return await self._get(self.records_pk(origin), lease_id) is not None

    async def records(self, origin: str, owner: str) -> list[Held]:
        """The records in ``origin``'s partition that ``owner`` owns (consistent)."""
        return await self._query(
            {
                "KeyConditionExpression": "pk = :pk",
                "FilterExpression": "#owner = :owner",
                "ExpressionAttributeNames": {"#owner": "owner"},
                "ExpressionAttributeValues": {
                    ":pk": {"S": self.records_pk(origin)},
                    ":owner": {"S": owner},
                },
                "ConsistentRead": True,
            },
            record_item,
        )

    async def all_records(self, limit: int = 1000) -> list[Held]:
        """Every record of the fleet, for `fleet status` (a Scan)."""
        found = await self._query(
            {
                "FilterExpression": "begins_with(pk, :prefix)",
                "ExpressionAttributeValues": {":prefix": {"S": f"{self.name}#records#"}},
            },
            record_item,
            operation="scan",
            limit=limit,
        )
        return found[:limit]

    async def _query(
        self,
        params: dict[str, Any],
        parse: Callable[[dict[str, Any]], Any],
        *,
        operation: str = "query",
        limit: int = 1_000_000,
    ) -> list[Any]:
        found: list[Any] = []
        while len(found) < limit:
            page = await self._call(operation, **params)
            for raw in page.get("Items", []):
                try:
                    found.append(parse(raw))
                except BadItem as exc:
                    self._skip(exc)
            if "LastEvaluatedKey" not in page:
                break
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return found


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}
