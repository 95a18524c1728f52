"""The community simulator: attributes a fitted model can read, labels that follow each community's true
weights (checked from the written tables and truth.json alone), and the PrefPalette attribute catalogue."""

import json

import numpy as np
import pandas as pd
import pytest

from personas import ATTRIBUTES, CommunityConfig, simulate_communities
from plural.cli import main
from plural.data import read_table


def test_labels_follow_each_communitys_true_attribute_weights(tmp_path):
    cfg = CommunityConfig(n_communities=4, n_attributes=6, dim=16, train_pairs=3000, content_weight=0.2, seed=3)
    simulate_communities(cfg).write(tmp_path)
    truth = json.loads((tmp_path / "truth.json").read_text())
    train = pd.read_parquet(tmp_path / "train.parquet")
    names = list(truth["attributes"])
    assert sorted(names) == sorted(list(ATTRIBUTES)[:6])
    for g, rows in train.groupby("group"):
        # logistic regression of "a beats b" on the observed attribute differences, both orders of each pair
        x = np.stack([rows[f"chosen_attr_{a}"] - rows[f"rejected_attr_{a}"] for a in names], 1)
        x, y = np.concatenate([x, -x]), np.concatenate([np.ones(len(rows)), np.zeros(len(rows))])
        w = np.zeros(len(names))
        for _ in range(300):  # plain gradient descent on the mean log-loss
            p = 1 / (1 + np.exp(-x @ w))
            w -= 0.5 * x.T @ (p - y) / len(y)
        true = np.asarray([truth["weights"][g][a] for a in names])
        assert np.corrcoef(w, true)[0, 1] > 0.95, (g, w.round(2), true.round(2))  # w = s * true, up to noise
        assert np.all(np.sign(w[np.abs(true) > 0.1]) == np.sign(true[np.abs(true) > 0.1]))


def test_attributes_are_linearly_readable_from_the_embedding_and_profiles_are_importances(tmp_path):
    pop = simulate_communities(CommunityConfig(n_communities=6, n_attributes=19, dim=32, seed=1))
    t = pop.train
    e = np.stack(t["chosen_embedding"])
    for a in ("verbosity", "universalism"):
        coef, *_ = np.linalg.lstsq(e, t[f"chosen_attr_{a}"].to_numpy(), rcond=None)
        resid = t[f"chosen_attr_{a}"] - e @ coef
        assert 1 - resid.var() / t[f"chosen_attr_{a}"].var() > 0.4  # half the embedding's variance is content
    prof = pop.profiles()
    np.testing.assert_allclose(prof.sum(axis=1), 1.0, atol=1e-9)
    assert (prof >= 0).all().all() and (pop.weights < 0).any()  # importances; some communities dislike an attribute
    # the sharp half puts more weight on its top attribute than the flat half
    top = prof.max(axis=1).to_numpy()
    assert top[:3].mean() > 2 * top[3:].mean()


def test_simulate_communities_cli_writes_a_table_fit_reads(tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["simulate", "--out", str(out), "--population", "communities", "--set", "n_attributes=5",
                 "--set", "dim=12", "--set", "train_pairs=20"]) == 0
    data = read_table(out / "train.parquet")
    assert list(data.attr_names) == sorted(list(ATTRIBUTES)[:5]) and len(data.groups) == 8
    assert main(["simulate", "--out", str(tmp_path / "d"), "--population", "communities", "--set", "dim=10"]) == 2
    assert "dim=10" in capsys.readouterr().err


@pytest.mark.parametrize("n", [19, 21])
def test_attribute_names_catalogue(n):
    from personas.communities import attribute_names

    names = attribute_names(n)
    assert names[:9] == ["verbosity", "formality", "supportiveness", "sarcasm", "humor", "politeness", "assertiveness",
                         "empathy", "directness"] and len(set(names)) == n
    assert all(ATTRIBUTES[a] for a in names[:19])
