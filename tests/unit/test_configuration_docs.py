from pathlib import Path

from queen.docs import render

REPO = Path(__file__).resolve().parents[2]


def test_configuration_docs_match_the_code() -> None:
    committed = (REPO / "docs" / "configuration.md").read_text()
    assert committed == render(), "run `python -m queen.docs` and commit docs/configuration.md"
