"""BT against ground truth: it reaches the oracle when everybody agrees, and cannot close the gap
when three groups disagree (it stays at the best single reward the simulator reports)."""

import numpy as np

from analysis import accuracy_table, gap_closed
from plural.data import read_table
from plural.evaluate import predict
from plural.models import get_family
from plural.run import configs_for
from plural.train import train

BT = ["model.hidden=(64,)", "train.steps=1000"]


def _fit_and_score(d, seeds=(0,)):
    data = read_table(d / "train.parquet")
    c = configs_for("bt", BT)
    result = train(get_family("bt"), c["model"], c["train"], data, seeds=seeds, progress=False)
    return predict(result, list(data.users), read_table(d / "test.parquet"))


def test_bt_reaches_the_oracle_on_a_one_group_population(pop1):
    pop, d = pop1
    t = accuracy_table(_fit_and_score(d), by=None).iloc[0]
    assert t["oracle"] - t["expected"] < 0.03, t.to_dict()
    assert abs(t["accuracy"] - t["expected"]) < 0.03  # realised labels agree with the noise-free measure


def test_bt_cannot_close_the_gap_on_a_three_group_population(pop3):
    pop, d = pop3
    rows = _fit_and_score(d)
    t = accuracy_table(rows, by=None).iloc[0]
    truth = pop.truth()["all"]
    assert np.isclose(t["oracle"], truth["oracle_accuracy"]) and np.isclose(t["single"], truth["single_accuracy"])
    assert t["oracle"] - t["single"] > 0.1  # the population really disagrees
    assert abs(t["expected"] - t["single"]) < 0.04, t.to_dict()  # BT ~ the best single reward
    assert gap_closed(t["expected"], t["single"], t["oracle"]) < 0.25
    groups = accuracy_table(rows, by="group").set_index("group")
    # the majority is served, the minority is not
    assert groups.loc["g0", "expected"] > groups.loc["g2", "expected"] + 0.15


def _fit_variant(d, condition, seeds=(0,)):
    data, val = read_table(d / "train.parquet"), read_table(d / "val.parquet")
    c = configs_for("bt", BT + [f"model.condition={condition}"])
    return data, train(get_family("bt"), c["model"], c["train"], data, seeds=seeds, progress=False, val=val)


def test_group_conditioned_bt_is_the_told_the_group_ceiling(pop3):
    """One head per group label, used at train and at test time: every group, the minority included, is
    served; unseen users get their group's head with no shots at all."""
    pop, d = pop3
    data, result = _fit_variant(d, "group")
    rows = predict(result, list(data.users), read_table(d / "test.parquet"), shots=0)
    for seen, r in rows.groupby("seen"):
        t = accuracy_table(r, by=None).iloc[0]
        assert gap_closed(t["expected"], t["single"], t["oracle"]) > 0.75, (seen, t.to_dict())
    groups = accuracy_table(rows, by="group").set_index("group")
    assert groups.loc["g2", "gap_closed"] > 0.6  # the 10% minority, which plain BT fails


def test_user_embedding_bt_learns_seen_users_and_adapts_new_ones(pop3):
    """P-RLHF: seen users through their embeddings; an unseen user starts at the generic embedding (about the
    single reward) and closes part of the gap from 10 shots (its offset fitted, everything else frozen)."""
    pop, d = pop3
    data, result = _fit_variant(d, "user")
    test = read_table(d / "test.parquet")
    at = {k: accuracy_table(predict(result, list(data.users), test, shots=k, score_from=10).query("not seen"),
                            by=None).iloc[0] for k in (0, 10)}
    seen = accuracy_table(predict(result, list(data.users), test).query("seen"), by=None).iloc[0]
    assert gap_closed(seen["expected"], seen["single"], seen["oracle"]) > 0.4, seen.to_dict()
    g0, g10 = (gap_closed(at[k]["expected"], at[k]["single"], at[k]["oracle"]) for k in (0, 10))
    assert g0 < 0.2 and g10 > g0 + 0.3, (g0, g10)


def test_group_condition_needs_a_group_column(tmp_path, tiny, capsys):
    import pandas as pd

    from plural.cli import main

    _, d = tiny
    pd.read_parquet(d / "train.parquet").drop(columns=["group"]).to_parquet(tmp_path / "t.parquet")
    assert main(["fit", "--model", "bt", "--data", str(tmp_path / "t.parquet"), "--out", str(tmp_path / "r"),
                 "--set", "model.condition=group", "--set", "train.steps=10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "group" in err[0]


def test_user_only_settings_are_refused_with_another_condition():
    import pytest

    from plural.errors import PluralError

    for condition in ("none", "group"):
        for setting in ("model.user_dim=8", "model.adapt_init=seen", "model.adapt_l2=1.0"):
            with pytest.raises(PluralError, match=f"applies to model.condition=user, not {condition}"):
                configs_for("bt", [f"model.condition={condition}", setting])
    assert configs_for("bt", ["model.condition=user", "model.adapt_init=seen"])["model"].adapt_init == "seen"


def test_seen_posterior_mean_weighs_seen_states_by_the_shots_likelihood():
    """Against a numpy computation: linear margins s . (c - r), weights prod_j sigma(m_uj) normalised."""
    import jax.numpy as jnp

    from plural.models.base import seen_posterior_mean

    rng = np.random.default_rng(0)
    seen = rng.normal(size=(5, 3)).astype(np.float32)
    ctx = {"prompt": np.zeros((4, 0), np.float32), "chosen": rng.normal(size=(4, 3)).astype(np.float32),
           "rejected": rng.normal(size=(4, 3)).astype(np.float32), "mask": np.array([1, 1, 1, 0], np.float32)}
    got = np.asarray(seen_posterior_mean(lambda s, p, c, r: (c - r) @ s, jnp.asarray(seen), ctx))
    m = seen @ (ctx["chosen"] - ctx["rejected"])[:3].T  # (5, 3): the masked fourth pair does not count
    like = np.prod(1 / (1 + np.exp(-m)), axis=1)
    np.testing.assert_allclose(got, (like / like.sum()) @ seen, rtol=1e-5)
    none = dict(ctx, mask=np.zeros(4, np.float32))  # no shots: every seen user weighs the same
    np.testing.assert_allclose(np.asarray(seen_posterior_mean(lambda s, p, c, r: (c - r) @ s, jnp.asarray(seen), none)),
                               seen.mean(0), rtol=1e-5)


def test_user_bt_seen_start_begins_a_new_user_at_the_seen_user_its_shots_fit():
    """adapt_init=seen: with no gradient steps, a new user whose 20 shots were labelled by seen user A's
    reward starts at (nearly) A's embedding; adapt_init=generic starts at e_0."""
    import jax
    from flax import nnx

    c = configs_for("bt", ["model.condition=user", "model.hidden=(16,)", "model.user_dim=4", "model.adapt_steps=0"])
    spec = {"dim": 6, "prompt_dim": 0, "n_users": 2, "groups": [], "users": ["a", "b"]}
    model = get_family("bt")(spec, c["model"], nnx.Rngs(0))
    model.offsets[...] = jax.numpy.asarray([[3.0, 0, 0, 0], [0, 0, -3.0, 0]])
    rng = np.random.default_rng(1)
    y1, y2 = rng.normal(size=(2, 20, 6)).astype(np.float32)
    e_a, e_b = np.asarray(model.generic[...]) + np.asarray(model.offsets[...])  # seen users' embeddings
    prefers = np.asarray(model.reward(np.zeros((20, 0)), y1, np.broadcast_to(e_a, (20, 4)))) > np.asarray(
        model.reward(np.zeros((20, 0)), y2, np.broadcast_to(e_a, (20, 4))))
    ctx = {"prompt": np.zeros((20, 0), np.float32), "chosen": np.where(prefers[:, None], y1, y2),
           "rejected": np.where(prefers[:, None], y2, y1), "mask": np.ones(20, np.float32)}
    e0 = np.asarray(model.generic[...])
    np.testing.assert_allclose(np.asarray(model.adapt(ctx, jax.random.PRNGKey(0))), e0, atol=1e-6)
    model.hp = configs_for("bt", ["model.condition=user", "model.hidden=(16,)", "model.user_dim=4",
                                  "model.adapt_steps=0", "model.adapt_init=seen"])["model"]
    start = np.asarray(model.adapt(ctx, jax.random.PRNGKey(0)))
    assert np.linalg.norm(start - e_a) < 0.1 * np.linalg.norm(e_a - e_b)
