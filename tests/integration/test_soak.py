"""Soak: 20,000 messages over 20 partitions, pushed while three consumer groups and queue mode
consume them at once (two competing consumers each, batches of 100, batch acks, a server with two
worker processes), with random failed batches, one poison message per partition and a toxic batch
in every fifth partition. Every group must end with every message either completed exactly once
or dead-lettered, and the DLQ must hold exactly the messages whose retries ran out.

What "exactly once after retries" means here (spec §3.5): a `failed` ack with retries left does
not move the cursor, releases the lease and adds one to the (partition, group) retry counter, so
everything after the cursor comes back, and the rest of the failed request is refused ("Invalid or
expired lease"). The counter belongs to the partition, not to a message: it grows with each failed
batch and is reset only when a batch is finished (all completed, or finished through the DLQ path
once the counter has reached retryLimit). The consumer therefore mirrors that counter per
(group, partition). It only changes it while it holds the partition's lease, before sending its
acks, so no other consumer can act on the partition in between. From the mirror it predicts,
for every ack it sends, whether the server applies it, refuses it, or dead-letters the message.
A completion is counted only when the server says it applied it. The test then compares three
things: the predictions, the server's per-item answers, and the DLQ the server lists.

A poison message sits at a fixed index of each partition and always fails. Its batch acks the
messages before it as completed, nacks it, and acks the ones after it as completed: those are
refused while retries remain (the nack released the lease) and applied once the poison is
dead-lettered. Random failures (NACK_RATE of the batches) and any batch holding a toxic message
nack the whole batch; when the counter is already at the limit, the whole batch is dead-lettered.
Which messages share that batch depends on where earlier failures left the cursor: only the
mirrored counter, not a per-message nack count, predicts it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from queen.storage.pgcluster import PgCluster
from tests.integration.api import unique
from tests.support import ServerProcess, run_sql, running_server

PARTITIONS = 20
PER_PARTITION = 1000
TOTAL = PARTITIONS * PER_PARTITION
GROUPS: tuple[str | None, ...] = ("billing", "audit", "search", None)  # None: queue mode
CONSUMERS_PER_GROUP = 2
BATCH = 100
RETRY_LIMIT = 2
NACK_RATE = 0.02  # share of batch deliveries whose handler fails as a whole
POISON_INDEX = 500  # the message of each partition whose handler always fails
TOXIC_INDEX = 800  # in every fifth partition: a batch holding it fails as a whole, always
PUSH_CHUNK = 250
PRODUCERS = 4
LEASE_SECONDS = 300  # far beyond the run: no lease may expire mid-batch
DEADLINE_S = 200
REFUSED = "Invalid or expired lease"
WORKERS = 2  # competing consumers of one group land in different server processes

Expected = tuple[bool, bool, str | None]  # (success, dlq, error) of one ack result


@pytest.fixture(scope="module")
def server(pg_cluster: PgCluster, database: str) -> Iterator[ServerProcess]:
    with running_server(pg_cluster, database, NUM_WORKERS=str(WORKERS)) as process:
        yield process


def message_id(partition: int, index: int) -> int:
    return partition * PER_PARTITION + index


def is_poison(payload_id: int) -> bool:
    return payload_id % PER_PARTITION == POISON_INDEX


def is_toxic(payload_id: int) -> bool:
    partition, index = divmod(payload_id, PER_PARTITION)
    return index == TOXIC_INDEX and partition % 5 == 0


def group_label(group: str | None) -> str:
    return group or "__QUEUE_MODE__"


@dataclass
class GroupLedger:
    """Everything one group's consumers saw and were told."""

    group: str | None
    deliveries: Counter[int] = field(default_factory=Counter)
    completed: Counter[int] = field(default_factory=Counter)  # applied `completed` acks
    dead: Counter[int] = field(default_factory=Counter)  # applied acks answered `dlq: true`
    expected_dead: set[int] = field(default_factory=set)
    last_error: dict[int, str] = field(default_factory=dict)  # error text of the last nack
    retry_count: dict[str, int] = field(default_factory=dict)  # partitionId -> server's counter
    pops: int = 0
    failed_batches: int = 0
    refused: int = 0
    mismatches: list[str] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def settled(self) -> int:
        return len(self.completed.keys() | self.dead.keys())

    def figures(self) -> dict[str, int]:
        return {
            "completed": len(self.completed),
            "dead_lettered": len(self.dead),
            "deliveries": sum(self.deliveries.values()),
            "redeliveries": sum(self.deliveries.values()) - len(self.deliveries),
            "duplicates": sum(1 for count in self.completed.values() if count > 1),
            "failed_batches": self.failed_batches,
            "refused_acks": self.refused,
            "pops": self.pops,
        }


class Soak:
    def __init__(self, url: str, queue: str, seed: int) -> None:
        self.url = url
        self.queue = queue
        self.rng = random.Random(seed)
        self.ledgers = [GroupLedger(group) for group in GROUPS]
        self.pushed: Counter[int] = Counter()
        self.push_errors: list[str] = []

    async def request(
        self, session: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
    ) -> tuple[int, Any]:
        async with session.request(method, self.url + path, **kwargs) as response:
            body = await response.read()
            return response.status, json.loads(body) if body else None

    async def produce(self, session: aiohttp.ClientSession, chunks: asyncio.Queue[int]) -> None:
        """Pushes of PUSH_CHUNK messages to one partition each, in partition order."""
        while not chunks.empty():
            chunk = chunks.get_nowait()
            partition, start = divmod(chunk * PUSH_CHUNK, PER_PARTITION)
            ids = [message_id(partition, start + i) for i in range(PUSH_CHUNK)]
            items = [
                {
                    "queue": self.queue,
                    "partition": f"p{partition:02d}",
                    "transactionId": f"soak-{payload_id}",
                    "payload": {"id": payload_id},
                }
                for payload_id in ids
            ]
            status, body = await self.request(
                session, "POST", "/api/v1/push", json={"items": items}
            )
            statuses = {item.get("status") for item in body} if status == 201 else set()
            if statuses != {"queued"}:
                self.push_errors.append(f"chunk {chunk}: HTTP {status}, {str(body)[:300]}")
            else:
                self.pushed.update(ids)

    async def consume(self, session: aiohttp.ClientSession, ledger: GroupLedger) -> None:
        params = {"batch": str(BATCH), "wait": "true", "timeout": "1000"}
        if ledger.group:
            params["consumerGroup"] = ledger.group
        while not ledger.done.is_set():
            status, body = await self.request(
                session, "GET", f"/api/v1/pop/queue/{self.queue}", params=params
            )
            if status == 204:
                continue
            assert status == 200 and body["messages"], (status, body)
            ledger.pops += 1
            by_partition: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for message in body["messages"]:
                by_partition[message["partitionId"]].append(message)
            for partition_id, batch in by_partition.items():
                await self.handle(session, ledger, partition_id, batch)
            if ledger.settled() >= TOTAL:
                ledger.done.set()

    def plan(
        self, ledger: GroupLedger, partition_id: str, ids: list[int]
    ) -> tuple[list[str], list[str | None], list[Expected]]:
        """The statuses and errors to send for one partition's batch, and the answer the server
        must give to each, from the mirrored retry counter (updated here, under the lease)."""
        count = len(ids)
        poison_at = next((j for j, i in enumerate(ids) if is_poison(i)), None)
        if poison_at is not None:
            statuses = ["completed"] * count
            statuses[poison_at] = "failed"
        elif any(is_toxic(i) for i in ids) or self.rng.random() < NACK_RATE:
            statuses = ["failed"] * count
        else:
            statuses = ["completed"] * count
        errors: list[str | None] = [
            (f"poison {i}" if is_poison(i) else f"batch failed at {ids[0]}")
            if s == "failed"
            else None
            for i, s in zip(ids, statuses, strict=True)
        ]
        retries = ledger.retry_count.get(partition_id, 0)
        if "failed" not in statuses:
            expected: list[Expected] = [(True, False, None)] * count
            ledger.retry_count[partition_id] = 0
        elif retries < RETRY_LIMIT:
            # The first failed item releases the lease: the ones after it are refused.
            first = statuses.index("failed")
            expected = [(True, False, None)] * (first + 1) + [(False, False, REFUSED)] * (
                count - first - 1
            )
            ledger.retry_count[partition_id] = retries + 1
            ledger.failed_batches += 1
        else:
            expected = [(True, s == "failed", None) for s in statuses]
            ledger.retry_count[partition_id] = 0
            ledger.failed_batches += 1
        return statuses, errors, expected

    async def handle(
        self,
        session: aiohttp.ClientSession,
        ledger: GroupLedger,
        partition_id: str,
        batch: list[dict[str, Any]],
    ) -> None:
        ids = [message["data"]["id"] for message in batch]
        ledger.deliveries.update(ids)
        statuses, errors, expected = self.plan(ledger, partition_id, ids)
        acks = [
            {
                "transactionId": message["transactionId"],
                "partitionId": partition_id,
                "leaseId": message["leaseId"],
                "status": status,
                "error": error,
            }
            for message, status, error in zip(batch, statuses, errors, strict=True)
        ]
        status, results = await self.request(
            session,
            "POST",
            "/api/v1/ack/batch",
            json={"acknowledgments": acks, "consumerGroup": ledger.group},
        )
        assert status == 200 and len(results) == len(acks), (status, results)
        for payload_id, sent, error, wanted, result in zip(
            ids, statuses, errors, expected, results, strict=True
        ):
            got = (result["success"], result["dlq"], result["error"])
            if got != wanted:
                ledger.mismatches.append(
                    f"{group_label(ledger.group)} id {payload_id} {sent}: got {got}, "
                    f"expected {wanted}"
                )
            if not result["success"]:
                ledger.refused += 1
            elif result["dlq"]:
                ledger.dead[payload_id] += 1
            elif sent == "completed":
                ledger.completed[payload_id] += 1
            if wanted[1]:
                ledger.expected_dead.add(payload_id)
            if error is not None and result["success"]:
                ledger.last_error[payload_id] = error

    async def dead_letters(
        self, session: aiohttp.ClientSession, group: str | None
    ) -> list[dict[str, Any]]:
        """The group's DLQ as the server lists it, every page."""
        listed: list[dict[str, Any]] = []
        while True:
            params = {
                "queue": self.queue,
                "consumerGroup": group_label(group),
                "limit": "1000",
                "offset": str(len(listed)),
            }
            status, page = await self.request(session, "GET", "/api/v1/dlq", params=params)
            assert status == 200, page
            listed.extend(page["messages"])
            if len(listed) >= page["total"] or not page["messages"]:
                return listed

    async def leftovers(self, session: aiohttp.ClientSession, group: str | None) -> int:
        params = {"batch": "1000", "wait": "false"}
        if group:
            params["consumerGroup"] = group
        status, body = await self.request(
            session, "GET", f"/api/v1/pop/queue/{self.queue}", params=params
        )
        return 0 if status == 204 else len(body["messages"])

    async def run(self) -> dict[str, Any]:
        connector = aiohttp.TCPConnector(limit=PRODUCERS + len(GROUPS) * CONSUMERS_PER_GROUP + 4)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            options = {"retryLimit": RETRY_LIMIT, "leaseTime": LEASE_SECONDS}
            status, body = await self.request(
                session, "POST", "/api/v1/configure", json={"queue": self.queue, "options": options}
            )
            assert status == 200, body
            chunks: asyncio.Queue[int] = asyncio.Queue()
            for chunk in range(TOTAL // PUSH_CHUNK):
                chunks.put_nowait(chunk)
            started = time.monotonic()
            tasks: list[Awaitable[None]] = [self.produce(session, chunks) for _ in range(PRODUCERS)]
            tasks += [
                self.consume(session, ledger)
                for ledger in self.ledgers
                for _ in range(CONSUMERS_PER_GROUP)
            ]
            timed_out = False
            try:
                await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE_S)
            except TimeoutError:
                timed_out = True
            elapsed = time.monotonic() - started
            listed = {
                ledger.group: await self.dead_letters(session, ledger.group)
                for ledger in self.ledgers
            }
            left = {
                ledger.group: await self.leftovers(session, ledger.group) for ledger in self.ledgers
            }
        return {"elapsed_s": elapsed, "timed_out": timed_out, "dlq": listed, "left": left}


def in_asyncio_thread(main: Callable[[], Awaitable[Any]]) -> Any:
    """aiohttp needs asyncio; a plain selector loop in a thread of its own, because trio_asyncio
    (imported by other test modules) makes the default policy's loops trio-bound."""

    def target() -> Any:
        loop = asyncio.SelectorEventLoop()
        try:
            return loop.run_until_complete(main())
        finally:
            loop.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(target).result()


@pytest.mark.timeout(300)
def test_soak_every_group_completes_every_message_once_and_dead_letters_exactly_the_exhausted(
    server: ServerProcess, pg_cluster: PgCluster, database: str
) -> None:
    seed = random.randrange(2**32)
    soak = Soak(server.url, unique("soak"), seed)
    outcome = in_asyncio_thread(soak.run)

    figures = {
        "seed": seed,
        "pushed": len(soak.pushed),
        "elapsed_s": round(outcome["elapsed_s"], 1),
        "groups": {group_label(ledger.group): ledger.figures() for ledger in soak.ledgers},
    }
    print("soak figures:", json.dumps(figures))

    assert outcome["timed_out"] is False, f"not settled within {DEADLINE_S}s"
    assert soak.push_errors == [], soak.push_errors[:5]
    everything = {message_id(p, i) for p in range(PARTITIONS) for i in range(PER_PARTITION)}
    assert set(soak.pushed) == everything and max(soak.pushed.values()) == 1
    stored = run_sql(
        pg_cluster,
        "SELECT count(*) AS n FROM queen.messages m JOIN queen.partitions p "
        "ON p.id = m.partition_id JOIN queen.queues q ON q.id = p.queue_id WHERE q.name = $1",
        soak.queue,
        database=database,
    )
    assert stored[0]["n"] == TOTAL, "nothing lost, nothing stored twice"
    poison = {i for i in everything if is_poison(i)}
    toxic = {i for i in everything if is_toxic(i)}

    for ledger in soak.ledgers:
        label = group_label(ledger.group)
        assert ledger.mismatches == [], (label, len(ledger.mismatches), ledger.mismatches[:10])
        duplicates = sorted(i for i, count in ledger.completed.items() if count > 1)
        assert duplicates == [], f"{label}: completed twice: {duplicates[:20]}"
        assert max(ledger.dead.values(), default=1) == 1, f"{label}: dead-lettered twice"
        completed, dead = set(ledger.completed), set(ledger.dead)
        assert not completed & dead, f"{label}: both completed and dead: {sorted(completed & dead)}"
        missing = everything - completed - dead
        assert not missing, f"{label}: never settled: {sorted(missing)[:20]}"
        assert dead == ledger.expected_dead, f"{label}: dead-lettered other than predicted"
        assert poison | toxic <= dead, f"{label}: a message that always fails was not dead-lettered"
        assert set(ledger.deliveries) == everything

        listed = outcome["dlq"][ledger.group]
        assert sorted(m["data"]["id"] for m in listed) == sorted(dead), f"{label}: DLQ listing"
        for row in listed:
            payload_id = row["data"]["id"]
            assert row["consumerGroup"] == label
            assert row["errorMessage"] == ledger.last_error[payload_id], row
            assert row["retryCount"] == RETRY_LIMIT, row
        assert outcome["left"][ledger.group] == 0, f"{label}: messages left after the soak"
