"""Process-wide logging set-up: the original's text pattern by default, one JSON object per line
with LOG_FORMAT=json, so a log shipper never has to parse free text. A line written while a
request is served carries that request's id (set by queen/metrics/asgi.py; kept here, so the
`serve` parent, which logs but serves nothing, never loads the metrics stack and its ssl)."""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from typing import Any

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

_LEVELS = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "off": logging.CRITICAL + 10,
}
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "queen_request_id", default=None
)


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to a record logged while a request is being served."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current_request_id.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        return True


def _timestamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """An extra context key never replaces one of the four fixed keys: a log shipper filters on
    `level` and `logger`, and `extra={"level": ...}` must not be able to forge them."""

    def __init__(self) -> None:
        super().__init__()
        # Imported here: orjson brings datetime, uuid, json and dataclasses' inspect along, ~1 MB
        # the supervising parent (queen/supervise.py) does not need when it logs text.
        import orjson  # noqa: PLC0415

        self._dumps = orjson.dumps
        self._options = orjson.OPT_NON_STR_KEYS

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return self._dumps(entry, default=str, option=self._options).decode()


# Control characters in logged values (a request path, a header) are written as escapes, so a
# value cannot end the line and forge one that looks like the server's own.
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)}


def _escaped(value: Any) -> str:
    return str(value).translate(_ESCAPES)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = _timestamp(record).replace("T", " ").rstrip("Z")
        extras = " ".join(f"{k}={_escaped(v)}" for k, v in _extras(record).items())
        line = (
            f"[{stamp}] [{record.levelname.lower()}] {record.name}: {_escaped(record.getMessage())}"
        )
        if extras:
            line = f"{line} {extras}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())  # lines written while serving carry the request's id
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level.lower()])
    for noisy in ("hypercorn.access", "asyncio", "quart.serving"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
