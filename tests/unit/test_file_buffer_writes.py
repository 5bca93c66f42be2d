"""The buffer actor's group commit refuses a record over the 10 MiB cap on its own: requests that
happen to share its write are written and answered as if it had never come.

The four requests are made to share one write by holding the disk while they queue up, which a
live server only does by chance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
import trio.testing

from queen.actors.file_buffer import FileBuffer
from queen.config import Config
from queen.errors import PayloadTooLarge
from queen.storage.file_buffer import MAX_RECORD_BYTES, read_records
from tests.support import buffered_record


async def no_database(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    raise AssertionError("push maintenance is on: nothing replays")


async def test_a_record_over_the_cap_is_refused_alone(tmp_path: Path) -> None:
    config = Config.from_env({}, file_buffer_dir=str(tmp_path))
    buffer = FileBuffer(config, tmp_path / "w0", no_database, maintenance_on=lambda: True)
    answers: dict[str, str] = {}
    all_answered = trio.Event()

    async def push(txid: str, payload: Any = None) -> None:
        try:
            await buffer.append([buffered_record(txid, payload)])
        except PayloadTooLarge as error:
            answers[txid] = f"413 {error.message}"
        except OSError as error:
            answers[txid] = f"500 {error}"
        else:
            answers[txid] = "buffered"
        if len(answers) == 4:
            all_answered.set()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(buffer.run)
            async with buffer._disk:
                nursery.start_soon(push, "first")
                await trio.testing.wait_all_tasks_blocked()  # taken alone, waiting for the disk
                nursery.start_soon(push, "before")
                nursery.start_soon(push, "huge", "x" * MAX_RECORD_BYTES)
                nursery.start_soon(push, "after")
                await trio.testing.wait_all_tasks_blocked()  # queued: they share the next write
            await all_answered.wait()
            nursery.cancel_scope.cancel()

    on_disk = [
        r["transactionId"] for p in sorted((tmp_path / "w0").glob("*.buf")) for r in read_records(p)
    ]
    print(f"\n[oversized] answers={ {k: v[:60] for k, v in answers.items()} } on_disk={on_disk}")
    assert {k: answers[k] for k in ("first", "before", "after")} == dict.fromkeys(
        ("first", "before", "after"), "buffered"
    )
    assert answers["huge"].startswith("413 ") and "at most" in answers["huge"]
    assert sorted(on_disk) == ["after", "before", "first"]
    assert buffer.directory.pending == 3
