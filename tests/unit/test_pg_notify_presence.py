"""Which other instances listen over LISTEN/NOTIFY, from what they send: any notification names
its sender, a hello is answered at once, an instance silent for three keepalive periods is gone,
and a starting instance presumes others listen until its presumption ends unanswered. The
end-to-end behaviour (an instance alone sends no wake-up NOTIFY) is in
tests/integration/test_cluster_pg_notify.py; this covers the bookkeeping and its clock."""

from __future__ import annotations

import orjson
import pytest
import trio
import trio.testing

from queen.actors.root import Services
from queen.config import Config
from queen.db.connect import ConnectParams
from queen.sync.counters import SyncCounters
from queen.sync.pg_notify import KEEPALIVE_S, OTHERS_GONE_S, PRESUMED_S, PgWaker

PARAMS = ConnectParams("127.0.0.1", 1, "u", "p", "d", False, 1.0)


def waker(heard: list[bool]) -> PgWaker:
    return PgWaker(
        PARAMS,
        "me",
        on_wakes=lambda _wakes: None,
        on_event=lambda _event: None,
        counters=SyncCounters(),
        on_others=heard.append,
    )


def notice(sender: str, **fields: object) -> str:
    return orjson.dumps({"from": sender, **fields}).decode()


async def test_others_are_heard_once_and_forgotten_when_silent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    heard: list[bool] = []
    pg = waker(heard)
    pg._listening_started()
    assert heard == [True]  # presumed at first
    pg._heard(notice("me"))  # its own echo
    assert not pg.others

    pg._heard(notice("a"))
    pg._heard(notice("b", wakes=[["q", None]]))
    assert heard == [True] and set(pg.others) == {"a", "b"}

    await trio.sleep(KEEPALIVE_S)
    pg._heard(notice("b"))  # b keeps talking, a falls silent
    await trio.sleep(OTHERS_GONE_S - KEEPALIVE_S + 1)
    pg._forget_silent()
    assert set(pg.others) == {"b"} and heard == [True]

    await trio.sleep(OTHERS_GONE_S)
    pg._forget_silent()
    assert not pg.others and heard == [True, False]


async def test_the_presumption_ends_unanswered_on_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    heard: list[bool] = []
    pg = waker(heard)
    pg._listening_started()
    assert pg._next_look_s() == min(KEEPALIVE_S, PRESUMED_S)
    await trio.sleep(PRESUMED_S - 1)
    assert pg._next_look_s() == 1
    pg._forget_silent()
    assert heard == [True]
    await trio.sleep(1)
    pg._forget_silent()
    assert heard == [True, False] and pg._next_look_s() == KEEPALIVE_S


async def test_losing_the_connection_forgets_everyone() -> None:
    heard: list[bool] = []
    pg = waker(heard)
    pg._listening_started()
    pg._heard(notice("a"))
    pg._listening_ended()
    assert heard == [True, False] and not pg.others
    pg._heard(notice("b"))  # a late notice after the connection ended counts no one as present
    assert heard == [True, False]


async def test_a_hello_is_answered_at_once() -> None:
    pg = waker([])
    pg._heard(notice("a"))
    assert not pg._kick.is_set()
    pg._heard(notice("new", hello=True))
    assert pg._kick.is_set()


async def test_a_notice_without_a_sender_counts_no_one() -> None:
    heard: list[bool] = []
    pg = waker(heard)
    pg._heard(orjson.dumps({"wakes": [["q", None]]}).decode())
    pg._heard(notice(""))
    pg._heard(orjson.dumps({"from": 7}).decode())
    assert heard == [] and not pg.others


async def test_worker_0_relays_only_while_others_are_presumed_or_heard(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wiring in a worker: its cluster publishes to other instances, and its siblings count
    it as listening (so they send it their wake-ups to pass on), exactly while it relays."""
    services = Services(Config.from_env({"PG_HOST": "unused", "NUM_WORKERS": "2"}), 0)
    offered: list[object] = []
    monkeypatch.setattr(services.cluster.outgoing, "offer", offered.extend)
    services.notify("q")
    assert offered == [] and services.siblings._count == 0

    services.cluster.pg._listening_started()
    services.notify("q")
    assert offered == [("q", None)] and services.siblings._count == 1

    await trio.sleep(PRESUMED_S)
    services.cluster.pg._forget_silent()
    services.notify("q")
    assert offered == [("q", None)] and services.siblings._count == 0
