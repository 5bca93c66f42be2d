"""Fixtures for the compat suite: a runner per official client, bound to the module's server."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from tests.compat.harness import CLIENT_015, CLIENT_26, ClientRunner, ClientVersion, unique_queue
from tests.support import ServerProcess


@pytest.fixture
def client015(server: ServerProcess) -> ClientRunner:
    """Scripts run with queen-mq==0.15.0, the primary contract."""
    return ClientRunner(CLIENT_015, server)


@pytest.fixture
def client26(server: ServerProcess) -> ClientRunner:
    """Scripts run with queen-mq==2.6.0 in its default configuration."""
    return ClientRunner(CLIENT_26, server)


@pytest.fixture(params=[CLIENT_015, CLIENT_26], ids=lambda v: f"client-{v.label}")
def client(request: pytest.FixtureRequest, server: ServerProcess) -> ClientRunner:
    """The same story with each official client."""
    version: ClientVersion = request.param
    return ClientRunner(version, server)


@pytest.fixture
def queue_name() -> str:
    return unique_queue()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed assertion on a script's result shows that script's output and the server log."""
    report = yield
    if report.when == "call" and report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, ClientRunner):
                report.sections.extend(value.failure_sections())
    return report
