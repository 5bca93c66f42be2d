"""Generated ids: valid UUIDv7, strictly ascending within a process, across batches too."""

from __future__ import annotations

import uuid

from queen.ids import uuid7_str, uuid7_strs


def test_ids_are_version_7_and_ascend_across_calls() -> None:
    ids = [uuid7_str(), *uuid7_strs(3), *uuid7_strs(0), *uuid7_strs(2000), uuid7_str()]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    for text in (ids[0], ids[-1]):
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (7, uuid.RFC_4122, text)
