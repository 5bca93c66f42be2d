"""Queue semantics told through the official client's public API (issue #5): consumer groups,
subscription modes, seeks, retries and the DLQ, delayed delivery, the window buffer, priority in
namespace/task pops, traces, and maintenance mode.

`args["story"]` names the story; each returns what it observed and the test asserts on it. Both
clients run the same code: handlers take a dict or a list (2.6 passes lists unless `batch(1)`),
and pops always say `batch` and `wait` (2.6 would otherwise long-poll and leave batch to the
server).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from compat_runtime import IS_V2, run, server_url, to_json, wait_until

from queen import Queen

Story = Callable[[Queen, dict[str, Any]], Awaitable[Any]]
CONSUME_TIMEOUT_S = 30


def as_list(arg: Any) -> list[dict[str, Any]]:
    return arg if isinstance(arg, list) else [arg]


async def pop(
    client: Queen, queue: str, group: str | None = None, batch: int = 100, **options: Any
) -> list[dict[str, Any]]:
    """One pop that answers at once (`wait_s` makes it a long poll of that many seconds)."""
    builder = client.queue(queue).batch(batch)
    if group:
        builder = builder.group(group)
    if options.get("subscription_mode"):
        builder = builder.subscription_mode(options["subscription_mode"])
    if options.get("subscription_from"):
        builder = builder.subscription_from(options["subscription_from"])
    wait_s = options.get("wait_s")
    if wait_s:
        builder = builder.wait(True).timeout_millis(int(wait_s * 1000))
    else:
        builder = builder.wait(False)
    return list(await builder.pop())


async def drain_messages(
    client: Queen, queue: str, group: str | None = None, **options: Any
) -> list[dict[str, Any]]:
    """Pop and ack (completed) until the group has nothing left; the messages in delivery order."""
    seen: list[dict[str, Any]] = []
    context = {"group": group} if group else {}
    deadline = time.monotonic() + CONSUME_TIMEOUT_S
    while time.monotonic() < deadline:
        messages = await pop(client, queue, group, **options)
        if not messages:
            return seen
        seen.extend(messages)
        acked = await client.ack(messages, True, context)
        assert acked.get("success") is True, acked
    raise TimeoutError(f"{queue} still had messages for {group} after {CONSUME_TIMEOUT_S}s")


async def drain(client: Queen, queue: str, group: str | None = None, **options: Any) -> list[Any]:
    """The payloads `drain_messages` consumed."""
    return [m["data"] for m in await drain_messages(client, queue, group, **options)]


async def set_maintenance(client: Queen, enabled: bool) -> dict[str, Any]:
    """0.15 has admin methods for the switch; 2.6 dropped them (client-2x.md §2.4): raw HTTP."""
    if not IS_V2:
        return dict(await client.admin.set_maintenance_mode(enabled))
    async with httpx.AsyncClient(base_url=server_url(), timeout=30) as http:
        response = await http.post("/api/v1/system/maintenance", json={"enabled": enabled})
        response.raise_for_status()
        return dict(response.json())


async def get_maintenance(client: Queen) -> dict[str, Any]:
    if not IS_V2:
        return dict(await client.admin.get_maintenance_mode())
    async with httpx.AsyncClient(base_url=server_url(), timeout=30) as http:
        response = await http.get("/api/v1/system/maintenance")
        response.raise_for_status()
        return dict(response.json())


# --- stories -----------------------------------------------------------------------------------


async def groups_each_see_everything(client: Queen, args: dict[str, Any]) -> Any:
    """Several groups consume one queue at once; one group runs two competing consumers."""
    queue, partitions, per_partition = args["queue"], args["partitions"], args["per_partition"]
    for p in range(partitions):
        items = [{"data": {"id": f"p{p}-{i}", "p": p, "i": i}} for i in range(per_partition)]
        await client.queue(queue).partition(f"p{p}").push(items)
    total = partitions * per_partition

    consumers: dict[str, int] = args["consumers"]  # group ("" = queue mode) -> consumer count
    seen: dict[str, list[dict[str, Any]]] = {group: [] for group in consumers}
    by_consumer: dict[str, int] = {}
    done = {group: asyncio.Event() for group in consumers}

    async def consume(group: str, index: int) -> None:
        name = f"{group or 'queue-mode'}#{index}"
        by_consumer[name] = 0

        async def handler(arg: Any) -> None:
            for message in as_list(arg):
                seen[group].append(message["data"])
                by_consumer[name] += 1
            if len({m["id"] for m in seen[group]}) >= total:
                done[group].set()

        builder = client.queue(queue).batch(args["batch"]).timeout_millis(1000)
        if group:
            builder = builder.group(group)
        await builder.consume(handler, signal=done[group])

    tasks = [consume(group, i) for group, count in consumers.items() for i in range(count)]
    timed_out = False
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), CONSUME_TIMEOUT_S)
    except TimeoutError:
        timed_out = True
    leftovers = {group: len(await pop(client, queue, group or None)) for group in consumers}
    return {
        "total": total,
        "timed_out": timed_out,
        "seen": seen,
        "by_consumer": by_consumer,
        "leftovers": leftovers,
    }


async def subscription_modes(client: Queen, args: dict[str, Any]) -> Any:
    """History on two partitions, then groups subscribing in different ways, then new messages on
    the old partitions and on a partition created afterwards."""
    queue = args["queue"]
    await client.queue(queue).partition("p0").push([{"data": "h0"}, {"data": "h1"}])
    await client.queue(queue).partition("p1").push([{"data": "h2"}, {"data": "h3"}])
    peek = await drain_messages(client, queue, "peek")
    h2_created_at = next(m["createdAt"] for m in peek if m["data"] == "h2")

    first_pops = {
        "new": await pop(client, queue, "late", subscription_mode="new"),
        "now": await pop(client, queue, "fresh", subscription_from="now"),
    }
    for partition, data in (("p0", "n0"), ("p1", "n1"), ("p2", "n2")):
        await client.queue(queue).partition(partition).push([{"data": data}])

    return {
        "first_pops": {mode: [m["data"] for m in popped] for mode, popped in first_pops.items()},
        "late": await drain(client, queue, "late", subscription_mode="new"),
        "fresh": await drain(client, queue, "fresh", subscription_from="now"),
        "since_h2": await drain(client, queue, "since", subscription_from=h2_created_at),
        "everything": await drain(client, queue, "all"),
        "late_again": await drain(client, queue, "late", subscription_mode="new"),
    }


async def seeks(client: Queen, args: dict[str, Any]) -> Any:
    """Replay a group from a point in time; skip another group's backlog; others stay put."""
    queue = args["queue"]
    for batch in (["a0", "a1"], ["b0", "b1"], ["c0"]):
        await client.queue(queue).push([{"data": data} for data in batch])
    first = await pop(client, queue, "replay", batch=10)
    b0_created_at = next(m["createdAt"] for m in first if m["data"] == "b0")
    await client.ack(first, True, {"group": "replay"})
    head = await pop(client, queue, "skip", batch=1)
    await client.ack(head, True, {"group": "skip"})
    bystander = await drain(client, queue, "bystander")

    admin = client.admin
    replay_seek = await admin.seek_consumer_group("replay", queue, {"timestamp": b0_created_at})
    replayed = await drain(client, queue, "replay")
    skip_seek = await admin.seek_consumer_group("skip", queue, {"toEnd": True})
    skipped = await drain(client, queue, "skip")
    await client.queue(queue).push([{"data": "d0"}])
    after = {group: await drain(client, queue, group) for group in ("replay", "skip", "bystander")}
    rewind = await admin.seek_consumer_group("replay", queue, {"timestamp": "1970-01-01T00:00:00Z"})
    from_start = await drain(client, queue, "replay")
    try:
        stranger: Any = await admin.seek_consumer_group("stranger", queue, {"toEnd": True})
    except Exception as error:  # the admin API raises on any HTTP error
        stranger = error
    return {
        "first": [m["data"] for m in first],
        "head": [m["data"] for m in head],
        "bystander": bystander,
        "replay_seek": replay_seek,
        "b0_created_at": b0_created_at,
        "replayed": replayed,
        "skip_seek": skip_seek,
        "skipped": skipped,
        "after": after,
        "rewind": rewind,
        "from_start": from_start,
        "stranger": to_json(stranger),
    }


async def retries_and_dead_letters(client: Queen, args: dict[str, Any]) -> Any:
    """A poison message nacked by one group past retryLimit lands in that group's DLQ with the
    last error text; an admin retry makes it deliverable to that group again."""
    queue, group, retry_limit = args["queue"], args["group"], args["retry_limit"]
    await client.queue(queue).config({"retry_limit": retry_limit}).create()
    await client.queue(queue).push([{"data": {"n": 0}}, {"data": {"n": 1}}, {"data": "poison"}])

    context = {"group": group}
    handled: list[Any] = []
    nacks: list[Any] = []
    deadline = time.monotonic() + CONSUME_TIMEOUT_S
    while time.monotonic() < deadline:
        popped = await pop(client, queue, group, batch=1)
        if not popped:
            break
        message = popped[0]
        handled.append(message["data"])
        if message["data"] == "poison":
            error = f"poison pill, attempt {len(nacks) + 1}"
            nacks.append(await client.ack(message, False, {**context, "error": error}))
        else:
            assert (await client.ack(message, True, context))["success"] is True
    audit = await drain(client, queue, "audit")
    dead = await client.queue(queue).dlq(group).get()
    audit_dead = await client.queue(queue).dlq("audit").get()
    all_groups_dead = await client.queue(queue).dlq().get()

    poison = dead["messages"][0] if dead.get("messages") else None
    retried: Any = None
    redelivered: list[Any] = []
    dead_after_retry: Any = None
    if poison is not None:
        retried = await client.admin.retry_message(poison["partitionId"], poison["transactionId"])
        dead_after_retry = await client.queue(queue).dlq(group).get()
        redelivered = await drain(client, queue, group)
    return {
        "handled": handled,
        "nacks": nacks,
        "audit": audit,
        "dead": dead,
        "audit_dead": audit_dead,
        "all_groups_dead": all_groups_dead,
        "retried": retried,
        "dead_after_retry": dead_after_retry,
        "redelivered": redelivered,
        "dead_at_end": await client.queue(queue).dlq(group).get(),
    }


async def delayed_processing(client: Queen, args: dict[str, Any]) -> Any:
    """A message of a queue with delayedProcessing D is invisible for D seconds after its push."""
    queue, delay = args["queue"], args["delay_s"]
    await client.queue(queue).config({"delayed_processing": delay}).create()
    sent_at = time.monotonic()
    await client.queue(queue).push([{"data": {"late": True}}])
    immediately = await pop(client, queue, batch=10)
    popped = await pop(client, queue, batch=10, wait_s=delay + 5)
    return {
        "immediately": [m["data"] for m in immediately],
        "popped": [m["data"] for m in popped],
        "visible_after_s": time.monotonic() - sent_at,
    }


async def window_buffer(client: Queen, args: dict[str, Any]) -> Any:
    """A partition is served only once its newest message is W seconds old, then all at once."""
    queue, window = args["queue"], args["window_s"]
    await client.queue(queue).config({"window_buffer": window}).create()
    last_sent_at = time.monotonic()
    for n in range(3):
        last_sent_at = time.monotonic()
        await client.queue(queue).push([{"data": {"n": n}}])
    during = await pop(client, queue, batch=10)
    popped = await pop(client, queue, batch=10, wait_s=window + 5)
    return {
        "during": [m["data"] for m in during],
        "popped": [m["data"] for m in popped],
        "served_after_s": time.monotonic() - last_sent_at,
    }


async def priority(client: Queen, args: dict[str, Any]) -> Any:
    """Queues of one namespace with different priorities: namespace/task pops serve the highest
    priority queue first, whatever the age of the messages."""
    namespace = args["namespace"]
    queues = args["queues"]  # [name, task, priority], pushed in this order
    for name, task, level in queues:
        await (
            client.queue(name).namespace(namespace).task(task).config({"priority": level}).create()
        )
    for name, _, _ in queues:
        await client.queue(name).push([{"data": {"queue": name, "n": n}} for n in range(2)])

    order: list[str] = []

    async def handler(arg: Any) -> None:
        order.extend(m["data"]["queue"] for m in as_list(arg))

    consumer = client.queue().namespace(namespace).task(args["task"]).batch(1).limit(4)
    timed_out = False
    try:
        await asyncio.wait_for(consumer.timeout_millis(1000).consume(handler), CONSUME_TIMEOUT_S)
    except TimeoutError:
        timed_out = True
    whole_namespace = await client.queue().namespace(namespace).batch(10).wait(False).pop()
    return {
        "task_order": order,
        "timed_out": timed_out,
        "namespace_pop": [m["data"]["queue"] for m in whole_namespace],
    }


async def traces(client: Queen, args: dict[str, Any]) -> Any:
    """`msg.trace()` inside consume, then the three admin trace getters."""
    queue, group, name = args["queue"], args["group"], args["trace_name"]
    orders = args["orders"]
    await client.queue(queue).push([{"data": {"order": order}} for order in orders])

    recorded: list[dict[str, Any]] = []

    async def handler(arg: Any) -> None:
        for message in as_list(arg):
            order = message["data"]["order"]
            picked = await message["trace"](
                {
                    "traceName": [name, f"{name}-{order}"],
                    "eventType": "step",
                    "data": {"at": "pick"},
                }
            )
            shipped = await message["trace"]({"traceName": name, "data": {"at": "ship"}})
            recorded.append(
                {
                    "order": order,
                    "partitionId": message["partitionId"],
                    "transactionId": message["transactionId"],
                    "results": [picked, shipped],
                }
            )

    consumer = client.queue(queue).group(group).batch(1).limit(len(orders)).timeout_millis(1000)
    await asyncio.wait_for(consumer.consume(handler), CONSUME_TIMEOUT_S)

    admin = client.admin
    per_message = {
        r["order"]: await admin.get_traces_for_message(r["partitionId"], r["transactionId"])
        for r in recorded
    }
    return {
        "recorded": recorded,
        "per_message": per_message,
        "by_name": await admin.get_traces_by_name(name),
        "by_order_name": await admin.get_traces_by_name(f"{name}-{orders[0]}"),
        "names": await admin.get_trace_names(search=name),
    }


async def maintenance(client: Queen, args: dict[str, Any]) -> Any:
    """Pushes made during push maintenance are buffered, replayed once it is off, and consumed
    exactly once with everything pushed before and after."""
    queue, partitions = args["queue"], args["partitions"]
    sent: list[str] = []

    async def push(tag: str, count: int) -> list[str]:
        statuses = []
        for p in range(partitions):
            ids = [f"{tag}-{p}-{i}" for i in range(count)]
            items = [{"data": {"id": i}} for i in ids]
            results = await client.queue(queue).partition(f"p{p}").push(items)
            statuses += [r["status"] for r in results]
            sent.extend(ids)
        return statuses

    before = await push("before", args["per_partition"])
    turned_on: dict[str, Any] = {}
    try:
        turned_on = await set_maintenance(client, True)
        during = await push("during", args["per_partition"])
        while_on = await get_maintenance(client)
    finally:
        turned_off = await set_maintenance(client, False)

    async def replayed() -> bool:
        return (await get_maintenance(client))["bufferedMessages"] == 0

    drained = await wait_until(replayed, timeout_s=30, every_s=0.1)
    after = await push("after", args["per_partition"])
    consumed = await drain(client, queue)
    return {
        "sent": sent,
        "statuses": {"before": before, "during": during, "after": after},
        "turned_on": turned_on,
        "while_on": while_on,
        "turned_off": turned_off,
        "drained": drained,
        "consumed": [m["id"] for m in consumed],
    }


STORIES: dict[str, Story] = {
    "groups": groups_each_see_everything,
    "subscription": subscription_modes,
    "seek": seeks,
    "dlq": retries_and_dead_letters,
    "delayed": delayed_processing,
    "window": window_buffer,
    "priority": priority,
    "traces": traces,
    "maintenance": maintenance,
}


async def main(client: Queen, args: dict[str, Any]) -> Any:
    return await STORIES[args["story"]](client, args)


run(main)
