"""The systemd unit loads (systemd-analyze verify), scores as well hardened (systemd-analyze
security, offline), and stops queen the way its drain needs: SIGTERM to `queen serve` alone.

systemd-analyze ships with the machine's systemd; it checks a unit file without a running
systemd. The unit's ExecStart and EnvironmentFile point at an installed layout (/opt/queen,
/etc/queen), so a copy pointing at this checkout's virtualenv and example file is checked.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy import artifacts

# systemd-analyze's exposure scale is 0.0 (locked down) to 10.0; below 2.0 it calls "OK".
MAX_EXPOSURE = 20  # --threshold takes tenths


def unit_settings() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(artifacts.SYSTEMD_UNIT)
    return parser


@pytest.fixture
def checkable_unit(tmp_path: Path) -> Path:
    text = artifacts.SYSTEMD_UNIT.read_text()
    text = text.replace("/opt/queen/bin/queen", str(Path(sys.executable).parent / "queen"))
    text = text.replace("/etc/queen/queen.env", str(artifacts.SYSTEMD_ENV))
    unit = tmp_path / "queen.service"
    unit.write_text(text)
    return unit


def systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is part of systemd; install the systemd package"
    return subprocess.run([analyze, *args], capture_output=True, text=True, timeout=60, check=False)


def test_unit_verifies(checkable_unit: Path) -> None:
    result = systemd_analyze("verify", str(checkable_unit))
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_unit_is_hardened(checkable_unit: Path) -> None:
    result = systemd_analyze(
        "security",
        "--offline=yes",
        f"--threshold={MAX_EXPOSURE}",
        "--no-pager",
        str(checkable_unit),
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


def test_stop_signals_the_parent_only_and_waits_for_the_drain() -> None:
    service = unit_settings()["Service"]
    assert service["KillMode"] == "mixed"
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) >= 30
    assert service["User"] != "root" and service["NoNewPrivileges"] == "yes"
    assert service["ExecStart"].endswith("queen serve")
