"""Which other instances listen over LISTEN/NOTIFY, from what they send: any notification names
its sender, a hello is answered at once, and an instance silent for three keepalive periods is
gone. The end-to-end behaviour (an instance alone sends no NOTIFY) is in
tests/integration/test_cluster_pg_notify.py; this covers the bookkeeping and its clock."""

from __future__ import annotations

import orjson
import trio
import trio.testing

from queen.db.connect import ConnectParams
from queen.sync.counters import SyncCounters
from queen.sync.pg_notify import KEEPALIVE_S, OTHERS_GONE_S, PgWaker

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
    pg._heard(notice("me"))  # its own echo
    assert heard == [] and not pg.others

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
