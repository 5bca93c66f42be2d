"""The ASGI layer around what a worker serves (queen/metrics/asgi.py), driven with a plain ASGI
app: request ids in and out, the id on log lines written while serving, the latency histogram,
and an access log that QUEEN_ACCESS_LOG=off silences."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from queen.logs import RequestIdFilter
from queen.metrics.asgi import Observed, route_of
from queen.metrics.families import Families, open_families
from queen.metrics.pending import Pending

app_log = logging.getLogger("queen.test-app")


async def _app(scope: Any, receive: Any, send: Any) -> None:
    app_log.warning("handling")
    await send({"type": "http.response.start", "status": 201, "headers": [(b"a", b"b")]})
    await send({"type": "http.response.body", "body": b"hello"})


def _scope(path: str = "/api/v1/push", headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    return {"type": "http", "method": "POST", "path": path, "headers": headers or []}


async def _serve(observed: Observed, scope: Any) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await observed(scope, receive, send)
    return sent


@pytest.fixture
def families(tmp_path: Path) -> Families:
    return open_families(tmp_path / "prometheus")


@pytest.fixture
def captured(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.handler.addFilter(RequestIdFilter())
    caplog.set_level(logging.DEBUG)
    yield caplog
    caplog.handler.filters.clear()


def _counted(families: Families) -> str:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(families.directory))  # type: ignore[no-untyped-call]
    return generate_latest(registry).decode()


async def test_a_plausible_client_id_is_kept_and_put_on_log_lines(
    families: Families, captured: pytest.LogCaptureFixture
) -> None:
    in_flight: list[int] = []
    pending = Pending()
    observed = Observed(_app, families, pending, "info", in_flight.append)
    sent = await _serve(observed, _scope(headers=[(b"x-request-id", b"trace-42")]))
    assert (b"x-request-id", b"trace-42") in sent[0]["headers"]
    assert (b"a", b"b") in sent[0]["headers"]
    handled = [r for r in captured.records if r.getMessage() == "handling"]
    assert [r.request_id for r in handled] == ["trace-42"]  # type: ignore[attr-defined]
    [access] = [r for r in captured.records if r.name == "queen.access"]
    assert access.levelno == logging.INFO
    assert (access.path, access.status, access.bytes) == ("/api/v1/push", 201, 5)  # type: ignore[attr-defined]
    assert in_flight == [1, -1]
    counted = (
        'queen_http_request_duration_seconds_count{method="POST",route="push",status="201"} 1.0'
    )
    assert counted not in _counted(families)  # buffered until the sampler flushes
    pending.flush()
    assert counted in _counted(families)


@pytest.mark.parametrize("header", [b"has spaces", b"x" * 65, "é".encode()])
async def test_an_implausible_client_id_is_replaced(families: Families, header: bytes) -> None:
    sent = await _serve(
        Observed(_app, families, Pending(), "debug", lambda _: None),
        _scope(headers=[(b"x-request-id", header)]),
    )
    ids = [value for name, value in sent[0]["headers"] if name == b"x-request-id"]
    assert len(ids) == 1 and ids[0] != header and len(ids[0]) == 32


async def test_access_log_off_writes_no_line(
    families: Families, captured: pytest.LogCaptureFixture
) -> None:
    await _serve(Observed(_app, families, Pending(), "off", lambda _: None), _scope())
    assert not [r for r in captured.records if r.name == "queen.access"]


def test_route_labels_stay_a_small_set() -> None:
    assert route_of("/api/v1/pop/queue/q/partition/p") == "pop"
    assert route_of("/api/v1/status/queues/q") == "status"
    assert route_of("/api/v1/whatever-a-client-invents") == "api-other"
    assert route_of("/metrics/prometheus") == "metrics"
    assert route_of("/random") == "other"
