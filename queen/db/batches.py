"""The stored procedures that take a whole batch of requests in one call: push, pop, ack, lease
renewal and transaction, the procedures of the batcher's lanes (queen/actors/batcher.py).

Most take the items as one JSONB array and answer a JSONB array with one result per item; push
has its own encoding (queen/db/push_batch.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from queen.db import push_batch
from queen.db.items import PopRequest
from queen.db.runner import CallKind, Runner

Results = list[Any]
OpenPops = Callable[[Results], Results]


def _json_array(items: Sequence[Any]) -> tuple[tuple[Any, ...], None]:
    """The typed items (queen/db/items.py) as the JSONB array the procedures read."""
    return (msgspec.json.encode(items).decode(),), None


def _json_results(raw: Any, _items: Sequence[Any], _state: None) -> Results:
    return raw if isinstance(raw, list) else [raw]


@dataclass(frozen=True)
class Procedure:
    """One batch procedure: `encode` answers the call's arguments and whatever `decode` will need
    besides the items to read the answer."""

    sql: str
    encode: Callable[[Sequence[Any]], tuple[tuple[Any, ...], Any]] = _json_array
    decode: Callable[[Any, Sequence[Any], Any], Results] = _json_results
    kind: CallKind = "fetchval"

    async def call(self, db: Runner, items: Sequence[Any]) -> Results:
        args, state = self.encode(items)
        raw = await db.call(self.sql, *args, kind=self.kind)
        return self.decode(raw, items, state)


PUSH = Procedure(push_batch.SQL, push_batch.encode, push_batch.decode, "fetchrow")
POP = Procedure("SELECT queen.pop_requests($1::jsonb)")
ACK = Procedure("SELECT queen.ack_items($1::jsonb)")
RENEW = Procedure("SELECT queen.renew_leases($1::jsonb)")


def pop_owned_by(owner: str, open_pops: OpenPops | None = None) -> Procedure:
    """POP recording every lease it takes as taken by `owner`, the worker incarnation, so that
    a successor can give them back if this one crashes (queen.release_previous_leases).
    `open_pops` turns stored envelopes back into payloads, for every pop whichever route or
    parked waiter asked."""

    def encode(items: Sequence[PopRequest]) -> tuple[tuple[Any, ...], None]:
        return _json_array([msgspec.structs.replace(item, lease_owner=owner) for item in items])

    if open_pops is None:
        return Procedure(POP.sql, encode)

    def decode(raw: Any, items: Sequence[Any], state: None) -> Results:
        return open_pops(_json_results(raw, items, state))

    return Procedure(POP.sql, encode, decode)


TRANSACTION = Procedure("SELECT jsonb_build_array(queen.run_transaction($1::jsonb -> 0))")
