"""An idle file buffer costs nothing: with nothing held, active, to replay or to retry, the drain
loop sleeps until an append wakes it, instead of looking at the disk every FILE_BUFFER_FLUSH_MS
(about 10 ms of CPU a second per idle worker). An append still replays as soon as the database
takes it, and then the loop goes back to sleep."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import trio

from queen.actors.file_buffer import FileBuffer, buffer_record
from tests.unit.test_file_buffer_held import GatedDatabase, item, new_buffer

WINDOW_S = 1.0  # 50 drain cycles at the tests' 20 ms flush interval


def count_cycles(buffer: FileBuffer) -> Callable[[], int]:
    """How many drain cycles have looked for files to replay so far."""
    calls = [0]
    replay_queue = buffer.directory.replay_queue

    def counted() -> list[Path]:
        calls[0] += 1
        return replay_queue()

    buffer.directory.replay_queue = counted  # type: ignore[method-assign]
    return lambda: calls[0]


async def test_an_idle_buffer_sleeps_until_an_append_wakes_it(tmp_path: Path) -> None:
    db = GatedDatabase()
    db.open.set()
    buffer = new_buffer(tmp_path, db)
    cycles = count_cycles(buffer)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(buffer.run)
            await trio.sleep(WINDOW_S)  # an observation window, not a wait for a condition
            assert cycles() <= 2, f"{cycles()} drain cycles while idle"

            await buffer.append([buffer_record(item("p", "buffered"))])
            assert not await buffer.behind_buffered([item("p")]), "replayed once appended"
            assert db.stored == ["buffered"]

            after = cycles()  # a wake-up or two may still be on its way
            await trio.sleep(WINDOW_S)
            assert cycles() - after <= 2, "drain cycles after the buffer went idle again"
            nursery.cancel_scope.cancel()
