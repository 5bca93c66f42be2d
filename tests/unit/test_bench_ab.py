"""`ops.bench.ab` pairs each round against the first commit's: on a noisy machine the per-round
ratio and the count of rounds lower carry the result, and the sign test says what a count means."""

from __future__ import annotations

import pytest

from ops.bench.ab import paired


def test_rounds_are_paired_with_the_first_commits_round() -> None:
    first = [100.0, 200.0, 400.0, 100.0]
    other = [90.0, 180.0, 440.0, 80.0]  # a drifting machine: the medians alone mislead
    result = paired(other, first)
    assert result["rounds_paired"] == 4
    assert result["rounds_lower"] == 3
    assert result["round_ratio_median"] == pytest.approx(0.9)


def test_the_sign_test_weighs_the_count_of_rounds_lower() -> None:
    assert paired([1.0] * 20, [2.0] * 20)["sign_test_p"] == pytest.approx(2 / 2**20, abs=1e-4)
    assert paired([1.0] * 10 + [3.0] * 10, [2.0] * 20)["sign_test_p"] == 1.0
    nineteen = paired([1.0] * 19 + [3.0], [2.0] * 20)["sign_test_p"]
    assert nineteen == pytest.approx(2 * 21 / 2**20, abs=1e-4)


def test_a_first_commit_compared_with_itself_is_never_lower() -> None:
    result = paired([5.0, 6.0], [5.0, 6.0])
    assert result == {
        "round_ratio_median": 1.0,
        "rounds_lower": 0,
        "rounds_paired": 2,
        "sign_test_p": 1.0,
    }
