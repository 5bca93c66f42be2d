"""Reading request query strings for the admin routes: pagination, timestamps and name filters
parsed one way everywhere, refused (400) rather than clamped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from quart import request

from queen.errors import BadRequest
from queen.http import validate

MAX_LIMIT = 1000
MAX_OFFSET = 2**31 - 1  # the procedures read it as a PostgreSQL integer
# The widest report window: 2000 points of the widest bucket (6 h, operations spec §1.3).
MAX_WINDOW = timedelta(hours=6 * 2000)


def partition_id(value: str) -> str:
    return validate.uuid_text(value, "partitionId must be a UUID")


def transaction_id(value: str) -> str:
    if not value or len(value) > validate.MAX_NAME:
        raise BadRequest(f"transactionId must be 1 to {validate.MAX_NAME} characters")
    return validate.text(value, "transactionId")


def page(default_limit: int) -> dict[str, int]:
    """`limit`/`offset` from the query; out-of-range values are refused, not clamped, so a client
    paging through results never silently gets a different page than it asked for."""
    limit = validate.query_int(request.args, "limit", default_limit)
    offset = validate.query_int(request.args, "offset", 0)
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
    if offset < 0:
        raise BadRequest("offset must not be negative")
    if offset > MAX_OFFSET:
        raise BadRequest(f"offset must be at most {MAX_OFFSET}")
    return {"limit": limit, "offset": offset}


def timestamp(key: str) -> str | None:
    """An ISO-8601 query timestamp (`validate.instant`), rendered in UTC for PostgreSQL."""
    raw = request.args.get(key)
    if not raw:
        return None
    parsed = validate.instant(raw)
    if parsed is None:
        raise BadRequest(f"{key} must be an ISO-8601 timestamp")
    return parsed.isoformat()


def name_filters(**keys: tuple[str, ...]) -> dict[str, str]:
    """Exact-match name filters; each filter may be spelt several ways in the query."""
    filters: dict[str, str] = {}
    for key, spellings in keys.items():
        for spelling in spellings:
            value = request.args.get(spelling)
            if value:
                filters[key] = validate.name(value, spelling)
                break
    return filters


def time_window(default_span: timedelta) -> tuple[datetime, datetime]:
    """`from`/`to` of a report: `to` defaults to now and `from` to `default_span` before it;
    a window that ends before it starts or spans more than MAX_WINDOW is refused."""
    raw_to, raw_from = timestamp("to"), timestamp("from")
    end = datetime.fromisoformat(raw_to) if raw_to else datetime.now(UTC)
    start = datetime.fromisoformat(raw_from) if raw_from else end - default_span
    if start > end:
        raise BadRequest("from must not be later than to")
    if end - start > MAX_WINDOW:
        raise BadRequest(f"the time range may span at most {MAX_WINDOW.days} days")
    return start, end
