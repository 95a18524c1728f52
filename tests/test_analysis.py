"""Analysis: bootstrap CIs, noise-free accuracy, gap closed, and the simulator's ground truth."""

import numpy as np
import pandas as pd

from analysis import accuracy_table, bootstrap_ci, expected_accuracy, gap_closed, group_report
from personas import IdealPointConfig, simulate_ideal_point


def test_gap_closed_and_expected_accuracy():
    assert np.isclose(gap_closed(0.8, 0.7, 0.9), 0.5) and gap_closed(0.7, 0.7, 0.9) == 0.0
    np.testing.assert_allclose(expected_accuracy([1.0, -1.0, 0.0], [0.9, 0.9, 0.9]), [0.9, 0.1, 0.1])


def test_bootstrap_ci_covers_the_truth_and_shrinks_with_more_users():
    rng = np.random.default_rng(0)
    widths, covered = [], 0
    for n_users in (20, 320):
        for rep in range(20):
            users = np.repeat(np.arange(n_users), 10)
            user_acc = rng.uniform(0.5, 0.9, n_users)  # true mean 0.7, users differ
            values = rng.random(len(users)) < user_acc[users]
            lo, hi = bootstrap_ci(values, users, n_boot=400, seed=rep)
            covered += lo <= 0.7 <= hi
            widths.append((n_users, hi - lo))
    assert covered >= 34  # ~95% of 40 intervals
    small = np.mean([w for n, w in widths if n == 20])
    large = np.mean([w for n, w in widths if n == 320])
    assert 3 < small / large < 5.5  # width ~ 1/sqrt(users): 4x


def test_simulator_truth_matches_monte_carlo_labels():
    pop = simulate_ideal_point(IdealPointConfig(test_pairs=200, seed=3))
    t = pop.test
    # labels were drawn with P(chosen) = oracle_p: the oracle's realised accuracy matches its expectation
    assert abs((t.oracle_p > 0.5).mean() - np.maximum(t.oracle_p, 1 - t.oracle_p).mean()) < 0.01
    # the ideal points really induce oracle_p
    u = t.user_id.to_numpy()
    pts = np.stack([pop.ideal_points[x] for x in u])
    c, r = np.stack(t.chosen_embedding), np.stack(t.rejected_embedding)
    margin = -pop.scale * (((c - pts) ** 2).sum(1) - ((r - pts) ** 2).sum(1))
    np.testing.assert_allclose(1 / (1 + np.exp(-margin)), t.oracle_p, rtol=1e-4, atol=1e-5)
    sizes = pd.Series(pop.user_group).value_counts(normalize=True).sort_index()
    assert sizes.idxmin() == "g2" and sizes["g2"] < 0.15  # a real minority


def test_accuracy_table_and_report_from_scored_rows():
    rows = pd.DataFrame({"user_id": ["a", "a", "b", "b", "c", "c"], "group": ["x", "x", "x", "x", "y", "y"],
                         "margin": [1, 1, -1, 1, -1, -1], "correct": [True, True, False, True, False, False],
                         "oracle_p": [0.9] * 6, "population_p": [0.6, 0.6, 0.6, 0.6, 0.4, 0.4]})
    t = accuracy_table(rows, by="group").set_index("group")
    assert t.loc["x", "accuracy"] == 0.75 and t.loc["y", "accuracy"] == 0.0
    assert t.loc["x", "n_users"] == 2 and t.loc["y", "n_pairs"] == 2
    assert np.isclose(t.loc["y", "single"], 0.1) and np.isclose(t.loc["x", "oracle"], 0.9)
    rep = group_report(rows)
    assert rep["worst_group"] == "y" and np.isclose(rep["spread"], t["expected"].max() - t["expected"].min())


def test_adjusted_rand_index_and_kmeans():
    from analysis import adjusted_rand_index, kmeans
    assert adjusted_rand_index([0, 0, 1, 1, 2, 2], [5, 5, 3, 3, 9, 9]) == 1.0  # renaming does not matter
    assert adjusted_rand_index([0, 0, 1, 1], [0, 1, 0, 1]) < 0  # worse than chance
    rng = np.random.default_rng(0)
    ari = [adjusted_rand_index(rng.integers(0, 3, 300), rng.integers(0, 3, 300)) for _ in range(20)]
    assert abs(np.mean(ari)) < 0.02  # chance level
    centers = np.array([[0, 0], [5, 0], [0, 5]])
    truth = np.repeat([0, 1, 2], [50, 30, 5])  # includes a small cluster
    x = centers[truth] + rng.normal(scale=0.5, size=(85, 2))
    assert adjusted_rand_index(kmeans(x, 3), truth) == 1.0
    assert (kmeans(x, 3, seed=1) == kmeans(x, 3, seed=1)).all()  # deterministic per seed
    same = kmeans(np.ones((10, 4)), 3)  # all points equal: still valid labels, no NaN centres
    assert same.shape == (10,) and ((same >= 0) & (same < 3)).all()


def test_kmeans_finds_the_lower_inertia_solution():
    """Best of n_init starts: with one start k-means++ often stops in a worse local optimum (a small
    cluster merged, a big one split); the default 16 starts find the true clusters for every seed."""
    from analysis import adjusted_rand_index, kmeans
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(3, 16))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    truth = np.repeat([0, 1, 2], [36, 18, 6])
    x = centers[truth] + rng.normal(scale=0.12, size=(60, 16))
    single = [adjusted_rand_index(kmeans(x, 3, n_init=1, seed=s), truth) for s in range(40)]
    assert min(single) < 1.0  # the trap exists
    assert all(adjusted_rand_index(kmeans(x, 3, seed=s), truth) == 1.0 for s in range(40))


def test_agreement_with_the_oracle_and_the_best_user_blind_predictor():
    """agree_single = share of pairs where the model prefers what the population's majority prefers; a
    user-blind model that always does has agree_single 1 and accuracy = single, whatever agree_oracle."""
    import pandas as pd

    from analysis.metrics import accuracy_table, agreement

    np.testing.assert_array_equal(agreement([1.0, -2.0, 0.0, 3.0], [0.9, 0.8, 0.7, 0.5]), [1.0, 0.0, 0.5, 0.5])
    oracle_p = np.array([0.9, 0.1, 0.9, 0.1, 0.9, 0.9])  # users a, b disagree on the first pairs
    population_p = np.array([0.7, 0.7, 0.7, 0.7, 0.7, 0.7])  # the majority prefers chosen everywhere
    rows = pd.DataFrame({"user_id": list("ababab"), "group": list("xyxyxy"), "margin": np.ones(6),
                         "correct": [True, False, True, False, True, True], "oracle_p": oracle_p,
                         "population_p": population_p})
    t = accuracy_table(rows, by=None).iloc[0]
    assert t["agree_single"] == 1.0 and t["agree_oracle"] == 4 / 6
    assert t["expected"] == t["single"]  # follows the majority exactly: no gap closed, none lost
    flipped = accuracy_table(rows.assign(margin=[1, -1, 1, -1, 1, -1.0]), by=None).iloc[0]
    assert flipped["agree_single"] == 3 / 6 and flipped["agree_oracle"] == 5 / 6


def test_validation_scores_by_table_size():
    """`analysis.table_size.by_size`: one score per cell (a cell's rows repeat it), averaged per method and
    setting value over the small tables and over the others."""
    from analysis.table_size import by_size

    cells = [("a", "m", 0.0, 0.70), ("b", "m", 0.0, 0.80), ("c", "m", 0.0, 0.60), ("a", "m", 0.5, 0.65),
             ("b", "m", 0.5, 0.75), ("c", "m", 0.5, 0.68)]
    rows = pd.DataFrame([{"cell": f"{d}{v}", "dataset": d, "method": m, "rate": v, "selection_score": s}
                         for d, m, v, s in cells for _ in range(3)])
    out = by_size(rows, {"a": False, "b": False, "c": True}, "rate")
    assert np.isclose(out.loc[("m", False), 0.0], 0.75) and np.isclose(out.loc[("m", False), 0.5], 0.70)
    assert np.isclose(out.loc[("m", True), 0.0], 0.60) and np.isclose(out.loc[("m", True), 0.5], 0.68)
