"""The datagrams sibling workers wake each other with: every target arrives, none is split."""

import orjson

from queen.sync import events
from queen.sync.events import QueueChanged, SwitchChanged
from queen.sync.siblings import MAX_DATAGRAM, _pack, _unpack


def test_targets_share_datagrams_up_to_the_size_limit() -> None:
    targets = [(f"queue-{n:04d}-\n" + "x" * 200, None if n % 2 else f"g{n}") for n in range(100)]
    datagrams = _pack(targets)
    assert len(datagrams) > 1
    assert all(len(d) <= MAX_DATAGRAM for d in datagrams)
    assert [t for d in datagrams for t in _unpack(d)[0]] == targets


def test_a_pair_too_large_for_a_datagram_wakes_the_whole_queue() -> None:
    assert [t for d in _pack([("q", "g" * MAX_DATAGRAM)]) for t in _unpack(d)[0]] == [("q", None)]


def test_nothing_to_say_sends_nothing() -> None:
    assert _pack([]) == []


def test_malformed_datagrams_wake_nothing() -> None:
    for junk in (b"", b"not json", b'{"a": 1}', b'[["q"]]', b"[[1, null]]", b'[["q", 2]]'):
        assert _unpack(junk) == ([], [])


def test_cluster_events_travel_among_the_pairs() -> None:
    sent = [QueueChanged("q", config={"lease_time": 5}), SwitchChanged("maintenance_mode", True)]
    datagram = orjson.dumps([["q", None], *map(events.to_json, sent), {"switch": "other"}])
    assert _unpack(datagram) == ([("q", None)], sent)
