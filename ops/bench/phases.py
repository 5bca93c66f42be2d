"""The load generator: each phase runs in a process of its own (see `child_main`) so the generator
never shares a GIL with the orchestrator, and several generator processes can split one phase.

Plain asyncio + aiohttp with keep-alive pools: measured here, httpx costs ~5 ms of client CPU per
request and would be the bottleneck itself; aiohttp costs ~0.5 ms.

Counting rule, shared by every throughput phase: traffic starts as soon as the process is ready
(warm-up: connections opened, server caches filled), but only requests *started* inside the
window [start_at, end_at) count, and the rate is count ÷ (last counted completion - start_at).
Every loop is bounded both by a request count and by the window's end.
"""

from __future__ import annotations

import asyncio
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import orjson

from ops.bench.workload import payload, payload_text, percentile, push_body

JSON_HEADERS = {"Content-Type": "application/json"}
BODY_PREVIEW_CHARS = 600
HANDSHAKE_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 60.0
IDLE_SLEEP_S = 0.005
LATE_PRODUCER_S = 2.0
MAX_LATENCY_POLLS = 1_000_000
BASELINE_BATCHES = 8


@dataclass(frozen=True)
class PhaseSpec:
    """Everything a generator process needs; plain data so it pickles across `spawn`."""

    kind: str
    url: str = ""
    dsn: dict[str, str | int] = field(default_factory=dict)
    queue: str = ""
    partitions: int = 1
    batch: int = 1
    connections: int = 1
    # Task numbering across all generator processes of one phase, so that partition rotation and
    # payload numbering stay even and unique when a phase is split over several processes.
    task_offset: int = 0
    task_stride: int = 1
    max_requests: int = 10_000_000
    total_requests: int = 0
    rate: float = 0.0
    drain_s: float = 10.0
    poll_timeout_ms: int = 5000
    bearer: str = ""  # sent as `Authorization: Bearer` (ops/bench/security.py)


@dataclass(frozen=True)
class Window:
    """Bounds in `time.monotonic()` seconds; CLOCK_MONOTONIC is system-wide on Linux, so the
    parent's values mean the same instant in every generator process."""

    start_at: float
    end_at: float


class RequestFailed(Exception):
    """The first request the server refused or did not answer; the text is what a reader needs to
    see (method, path, status, body) and the phase stops on it."""


@dataclass
class Tally:
    window: Window
    count: int = 0
    requests: int = 0
    last_done: float = 0.0

    def record(self, started: float, done: float, n: int) -> None:
        if self.window.start_at <= started < self.window.end_at:
            self.count += n
            self.requests += 1
            self.last_done = max(self.last_done, done)

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "requests": self.requests, "last_done": self.last_done}


@dataclass
class Answered:
    """HTTP requests of any kind this process had answered inside the window: the server's CPU
    seconds over the window divided by these (summed over the generator processes) is what one
    request costs it, whatever the phase mixes (pushes, pops, empty pops, acks)."""

    window: Window | None = None
    count: int = 0

    def record(self, done: float) -> None:
        if self.window is not None and self.window.start_at <= done < self.window.end_at:
            self.count += 1


_ANSWERED = Answered()


@dataclass
class Timings:
    """Request round trips inside the window, by kind: when a phase is latency-bound rather than
    CPU-bound, these say which request the consumers spend their time waiting on."""

    window: Window
    samples: dict[str, list[float]] = field(default_factory=dict)

    def record(self, kind: str, started: float, done: float) -> None:
        if self.window.start_at <= started < self.window.end_at:
            self.samples.setdefault(kind, []).append(done - started)

    def as_dict(self) -> dict[str, dict[str, float | None]]:
        summary = {}
        for kind, values in self.samples.items():
            ms = sorted(v * 1000 for v in values)
            summary[kind] = {
                "p50": _round(percentile(ms, 50)),
                "p99": _round(percentile(ms, 99)),
                "max": _round(ms[-1]),
            }
        return summary


def child_main(spec: PhaseSpec, conn: Connection) -> None:
    """Entry of a generator process: announce readiness, receive the window, run, report."""
    result: dict[str, Any]
    try:
        conn.send({"ready": True})
        if not conn.poll(HANDSHAKE_TIMEOUT_S):
            return
        window: Window = conn.recv()
        result = asyncio.run(timed_phase(spec, window))
    except RequestFailed as failure:
        result = {"error": str(failure)}
    except Exception as error:
        tail = "".join(traceback.format_exception(error)[-3:]).strip()
        result = {"error": f"generator crashed: {type(error).__name__}: {error}\n{tail}"}
    conn.send(result)


async def timed_phase(spec: PhaseSpec, window: Window) -> dict[str, Any]:
    """Runs the phase and measures this process's CPU over the window, so the report can say
    whether the generator itself was saturated."""
    marks: dict[str, float] = {}
    _ANSWERED.window, _ANSWERED.count = window, 0

    async def sample() -> None:
        await _sleep_until(window.start_at)
        marks["start"] = time.process_time()
        marks["start_wall"] = time.monotonic()
        await _sleep_until(window.end_at)
        marks["end"] = time.process_time()
        marks["end_wall"] = time.monotonic()

    sampler = asyncio.create_task(sample())
    try:
        result = await PHASES[spec.kind](spec, window)
    finally:
        sampler.cancel()
    if "start" in marks and "end" not in marks:
        marks["end"], marks["end_wall"] = time.process_time(), time.monotonic()
    if "start" in marks:
        result["cpu_s"] = marks["end"] - marks["start"]
        result["cpu_wall_s"] = marks["end_wall"] - marks["start_wall"]
    result["http_requests_in_window"] = _ANSWERED.count
    return result


async def _sleep_until(instant: float) -> None:
    delay = instant - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def _all(coros: list[Coroutine[Any, Any, None]]) -> None:
    """Like gather, but the first failure cancels the rest at once instead of letting 31 other
    connections keep hammering a server that already said no."""
    tasks = [asyncio.create_task(c) for c in coros]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    # Reading every exception keeps asyncio from logging the ones not re-raised.
    errors = [error for task in done if (error := task.exception()) is not None]
    if errors:
        raise errors[0]


def _session(
    limit: int, timeout_s: float = REQUEST_TIMEOUT_S, bearer: str = ""
) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit, keepalive_timeout=75)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout_s, connect=5),
        headers={"Authorization": f"Bearer {bearer}"} if bearer else None,
    )


def _path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _failure(method: str, url: str, status: int, raw: bytes, why: str = "") -> RequestFailed:
    body = raw[:BODY_PREVIEW_CHARS].decode(errors="replace")
    more = "…" if len(raw) > BODY_PREVIEW_CHARS else ""
    reason = f" ({why})" if why else ""
    return RequestFailed(f"{method} {_path(url)} -> HTTP {status}{reason}: {body}{more}")


async def _request(
    session: aiohttp.ClientSession, method: str, url: str, body: bytes | None = None
) -> tuple[int, bytes]:
    headers = JSON_HEADERS if body is not None else None
    try:
        async with session.request(method, url, data=body, headers=headers) as response:
            raw = await response.read()
            _ANSWERED.record(time.monotonic())
            return response.status, raw
    except (aiohttp.ClientError, TimeoutError) as error:
        raise RequestFailed(
            f"{method} {_path(url)}: no HTTP answer ({type(error).__name__}: {error})"
        ) from error


def _json(method: str, url: str, status: int, raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise _failure(method, url, status, raw, "body is not JSON") from error


def _queued(url: str, status: int, raw: bytes, expected: int) -> int:
    if not 200 <= status < 300:
        raise _failure("POST", url, status, raw)
    results = _json("POST", url, status, raw)
    if not isinstance(results, list) or len(results) != expected:
        raise _failure("POST", url, status, raw, f"expected a JSON array of {expected} results")
    bad = [r for r in results if not isinstance(r, dict) or r.get("status") != "queued"]
    if bad:
        raise _failure("POST", url, status, raw, f"{len(bad)} item(s) not queued, first {bad[0]}")
    return len(results)


def _messages(url: str, status: int, raw: bytes) -> list[dict[str, Any]]:
    if status == 204:
        return []
    if status != 200:
        raise _failure("GET", url, status, raw)
    body = _json("GET", url, status, raw)
    messages = body.get("messages", []) if isinstance(body, dict) else None
    if not isinstance(messages, list):
        raise _failure("GET", url, status, raw, "no messages array")
    return messages


def _acks(messages: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(
        {
            "acknowledgments": [
                {
                    "transactionId": m.get("transactionId") or m.get("id"),
                    "partitionId": m.get("partitionId"),
                    "leaseId": m.get("leaseId"),
                    "status": "completed",
                }
                for m in messages
            ]
        }
    )


def _acked(url: str, status: int, raw: bytes, expected: int) -> int:
    """Every ack of a batch we hold the lease of must succeed; a refusal would leave the partition
    leased until expiry and silently stall the phase, so it stops the phase instead."""
    if not 200 <= status < 300:
        raise _failure("POST", url, status, raw)
    results = _json("POST", url, status, raw)
    if not isinstance(results, list) or len(results) != expected:
        raise _failure("POST", url, status, raw, f"expected a JSON array of {expected} results")
    bad = [r for r in results if not isinstance(r, dict) or r.get("success") is not True]
    if bad:
        raise _failure("POST", url, status, raw, f"{len(bad)} ack(s) refused, first {bad[0]}")
    return len(results)


async def _baseline(spec: PhaseSpec, window: Window) -> dict[str, Any]:
    """The ceiling: what this PostgreSQL accepts as fast as asyncpg can feed it, same payloads."""
    conns = [await asyncpg.connect(**spec.dsn) for _ in range(spec.connections)]
    try:
        await conns[0].execute("CREATE TABLE IF NOT EXISTS bench_raw (payload jsonb NOT NULL)")
        batches = [
            [payload_text(b * spec.batch + i) for i in range(spec.batch)]
            for b in range(BASELINE_BATCHES)
        ]
        tally = Tally(window)
        sql = "INSERT INTO bench_raw (payload) SELECT * FROM unnest($1::jsonb[])"

        async def insert_loop(conn: asyncpg.Connection, task: int) -> None:
            for j in range(spec.max_requests):
                if time.monotonic() >= window.end_at:
                    return
                rows = batches[(task + j) % len(batches)]
                started = time.monotonic()
                await conn.execute(sql, rows)
                tally.record(started, time.monotonic(), len(rows))

        await _all([insert_loop(c, i) for i, c in enumerate(conns)])
        return tally.as_dict()
    finally:
        for conn in conns:
            await conn.close()


async def _push(spec: PhaseSpec, window: Window) -> dict[str, Any]:
    """Also the prefill of the pop phase: then `total_requests` bounds the work instead of time."""
    tally = Tally(window)
    timings = Timings(window)
    url = f"{spec.url}/api/v1/push"

    async def push_loop(session: aiohttp.ClientSession, task: int) -> None:
        for j in range(spec.max_requests):
            number = task + j * spec.task_stride
            if time.monotonic() >= window.end_at:
                return
            if spec.total_requests and number >= spec.total_requests:
                return
            # Rotating partitions per request spreads every connection over all partitions, so no
            # partition's lock sees more contention than another's.
            partition = f"p{number % spec.partitions}"
            body = push_body(spec.queue, partition, number * spec.batch, spec.batch)
            started = time.monotonic()
            status, raw = await _request(session, "POST", url, body)
            done = time.monotonic()
            tally.record(started, done, _queued(url, status, raw, spec.batch))
            timings.record("push", started, done)

    async with _session(spec.connections, bearer=spec.bearer) as session:
        await _all([push_loop(session, spec.task_offset + i) for i in range(spec.connections)])
    return {**tally.as_dict(), "rtt_ms": timings.as_dict()}


async def _pop_ack(spec: PhaseSpec, window: Window) -> dict[str, Any]:
    tally = Tally(window)
    timings = Timings(window)
    pop_url = f"{spec.url}/api/v1/pop/queue/{spec.queue}?batch={spec.batch}&wait=false"
    ack_url = f"{spec.url}/api/v1/ack/batch"
    empty = Counter[str]()

    acked_total = [0]

    async def consume_loop(session: aiohttp.ClientSession) -> None:
        # An empty pop does not mean "drained": every partition with messages may simply be
        # leased by another consumer at that instant. So consumers keep going until the window
        # ends, and the parent decides "drained" from the total acked against the pre-fill.
        for _ in range(spec.max_requests):
            started = time.monotonic()
            if started >= window.end_at:
                return
            status, raw = await _request(session, "GET", pop_url)
            popped = time.monotonic()
            messages = _messages(pop_url, status, raw)
            if not messages:
                empty["in window" if started >= window.start_at else "in warm-up"] += 1
                timings.record("empty pop", started, popped)
                await asyncio.sleep(IDLE_SLEEP_S)
                continue
            timings.record("pop", started, popped)
            status, raw = await _request(session, "POST", ack_url, _acks(messages))
            done = time.monotonic()
            acked = _acked(ack_url, status, raw, len(messages))
            acked_total[0] += acked
            timings.record("ack", popped, done)
            tally.record(started, done, acked)

    async with _session(spec.connections) as session:
        await _all([consume_loop(session) for _ in range(spec.connections)])
    return {
        **tally.as_dict(),
        "empty_pops": dict(empty),
        "acked_total": acked_total[0],
        "rtt_ms": timings.as_dict(),
    }


async def _latency(spec: PhaseSpec, window: Window) -> dict[str, Any]:
    """A paced producer and one long-polling consumer in one process, both timing with the same
    monotonic clock; a message's latency is pop-answer arrival minus push-request start."""
    push_url = f"{spec.url}/api/v1/push"
    pop_url = (
        f"{spec.url}/api/v1/pop/queue/{spec.queue}"
        f"?batch={spec.batch}&wait=true&timeout={spec.poll_timeout_ms}"
    )
    ack_url = f"{spec.url}/api/v1/ack/batch"
    total = int(spec.rate * (window.end_at - window.start_at))
    sent: dict[int, float] = {}
    accepted: set[int] = set()
    outcomes = Counter[str]()
    first_failure: list[str] = []
    push_rtt: list[float] = []
    deliveries = Counter[int]()
    latencies: list[float] = []
    producer_done = asyncio.Event()
    slots = asyncio.Semaphore(spec.connections)

    async def push_one(session: aiohttp.ClientSession, seq: int) -> None:
        try:
            item = {
                "queue": spec.queue,
                "partition": "p0",
                "payload": payload(seq, seq=seq),
                "transactionId": str(uuid.uuid4()),
            }
            body = orjson.dumps({"items": [item]})
            sent[seq] = started = time.monotonic()
            try:
                status, raw = await _request(session, "POST", push_url, body)
            except RequestFailed as error:
                outcomes["no answer"] += 1
                first_failure.append(str(error))
                return
            if 200 <= status < 300:
                accepted.add(seq)
                push_rtt.append(time.monotonic() - started)
                outcomes["2xx"] += 1
            else:
                outcomes[f"HTTP {status}"] += 1
                first_failure.append(str(_failure("POST", push_url, status, raw)))
        finally:
            slots.release()

    async def produce(session: aiohttp.ClientSession) -> None:
        in_flight: set[asyncio.Task[None]] = set()
        try:
            for seq in range(total):
                await _sleep_until(window.start_at + seq / spec.rate)
                if time.monotonic() > window.end_at + LATE_PRODUCER_S:
                    outcomes["not sent: generator fell behind"] += total - seq
                    break
                await slots.acquire()
                task = asyncio.create_task(push_one(session, seq))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            if in_flight:
                await asyncio.wait(in_flight, timeout=REQUEST_TIMEOUT_S)
        finally:
            producer_done.set()

    async def consume(session: aiohttp.ClientSession) -> None:
        deadline = window.end_at + spec.drain_s
        for _ in range(MAX_LATENCY_POLLS):
            if time.monotonic() >= deadline:
                return
            if producer_done.is_set() and accepted.issubset(deliveries):
                return
            started = time.monotonic()
            status, raw = await _request(session, "GET", pop_url)
            received = time.monotonic()
            messages = _messages(pop_url, status, raw)
            if not messages:
                if received - started < 0.05:
                    await asyncio.sleep(0.01)
                continue
            for message in messages:
                data = message.get("data")
                seq = data.get("seq") if isinstance(data, dict) else None
                if not isinstance(seq, int):
                    continue
                deliveries[seq] += 1
                if deliveries[seq] == 1 and seq in sent:
                    latencies.append(received - sent[seq])
            status, raw = await _request(session, "POST", ack_url, _acks(messages))
            _acked(ack_url, status, raw, len(messages))

    timeout = spec.poll_timeout_ms / 1000 + 10
    async with _session(spec.connections) as producer, _session(1, timeout) as consumer:
        await _all([produce(producer), consume(consumer)])
    if not accepted and first_failure:
        raise RequestFailed(first_failure[0])
    delivered = set(deliveries)
    lat_ms = sorted(x * 1000 for x in latencies)
    rtt_ms = sorted(x * 1000 for x in push_rtt)
    span = window.end_at - window.start_at
    return {
        "planned": total,
        "sent": len(sent),
        "achieved_rate": round(len(sent) / span, 1) if span > 0 else None,
        "pushed_2xx": len(accepted),
        "push_outcomes": dict(outcomes),
        "first_push_failure": first_failure[0] if first_failure else None,
        "delivered": len(delivered),
        "lost": len(accepted - delivered),
        "duplicates": sum(n - 1 for n in deliveries.values() if n > 1),
        "delivered_without_2xx": len(delivered - accepted),
        "p50_ms": _round(percentile(lat_ms, 50)),
        "p90_ms": _round(percentile(lat_ms, 90)),
        "p99_ms": _round(percentile(lat_ms, 99)),
        "max_ms": _round(lat_ms[-1] if lat_ms else None),
        "push_rtt_p50_ms": _round(percentile(rtt_ms, 50)),
        "push_rtt_p99_ms": _round(percentile(rtt_ms, 99)),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


PHASES: dict[str, Callable[[PhaseSpec, Window], Awaitable[dict[str, Any]]]] = {
    "baseline": _baseline,
    "push": _push,
    "pop_ack": _pop_ack,
    "latency": _latency,
}
