"""Streaming pipelines written with queen-mq 0.15.0's Stream SDK, against a live server.

Scenarios (args["scenario"]):
* "windows": windowed reduce (args["window"]: tumbling, session or cron) in event time over
  `partitions` partitions; every message carries its partition, window and value, and the last
  one of each partition (ts far ahead) closes every earlier window. The sink is drained by a
  consumer group until `expected` results arrived; returns them with the runner's metrics.
* "restart": a stateless map to a sink; the runner is stopped once half the source is done and
  a new one resumes; returns the source index of every sink message.
* "shape": a query registered, then re-run with another operator chain, without and with reset.
* "throughput": `count` messages over `partitions` partitions, one tumbling sum per partition,
  max_partitions=8; returns results, metrics and the seconds the runner took.
"""

from __future__ import annotations

import time
from typing import Any

from compat_runtime import run, server_url, wait_until

from queen import Queen, Stream

CLOSER_TS = 10_000_000  # event time (ms) of each partition's last message: closes every window


def event_time(message: dict[str, Any]) -> int:
    return int(message["data"]["ts"])


def windowed(stream: Stream, window: str) -> Stream:
    if window == "tumbling":
        return stream.window_tumbling(seconds=10, event_time=event_time, idle_flush_ms=0)
    if window == "session":
        return stream.window_session(gap=5, event_time=event_time, idle_flush_ms=0)
    return stream.window_cron(every="minute", event_time=event_time, idle_flush_ms=0)


def count_and_sum(acc: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    return {
        "partition": value["p"],
        "window": value["w"],
        "count": acc["count"] + 1,
        "sum": acc["sum"] + value["v"],
    }


async def push_source(client: Queen, queue: str, messages: dict[str, list[dict[str, Any]]]) -> None:
    await client.queue(queue).config({"leaseTime": 5}).create()
    for partition, payloads in messages.items():
        await client.queue(queue).partition(partition).push([{"data": p} for p in payloads])


async def drain(client: Queen, sink: str, group: str, expected: int, deadline_s: float) -> list:
    """Sink messages popped (and acked) by a consumer group until `expected` or the deadline."""
    got: list[dict[str, Any]] = []
    consumer = client.queue(sink).group(group).batch(500).wait(True).timeout_millis(500)

    async def more() -> bool:
        popped = await consumer.pop()
        if popped:
            await client.ack(popped, True, {"group": group})
        got.extend({"partition": m["partition"], "data": m["data"]} for m in popped or [])
        return len(got) >= expected

    await wait_until(more, deadline_s, every_s=0)
    return got


async def windows(client: Queen, args: dict[str, Any]) -> Any:
    source, sink, partitions = args["queue"], args["sink"], args["partitions"]
    messages = {
        f"p{p}": [*_window_messages(args["window"], p), _closer(p)] for p in range(partitions)
    }
    await push_source(client, source, messages)
    pipeline = windowed(Stream.from_(client.queue(source)), args["window"]).reduce(
        count_and_sum, {"count": 0, "sum": 0}
    )
    runner = await pipeline.to(client.queue(sink)).run(
        query_id=args["query"],
        url=server_url(),
        max_partitions=args.get("max_partitions", 4),
        max_wait_millis=500,
    )
    started = time.monotonic()
    results = await drain(client, sink, f"{args['query']}.drain", args["expected"], 60)
    elapsed = time.monotonic() - started
    await runner.stop()
    return {"results": results, "metrics": _metrics(runner), "elapsed_s": elapsed}


def _window_messages(window: str, p: int) -> list[dict[str, Any]]:
    """Window w of partition p holds w + 2 messages with values p*100 + i."""
    span = {"tumbling": 10_000, "session": 30_000, "cron": 60_000}[window]
    return [
        {"p": f"p{p}", "w": w, "v": p * 100 + i, "ts": w * span + i * 1000}
        for w in range(2)
        for i in range(w + 2)
    ]


def _closer(p: int) -> dict[str, Any]:
    return {"p": f"p{p}", "w": -1, "v": 0, "ts": CLOSER_TS}


async def throughput(client: Queen, args: dict[str, Any]) -> Any:
    source, sink, partitions, count = args["queue"], args["sink"], args["partitions"], args["count"]
    per_partition = count // partitions
    messages = {
        f"p{p}": [
            *({"p": f"p{p}", "w": 0, "v": i, "ts": i} for i in range(per_partition - 1)),
            _closer(p),
        ]
        for p in range(partitions)
    }
    await push_source(client, source, messages)
    pipeline = windowed(Stream.from_(client.queue(source)), "tumbling").reduce(
        count_and_sum, {"count": 0, "sum": 0}
    )
    started = time.monotonic()
    runner = await pipeline.to(client.queue(sink)).run(
        query_id=args["query"], url=server_url(), max_partitions=8, max_wait_millis=500
    )
    results = await drain(client, sink, f"{args['query']}.drain", partitions, 120)
    done = await wait_until(lambda: _settled(runner, count), 30)
    elapsed = time.monotonic() - started
    await runner.stop()
    return {"results": results, "metrics": _metrics(runner), "elapsed_s": elapsed, "settled": done}


async def _settled(runner: Any, count: int) -> bool:
    return bool(runner.metrics()["messagesTotal"] >= count)


async def restart(client: Queen, args: dict[str, Any]) -> Any:
    source, sink, count, partitions = args["queue"], args["sink"], args["count"], args["partitions"]
    messages = {f"p{p}": [{"i": i} for i in range(p, count, partitions)] for p in range(partitions)}
    await push_source(client, source, messages)
    to_sink = Stream.from_(client.queue(source)).map(lambda m: {"i": m["data"]["i"]})
    pipeline = to_sink.to(client.queue(sink))
    options = {"query_id": args["query"], "url": server_url(), "batch_size": 5}
    first = await pipeline.run(**options, max_partitions=2, max_wait_millis=500)

    async def half_done() -> bool:
        return bool(first.metrics()["messagesTotal"] >= count // 2)

    await wait_until(half_done, 60, every_s=0.002)
    await first.stop()  # mid-stream: the rest of its last pop stays leased until expiry
    second = await pipeline.run(**options, max_partitions=2, max_wait_millis=500)
    drained = await drain(client, sink, f"{args['query']}.drain", count, 60)
    await second.stop()
    return {
        "indexes": [m["data"]["i"] for m in drained],
        "first_runner": first.metrics()["messagesTotal"],
        "errors": first.metrics()["errorsTotal"] + second.metrics()["errorsTotal"],
    }


async def shape(client: Queen, args: dict[str, Any]) -> Any:
    source = args["queue"]
    await client.queue(source).create()
    first = Stream.from_(client.queue(source)).map(lambda v: v)
    second = first.filter(lambda v: True)
    outcome: dict[str, Any] = {}
    runner = await first.run(query_id=args["query"], url=server_url(), max_wait_millis=100)
    await runner.stop()
    try:
        runner = await second.run(query_id=args["query"], url=server_url(), max_wait_millis=100)
        await runner.stop()
        outcome["changed"] = "accepted"
    except Exception as error:  # the SDK's own exception type is what the test checks
        outcome["changed"] = {"type": type(error).__name__, "message": str(error)}
    runner = await second.run(
        query_id=args["query"], url=server_url(), max_wait_millis=100, reset=True
    )
    await runner.stop()
    outcome["reset"] = "accepted"
    return outcome


def _metrics(runner: Any) -> dict[str, Any]:
    return {k: v for k, v in runner.metrics().items() if isinstance(v, int)}


SCENARIOS = {"windows": windows, "throughput": throughput, "restart": restart, "shape": shape}


async def main(client: Queen, args: dict[str, Any]) -> Any:
    return await SCENARIOS[args["scenario"]](client, args)


run(main)
