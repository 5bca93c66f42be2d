"""Keyed actors: one per key, created by the first message, retired when idle, and never a message
lost to retirement; a crash turns every answer the actor owed into ActorGone, never a hang."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass

import pytest
import trio
import trio.testing

from queen.actors.mailbox import ActorGone, Reply
from queen.actors.registry import ActorRegistry, KeyedInbox


@dataclass(frozen=True)
class Ask:
    value: object
    reply: Reply[int]


@dataclass(frozen=True)
class Note:
    value: object


Message = Ask | Note


class Recorder:
    """A well-behaved keyed actor: answers each Ask with its incarnation number for the key."""

    def __init__(self, work_s: float = 0.0) -> None:
        self.work_s = work_s
        self.incarnations: Counter[Hashable] = Counter()
        self.seen: list[tuple[Hashable, object, int]] = []
        self.retired: list[tuple[Hashable, int]] = []

    async def body(self, inbox: KeyedInbox[Hashable, Message]) -> None:
        self.incarnations[inbox.key] += 1
        incarnation = self.incarnations[inbox.key]
        while True:
            message = await inbox.next()
            if message is None:
                self.retired.append((inbox.key, incarnation))
                return
            await trio.sleep(self.work_s)
            self.seen.append((inbox.key, message.value, incarnation))
            if isinstance(message, Ask):
                message.reply.send(incarnation)


async def ask(registry: ActorRegistry[Hashable, Message], key: Hashable, value: object) -> int:
    reply: Reply[int] = Reply()
    await registry.send(key, Ask(value, reply))
    return await reply.wait()


async def test_one_actor_per_key_created_by_the_first_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    async with trio.open_nursery() as nursery:
        registry: ActorRegistry[Hashable, Message] = ActorRegistry("t", nursery, recorder.body)
        assert len(registry) == 0
        assert [await ask(registry, "a", n) for n in range(3)] == [1, 1, 1]
        assert await ask(registry, "b", 0) == 1
        assert sorted(registry.keys()) == ["a", "b"]
        nursery.cancel_scope.cancel()
    assert recorder.incarnations == {"a": 1, "b": 1}


async def test_idle_actor_retires_and_a_later_message_starts_a_fresh_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    async with trio.open_nursery() as nursery:
        registry: ActorRegistry[Hashable, Message] = ActorRegistry(
            "t", nursery, recorder.body, idle_after_s=10.0
        )
        assert await ask(registry, "a", 1) == 1
        await trio.sleep(9.9)
        assert "a" in registry
        assert await ask(registry, "a", 2) == 1  # a message restarts the idle period
        await trio.sleep(9.9)
        assert "a" in registry
        await trio.sleep(0.2)
        assert "a" not in registry
        assert recorder.retired == [("a", 1)]
        assert await ask(registry, "a", 3) == 2
        nursery.cancel_scope.cancel()
    assert [value for _, value, _ in recorder.seen] == [1, 2, 3]


@pytest.mark.parametrize("seed", range(5))
async def test_retirement_never_loses_a_message(
    autojump_clock: trio.testing.MockClock, seed: int
) -> None:
    """Senders that keep landing right at, just before and just after the idle deadline."""
    rng = random.Random(seed)
    recorder = Recorder(work_s=0.25)
    idle_s = 1.0
    gaps = [0.0, 0.5, idle_s - 0.001, idle_s, idle_s + 0.001, idle_s + 0.25, 2.5]
    sent: list[tuple[str, object]] = []
    async with trio.open_nursery() as nursery:
        registry: ActorRegistry[Hashable, Message] = ActorRegistry(
            "t", nursery, recorder.body, idle_after_s=idle_s, inbox_size=2
        )

        async def sender(name: str) -> None:
            for n in range(40):
                key = rng.choice("xyz")
                await trio.sleep(rng.choice(gaps))
                sent.append((key, (name, n)))
                await registry.send(key, Note((name, n)))

        async with trio.open_nursery() as senders:
            for name in ("s1", "s2", "s3"):
                senders.start_soon(sender, name)
        with trio.fail_after(60):
            while len(recorder.seen) < len(sent):  # noqa: ASYNC110 (mock clock: no real wait)
                await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    assert Counter((key, value) for key, value, _ in recorder.seen) == Counter(sent)
    assert recorder.retired, "the schedule must have made actors retire"


async def test_crashed_actor_answers_what_it_owed_with_actor_gone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The request in hand, the ones it had taken to batch, and the ones queued in its inbox."""
    incarnations = 0

    async def batching(inbox: KeyedInbox[Hashable, Message]) -> None:
        nonlocal incarnations
        incarnations += 1
        held: list[Ask] = []
        while True:
            message = await inbox.next()
            if message is None:
                return
            assert isinstance(message, Ask)
            if message.value == "crash":
                await trio.sleep(1.0)  # the others queue up meanwhile
                raise RuntimeError("boom")
            if message.value == "hold":
                held.append(message)
                continue
            message.reply.send(incarnations)

    outcomes: dict[str, object] = {}

    async def asker(registry: ActorRegistry[Hashable, Message], name: str, value: str) -> None:
        try:
            outcomes[name] = await ask(registry, "k", value)
        except ActorGone:
            outcomes[name] = "gone"

    async with trio.open_nursery() as nursery:
        registry: ActorRegistry[Hashable, Message] = ActorRegistry("t", nursery, batching)
        async with trio.open_nursery() as askers:
            askers.start_soon(asker, registry, "held", "hold")
            await trio.sleep(0.1)
            askers.start_soon(asker, registry, "in hand", "crash")
            await trio.sleep(0.1)
            askers.start_soon(asker, registry, "queued", "plain")
        assert outcomes == {"held": "gone", "in hand": "gone", "queued": "gone"}
        assert "k" not in registry
        assert await ask(registry, "k", "plain") == 2  # a fresh actor serves the key
        nursery.cancel_scope.cancel()


async def test_owed_answers_become_actor_gone_when_the_actors_are_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def stuck(inbox: KeyedInbox[Hashable, Message]) -> None:
        await inbox.next()
        await trio.sleep_forever()

    async with trio.open_nursery() as outer:
        actors_scope = trio.CancelScope()

        async def run_actors(task_status: trio.TaskStatus[ActorRegistry[str, Message]]) -> None:
            with actors_scope:
                async with trio.open_nursery() as actors:
                    task_status.started(ActorRegistry("t", actors, stuck))
                    await trio.sleep_forever()

        registry = await outer.start(run_actors)
        reply: Reply[int] = Reply()
        await registry.send("k", Ask(1, reply))
        await trio.sleep(1.0)
        actors_scope.cancel()
        with trio.fail_after(1.0), pytest.raises(ActorGone):
            await reply.wait()


async def test_sender_blocked_on_a_full_inbox_of_a_crashing_actor_reaches_a_fresh_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[tuple[object, int]] = []
    incarnations = 0

    async def fragile(inbox: KeyedInbox[Hashable, Message]) -> None:
        nonlocal incarnations
        incarnations += 1
        me = incarnations
        while (message := await inbox.next()) is not None:
            if message.value == "poison":
                await trio.sleep(1.0)
                raise RuntimeError("poisoned")
            seen.append((message.value, me))

    async with trio.open_nursery() as nursery:
        registry: ActorRegistry[Hashable, Message] = ActorRegistry(
            "t", nursery, fragile, inbox_size=1
        )
        await registry.send("k", Note("poison"))
        await trio.sleep(0.1)
        await registry.send("k", Note("fills the inbox"))
        await registry.send("k", Note("after the crash"))  # blocks until the actor crashes
        with trio.fail_after(5):
            while not seen:  # noqa: ASYNC110 (mock clock: no real wait)
                await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    assert seen == [("after the crash", 2)]


async def test_try_send_reaches_only_an_existing_actor_with_room(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = trio.Event()

    async def slow(inbox: KeyedInbox[Hashable, Message]) -> None:
        while await inbox.next() is not None:
            await gate.wait()

    async with trio.open_nursery() as nursery:
        registry: ActorRegistry[Hashable, Message] = ActorRegistry("t", nursery, slow, inbox_size=1)
        assert not registry.try_send("k", Note(1))
        assert "k" not in registry  # a notification never creates an actor
        await registry.send("k", Note(1))
        await trio.sleep(0.1)  # the actor takes it and waits on the gate
        assert registry.try_send("k", Note(2))
        assert not registry.try_send("k", Note(3))  # inbox full: dropped, not blocked
        gate.set()
        nursery.cancel_scope.cancel()
