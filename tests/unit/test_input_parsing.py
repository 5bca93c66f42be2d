"""The one reading of each kind of client input (issue #13): ids, integer query parameters and
timestamps. Each either gives a value PostgreSQL will take or refuses with a BadRequest; none
raises anything else, whatever text it is given."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from queen.errors import BadRequest
from queen.http.validate import instant, query_int, uuid_text

CANONICAL = "0190a5b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b"
INT_LIMIT = 2**63 - 1


@pytest.mark.parametrize(
    "spelling",
    [
        CANONICAL,
        CANONICAL.upper(),
        CANONICAL.replace("-", ""),
        "{" + CANONICAL + "}",
        "0190-a5b2-7c3d-7e4f-8a1b-2c3d-4e5f-6a7b",  # a hyphen after any group of four
    ],
)
def test_every_spelling_postgresql_reads_becomes_the_canonical_one(spelling: str) -> None:
    assert uuid_text(spelling, "refused") == CANONICAL


@pytest.mark.parametrize(
    "spelling",
    [
        "urn:uuid:" + CANONICAL,
        CANONICAL + "-",
        "-" + CANONICAL,
        "01-90a5b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b",
        "{" + CANONICAL,
        CANONICAL + "}",
        " " + CANONICAL,
        CANONICAL[:-1] + "g",
        CANONICAL[:-1] + "٣",  # a decimal digit, not a hex one
        CANONICAL[:-1],
        "",
    ],
)
def test_spellings_postgresql_refuses_are_refused(spelling: str) -> None:
    with pytest.raises(BadRequest, match=r"^refused$"):
        uuid_text(spelling, "refused")


@given(st.text(max_size=40) | st.uuids().map(str))
def test_an_id_is_refused_or_canonical(text: str) -> None:
    try:
        canonical = uuid_text(text, "refused")
    except BadRequest:
        return
    assert canonical == str(uuid.UUID(canonical))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("42", 42),
        (" +7", 7),
        ("-3", -3),
        ("12abc", 12),  # as atoi reads it
        ("007", 7),
        ("1e999", 1),
        ("²", 5),  # not an ASCII digit: the default
        ("①", 5),
        ("٣", 5),
        ("1²", 1),
        ("abc", 5),
        ("", 5),
        ("9" * 5000, INT_LIMIT),
        ("-" + "9" * 30, -INT_LIMIT),
        ("9223372036854775808", INT_LIMIT),
    ],
)
def test_integers_are_read_from_ascii_digits_and_saturate(raw: str, expected: int) -> None:
    assert query_int({"n": raw}, "n", 5) == expected


@pytest.mark.parametrize("raw", ["²", "1²", "12abc", "-0x10", "٣", "1 "])
def test_a_whole_integer_allows_nothing_else(raw: str) -> None:
    with pytest.raises(BadRequest, match="n must be an integer"):
        query_int({"n": raw}, "n", 5, whole=True)
    assert query_int({"n": "60"}, "n", 5, whole=True) == 60
    assert query_int({}, "n", 5, whole=True) == 5


@given(st.text(max_size=30), st.booleans())
def test_an_integer_parameter_never_fails_otherwise(raw: str, whole: bool) -> None:
    try:
        value = query_int({"n": raw}, "n", 5, whole=whole)
    except BadRequest:
        assert whole
        return
    assert -INT_LIMIT <= value <= INT_LIMIT


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-01-01T00:00:00Z", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-01-01T00:00:00", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-01-01T01:00:30.5+01:00:30.5", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-01-01T01:00:30+01:00:30", datetime(2024, 1, 1, tzinfo=UTC)),
        (" 2024-01-01T00:00:00-02:00 ", datetime(2024, 1, 1, 2, tzinfo=UTC)),
    ],
)
def test_timestamps_become_the_same_instant_in_utc(raw: str, expected: datetime) -> None:
    parsed = instant(raw)
    assert parsed == expected and parsed.utcoffset() == timedelta(0)
    assert parsed.isoformat().endswith("+00:00"), "PostgreSQL only ever sees +00:00"


@pytest.mark.parametrize(
    "raw",
    [
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "9999-12-31T23:59:59-01:00",  # after year 9999 in UTC
        "2024-01-01T00:00:00+24:00",
        "tomorrow",
        "infinity",
        "2024-02-30",
        "2024-01-01\x00",
        "",
    ],
)
def test_what_is_no_instant_is_none(raw: str) -> None:
    assert instant(raw) is None


@given(st.datetimes(timezones=st.just(timezone(timedelta(hours=5, seconds=7, microseconds=9)))))
def test_an_instant_survives_any_offset(moment: datetime) -> None:
    try:
        in_utc = moment.astimezone(UTC)
    except OverflowError:
        assert instant(moment.isoformat()) is None
        return
    assert instant(moment.isoformat()) == in_utc


@given(st.text(max_size=40))
def test_a_timestamp_parameter_never_fails(raw: str) -> None:
    parsed = instant(raw)
    assert parsed is None or parsed.tzinfo is UTC
