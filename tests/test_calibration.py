"""Calibration metrics, Spearman, paired differences, seed t-intervals, per-group gap closed, reliability figure.

Expected values are computed by hand or by an independent loop in the test, never by the code under test.
"""

import math

import numpy as np
import pandas as pd
import pytest

from analysis import (calibration_metrics, group_gap_closed, paired_difference, per_group_calibration,
                      reliability_curve, seed_summary, uncertainty_error_correlation)
from plural.calibration import average_ranks, spearman
from analysis.summary import t_quantile
from plural.errors import PluralError


def _rows(margin, user=None, group=None, **extra):
    margin = np.asarray(margin, float)
    n = len(margin)
    df = pd.DataFrame({"row": np.arange(n), "user_id": user if user is not None else [f"u{i}" for i in range(n)],
                       "group": group if group is not None else ["g"] * n, "margin": margin, "correct": margin > 0})
    for k, v in extra.items():
        df[k] = v
    return df


def test_scores_of_hand_examples():
    m = calibration_metrics(_rows([0.0, 0.0, 0.0]))
    assert np.isclose(m["log_loss"], math.log(2)) and np.isclose(m["brier"], 0.25)
    assert m["ece"] == 0.0  # confidence 0.5 at a tie, hit counted 0.5
    # q = 0.75 and 0.25: a confident right and a confident wrong answer, both at confidence 0.75
    m = calibration_metrics(_rows([math.log(3), -math.log(3)]))
    assert np.isclose(m["log_loss"], (-math.log(0.75) - math.log(0.25)) / 2)
    assert np.isclose(m["brier"], (0.25 ** 2 + 0.75 ** 2) / 2)
    assert np.isclose(m["ece"], 0.25)  # one bin: confidence 0.75, frequency 0.5
    assert "kl_to_oracle" not in m  # no ground truth, no oracle keys
    # with ground truth: p = 0.9, model says 0.5
    m = calibration_metrics(_rows([0.0, 0.0], oracle_p=[0.9, 0.9]))
    assert np.isclose(m["kl_to_oracle"], 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5))
    assert np.isclose(m["prob_mae"], 0.4) and np.isclose(m["oracle_brier"], 0.01)
    assert np.isclose(m["oracle_log_loss"], -math.log(0.9))
    # a partly null oracle_p is not ground truth
    assert "kl_to_oracle" not in calibration_metrics(_rows([0.0, 0.0], oracle_p=[0.9, None]))


def test_kl_is_zero_when_the_model_has_the_oracle_probability():
    p = np.random.default_rng(0).uniform(0.05, 0.95, 500)
    m = calibration_metrics(_rows(np.log(p / (1 - p)), oracle_p=p))
    assert abs(m["kl_to_oracle"]) < 1e-9 and m["prob_mae"] < 1e-9
    assert np.isclose(m["log_loss"], m["oracle_log_loss"]) and np.isclose(m["brier"], m["oracle_brier"])
    worse = calibration_metrics(_rows(3 * np.log(p / (1 - p)), oracle_p=p))
    assert worse["kl_to_oracle"] > 0.05


def test_reliability_curve_bins_by_hand():
    sig = lambda x: 1 / (1 + math.exp(-x))
    # confidences: 0.5 (tie, hit 0.5), 0.574 right, 0.574 wrong, 0.731 right, 0.881 wrong, 1.0 right
    rows = _rows([0.0, 0.3, -0.3, 1.0, -2.0, 60.0])
    c = reliability_curve(rows, n_bins=5)  # width 0.1 on [0.5, 1]; c = 1.0 goes to the last bin
    assert list(c["bin"]) == [0, 1, 2, 3, 4] and np.allclose(c["lo"], [0.5, 0.6, 0.7, 0.8, 0.9])
    assert np.allclose(c["hi"], [0.6, 0.7, 0.8, 0.9, 1.0])
    assert list(c["n"]) == [3, 0, 1, 1, 1]
    b0 = (0.5 + 2 * sig(0.3)) / 3
    np.testing.assert_allclose(c["mean_predicted"].to_numpy()[[0, 2, 3, 4]], [b0, sig(1.0), sig(2.0), 1.0])
    np.testing.assert_allclose(c["frequency"].to_numpy()[[0, 2, 3, 4]], [0.5, 1.0, 0.0, 1.0])
    assert np.isnan(c["mean_predicted"][1]) and np.isnan(c["frequency"][1])  # empty bin kept, NaN
    ece = (3 * abs(0.5 - b0) + abs(1 - sig(1.0)) + abs(0 - sig(2.0)) + 0.0) / 6
    assert np.isclose(calibration_metrics(rows, n_bins=5)["ece"], ece)


def test_ece_near_zero_when_calibrated_and_large_when_overconfident():
    rng = np.random.default_rng(1)
    n = 20000
    q = rng.uniform(0.02, 0.98, n)  # P(the first response wins) as predicted, and as drawn
    first_wins = rng.random(n) < q
    logit = np.log(q / (1 - q))
    margin = np.where(first_wins, logit, -logit)  # margin of the response the user chose
    ece = calibration_metrics(_rows(margin))["ece"]
    # 10 bins of ~2000 rows: each bin's frequency has sd <= 0.5 / sqrt(2000) = 0.011; ECE ~ 0.01
    assert ece < 0.025
    over = calibration_metrics(_rows(5 * margin))["ece"]
    assert over > 0.15  # says ~1.0 where the truth averages ~0.75
    # ECE against an independent per-bin loop (np.digitize on [0.5, 1])
    conf = 1 / (1 + np.exp(-np.abs(5 * margin)))
    hit = (margin > 0).astype(float)
    idx = np.clip(np.digitize(conf, np.linspace(0.5, 1, 11)[1:-1]), 0, 9)
    ref = sum(abs(hit[idx == b].mean() - conf[idx == b].mean()) * (idx == b).sum() for b in range(10) if (idx == b).any()) / n
    assert np.isclose(over, ref)


def test_per_group_calibration_splits_rows():
    rows = _rows([0.0, 0.0, math.log(3), math.log(3)], group=["a", "a", "b", "b"])
    out = per_group_calibration(rows)
    assert sorted(out) == ["a", "b"]
    assert np.isclose(out["a"]["log_loss"], math.log(2)) and np.isclose(out["b"]["log_loss"], -math.log(0.75))
    assert out["b"]["n_pairs"] == 2


def test_average_ranks_and_spearman_with_ties():
    np.testing.assert_allclose(average_ranks([3.0, 1.0, 3.0, 3.0, 2.0]), [4, 1, 4, 4, 2])
    np.testing.assert_allclose(average_ranks([[2.0, 2.0, 1.0], [0.0, 5.0, 5.0]]), [[2.5, 2.5, 1], [1, 2.5, 2.5]])
    # x ranks (1, 2.5, 2.5, 4), y ranks (1, 3, 2, 4): sum dxdy = 4.5, sum dx^2 = 4.5, sum dy^2 = 5
    assert np.isclose(spearman([1, 2, 2, 3], [10, 30, 20, 40]), 4.5 / math.sqrt(4.5 * 5))
    assert np.isclose(spearman([1, 2, 3, 4], [8, 6, 4, 2]), -1.0)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))  # no spread in one variable


def test_uncertainty_error_correlation():
    # four users with 4 rows each: uncertainties (1, 2, 2, 3), accuracies (1, 1/2, 3/4, 1/4)
    # -> errors (0, .5, .25, .75): the tie example above, rho = 4.5 / sqrt(22.5)
    acc = {"a": 4, "b": 2, "c": 3, "d": 1}
    unc = {"a": 1.0, "b": 2.0, "c": 2.0, "d": 3.0}
    users = np.repeat(list(acc), 4)
    margin = np.array([1.0 if i < acc[u] else -1.0 for u in acc for i in range(4)])
    rows = _rows(margin, user=users, uncertainty=[unc[u] for u in users])
    out = uncertainty_error_correlation(rows, n_boot=200)
    assert np.isclose(out["spearman"], 4.5 / math.sqrt(22.5)) and out["n_users"] == 4 and out["error"] == "accuracy"
    # with ground truth the error is 1 - expected accuracy: p = 0.9 on every row, so errors are
    # 0.1 * (right rows) + 0.9 * (wrong rows) / 4: same order as before
    gt = uncertainty_error_correlation(rows.assign(oracle_p=0.9), n_boot=200)
    assert gt["error"] == "expected" and np.isclose(gt["spearman"], out["spearman"])
    # many users: a real relation gives a CI above 0, no relation a CI around 0
    rng = np.random.default_rng(0)
    n_users, k = 150, 8
    u = rng.uniform(0, 1, n_users)
    users = np.repeat([f"u{i}" for i in range(n_users)], k)
    right = rng.random((n_users, k)) < (0.95 - 0.5 * u)[:, None]  # uncertain users are wrong more often
    rows = _rows(np.where(right.ravel(), 1.0, -1.0), user=users, uncertainty=np.repeat(u, k))
    related = uncertainty_error_correlation(rows, n_boot=300, seed=1)
    assert related["spearman_lo"] > 0.2 and related["spearman_lo"] < related["spearman"] < related["spearman_hi"]
    shuffled = uncertainty_error_correlation(rows.assign(uncertainty=np.repeat(rng.permutation(u), k)), n_boot=300, seed=1)
    assert shuffled["spearman_lo"] < 0 < shuffled["spearman_hi"] and abs(shuffled["spearman"]) < 0.2
    with pytest.raises(PluralError, match="uncertainty"):
        uncertainty_error_correlation(rows.drop(columns="uncertainty"))


def test_paired_difference_on_the_same_rows():
    users = ["a", "a", "b", "b"]
    a = _rows([1.0, 1.0, 1.0, -1.0], user=users, group=["x", "x", "y", "y"], oracle_p=[0.8, 0.6, 0.7, 0.9])
    b = _rows([-1.0, -1.0, 1.0, -1.0], user=users, group=["x", "x", "y", "y"], oracle_p=[0.8, 0.6, 0.7, 0.9])
    b = b.iloc[[2, 0, 3, 1]]  # joined on `row`, not on position
    t = paired_difference(a, b, n_boot=1000).set_index("group")
    assert list(t.index) == ["all", "x", "y"]
    # user a: A right twice, B wrong twice (+1, +1); user b: identical (0, 0)
    assert np.isclose(t.loc["all", "accuracy_diff"], 0.5) and np.isclose(t.loc["x", "accuracy_diff"], 1.0)
    assert t.loc["y", "accuracy_diff"] == 0.0 and t.loc["all", "n_users"] == 2 and t.loc["x", "n_pairs"] == 2
    assert np.isclose(t.loc["all", "accuracy_a"], 0.75) and np.isclose(t.loc["all", "accuracy_b"], 0.25)
    # two users: resamples are {a,a} -> 1, {b,b} -> 0, mixed -> 0.5, so the 95% interval is [0, 1]
    assert t.loc["all", "accuracy_diff_lo"] == 0.0 and t.loc["all", "accuracy_diff_hi"] == 1.0
    # expected accuracy: rows of user a: (0.8 - 0.2) and (0.6 - 0.4)
    assert np.isclose(t.loc["x", "expected_diff"], (0.6 + 0.2) / 2) and np.isclose(t.loc["all", "expected_diff"], 0.8 / 4)
    with pytest.raises(PluralError, match="row 3"):
        paired_difference(a, b[b["row"] != 3])
    with pytest.raises(PluralError, match="user_id"):
        paired_difference(a, b.assign(user_id="z"))


def test_t_quantile_matches_the_table():
    table = {(0.975, 1): 12.706, (0.975, 2): 4.303, (0.975, 4): 2.776, (0.975, 10): 2.228, (0.975, 30): 2.042,
             (0.95, 5): 2.015, (0.995, 3): 5.841}
    for (p, dof), t in table.items():
        assert abs(t_quantile(p, dof) - t) < 1e-3, (p, dof)
    assert np.isclose(t_quantile(0.025, 2), -t_quantile(0.975, 2)) and np.isnan(t_quantile(0.975, 0))


def test_seed_summary_t_interval():
    df = pd.DataFrame({"method": ["bt"] * 3 + ["vpl"], "seed": [0, 1, 2, 0], "accuracy": [0.70, 0.75, 0.80, 0.9]})
    s = seed_summary(df, ["accuracy"], by="method").set_index("method")
    half = 4.303 * 0.05 / math.sqrt(3)  # sd of (0.70, 0.75, 0.80) with n - 1 dof is 0.05
    assert np.isclose(s.loc["bt", "accuracy"], 0.75) and s.loc["bt", "n_seeds"] == 3
    assert abs(s.loc["bt", "accuracy_lo"] - (0.75 - half)) < 1e-4 and abs(s.loc["bt", "accuracy_hi"] - (0.75 + half)) < 1e-4
    assert s.loc["vpl", "accuracy"] == 0.9 and np.isnan(s.loc["vpl", "accuracy_lo"]) and np.isnan(s.loc["vpl", "accuracy_hi"])
    with pytest.raises(PluralError, match="seed"):  # two lines per seed: `by` misses a key
        seed_summary(pd.concat([df, df]), ["accuracy"], by="method")
    with pytest.raises(PluralError, match="nope"):
        seed_summary(df, ["nope"], by="method")


def test_group_gap_closed():
    # group x: p = 0.9, the single reward picks `rejected` (population_p 0.4) so single = 0.1, oracle = 0.9;
    # the model is right on user 0's rows, wrong on user 1's -> expected 0.5, gap closed 0.5.
    # group y: p = 0.505: oracle - single = 0.01 < 0.02 -> NaN and flagged.
    x = _rows([1, 1, -1, -1], user=["x0", "x0", "x1", "x1"], group=["x"] * 4, oracle_p=0.9, population_p=0.4)
    y = _rows([1, -1], user=["y0", "y1"], group=["y"] * 2, oracle_p=0.505, population_p=0.4)
    t = group_gap_closed(pd.concat([x, y], ignore_index=True), n_boot=500).set_index("group")
    assert np.isclose(t.loc["x", "gap_closed"], 0.5) and np.isclose(t.loc["x", "denominator"], 0.8)
    assert not t.loc["x", "small_denominator"] and t.loc["y", "small_denominator"]
    assert np.isnan(t.loc["y", "gap_closed"]) and np.isnan(t.loc["y", "gap_closed_lo"])
    assert np.isclose(t.loc["y", "denominator"], 0.01)
    # x's users: x0 closes the whole gap (1), x1 none (0): 95% CI [0, 1]
    assert t.loc["x", "gap_closed_lo"] == 0.0 and t.loc["x", "gap_closed_hi"] == 1.0
    with pytest.raises(PluralError, match="population_p"):
        group_gap_closed(x.drop(columns="population_p"))


def test_group_gap_closed_ci_matches_a_resampling_loop():
    rng = np.random.default_rng(3)
    n_users, k = 30, 6
    users = np.repeat([f"u{i}" for i in range(n_users)], k)
    p = rng.uniform(0.6, 0.95, n_users * k)
    rows = _rows(rng.normal(0.5, 1, n_users * k), user=users, oracle_p=p, population_p=rng.uniform(0.3, 0.7, n_users * k))
    t = group_gap_closed(rows, n_boot=300, seed=7).iloc[0]
    draws = np.random.default_rng(7).integers(0, n_users, size=(300, n_users))  # same users drawn
    reps = []
    per_user = dict(list(rows.groupby("user_id")))
    for d in draws:
        r = pd.concat([per_user[f"u{i}"] for i in d])
        exp = np.where(r.margin > 0, r.oracle_p, 1 - r.oracle_p).mean()
        single = np.where(r.population_p > 0.5, r.oracle_p, 1 - r.oracle_p).mean()
        oracle = np.maximum(r.oracle_p, 1 - r.oracle_p).mean()
        reps.append((exp - single) / (oracle - single))
    assert np.isclose(t["gap_closed_lo"], np.quantile(reps, 0.025)) and np.isclose(t["gap_closed_hi"], np.quantile(reps, 0.975))


def test_reliability_figure_from_results(tmp_path):
    from paper_figs import make_all

    base = {"dataset": "pop", "method": "bt", "split": "seen", "lo": 0.5, "hi": 0.75}
    curves = pd.DataFrame([
        {**base, "seed": 0, "bin": 0, "mean_predicted": 0.6, "frequency": 0.0, "n": 1},
        {**base, "seed": 1, "bin": 0, "mean_predicted": 0.7, "frequency": 1.0, "n": 3},
        {**base, "seed": 0, "bin": 1, "lo": 0.75, "hi": 1.0, "mean_predicted": np.nan, "frequency": np.nan, "n": 0},
        {**base, "seed": 0, "bin": 1, "lo": 0.75, "hi": 1.0, "method": "vpl", "mean_predicted": 0.9, "frequency": 0.8, "n": 5},
    ])
    assert not [p for p in make_all(tmp_path, tmp_path / "figs") if "reliability" in p.name]  # no file, no figure
    curves.to_parquet(tmp_path / "reliability.parquet")
    paths = make_all(tmp_path, tmp_path / "figs")
    assert {p.name for p in paths} >= {"reliability.png", "reliability.pdf", "reliability.csv"}
    data = pd.read_csv(tmp_path / "figs" / "reliability.csv").set_index("method")
    # seeds pooled: bin 0 of bt = 1 + 3 rows, frequency (0 * 1 + 1 * 3) / 4, predicted (0.6 + 3 * 0.7) / 4
    assert data.loc["bt", "n"] == 4 and np.isclose(data.loc["bt", "frequency"], 0.75)
    assert np.isclose(data.loc["bt", "mean_predicted"], 0.675) and len(data) == 2  # the empty bin is dropped
