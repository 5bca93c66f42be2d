"""Reading buffer files that a failed write damaged: every intact record is replayed, wherever the
damage sits, because each one was a push some client was told is safe.

Earlier versions left a torn record in place when an append ran out of disk and kept appending
after it; their files must still give back everything acknowledged after the tear.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from queen.storage.file_buffer import LENGTH, count_records, encode, read_records
from tests.support import buffered_record


def write(tmp_path: Path, *parts: bytes) -> Path:
    path = tmp_path / "failover_test.buf"
    path.write_bytes(b"".join(parts))
    return path


def read_txids(path: Path) -> list[str]:
    return [r["transactionId"] for r in read_records(path)]


def test_records_appended_after_a_torn_one_are_read(tmp_path: Path) -> None:
    torn = encode(buffered_record("c", "x" * 5000))[:1500]
    path = write(
        tmp_path,
        encode(buffered_record("a1")),
        encode(buffered_record("a2")),
        torn,
        encode(buffered_record("b1")),
        encode(buffered_record("b2")),
    )
    assert read_txids(path) == ["a1", "a2", "b1", "b2"]
    assert count_records(path) == 4


def test_a_torn_length_that_spans_intact_records_does_not_swallow_them(tmp_path: Path) -> None:
    """The torn record's length ends exactly where a later record starts, so the frame looks
    whole; its records must still be found inside it."""
    followers = [encode(buffered_record(f"b{n}")) for n in range(1, 5)]
    swallowed = sum(len(f) for f in followers[:3])
    big = encode(buffered_record("c", "x" * 4000))
    torn = big[: len(big) - swallowed]
    path = write(tmp_path, encode(buffered_record("a1")), torn, *followers)
    assert read_txids(path) == ["a1", "b1", "b2", "b3", "b4"]


def test_a_torn_tail_ends_the_file_and_keeps_what_came_before(tmp_path: Path) -> None:
    intact = encode(buffered_record("a1")) + encode(buffered_record("a2"))
    for tail in (encode(buffered_record("c"))[:-7], LENGTH.pack(300)[:2], LENGTH.pack(300)):
        path = write(tmp_path, intact, tail)
        assert read_txids(path) == ["a1", "a2"], tail
        assert count_records(path) == 2


payloads = st.one_of(
    st.text(max_size=300),
    st.dictionaries(st.text(max_size=8), st.text(max_size=40), max_size=4),
    st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=20),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(payloads, st.one_of(st.none(), st.floats(min_value=0, max_value=1))),
        min_size=1,
        max_size=12,
    )
)
def test_every_intact_record_is_read_whatever_was_torn_between_them(
    tmp_path_factory: Any, entries: list[tuple[Any, float | None]]
) -> None:
    """A record torn at any point but its last three bytes: those could be completed, byte for
    byte, by the length of the record that follows, which no reader can tell from a whole one.
    (`count_records`, which does not parse, is checked on the fixed cases above.)"""
    parts: list[bytes] = []
    intact: list[str] = []
    for n, (payload, cut) in enumerate(entries):
        encoded = encode(buffered_record(f"t{n}", payload))
        if cut is None:
            parts.append(encoded)
            intact.append(f"t{n}")
        else:
            parts.append(encoded[: 1 + int(cut * (len(encoded) - 4))])
    path = write(tmp_path_factory.mktemp("torn"), *parts)
    assert read_txids(path) == intact
