"""Log lines a shipper can parse: with LOG_FORMAT=json every record is one JSON object on one line
with ts/level/logger/msg and its context keys; the text format keeps the original's pattern."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator

import pytest

from queen import logs


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """configure() replaces the root handlers; give them back so pytest's capture keeps working."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield root
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def _record(
    msg: str = "hello %s",
    args: tuple[object, ...] = ("world",),
    levelno: int = logging.INFO,
    **extra: object,
) -> logging.LogRecord:
    record = logging.LogRecord("queen.test", levelno, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_line_has_the_fixed_keys_and_the_context() -> None:
    line = logs.JsonFormatter().format(_record(worker_id=3, path="/health"))
    entry = json.loads(line)
    assert entry["level"] == "info"
    assert entry["logger"] == "queen.test"
    assert entry["msg"] == "hello world"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["ts"])
    assert entry["worker_id"] == 3
    assert entry["path"] == "/health"
    assert list(entry)[:4] == ["ts", "level", "logger", "msg"]


def test_json_context_cannot_forge_the_fixed_keys() -> None:
    entry = json.loads(logs.JsonFormatter().format(_record(level="critical", logger="fake")))
    assert entry["level"] == "info"
    assert entry["logger"] == "queen.test"


def test_json_stays_one_line_with_newlines_tracebacks_and_odd_values() -> None:
    record = _record("two\nlines", ())
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record.exc_info = sys.exc_info()
    record.odd = object()
    record.mapping = {1: "non-string key"}
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["msg"] == "two\nlines"
    assert "ValueError: bad" in entry["exc"]
    assert entry["mapping"] == {"1": "non-string key"}
    assert entry["odd"].startswith("<object object")


def test_text_line_follows_the_original_pattern() -> None:
    line = logs.TextFormatter().format(_record(levelno=logging.WARNING, worker_id=1))
    assert re.fullmatch(
        r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\] \[warning\] "
        r"queen\.test: hello world worker_id=1",
        line,
    )


def test_configure_json_prints_one_object_per_line(
    root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("info", "json")
    log = logging.getLogger("queen.some.module")
    log.info("first", extra={"port": 6632})
    log.debug("hidden at info")
    log.warning("second\nwith a newline")
    lines = capsys.readouterr().err.splitlines()
    entries = [json.loads(line) for line in lines]
    assert [(e["level"], e["logger"], e["msg"]) for e in entries] == [
        ("info", "queen.some.module", "first"),
        ("warning", "queen.some.module", "second\nwith a newline"),
    ]
    assert entries[0]["port"] == 6632


@pytest.mark.parametrize(
    ("level", "shown", "hidden"),
    [
        ("trace", logs.TRACE, None),
        ("debug", logging.DEBUG, logs.TRACE),
        ("WARN", logging.WARNING, logging.INFO),
        ("error", logging.ERROR, logging.WARNING),
        ("off", None, logging.CRITICAL),
    ],
)
def test_configure_sets_the_level(
    root_logger: logging.Logger, level: str, shown: int | None, hidden: int | None
) -> None:
    logs.configure(level, "text")
    if shown is not None:
        assert root_logger.isEnabledFor(shown)
    if hidden is not None:
        assert not root_logger.isEnabledFor(hidden)
