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
