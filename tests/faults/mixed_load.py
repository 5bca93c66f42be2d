"""Mixed traffic for the chaos test: producers pushing singly, in batches and through
/transaction, consumers of several groups long-polling and acking singly, in batches and inside
/transaction; every client retries as the official clients do, and remembers what it was told.

Two ledgers make exactly-once per consumer group checkable. The producers' (`Ledger`): a message
is acknowledged when its push answered 2xx, in the order each producer was told so per
partition. The consumers' (`GroupLedger`): every delivery in the order it arrived, and per message
whether an ack of it was confirmed (success), refused, or never answered. Redelivering a message
whose ack went unanswered or was refused is the at-least-once contract; delivering it again after
its ack was confirmed is a duplicate.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from tests.faults.harness import Ledger

QUEUE_MODE = "__QUEUE_MODE__"
# Both official clients: three attempts in all, 1 s then 2 s apart, on 5xx and network errors.
CLIENT_RETRY_WAITS_S = (1.0, 2.0)
REQUEST_TIMEOUT_S = 20.0
POP_WAIT_MS = 2000


@dataclass
class Calls:
    """Every answer (HTTP status, or the transport error's name) per route, retries included."""

    answers: Counter[tuple[str, int | str]] = field(default_factory=Counter)

    def of(self, route: str) -> dict[int | str, int]:
        return {code: n for (r, code), n in self.answers.items() if r == route}

    def count(self, code: int | str) -> int:
        return sum(n for (_, c), n in self.answers.items() if c == code)

    def by_route(self) -> dict[str, dict[int | str, int]]:
        return {route: self.of(route) for route in sorted({r for r, _ in self.answers})}


async def call(
    client: httpx.AsyncClient,
    calls: Calls,
    route: str,
    method: str,
    path: str,
    **kwargs: Any,
) -> httpx.Response | None:
    """One request as an official client makes it: retried on 5xx and transport errors; the
    last answer, or None when the last attempt got no answer at all."""
    response: httpx.Response | None = None
    for wait_s in (*CLIENT_RETRY_WAITS_S, None):
        try:
            response = await client.request(method, path, **kwargs)
        except httpx.TransportError as error:
            calls.answers[(route, type(error).__name__)] += 1
            response = None
        else:
            calls.answers[(route, response.status_code)] += 1
            if response.status_code < 500:
                return response
        if wait_s is None:
            return response
        await trio.sleep(wait_s)  # the clients' retry pacing
    return response


@dataclass
class Production:
    """The producers' side: the shared `Ledger`, and per (producer, partition) the
    transactionIds in the order their pushes were acknowledged."""

    ledger: Ledger = field(default_factory=Ledger)
    in_order: dict[tuple[int, str], list[str]] = field(default_factory=dict)
    told: Counter[str] = field(default_factory=Counter)  # item status -> messages so answered

    def acknowledged(
        self, producer: int, partition: str, txids: list[str], statuses: list[str]
    ) -> None:
        for txid, status in zip(txids, statuses, strict=True):
            self.ledger.acknowledged[txid] = status
        self.told.update(statuses)
        self.in_order.setdefault((producer, partition), []).extend(txids)


@dataclass
class GroupLedger:
    """One consumer group's side: deliveries in arrival order (a sequence number shared by all
    groups of the run) and what became of each ack."""

    name: str
    deliveries: list[tuple[int, str, str]] = field(default_factory=list)  # (seq, partition, txid)
    confirmed: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    unanswered: Counter[str] = field(default_factory=Counter)
    after_confirmed: list[str] = field(default_factory=list)

    @property
    def params(self) -> dict[str, str]:
        return {} if self.name == QUEUE_MODE else {"consumerGroup": self.name}

    @property
    def ack_group(self) -> str | None:
        return None if self.name == QUEUE_MODE else self.name

    def delivered(self) -> set[str]:
        return {txid for _, _, txid in self.deliveries}

    def first_seen(self) -> dict[str, int]:
        first: dict[str, int] = {}
        for seq, _, txid in self.deliveries:
            first.setdefault(txid, seq)
        return first

    def receive(self, seq: int, message: dict[str, Any]) -> None:
        txid = message["transactionId"]
        if self.confirmed[txid]:
            self.after_confirmed.append(txid)
        self.deliveries.append((seq, message["partition"], txid))

    def settle(self, txids: list[str], outcome: bool | None) -> None:
        """True: the server confirmed the ack; False: it refused it; None: no answer."""
        target = {True: self.confirmed, False: self.refused, None: self.unanswered}[outcome]
        target.update(txids)

    def figures(self) -> dict[str, int]:
        per_txid = Counter(txid for _, _, txid in self.deliveries)
        return {
            "deliveries": len(self.deliveries),
            "distinct": len(per_txid),
            "redelivered": sum(n - 1 for n in per_txid.values()),
            "acks_confirmed": sum(self.confirmed.values()),
            "acks_refused": sum(self.refused.values()),
            "acks_unanswered": sum(self.unanswered.values()),
            "confirmed_twice": sum(n > 1 for n in self.confirmed.values()),
            "after_confirmed": len(self.after_confirmed),
        }


@dataclass
class MixedLoad:
    """The clients of one run against one queue, sharing their ledgers and a stop signal each
    for producers and consumers (consumers go on until the backlog is drained)."""

    url: str
    queue: str
    groups: list[GroupLedger]
    partitions: int = 4
    pace_s: float = 0.05
    production: Production = field(default_factory=Production)
    calls: Calls = field(default_factory=Calls)
    stop_producing: trio.Event = field(default_factory=trio.Event)
    stop_consuming: trio.Event = field(default_factory=trio.Event)
    _arrivals: itertools.count[int] = field(default_factory=itertools.count)

    def client(self, timeout_s: float = REQUEST_TIMEOUT_S) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=timeout_s)

    # Producers ----------------------------------------------------------------------------------
    async def producer(self, index: int, style: str, batch: int) -> None:
        """Push `batch` messages per request (`style` "push" or "transaction") until stopped;
        transactionIds `<style>-<index>-<n>-<k>`, partitions taken in turn."""
        ledger = self.production.ledger
        async with self.client() as client:
            for n in itertools.count():
                if self.stop_producing.is_set():
                    return
                partition = f"p{(index + n) % self.partitions}"
                txids = [f"{style}{index}-{n}-{k}" for k in range(batch)]
                ledger.attempted.update(txids)
                items = [
                    {
                        "queue": self.queue,
                        "partition": partition,
                        "transactionId": t,
                        "payload": {"tx": t},
                    }
                    for t in txids
                ]
                if style == "push":
                    statuses = await self._push(client, items)
                else:
                    statuses = await self._push_in_transaction(client, items)
                if statuses is None:
                    ledger.failed.update(txids)
                else:
                    self.production.acknowledged(index, partition, txids, statuses)
                await trio.sleep(self.pace_s)  # the load's rate

    async def _push(
        self, client: httpx.AsyncClient, items: list[dict[str, Any]]
    ) -> list[str] | None:
        response = await call(
            client, self.calls, "push", "POST", "/api/v1/push", json={"items": items}
        )
        if response is None or not response.is_success:
            return None
        return [result["status"] for result in response.json()]

    async def _push_in_transaction(
        self, client: httpx.AsyncClient, items: list[dict[str, Any]]
    ) -> list[str] | None:
        body = {"operations": [{"type": "push", "items": items}]}
        response = await call(
            client, self.calls, "transaction", "POST", "/api/v1/transaction", json=body
        )
        if response is None or response.status_code != 200 or not response.json().get("success"):
            return None
        return ["transaction"] * len(items)

    # Consumers ----------------------------------------------------------------------------------
    async def consumer(self, group: GroupLedger, ack_style: str, batch: int = 4) -> None:
        """Long-poll `group` and ack everything received as completed, in `ack_style` ("single",
        "batch" or "transaction"), until stopped."""
        params = {"batch": str(batch), "wait": "true", "timeout": str(POP_WAIT_MS), **group.params}
        path = f"/api/v1/pop/queue/{self.queue}"
        async with self.client(REQUEST_TIMEOUT_S + POP_WAIT_MS / 1000) as client:
            while not self.stop_consuming.is_set():
                response = await call(client, self.calls, "pop", "GET", path, params=params)
                if response is None or response.status_code != 200:
                    continue
                messages = response.json()["messages"]
                for message in messages:
                    group.receive(next(self._arrivals), message)
                if ack_style == "single":
                    for message in messages:
                        await self._ack_one(client, group, message)
                elif ack_style == "batch":
                    await self._ack_batch(client, group, messages)
                else:
                    await self._ack_in_transaction(client, group, messages)

    async def _ack_one(
        self, client: httpx.AsyncClient, group: GroupLedger, message: dict[str, Any]
    ) -> None:
        body = {**_ack(message), "consumerGroup": group.ack_group}
        response = await call(client, self.calls, "ack", "POST", "/api/v1/ack", json=body)
        group.settle([message["transactionId"]], _item_outcomes(response, 1)[0])

    async def _ack_batch(
        self, client: httpx.AsyncClient, group: GroupLedger, messages: list[dict[str, Any]]
    ) -> None:
        body = {"acknowledgments": [_ack(m) for m in messages], "consumerGroup": group.ack_group}
        response = await call(
            client, self.calls, "ack/batch", "POST", "/api/v1/ack/batch", json=body
        )
        for message, outcome in zip(messages, _item_outcomes(response, len(messages)), strict=True):
            group.settle([message["transactionId"]], outcome)

    async def _ack_in_transaction(
        self, client: httpx.AsyncClient, group: GroupLedger, messages: list[dict[str, Any]]
    ) -> None:
        """As the official clients do: no leaseId on the ack operations (so a retry after a lost
        answer is not refused), the leases listed in requiredLeases."""
        operations = [
            {
                "type": "ack",
                "transactionId": m["transactionId"],
                "partitionId": m["partitionId"],
                "status": "completed",
                "consumerGroup": group.ack_group,
            }
            for m in messages
        ]
        body = {
            "operations": operations,
            "requiredLeases": sorted({m["leaseId"] for m in messages}),
        }
        response = await call(
            client, self.calls, "transaction", "POST", "/api/v1/transaction", json=body
        )
        outcome = None
        if response is not None and response.status_code == 200:
            outcome = bool(response.json().get("success"))
        group.settle([m["transactionId"] for m in messages], outcome)


def _ack(message: dict[str, Any]) -> dict[str, Any]:
    return {
        "transactionId": message["transactionId"],
        "partitionId": message["partitionId"],
        "leaseId": message["leaseId"],
        "status": "completed",
    }


def _item_outcomes(response: httpx.Response | None, count: int) -> list[bool | None]:
    if response is None or response.status_code != 200:
        return [None] * count
    return [bool(result.get("success")) for result in response.json()]


def missing_or_strange(production: Production, group: GroupLedger) -> dict[str, list[str]]:
    """What breaks exactly-once for one group: acknowledged messages it never got, messages no
    producer sent, and messages delivered again after their ack was confirmed."""
    delivered = group.delivered()
    return {
        "missing": sorted(set(production.ledger.acknowledged) - delivered),
        "strangers": sorted(delivered - production.ledger.attempted),
        "after_confirmed": group.after_confirmed,
    }


def order_breaks(production: Production, group: GroupLedger) -> tuple[list[str], int]:
    """Per (producer, partition), first deliveries against acknowledgment order.

    Returns the pairs out of order among messages that reached PostgreSQL directly (commit order
    is delivery order, so none may be), and the count of out-of-order neighbours once buffered
    messages are included: a buffered push replays after the database is back, so a later push
    of the same producer that went straight in may be delivered before it."""
    first = group.first_seen()
    statuses = production.ledger.acknowledged
    direct_breaks: list[str] = []
    with_buffered = 0
    for (producer, partition), txids in production.in_order.items():
        seen = [t for t in txids if t in first]
        with_buffered += sum(first[b] < first[a] for a, b in itertools.pairwise(seen))
        direct = [t for t in seen if statuses[t] != "buffered"]
        direct_breaks += [
            f"{producer}/{partition}: {b} before {a}"
            for a, b in itertools.pairwise(direct)
            if first[b] < first[a]
        ]
    return direct_breaks, with_buffered
