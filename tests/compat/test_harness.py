"""The harness itself: it runs each client venv, returns the last JSON line, and reports failures
with the script's output and the server log."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compat.harness import ClientRunner, ClientVersion, require_venv
from tests.support import ServerProcess

pytestmark = [pytest.mark.compat, pytest.mark.timeout(60)]

HEALTH = """
from compat_runtime import CLIENT_VERSION, run
import queen

async def main(client, args):
    print("noise before the result")
    return {"client": queen.__version__, "expected": CLIENT_VERSION,
            "health": await client.admin.health(), "echo": args}

run(main)
"""


def test_client_runs_from_its_venv_and_returns_json(client: ClientRunner) -> None:
    result = client.run(HEALTH, {"ping": [1, "two"]})
    assert result["client"] == result["expected"] == client.version.package_version
    assert result["echo"] == {"ping": [1, "two"]}
    assert isinstance(result["health"], dict), result


def test_script_failure_shows_stderr_and_server_log(client015: ClientRunner) -> None:
    with pytest.raises(pytest.fail.Exception) as failure:
        client015.run("raise RuntimeError('deliberate failure')")
    text = str(failure.value)
    assert "exit code 1" in text
    assert "RuntimeError: deliberate failure" in text
    assert "server log" in text


def test_script_timeout_is_a_failure(client015: ClientRunner) -> None:
    with pytest.raises(pytest.fail.Exception, match="timed out after"):
        client015.run("import time; time.sleep(30)", timeout_s=1.0)


def test_missing_venv_fails_with_a_clear_message(tmp_path: Path, server: ServerProcess) -> None:
    absent = ClientVersion("0.15", "0.15.0", root=tmp_path / "nowhere")
    with pytest.raises(pytest.fail.Exception, match="make compat-clients"):
        require_venv(absent)
    with pytest.raises(pytest.fail.Exception, match="does not exist"):
        ClientRunner(absent, server).run("print('{}')")
