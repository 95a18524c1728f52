"""Ideal-point populations (personas/ideal_point.py): the train / val / test tables, item distributions,
and the simulator's ground truth checked against quantities recomputed here from the ideal points."""

import json

import numpy as np
import pandas as pd
import pytest

from personas import IdealPointConfig, simulate_ideal_point
from plural.cli import main
from plural.data import read_table

SMALL = dict(dim=16, n_users=30, n_unseen=12, n_val_unseen=9, train_pairs=20, val_pairs=8, test_pairs=15, n_prompts=4)


@pytest.fixture(scope="module")
def pop():
    return simulate_ideal_point(IdealPointConfig(**SMALL, seed=4))


def stack(col) -> np.ndarray:
    return np.stack(col.to_numpy()).astype(np.float64)


def margins(pop, rows: pd.DataFrame) -> np.ndarray:
    """r_u(chosen) - r_u(rejected) recomputed from each row's user's ideal point: -scale ||y - u||^2."""
    u = np.stack([pop.ideal_points[x] for x in rows.user_id])
    c, r = stack(rows.chosen_embedding), stack(rows.rejected_embedding)
    return pop.scale * (((r - u) ** 2).sum(1) - ((c - u) ** 2).sum(1))


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_val_table_holds_held_out_pairs_of_seen_users_and_separate_unseen_users(pop):
    seen = set(pop.train.user_id)
    assert len(seen) == 30 and all(u.startswith("s") for u in seen) and pop.train.seen.all()
    val_unseen, test_unseen = set(pop.val.user_id[~pop.val.seen]), set(pop.test.user_id[~pop.test.seen])
    assert len(val_unseen) == 9 and all(u.startswith("v") for u in val_unseen)
    assert len(test_unseen) == 12 and all(u.startswith("u") for u in test_unseen)
    assert val_unseen.isdisjoint(test_unseen) and val_unseen.isdisjoint(seen) and test_unseen.isdisjoint(seen)
    assert set(pop.val.user_id[pop.val.seen]) == seen == set(pop.test.user_id[pop.test.seen])
    per_user = pop.val.groupby("user_id").size()
    assert (per_user[list(seen)] == 8).all() and (per_user[list(val_unseen)] == 15).all()
    assert len(pop.val) == 30 * 8 + 9 * 15 and len(pop.test) == 42 * 15 and len(pop.train) == 30 * 20
    # no pair of a seen user is in two tables
    key = lambda df: set(zip(df.user_id, map(bytes, df.chosen_embedding), map(bytes, df.rejected_embedding)))  # noqa: E731
    assert key(pop.val).isdisjoint(key(pop.train)) and key(pop.val).isdisjoint(key(pop.test))
    # shares 0.6 / 0.3 / 0.1 as integers: 9 -> 5 / 3 / 1, 12 -> 7 / 4 / 1, 30 -> 18 / 9 / 3
    users = lambda df: df.drop_duplicates("user_id").group.value_counts().sort_index().tolist()  # noqa: E731
    assert users(pop.val[~pop.val.seen]) == [5, 3, 1]
    assert users(pop.test[~pop.test.seen]) == [7, 4, 1]
    assert users(pop.train) == [18, 9, 3]
    assert pop.val.groupby("user_id").group.nunique().max() == 1
    assert {u: g for u, g in zip(pop.val.user_id, pop.val.group)}.items() <= pop.user_group.items()


def test_write_puts_val_beside_train_and_test_with_its_truth(pop, tmp_path):
    pop.write(tmp_path)
    truth = json.loads((tmp_path / "truth.json").read_text())
    for split, key in (("val", "val_accuracy"), ("test", "accuracy")):
        table = pd.read_parquet(tmp_path / f"{split}.parquet")
        assert len(table) == len(getattr(pop, split)) and {"seen", "oracle_p", "population_p"} <= set(table.columns)
        p, q = table.oracle_p.to_numpy(), table.population_p.to_numpy()
        unseen = ~table.seen.to_numpy()
        assert truth[key]["all"]["oracle_accuracy"] == pytest.approx(np.maximum(p, 1 - p).mean())
        assert truth[key]["unseen"]["single_accuracy"] == pytest.approx(np.where(q > 0.5, p, 1 - p)[unseen].mean())
    assert pop.truth() == truth["accuracy"] and pop.truth("val") == truth["val_accuracy"]
    assert pop.truth()["all"] != pop.truth("val")["all"]
    assert read_table(tmp_path / "val.parquet").chosen.shape == (len(pop.val), 16)


@pytest.mark.parametrize("item_dist", ["sphere", "gaussian", "clustered"])
def test_item_distributions_keep_ground_truth_exact_and_labels_calibrated(item_dist):
    cfg = IdealPointConfig(dim=16, n_users=40, n_unseen=10, train_pairs=40, val_pairs=5, test_pairs=60, n_prompts=0,
                           item_dist=item_dist, seed=1)
    pop = simulate_ideal_point(cfg)
    t = pop.truth()["all"]
    assert t["oracle_accuracy"] > t["single_accuracy"] + 0.03, t  # 3 groups: one reward cannot fit them all
    rows = pd.concat([pop.train, pop.val, pop.test], ignore_index=True)
    m = margins(pop, rows)
    np.testing.assert_allclose(rows.oracle_p, sigmoid(m), atol=1e-4)
    # the realised label (chosen is the user's higher-reward response) happens with probability sigmoid(|m|)
    won, q = m > 0, sigmoid(np.abs(m))
    for lo, hi in ((0.5, 0.7), (0.7, 0.9), (0.9, 1.0)):
        b = (q >= lo) & (q < hi + 1e-12)
        assert b.sum() > 300
        se = np.sqrt((q[b] * (1 - q[b])).sum()) / b.sum()
        assert abs(won[b].mean() - q[b].mean()) < 4 * se + 1e-3, (lo, won[b].mean(), q[b].mean())
    # population_p: the share-weighted preference of random group members, by Monte Carlo over members
    sub = pop.test.iloc[::10]
    share = np.array(cfg.group_sizes) / sum(cfg.group_sizes)
    c, r = stack(sub.chosen_embedding), stack(sub.rejected_embedding)
    rng = np.random.default_rng(0)
    mc = 0
    for k, proto in enumerate(pop.prototypes):
        u = proto + cfg.user_noise * rng.normal(size=(20000, cfg.dim)) / np.sqrt(cfg.dim)  # members of k
        m_k = pop.scale * ((r * r).sum(1) - (c * c).sum(1) + 2 * u @ (c - r).T)  # ||r - u||^2 - ||c - u||^2
        mc = mc + share[k] * sigmoid(m_k).mean(0)
    np.testing.assert_allclose(sub.population_p, mc, atol=0.003)  # ignoring the user noise: off by 0.007-0.014
    # the responses follow item_dist
    y = np.concatenate([stack(rows.chosen_embedding), stack(rows.rejected_embedding)])
    norms = np.linalg.norm(y, axis=1)
    cos = (y[:2000] / norms[:2000, None]) @ (y[:2000] / norms[:2000, None]).T
    close = (cos[np.triu_indices(2000, 1)] > 0.8).mean()  # share of response pairs pointing the same way
    if item_dist == "gaussian":
        assert abs(norms.mean() - 1) < 0.05 and 0.1 < norms.std() < 0.25 and close < 0.01
    else:
        np.testing.assert_allclose(norms, 1, atol=1e-5)
        assert (0.08 < close < 0.2) if item_dist == "clustered" else close < 0.01  # 8 clusters: ~1/8 same cluster


@pytest.mark.parametrize("sizes", [(0.7, 0.3), (0.4, 0.3, 0.2, 0.1), (0.3, 0.2, 0.15, 0.15, 0.1, 0.1)])
def test_two_to_six_groups(sizes):
    K = len(sizes)
    pop = simulate_ideal_point(IdealPointConfig(n_groups=K, group_sizes=sizes, dim=12, n_users=24, n_unseen=12,
                                                train_pairs=15, test_pairs=20, n_prompts=0, seed=K))
    assert pop.prototypes.shape == (K, 12) and len(pop.train) == 24 * 15
    for df in (pop.train, pop.val[~pop.val.seen], pop.test[~pop.test.seen]):
        assert df.group.nunique() == K
    t = pop.truth()["all"]
    assert t["oracle_accuracy"] > t["single_accuracy"]


def test_deterministic_per_seed_and_val_leaves_train_and_test_alone():
    cfg = IdealPointConfig(**SMALL, seed=7)
    a, b = simulate_ideal_point(cfg), simulate_ideal_point(cfg)
    for split in ("train", "val", "test"):
        pd.testing.assert_frame_equal(getattr(a, split), getattr(b, split))
    other = simulate_ideal_point(IdealPointConfig(**SMALL, seed=8))
    assert not np.array_equal(stack(a.val.chosen_embedding)[:5], stack(other.val.chosen_embedding)[:5])
    bare = simulate_ideal_point(IdealPointConfig(**{**SMALL, "val_pairs": 0, "n_val_unseen": 0}, seed=7))
    assert bare.val.empty and list(bare.val.columns) == list(a.val.columns) and bare.truth("val") == {}
    pd.testing.assert_frame_equal(bare.train, a.train)
    pd.testing.assert_frame_equal(bare.test, a.test)
    # n_val_unseen = -1 (the default) means as many as n_unseen
    dflt = simulate_ideal_point(IdealPointConfig(**{**SMALL, "n_val_unseen": -1}, seed=7))
    assert dflt.val.user_id[~dflt.val.seen].nunique() == 12


def test_bad_population_settings_are_one_line_errors(tmp_path, capsys):
    for bad in ("item_dist=cube", "n_item_clusters=4", "n_val_unseen=-2", "val_pairs=-1", "group_sizes=(0.5,0.5)"):
        assert main(["simulate", "--out", str(tmp_path / "p"), "--set", bad]) == 2, bad
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and bad.split("=")[0] in err, err
    assert main(["simulate", "--out", str(tmp_path / "p"), "--set", "item_dist=clustered",
                 "--set", "n_item_clusters=4", "--set", "n_users=6", "--set", "n_unseen=3"]) == 0
    assert {"train.parquet", "val.parquet", "test.parquet", "truth.json"} <= {p.name for p in (tmp_path / "p").iterdir()}
