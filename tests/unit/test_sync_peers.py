"""Which packets a peer link believes (session, sequence window, payload clock), how the peer
list is read, and which transport a configuration gets: the parts of cluster sync that need
neither peers nor a database."""

from __future__ import annotations

import pytest
import trio

from queen.actors.cluster import Cluster
from queen.config import Config
from queen.db.connect import ConnectParams
from queen.sync.debounce import Debouncer
from queen.sync.peers import PeerEntry, is_local_ip, is_self, parse_peers
from queen.sync.window import MAX_CLOCK_SKEW_MS, WINDOW, SenderWindow

NOW = 1_765_000_000_000


def test_sequences_are_admitted_once_even_out_of_order() -> None:
    window = SenderWindow()
    assert window.admit("s1", 10, NOW, NOW) is None
    assert window.admit("s1", 12, NOW, NOW) is None
    assert window.admit("s1", 11, NOW, NOW) is None  # late, inside the window
    assert window.admit("s1", 11, NOW, NOW) == "replay"
    assert window.admit("s1", 12, NOW, NOW) == "replay"
    assert window.admit("s1", 12 + WINDOW, NOW, NOW) is None
    assert window.admit("s1", 12, NOW, NOW) == "replay"  # fell out of the window


def test_a_new_session_is_a_restart_and_the_old_one_is_refused_for_good() -> None:
    window = SenderWindow()
    assert window.admit("old", 500, NOW, NOW) is None
    assert window.admit("new", 1, NOW + 5, NOW) is None
    assert window.restarts == 1
    assert window.admit("old", 501, NOW + 6, NOW) == "replay"
    assert window.admit("new", 2, NOW + 7, NOW) is None


def test_a_new_session_older_than_what_was_seen_is_a_replay() -> None:
    window = SenderWindow()
    assert window.admit("live", 1, NOW, NOW) is None
    assert window.admit("captured", 1, NOW - 1000, NOW) == "replay"
    assert window.restarts == 0


def test_a_payload_clock_a_minute_away_is_stale() -> None:
    window = SenderWindow()
    assert window.admit("s", 1, NOW - MAX_CLOCK_SKEW_MS - 1, NOW) == "stale"
    assert window.admit("s", 1, NOW + MAX_CLOCK_SKEW_MS + 1, NOW) == "stale"
    assert window.admit("s", 1, None, NOW) is None  # types without a clock


def test_peer_list_syntax() -> None:
    parsed = parse_peers(
        " http://queen-1.queen-headless:7000/ , queen-2 ,,10.0.0.3:bad,[::1]:7001,"
        " fe80::1 ,queen-2",
        6633,
    )
    assert parsed == [
        PeerEntry("queen-1.queen-headless", 7000),
        PeerEntry("queen-2", 6633),
        PeerEntry("10.0.0.3", 6633),
        PeerEntry("::1", 7001),
        PeerEntry("fe80::1", 6633),
    ]
    assert parsed[0].config_server_id == "queen-1:7000"
    assert parsed[2].config_server_id == "10.0.0.3:6633"
    assert parsed[3].label == "[::1]:7001"


def test_self_is_our_port_on_our_address() -> None:
    assert is_local_ip("127.0.0.1")
    assert not is_local_ip("192.0.2.1")  # TEST-NET-1, never configured here
    assert is_self(("127.0.0.1", 7000), "0.0.0.0", 7000)
    assert not is_self(("127.0.0.1", 7001), "0.0.0.0", 7000)
    assert is_self(("127.0.0.2", 7000), "127.0.0.2", 7000)
    assert not is_self(("127.0.0.3", 7000), "127.0.0.2", 7000)  # another loopback instance


async def test_a_burst_is_signalled_at_once_and_once_more_at_the_window_end() -> None:
    emitted: list[tuple[float, list[str]]] = []
    third = trio.Event()

    def emit(keys: list[str]) -> None:
        emitted.append((trio.current_time(), keys))
        if len(emitted) == 3:
            third.set()

    debouncer = Debouncer[str](0.05, emit)
    async with trio.open_nursery() as nursery:
        await nursery.start(debouncer.run)
        start = trio.current_time()
        debouncer.offer(["q"])
        debouncer.offer(["q", "other"])
        debouncer.offer(["q"])
        with trio.fail_after(2):
            await third.wait()
        nursery.cancel_scope.cancel()
    assert [keys for _, keys in emitted] == [["q"], ["other"], ["q"]]
    assert emitted[2][0] - start >= 0.05


@pytest.mark.parametrize(
    ("env", "mode"),
    [
        ({}, "pg_notify"),
        ({"QUEEN_SYNC_PG_NOTIFY": "false"}, "off"),
        ({"QUEEN_UDP_PEERS": "a:1"}, "off"),  # no secret: refused (D-U2)
        ({"QUEEN_UDP_PEERS": "a:1", "QUEEN_SYNC_ALLOW_INSECURE": "true"}, "udp"),
        ({"QUEEN_UDP_PEERS": "a:1", "QUEEN_SYNC_SECRET": "s" * 32}, "udp"),
        (
            {"QUEEN_UDP_PEERS": "a:1", "QUEEN_SYNC_SECRET": "s", "QUEEN_SYNC_ENABLED": "false"},
            "pg_notify",
        ),
    ],
)
def test_which_transport_runs(env: dict[str, str], mode: str) -> None:
    config = Config.from_env({"PG_HOST": "unused", **env})
    cluster = Cluster(
        config,
        ConnectParams.from_config(config, "unused"),
        "instance",
        gateway=True,
        on_wakes=lambda _targets: None,
        on_event=lambda _event: None,
    )
    assert cluster.mode == mode
