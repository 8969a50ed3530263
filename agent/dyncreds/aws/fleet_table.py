"""The fleet's DynamoDB table: every operation the fleet makes on it, and nothing
else (the rules - who owns what, when to take over - are fleet.py's and
journal/dynamodb.py's).

One table per fleet, two kinds of items (``pk``, ``sk``):

  ``{name}#agents``            / AGENT_ID  an agent's heartbeat: host, pid, heartbeat,
                                           leases, taken_by, adopted, expires (TTL)
  ``{name}#records#{ORIGIN}``  / LEASE_ID  a journal record created by agent ORIGIN:
                                           the Record's fields, owner, version

A record never moves: a takeover changes its ``owner`` (a conditional write on the
old owner: the fencing token), and the new owner remembers the origin partitions
it adopted, so that its own successor can find them. Reads of the roster are one
Query; a takeover Queries the dead agent's partitions. Every write that an agent
makes to a record is conditional on ``owner`` being itself: an agent whose
records were taken over learns it at its next write (``ConditionalCheckFailed``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from dyncreds.aws.session import AwsSession
from dyncreds.config import FleetSettings
from dyncreds.journal import Record, TakenOver
from dyncreds.protocol import Upstream

TTL_ATTRIBUTE = "expires"
KEEP_DEAD_FOR = 30 * 86400  # a dead agent's item stays visible this long (TTL)
_FIELDS = (
    "lease_id", "role", "user_name", "access_key_id", "state", "created_at", "revoke_at",
    "attempts", "next_attempt", "last_error", "settle_until", "thing", "detail",
)  # fmt: skip


@dataclass(frozen=True)
class AgentItem:
    agent_id: str
    host: str
    pid: int
    heartbeat: float
    started_at: float
    leases: int
    taken_by: str | None
    taken_at: float | None
    adopted: frozenset[str]

    def alive(self, now: float, dead_after: float) -> bool:
        return self.taken_by is None and now - self.heartbeat < dead_after


def _number(value: float | int) -> Decimal:
    return Decimal(str(round(value, 3)))


def record_item(record: Record, owner: str, origin: str, fleet: str) -> dict[str, Any]:
    item: dict[str, Any] = {"pk": f"{fleet}#records#{origin}", "sk": record.lease_id}
    for name in _FIELDS:
        value = getattr(record, name)
        if value is None:
            continue
        item[name] = _number(value) if isinstance(value, (int, float)) else value
    item.update(owner=owner, origin=origin, version=1)
    return item


def item_record(item: dict[str, Any]) -> Record:
    values: dict[str, Any] = {}
    for name in _FIELDS:
        value = item.get(name)
        if isinstance(value, Decimal):
            value = int(value) if name == "attempts" else float(value)
        values[name] = value
    return Record(**values)


class FleetTable:
    """The table's operations, each one AWS call through the root's session (in a
    worker thread, bounded, mapped errors: aws/session.py)."""

    def __init__(self, settings: FleetSettings, session: Callable[[], AwsSession]):
        self.settings = settings
        self.name = settings.name
        self._session = session  # late-bound: the backend rebuilds it on reload

    @property
    def agents_pk(self) -> str:
        return f"{self.name}#agents"

    def records_pk(self, origin: str) -> str:
        return f"{self.name}#records#{origin}"

    async def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        aws = self._session()
        try:
            return await aws.call_client(
                aws.dynamodb, operation, TableName=self.settings.table, **params
            )
        except Upstream as exc:
            if exc.aws_code == "ConditionalCheckFailedException":
                raise TakenOver(exc.message) from None
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

    # ------------------------------------------------------------------ records

    async def put_new(self, record: Record, owner: str) -> None:
        await self._call(
            "put_item",
            Item=_encode(record_item(record, owner, owner, self.name)),
            ConditionExpression="attribute_not_exists(pk)",
        )

    async def update(
        self, origin: str, lease_id: str, owner: str, changes: dict[str, Any], *, only_if: str = ""
    ) -> None:
        """SET ``changes`` on a record we own (``only_if``: a further condition)."""
        names = {f"#{k}": k for k in changes}
        values = {f":{k}": _value(v) for k, v in changes.items()}
        sets = [f"#{k} = :{k}" for k, v in changes.items() if v is not None]
        removes = [f"#{k}" for k, v in changes.items() if v is None]
        expression = ("SET " + ", ".join([*sets, "version = version + :one"])) + (
            " REMOVE " + ", ".join(removes) if removes else ""
        )
        values = {k: v for k, v in values.items() if v is not None}
        values[":me"] = {"S": owner}
        values[":one"] = {"N": "1"}
        await self._call(
            "update_item",
            Key=_key(self.records_pk(origin), lease_id),
            UpdateExpression=expression,
            ConditionExpression="#owner = :me" + (f" AND ({only_if})" if only_if else ""),
            ExpressionAttributeNames={**names, "#owner": "owner"},
            ExpressionAttributeValues=values,
        )

    async def delete(self, origin: str, lease_id: str, owner: str) -> None:
        await self._call(
            "delete_item",
            Key=_key(self.records_pk(origin), lease_id),
            ConditionExpression="#owner = :me",
            ExpressionAttributeNames={"#owner": "owner"},
            ExpressionAttributeValues={":me": {"S": owner}},
        )

    async def records(self, origin: str, owner: str) -> list[tuple[Record, str]]:
        """The records in ``origin``'s partition that ``owner`` owns (consistent)."""
        found: list[tuple[Record, str]] = []
        params: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk",
            "FilterExpression": "#owner = :owner",
            "ExpressionAttributeNames": {"#owner": "owner"},
            "ExpressionAttributeValues": {
                ":pk": {"S": self.records_pk(origin)},
                ":owner": {"S": owner},
            },
            "ConsistentRead": True,
        }
        while True:
            page = await self._call("query", **params)
            found.extend((item_record(_decode(i)), origin) for i in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return found
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def adopt(self, origin: str, lease_id: str, old_owner: str, new_owner: str) -> None:
        """Take one record over: exactly one peer's write succeeds."""
        await self._call(
            "update_item",
            Key=_key(self.records_pk(origin), lease_id),
            UpdateExpression="SET #owner = :new, version = version + :one",
            ConditionExpression="#owner = :old",
            ExpressionAttributeNames={"#owner": "owner"},
            ExpressionAttributeValues={
                ":new": {"S": new_owner},
                ":old": {"S": old_owner},
                ":one": {"N": "1"},
            },
        )

    async def all_records(self, limit: int = 1000) -> list[tuple[Record, str, str]]:
        """(record, owner, origin) of the whole fleet, for `fleet status` (a Scan)."""
        found: list[tuple[Record, str, str]] = []
        params: dict[str, Any] = {
            "FilterExpression": "begins_with(pk, :prefix)",
            "ExpressionAttributeValues": {":prefix": {"S": f"{self.name}#records#"}},
        }
        while len(found) < limit:
            page = await self._call("scan", **params)
            for raw in page.get("Items", []):
                item = _decode(raw)
                found.append((item_record(item), str(item["owner"]), str(item["origin"])))
            if "LastEvaluatedKey" not in page:
                break
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return found[:limit]

    # ------------------------------------------------------------------ agents

    async def register(self, agent_id: str, host: str, pid: int, now: float) -> None:
        """This agent is alive (again): a fresh heartbeat, any old claim cleared."""
        await self._call(
            "update_item",
            Key=_key(self.agents_pk, agent_id),
            UpdateExpression="SET host = :host, pid = :pid, heartbeat = :now, started_at = :now, "
            f"leases = if_not_exists(leases, :zero), {TTL_ATTRIBUTE} = :expires "
            "REMOVE taken_by, taken_at",
            ExpressionAttributeValues={
                ":host": {"S": host},
                ":pid": {"N": str(pid)},
                ":now": {"N": str(_number(now))},
                ":zero": {"N": "0"},
                ":expires": {"N": str(int(now) + KEEP_DEAD_FOR)},
            },
        )

    async def heartbeat(self, agent_id: str, now: float, leases: int) -> None:
        """TakenOver if a peer declared this agent dead and took it over."""
        await self._call(
            "update_item",
            Key=_key(self.agents_pk, agent_id),
            UpdateExpression=f"SET heartbeat = :now, leases = :leases, {TTL_ATTRIBUTE} = :expires",
            ConditionExpression="attribute_exists(pk) AND attribute_not_exists(taken_by)",
            ExpressionAttributeValues={
                ":now": {"N": str(_number(now))},
                ":leases": {"N": str(leases)},
                ":expires": {"N": str(int(now) + KEEP_DEAD_FOR)},
            },
        )

    async def roster(self) -> list[AgentItem]:
        found: list[AgentItem] = []
        params: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": self.agents_pk}},
            "ConsistentRead": True,
        }
        while True:
            page = await self._call("query", **params)
            found.extend(_agent(_decode(i)) for i in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return found
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def claim(self, dead: AgentItem, me: str, now: float) -> None:
        """Declare ``dead`` dead and ours to clean up; TakenOver if another peer was
        first or it heartbeated meanwhile (the heartbeat we judged it by changed)."""
        await self._call(
            "update_item",
            Key=_key(self.agents_pk, dead.agent_id),
            UpdateExpression="SET taken_by = :me, taken_at = :now",
            ConditionExpression="heartbeat = :seen AND attribute_not_exists(taken_by)",
            ExpressionAttributeValues={
                ":me": {"S": me},
                ":now": {"N": str(_number(now))},
                ":seen": {"N": str(_number(dead.heartbeat))},
            },
        )

    async def add_adopted(self, agent_id: str, origins: set[str]) -> None:
        await self._call(
            "update_item",
            Key=_key(self.agents_pk, agent_id),
            UpdateExpression="ADD adopted :origins",
            ExpressionAttributeValues={":origins": {"SS": sorted(origins)}},
        )

    async def adopted(self, agent_id: str) -> set[str]:
        result = await self._call(
            "get_item", Key=_key(self.agents_pk, agent_id), ConsistentRead=True
        )
        item = result.get("Item")
        return set(_decode(item).get("adopted", set())) if item else set()


# ---------------------------------------------------------------------- the table itself


def create_table(client: Any, table: str) -> bool:
    """`fleet init`: on-demand capacity, TTL on ``expires``. Idempotent: False if
    the table was already there. Blocking (the CLI's)."""
    created = True
    try:
        client.create_table(
            TableName=table,
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
    except client.exceptions.ResourceInUseException:
        created = False
    deadline = time.monotonic() + 120
    while client.describe_table(TableName=table)["Table"]["TableStatus"] != "ACTIVE":
        if time.monotonic() > deadline:
            raise Upstream(f"the table {table} did not become ACTIVE in 2 minutes")
        time.sleep(1)
    ttl = client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        client.update_time_to_live(
            TableName=table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )
    return created


# ---------------------------------------------------------------------- encoding


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def _value(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, (int, float, Decimal)):
        return {"N": str(_number(float(value)) if not isinstance(value, int) else value)}
    return {"S": str(value)}


def _encode(item: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in item.items():
        encoded = _value(value)
        if encoded is not None:
            out[key] = encoded
    return out


def _decode(item: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, typed in item.items():
        ((kind, value),) = typed.items()
        if kind == "N":
            out[key] = Decimal(value)
        elif kind == "SS":
            out[key] = set(value)
        elif kind == "BOOL":
            out[key] = bool(value)
        else:
            out[key] = value
    return out


def _agent(item: dict[str, Any]) -> AgentItem:
    taken_at = item.get("taken_at")
    return AgentItem(
        agent_id=str(item["sk"]),
        host=str(item.get("host", "?")),
        pid=int(item.get("pid", 0)),
        heartbeat=float(item.get("heartbeat", 0)),
        started_at=float(item.get("started_at", 0)),
        leases=int(item.get("leases", 0)),
        taken_by=item.get("taken_by"),
        taken_at=float(taken_at) if taken_at is not None else None,
        adopted=frozenset(item.get("adopted", set())),
    )
