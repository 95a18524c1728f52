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
