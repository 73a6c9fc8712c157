"""benchmark/reporting/agreement.py: rank correlation with the paper on known answers."""

from __future__ import annotations

import math

import pytest

from benchmark.reporting.agreement import MIN_ROWS, markdown, rank_agreement


def test_identical_ranks_give_one_whatever_the_scale():
    paper = [0.12, 0.35, 0.20, 0.58, 0.74]
    got = rank_agreement("rot. R²", [p ** 3 * 100 for p in paper], paper)  # monotone: same ranks
    assert (got.n, got.collapsed, got.why) == (5, 0, "")
    assert got.spearman == pytest.approx(1.0) and got.kendall == pytest.approx(1.0)


def test_reversed_ranks_give_minus_one():
    got = rank_agreement("top-1", [5.0, 4.0, 3.0, 2.0, 1.0], [10.0, 20.0, 30.0, 40.0, 50.0])
    assert got.spearman == pytest.approx(-1.0) and got.kendall == pytest.approx(-1.0)


def test_hand_computed_case():
    # Ranks 1..5 against 2,1,4,3,5: d = -1,1,-1,1,0, so rho = 1 - 6*4/(5*24) = 0.8; of the 10 pairs, (1,2)
    # and (3,4) are discordant, so tau = (8 - 2)/10 = 0.6.
    got = rank_agreement("m", [1, 2, 3, 4, 5], [2, 1, 4, 3, 5])
    assert got.spearman == pytest.approx(0.8) and got.kendall == pytest.approx(0.6)


def test_ties_use_average_ranks_and_tau_b():
    # ours ranks 1, 2.5, 2.5, 4: rho = cov/sd/sd of the ranks = 4.5 / sqrt(4.5 * 5) = 3 / sqrt(10);
    # tau-b: 5 concordant, 0 discordant, one pair tied in ours: 5 / sqrt((6 - 1) * 6).
    got = rank_agreement("m", [1.0, 2.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])
    assert got.spearman == pytest.approx(3 / math.sqrt(10)) and got.kendall == pytest.approx(5 / math.sqrt(30))


def test_fewer_than_three_rows_is_not_defined_and_says_why():
    got = rank_agreement("rot. R²", [0.1, 0.2], [0.3, 0.4])
    assert MIN_ROWS == 3 and got.spearman is None and got.kendall is None and got.why == "2 rows < 3"
    assert got.sentence() == "rot. R²: not defined (2 rows < 3)"
    assert "| rot. R² | 2 | 0 | not defined (2 rows < 3) | not defined (2 rows < 3) |" in markdown([got])
    assert rank_agreement("m", [], []).why == "0 rows < 3"


def test_collapsed_rows_are_left_out_and_counted():
    ours, paper = [1.0, 2.0, 3.0, 4.0, 0.0], [1.0, 2.0, 3.0, 4.0, 9.0]  # the last row would break the order
    got = rank_agreement("m", ours, paper, [False, False, False, False, True])
    assert (got.n, got.collapsed) == (4, 1) and got.spearman == pytest.approx(1.0)
    assert got.sentence() == "m: Spearman ρ 1.00, Kendall τ 1.00 over 4 rows (1 collapsed left out)"
    # A collapsed row without our value was not a pair: not counted as left out.
    assert rank_agreement("m", [1.0, 2.0, 3.0, None], [1.0, 2.0, 3.0, 4.0], [False] * 3 + [True]).collapsed == 0


def test_missing_and_non_finite_values_are_not_pairs():
    got = rank_agreement("m", [1.0, None, math.nan, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, math.inf, 3.0, 4.0])
    assert got.n == 3 and got.spearman == pytest.approx(1.0)


def test_constant_side_is_not_defined():
    got = rank_agreement("m", [0.0, 0.0, 0.0], [1.0, 2.0, 3.0])
    assert got.spearman is None and got.why == "all ours values tied"
    assert rank_agreement("m", [1.0, 2.0, 3.0], [5.0, 5.0, 5.0]).why == "all published values tied"


def test_mismatched_lengths_fail():
    with pytest.raises(ValueError, match="3 values of ours, 2 published"):
        rank_agreement("m", [1, 2, 3], [1, 2])


def test_pattern_study_numbers_of_the_issue():
    """The 10 Table-1 rows of docs/pattern.md (2 seeds, pattern regime): Spearman 0.24 for rotation R² and
    -0.09 for top-1, as computed by hand in issue 20."""
    rot = [-0.004, 0.228, 0.256, 0.261, 0.272, 0.029, -0.000, 0.216, 0.162, 0.195]
    rot_paper = [0.12, 0.20, 0.35, 0.32, 0.35, 0.31, 0.58, 0.74, 0.29, 0.71]
    top1 = [18.9, 84.0, 90.6, 90.5, 85.2, 34.9, 29.6, 92.1, 76.2, 72.5]
    top1_paper = [82.90, 80.48, 81.13, 84.29, 83.43, 82.61, 77.49, 80.4, 86.05, 86.14]
    assert f"{rank_agreement('r', rot, rot_paper).spearman:.2f}" == "0.24"
    assert f"{rank_agreement('t', top1, top1_paper).spearman:.2f}" == "-0.09"
