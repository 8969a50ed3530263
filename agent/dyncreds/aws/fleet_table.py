"""The fleet's DynamoDB table: every operation the fleet makes on it, and nothing
else (the rules - who owns what, when to take over - are fleet.py's and
journal/dynamodb.py's; the items' schemas are fleetitems.py's).

One table per fleet, two kinds of items (``pk``, ``sk``):

  ``{name}#agents``            / AGENT_ID  an agent's heartbeat: host, pid, token, beat,
                                           heartbeat, skew, leases, taken_by, finished,
                                           adopted, expires (TTL)
  ``{name}#records#{ORIGIN}``  / LEASE_ID  a journal record created by agent ORIGIN:
                                           the Record's fields, owner, version

A record never moves: a takeover changes its ``owner`` (a conditional write on the
old owner and the version it read: the fencing token), and the new owner
remembers the origin partitions it adopted, so that its own successor can find
them. Every write an agent makes to a record is conditional on ``owner`` being
itself: an agent whose records were taken over learns it at its next write.

Every conditional write is re-read when its condition fails, and every item
read is validated: see fleet_records.py, which holds the plumbing and the
record operations; this module adds the roster and ``fleet init``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from dyncreds.aws.fleet_records import KEEP_DEAD_FOR, TTL_ATTRIBUTE, FleetRecords, _key
from dyncreds.fleetitems import AgentConflict, AgentItem, BadItem, agent_item, number, value
from dyncreds.protocol import Upstream

__all__ = ["TTL_ATTRIBUTE", "FleetTable", "create_table"]


class FleetTable(FleetRecords):
    """The table's operations, each one AWS call through the root's session (in a
    worker thread, bounded, mapped errors:
    ``AwsSession.call_client``, i.e. calls.py and errors.py)."""

    # ------------------------------------------------------------------ agents

    async def agent(self, agent_id: str) -> AgentItem | None:
        """One agent's item as it is now (consistent); None if missing or bad."""
        item = await self._get(self.agents_pk, agent_id)
        return self._agent(item)

    def _agent(self, item: dict[str, Any] | None) -> AgentItem | None:
        if item is None:
            return None
        try:
            return agent_item(item)
        except BadItem as exc:
            self._skip(exc)
            return None

    async def _agent_write(
        self, agent_id: str, mine: Callable[[dict[str, Any] | None], bool], **params: Any
    ) -> None:
        done, current = await self._conditional(
            "update_item", self.agents_pk, agent_id, mine, **params
        )
        if not done:
            raise AgentConflict(self._agent(current), missing=current is None)

    async def register(self, me: AgentItem, accept: list[str], now: float) -> None:
        """This agent is alive (again): a new token, any old claim cleared - on
        condition that the item is new, or holds a token in ``accept`` (this state
        dir's earlier runs, or one judged dead). AgentConflict otherwise."""
        tokens = {f":t{i}": {"S": t} for i, t in enumerate(accept)}
        accepted = " OR ".join(f"#token = {name}" for name in tokens)
        await self._agent_write(
            me.agent_id,
            lambda item: item is not None and item.get("token") == me.token,
            UpdateExpression="SET host = :host, pid = :pid, #token = :token, beat = :beat, "
            "heartbeat = :now, started_at = :now, skew = :skew, "
            f"leases = if_not_exists(leases, :zero), {TTL_ATTRIBUTE} = :expires "
            "REMOVE taken_by, taken_at, finished",
            ConditionExpression="attribute_not_exists(pk) OR attribute_not_exists(#token) OR "
            + (accepted + " OR " if accepted else "")
            + "#token = :token",
            ExpressionAttributeNames={"#token": "token"},
            ExpressionAttributeValues={
                ":host": {"S": me.host},
                ":pid": {"N": str(me.pid)},
                ":token": {"S": me.token},
                ":beat": {"N": str(me.beat)},
                ":now": {"N": str(number(now))},
                ":skew": value(me.skew) or {"NULL": True},
                ":zero": {"N": "0"},
                ":expires": {"N": str(int(now) + KEEP_DEAD_FOR)},
                **tokens,
            },
        )

    async def heartbeat(self, me: AgentItem, now: float) -> None:
        """AgentConflict if this agent's item is not its own any more: a peer
        claimed it, another process registered with its id, or it is gone."""
        await self._agent_write(
            me.agent_id,
            lambda item: (
                item is not None
                and item.get("token") == me.token
                and item.get("beat") == me.beat
                and "taken_by" not in item
            ),
            UpdateExpression="SET heartbeat = :now, beat = :beat, leases = :leases, skew = :skew, "
            f"{TTL_ATTRIBUTE} = :expires",
            ConditionExpression="#token = :token AND attribute_not_exists(taken_by)",
            ExpressionAttributeNames={"#token": "token"},
            ExpressionAttributeValues={
                ":now": {"N": str(number(now))},
                ":beat": {"N": str(me.beat)},
                ":token": {"S": me.token},
                ":leases": {"N": str(me.leases)},
                ":skew": value(me.skew) or {"NULL": True},
                ":expires": {"N": str(int(now) + KEEP_DEAD_FOR)},
            },
        )

    async def roster(self) -> list[AgentItem]:
        return await self._query(
            {
                "KeyConditionExpression": "pk = :pk",
                "ExpressionAttributeValues": {":pk": {"S": self.agents_pk}},
                "ConsistentRead": True,
            },
            agent_item,
        )

    async def claim(self, dead: AgentItem, me: str, now: float) -> None:
        """Declare ``dead`` dead and ours to clean up, on condition that its pulse
        is the one we judged it by and nobody claimed it: AgentConflict if another
        peer was first or it heartbeated meanwhile."""
        if dead.token:
            pulse = "#token = :token AND beat = :beat"
            seen = {":token": {"S": dead.token}, ":beat": {"N": str(dead.beat)}}
        else:  # an item written by 0.2: its heartbeat is all that changes
            pulse = "attribute_not_exists(#token) AND heartbeat = :heartbeat"
            seen = {":heartbeat": {"N": str(number(dead.heartbeat))}}
        await self._agent_write(
            dead.agent_id,
            lambda item: item is not None and item.get("taken_by") == me,
            UpdateExpression="SET taken_by = :me, taken_at = :now REMOVE finished",
            ConditionExpression=f"{pulse} AND attribute_not_exists(taken_by)",
            ExpressionAttributeNames={"#token": "token"},
            ExpressionAttributeValues={":me": {"S": me}, ":now": {"N": str(number(now))}, **seen},
        )

    async def inherit(self, claimed: AgentItem, me: str, now: float) -> None:
        """An unfinished takeover whose claimer is dead becomes ours."""
        await self._agent_write(
            claimed.agent_id,
            lambda item: item is not None and item.get("taken_by") == me,
            UpdateExpression="SET taken_by = :me, taken_at = :now",
            ConditionExpression="taken_by = :old AND attribute_not_exists(finished)",
            ExpressionAttributeValues={
                ":me": {"S": me},
                ":old": {"S": str(claimed.taken_by)},
                ":now": {"N": str(number(now))},
            },
        )

    async def finish(self, dead: str, me: str) -> None:
        """Everything ``dead`` owned is adopted: the takeover is finished."""
        await self._agent_write(
            dead,
            lambda item: item is not None and item.get("finished") is True,
            UpdateExpression="SET finished = :yes",
            ConditionExpression="taken_by = :me",
            ExpressionAttributeValues={":me": {"S": me}, ":yes": {"BOOL": True}},
        )

    async def add_adopted(self, agent_id: str, origins: set[str]) -> None:
        await self._call(
            "update_item",
            Key=_key(self.agents_pk, agent_id),
            UpdateExpression="ADD adopted :origins",
            ExpressionAttributeValues={":origins": {"SS": sorted(origins)}},
        )

    async def adopted(self, agent_id: str) -> set[str]:
        item = await self.agent(agent_id)
        return set(item.adopted) if item else set()


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
