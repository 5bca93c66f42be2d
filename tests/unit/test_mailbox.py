"""Request/reply between actors: an asker always gets the answer, the actor's error, or ActorGone;
an actor answering someone who already left is not an error."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from queen.actors.mailbox import ActorGone, Reply, deliver, deliver_soon, open_inbox


async def test_answer_given_before_the_asker_waits_is_kept() -> None:
    reply: Reply[int] = Reply()
    reply.send(42)
    assert await reply.wait() == 42


async def test_failure_is_raised_at_the_asker() -> None:
    reply: Reply[int] = Reply()
    reply.fail(KeyError("no such queue"))
    with pytest.raises(KeyError, match="no such queue"):
        await reply.wait()


async def test_abandoned_reply_means_actor_gone() -> None:
    reply: Reply[int] = Reply()
    reply.abandon()
    with pytest.raises(ActorGone):
        await reply.wait()


async def test_asker_waits_until_the_actor_answers(autojump_clock: trio.testing.MockClock) -> None:
    inbox_send, inbox = open_inbox(4)

    async def actor() -> None:
        request: Reply[str]
        async for request in inbox:
            await trio.sleep(5.0)
            request.send("done")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(actor)
        reply: Reply[str] = Reply()
        await deliver(inbox_send, reply)
        assert await reply.wait() == "done"
        assert trio.current_time() == pytest.approx(5.0)
        nursery.cancel_scope.cancel()


async def test_answering_an_asker_who_left_is_harmless(
    autojump_clock: trio.testing.MockClock,
) -> None:
    reply: Reply[str] = Reply()
    with trio.move_on_after(1.0):
        await reply.wait()
    assert reply.settled
    reply.send("too late")  # must not raise
    reply.abandon()


async def test_settled_once_answered_or_abandoned() -> None:
    answered: Reply[int] = Reply()
    abandoned: Reply[int] = Reply()
    pending: Reply[int] = Reply()
    answered.send(1)
    abandoned.abandon()
    assert answered.settled
    assert abandoned.settled
    assert not pending.settled
    assert await answered.wait() == 1


async def test_deliver_to_a_closed_inbox_is_actor_gone() -> None:
    inbox_send, inbox = open_inbox(1)
    await inbox.aclose()
    with pytest.raises(ActorGone):
        await deliver(inbox_send, 1)
    await inbox_send.aclose()
    with pytest.raises(ActorGone):
        await deliver(inbox_send, 2)


async def test_full_inbox_pushes_back_on_the_sender(autojump_clock: trio.testing.MockClock) -> None:
    inbox_send, inbox = open_inbox(1)
    await deliver(inbox_send, 1)
    with trio.move_on_after(1.0) as blocked:
        await deliver(inbox_send, 2)
    assert blocked.cancelled_caught
    assert inbox.receive_nowait() == 1


async def test_deliver_soon_queues_at_once_and_waits_only_for_room(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inbox_send, inbox = open_inbox(1)
    await deliver_soon(inbox_send, "first")
    assert inbox.receive_nowait() == "first"
    await deliver_soon(inbox_send, "fills the inbox")

    async def take_later() -> None:
        await trio.sleep(3.0)
        await inbox.receive()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take_later)
        await deliver_soon(inbox_send, "waits for room")
        assert trio.current_time() == pytest.approx(3.0)
    assert inbox.receive_nowait() == "waits for room"


async def test_deliver_soon_from_a_cancelled_asker_delivers_nothing() -> None:
    inbox_send, inbox = open_inbox(4)
    with trio.CancelScope() as scope:
        scope.cancel()
        await deliver_soon(inbox_send, "never")
    with pytest.raises(trio.WouldBlock):
        inbox.receive_nowait()


async def test_deliver_soon_to_a_closed_inbox_is_actor_gone() -> None:
    inbox_send, inbox = open_inbox(4)
    await inbox.aclose()
    with pytest.raises(ActorGone):
        await deliver_soon(inbox_send, "nobody")
