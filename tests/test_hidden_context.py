"""The hidden-context population (groups that agree except on contested responses) against an independent
computation of its rewards, and DPL on it: the disagreement DPL predicts about a pair ranks pairs like the
groups' true disagreement, which BT's margin does not."""

import json

import numpy as np
import pandas as pd
import pytest
from flax import nnx

from personas import HiddenContextConfig, IdealPointConfig, simulate_hidden_context, simulate_ideal_point
from plural.calibration import spearman
from plural.cli import main
from plural.data import read_table
from plural.evaluate import predict
from plural.models.dpl import DPL, DPLHparams
from plural.run import fit


def _stack(col):
    return np.stack(col.to_numpy()).astype(np.float64)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_the_population_against_its_written_truth(tmp_path):
    assert main(["simulate", "--population", "hidden-context", "--out", str(tmp_path / "p"),
                 "--set", "n_groups=3", "--set", "group_sizes=(0.5,0.3,0.2)", "--set", "seed=2"]) == 0
    truth = json.loads((tmp_path / "p/truth.json").read_text())
    t = pd.read_parquet(tmp_path / "p/test.parquet")
    w, e, theta, s = (np.asarray(truth[k]) for k in ("consensus", "topic", "threshold", "scale"))
    D, share, stance = len(w), np.array([0.5, 0.3, 0.2]), np.array([-1.0, 0.0, 1.0])

    def reward(y):  # (n, D) -> (3, n), written out from the generative model
        contested = np.sqrt(D) * np.clip(y @ e - theta, 0, None)
        return s * (np.sqrt(D) * y @ w + 3.0 * stance[:, None] * contested)

    c, r = _stack(t.chosen_embedding), _stack(t.rejected_embedding)
    m = reward(c) - reward(r)  # every group's margin for the chosen response
    g = t.group.str[1:].astype(int).to_numpy()
    np.testing.assert_allclose(t.oracle_p, _sigmoid(m[g, np.arange(len(t))]), atol=1e-5)
    np.testing.assert_allclose(t.population_p, share @ _sigmoid(m), atol=1e-5)
    np.testing.assert_allclose(t.disagreement, np.sqrt(share @ (m - share @ m) ** 2), atol=1e-4)
    calm = (c @ e <= theta) & (r @ e <= theta)  # neither response contested: every group judges alike
    assert 0.4 < calm.mean() < 0.6 and (t.disagreement[calm] < 1e-5).all() and (t.disagreement[~calm] > 0).mean() > 0.99
    assert abs((np.concatenate([c, r]) @ e > theta).mean() - 0.3) < 0.03  # contested_share
    assert truth["accuracy"]["all"]["oracle_accuracy"] > truth["accuracy"]["all"]["single_accuracy"] + 0.05
    assert main(["simulate", "--population", "hidden-context", "--out", str(tmp_path / "q"),
                 "--set", "contested_share=1.5"]) == 2


def test_the_ideal_point_population_records_its_disagreement_too():
    pop = simulate_ideal_point(IdealPointConfig(n_users=6, n_unseen=2, train_pairs=5, test_pairs=50, n_prompts=0))
    t = pop.test
    c, r = _stack(t.chosen_embedding), _stack(t.rejected_embedding)
    m = pop.scale * (((r[None] - pop.prototypes[:, None]) ** 2).sum(-1) - ((c[None] - pop.prototypes[:, None]) ** 2).sum(-1))
    share = np.array([0.6, 0.3, 0.1])
    np.testing.assert_allclose(t.disagreement, np.sqrt(share @ (m - share @ m) ** 2), rtol=1e-6)


@pytest.fixture(scope="module")
def hidden(tmp_path_factory):
    d = tmp_path_factory.mktemp("hc")
    simulate_hidden_context(HiddenContextConfig(seed=0)).write(d)
    return d, *(read_table(d / f"{k}.parquet") for k in ("train", "val", "test"))


def test_dpl_predicts_which_pairs_the_groups_disagree_on(hidden):
    """2 groups with opposite stances on 30% of responses, labels pooled (DPL reads no user ids). On test
    pairs, DPL's sqrt(sigma_w^2 + sigma_l^2) ranks pairs like the true between-group sd of the margin
    (Spearman >= 0.5; 0.77 at this seed); BT's closeness to a tie, -|margin|, does not (< 0.3), nor does an
    untrained DPL's spread."""
    d, tr, va, te = hidden
    res = fit("dpl", d / "train.parquet", d / "dpl", data=tr, val=va, progress=False)
    rows = predict(res, list(tr.users), te)
    truth = rows.disagreement.to_numpy()
    assert float(spearman(rows.spread.to_numpy(), truth)) >= 0.5
    bt = predict(fit("bt", d / "train.parquet", d / "bt", data=tr, val=va, progress=False), list(tr.users), te)
    assert float(spearman(-np.abs(bt.margin.to_numpy()), truth)) < 0.3
    fresh = DPL(res.spec, DPLHparams(), nnx.Rngs(0))
    assert abs(float(spearman(np.asarray(fresh.pair_spread(te.prompt, te.chosen, te.rejected)), truth))) < 0.3
