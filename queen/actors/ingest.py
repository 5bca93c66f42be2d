"""The push path: database first, disk when the database cannot take it.

A push goes to the disk buffer instead of PostgreSQL when push maintenance is on, when the
database is known to be down (a push failed for lack of it within the last second), or when its
own database call fails for an availability reason or is not answered within the in-flight
deadline (statement timeout + 5 s, waiting for a connection included). Other database errors are
real errors (500); validation already happened, so bad input never reaches the buffer. Each
request is answered only after its messages are committed or fsynced.

A push given up on at the deadline may still commit later (its call was only presumed dead); the
buffered copy then replays as a duplicate of the same transactionId, never as a second message.
"""

from __future__ import annotations

import math
from typing import Any

import trio

from queen.actors.file_buffer import buffer_record
from queen.actors.slots import call_deadline_s, is_availability_error
from queen.errors import ServiceUnavailable
from queen.services import Services


async def push(services: Services, items: list[dict[str, Any]]) -> tuple[int, list[dict[str, Any]]]:
    buffer = services.file_buffer
    if services.flags.maintenance:
        return await _to_disk(services, items)
    if buffer.available and buffer.database_known_down():
        return await _to_disk(services, items)
    try:
        with trio.fail_after(call_deadline_s(services.config) or math.inf):
            results = await services.batcher.push.submit(items)
    except Exception as error:
        if not (isinstance(error, trio.TooSlowError) or is_availability_error(error)):
            raise
        buffer.note_database(False)
        if not buffer.available:
            raise ServiceUnavailable(
                "Database unavailable and no file buffer to fall back on"
            ) from error
        return await _to_disk(services, items)
    buffer.note_database(True)
    for index, result in enumerate(results):
        result["index"] = index
    return 201, results


async def _to_disk(
    services: Services, items: list[dict[str, Any]]
) -> tuple[int, list[dict[str, Any]]]:
    try:
        await services.file_buffer.append([buffer_record(item) for item in items])
    except OSError:
        return 500, [
            {
                "index": index,
                "status": "failed",
                "queue": item["queue"],
                "partition": item["partition"],
                "error": "File buffer write failed",
            }
            for index, item in enumerate(items)
        ]
    return 201, [
        {
            "index": index,
            "status": "buffered",
            "queue": item["queue"],
            "partition": item["partition"],
            "transactionId": item["transactionId"],
        }
        for index, item in enumerate(items)
    ]
