"""Wake-ups between instances that share only PostgreSQL (a plain load balancer, no peer list):
one LISTEN connection per instance, and NOTIFYs sent on it after pushes committed.

A NOTIFY inside the push's transaction would take PostgreSQL's commit-time notification lock and
serialise every push commit behind it; here the push commits first, its wake-up is debounced per
queue (queen/sync/debounce.py) and sent later, on this actor's own connection, batched into as few
notifications as fit. Each instance names itself in what it sends and ignores its own echoes. While
the connection is down nothing is sent: pops fall back to their own re-checks, and the actor
reconnects with backoff instead of crashing (a database outage is not a fault of this actor).
"""

from __future__ import annotations

import logging
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
    ) -> None:
        self.params = params
        self.token = token
        self.on_wakes = on_wakes
        self.on_event = on_event
        self.counters = counters
        self.listening = False
        self._was_listening = False
        self._wakes: list[WakeTarget] = []
        self._events: list[Event] = []
        self._kick = trio.Event()

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
            self.listening = True
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_forever, ConnectionRunner(conn))
                async for payload in received:
                    self._heard(payload)
                raise ConnectionError("the listening connection closed")
        finally:
            self._was_listening |= self.listening
            self.listening = False
            conn.terminate()

    async def _send_forever(self, runner: ConnectionRunner) -> None:
        while True:
            with trio.move_on_after(KEEPALIVE_S):
                await self._kick.wait()
            self._kick = trio.Event()
            wakes, self._wakes = self._wakes, []
            events, self._events = self._events, []
            notices = _notices(self.token, wakes, events) or [_keepalive(self.token)]
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


def _keepalive(token: str) -> str:
    """A notification every listener ignores (its own echo included)."""
    return orjson.dumps({"from": token}).decode()


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
