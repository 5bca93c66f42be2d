"""Generated ids: valid UUIDv7, strictly ascending within a process, across batches too."""

from __future__ import annotations

import uuid

import pytest

from queen import ids as ids_module
from queen.ids import uuid7_str, uuid7_strs


def test_ids_are_version_7_and_ascend_across_calls() -> None:
    ids = [uuid7_str(), *uuid7_strs(3), *uuid7_strs(0), *uuid7_strs(2000), uuid7_str()]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    for text in (ids[0], ids[-1]):
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (7, uuid.RFC_4122, text)


def test_every_id_is_canonical_version_7_across_counter_boundaries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ids are formatted sixteen at a time: each one must still carry its own counter value,
    also where the counter carries into the next group of 16 and into rand_a (2^18)."""

    class Clock:
        def reserve(self, count: int) -> tuple[int, int]:
            return 1_733_500_000_000, (1 << 18) - 21

    monkeypatch.setattr(ids_module, "_clock", Clock())
    ids = uuid7_strs(50)
    assert ids == sorted(ids) and len(set(ids)) == 50
    for position, text in enumerate(ids):
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (7, uuid.RFC_4122, text)
        counter = (1 << 18) - 21 + position
        assert parsed.int >> 80 == 1_733_500_000_000
        assert (parsed.int >> 64) & 0xFFF == counter >> 18
        assert (parsed.int >> 44) & 0x3FFFF == counter & 0x3FFFF
