"""Wake-ups between instances that share only PostgreSQL (a plain load balancer, no peer list):
one LISTEN connection per instance, and NOTIFYs sent on it after pushes committed.

Each instance also knows which others listen: every notification names its sender, each sends a
keepalive every 15 s when it has nothing else to say, and one that starts listening says hello,
which every other answers with a keepalive at once. With no other instance heard, there is
nobody to tell: worker 0 sends no wake-up NOTIFY and its siblings send it no wake-ups to pass on
(queen/actors/cluster.py). Until its hello is answered, a starting instance presumes others
listen, for 20 s: one of an earlier release never answers a hello, but keepalives within 15 s.
An instance that starts listening is known to the others within a round trip of NOTIFY; a pop
parked there before then may miss a wake-up and wait for its re-check, as with any lost hint.

A NOTIFY inside the push's transaction would take PostgreSQL's commit-time notification lock and
serialise every push commit behind it; here the push commits first, its wake-up is debounced per
queue (queen/sync/debounce.py) and sent later, on this actor's own connection, batched into as few
notifications as fit. Each instance names itself in what it sends and ignores its own echoes. While
the connection is down nothing is sent: pops fall back to their own re-checks, and the actor
reconnects with backoff instead of crashing (a database outage is not a fault of this actor).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import orjson
import trio
import trio_asyncio

from queen.db import cluster
from queen.db.connect import ConnectionRunner, ConnectParams, connect
from queen.sync import events as cluster_events
from queen.sync.counters import SyncCounters
from queen.sync.events import Event
from queen.sync.siblings import WakeTarget

log = logging.getLogger("queen.sync")

CALL_TIMEOUT_S = 5.0
# A connection that died without a word (a stalled network) delivers nothing and says nothing;
# an empty notification this often finds out.
KEEPALIVE_S = 15.0
# Another instance not heard from for this long (its keepalives included) is gone.
OTHERS_GONE_S = 3 * KEEPALIVE_S
# For this long after it starts listening, an instance presumes others listen even though none
# answered its hello yet: one of an earlier release ignores hellos, and a hello can be dropped,
# but either still sends a keepalive within 15 s.
PRESUMED_S = KEEPALIVE_S + 5.0
RECONNECT_INITIAL_S = 0.5
RECONNECT_MAX_S = 5.0
INBOX_SIZE = 1024
OUTBOX_LIMIT = 10_000


class PgWaker:
    def __init__(
        self,
        params: ConnectParams,
        token: str,
        *,
        on_wakes: Callable[[list[WakeTarget]], None],
        on_event: Callable[[Event], None],
        counters: SyncCounters,
        on_others: Callable[[bool], None] = lambda _present: None,
    ) -> None:
        """`on_others` hears whether any other instance listens (True when the first is heard,
        False when the last fell silent or this connection was lost)."""
        self.params = params
        self.token = token
        self.on_wakes = on_wakes
        self.on_event = on_event
        self.on_others = on_others
        self.counters = counters
        self.listening = False
        self._was_listening = False
        self._wakes: list[WakeTarget] = []
        self._events: list[Event] = []
        self._kick = trio.Event()
        self._hello = False
        self.others: dict[str, float] = {}  # the other instances' tokens: when last heard
        self.others_present = False  # what on_others last said
        self._presumed_until = -math.inf

    def send(self, wakes: list[WakeTarget], events: list[Event]) -> None:
        """Queue for the next notification; dropped (a lost hint) while nothing listens."""
        if not self.listening or len(self._wakes) > OUTBOX_LIMIT:
            return
        self._wakes.extend(wakes)
        self._events.extend(events)
        self._kick.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        failures = 0
        while True:
            try:
                await self._session()
            except Exception as error:
                # Refused connections, a server gone away, a timed-out NOTIFY: asyncpg's and the
                # socket's errors share no base worth naming; each means reconnect after a pause.
                log.warning("cluster notify connection lost", extra={"error": str(error)})
            failures = 1 if self._was_listening else failures + 1
            self._was_listening = False
            await trio.sleep(min(RECONNECT_MAX_S, RECONNECT_INITIAL_S * 2 ** min(failures, 10)))

    async def _session(self) -> None:
        received_in, received = trio.open_memory_channel[str](INBOX_SIZE)

        def heard(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            try:
                received_in.send_nowait(payload)
            except trio.WouldBlock:
                self.counters.drop("notify_overload")

        def closed(_conn: Any) -> None:
            received_in.close()

        conn = await trio_asyncio.aio_as_trio(connect)(self.params)
        try:
            await trio_asyncio.aio_as_trio(cluster.listen)(conn, heard, closed)
            self._listening_started()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_forever, ConnectionRunner(conn))
                async for payload in received:
                    self._heard(payload)
                raise ConnectionError("the listening connection closed")
        finally:
            self._was_listening |= self.listening
            self._listening_ended()
            conn.terminate()

    def _listening_started(self) -> None:
        """Say hello, and presume others listen until the presumption ends unanswered."""
        self.listening = True
        self._hello = True
        self._kick.set()
        self._presumed_until = trio.current_time() + PRESUMED_S
        self._update_presence()

    def _listening_ended(self) -> None:
        """Nothing can be told or heard: nobody to relay to until listening again."""
        self.listening = False
        self.others.clear()
        self._update_presence()

    def _update_presence(self) -> None:
        present = self.listening and (
            bool(self.others) or trio.current_time() < self._presumed_until
        )
        if present != self.others_present:
            self.others_present = present
            self.on_others(present)

    async def _send_forever(self, runner: ConnectionRunner) -> None:
        while True:
            with trio.move_on_after(self._next_look_s()):
                await self._kick.wait()
            self._kick = trio.Event()
            self._forget_silent()
            wakes, self._wakes = self._wakes, []
            events, self._events = self._events, []
            notices = _notices(self.token, wakes, events)
            if self._hello:
                self._hello = False
                notices.insert(0, _keepalive(self.token, hello=True))
            notices = notices or [_keepalive(self.token)]
            for payload in notices:
                await trio_asyncio.aio_as_trio(cluster.notify)(
                    runner, payload, timeout_s=CALL_TIMEOUT_S
                )
                self.counters.notifies_sent += 1

    def _heard(self, payload: str) -> None:
        try:
            notice = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.counters.drop("notify_malformed")
            return
        if not isinstance(notice, dict) or notice.get("from") == self.token:
            return
        self.counters.notifies_received += 1
        sender = notice.get("from")
        if isinstance(sender, str) and sender:
            self._heard_from(sender, hello=notice.get("hello") is True)
        wakes: list[WakeTarget] = [
            (pair[0], pair[1])
            for pair in notice.get("wakes", [])
            if isinstance(pair, list)
            and len(pair) == 2
            and isinstance(pair[0], str)
            and (pair[1] is None or isinstance(pair[1], str))
        ]
        if wakes:
            self.on_wakes(wakes)
        for raw in notice.get("events", []):
            event = cluster_events.from_json(raw)
            if event is not None:
                self.on_event(event)

    def _next_look_s(self) -> float:
        """The next keepalive, or sooner the end of the presumption, so that it ends on time."""
        presumed_for = self._presumed_until - trio.current_time()
        if not self.others and presumed_for > 0:
            return min(KEEPALIVE_S, presumed_for)
        return KEEPALIVE_S

    def _heard_from(self, sender: str, *, hello: bool) -> None:
        """Another instance listens. One that says hello has just started listening and knows
        no one yet: a keepalive at once tells it about this one, rather than in up to 15 s."""
        self.others[sender] = trio.current_time()
        if hello:
            self._kick.set()
        self._update_presence()

    def _forget_silent(self) -> None:
        now = trio.current_time()
        for sender, heard_at in list(self.others.items()):
            if now - heard_at > OTHERS_GONE_S:
                del self.others[sender]
        self._update_presence()


def _keepalive(token: str, *, hello: bool = False) -> str:
    """A notification that says only who listens (and, with `hello`, that it just started to:
    whoever hears it answers with a keepalive of its own)."""
    return orjson.dumps({"from": token, "hello": True} if hello else {"from": token}).decode()


def _notices(token: str, wakes: list[WakeTarget], events: list[Event]) -> list[str]:
    """As few payloads as fit under PostgreSQL's limit; an event travels alone."""
    notices = [
        orjson.dumps({"from": token, "events": [cluster_events.to_json(event)]}).decode()
        for event in events
    ]
    batch: list[WakeTarget] = []
    size = 0
    for queue, group in dict.fromkeys(wakes):
        entry = len(orjson.dumps([queue, group])) + 1
        if batch and size + entry > cluster.MAX_PAYLOAD_BYTES - 100:
            notices.append(orjson.dumps({"from": token, "wakes": batch}).decode())
            batch, size = [], 0
        batch.append((queue, group))
        size += entry
    if batch:
        notices.append(orjson.dumps({"from": token, "wakes": batch}).decode())
    return notices
