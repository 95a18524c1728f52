"""MaxMin-RLHF: EM over users recovers a 10:1 minority that one BT reward fails, and the egalitarian
policy solves max_pi min_g E_pi[R_g] - beta KL (checked by brute force on the simplex) and raises the
worst group's expected reward over the utilitarian policy."""

import jax.numpy as jnp
import numpy as np
import pytest

from analysis import adjusted_rand_index, group_report
from plural.data import read_table
from plural.evaluate import predict
from plural.models.maxmin import maxmin_policy, utilitarian_policy
from plural.run import fit


@pytest.fixture(scope="module")
def ten_to_one(tmp_path_factory):
    """A 2-group 10:1 population and fits of BT, MaxMin with 2 heads (trunk (64,) without input dropout: the EM
    claims do not need the default's width or regulariser, and the test run's time does) and MaxMin at its
    defaults."""
    from personas import IdealPointConfig, simulate_ideal_point

    d = tmp_path_factory.mktemp("ten_to_one")
    pop = simulate_ideal_point(IdealPointConfig(n_groups=2, group_sizes=(10, 1), n_users=66, n_prompts=0, seed=0))
    pop.write(d / "pop")
    tr, va, te = (read_table(d / f"pop/{k}.parquet") for k in ("train", "val", "test"))
    fits = {label: fit(model, d / "pop/train.parquet", d / label, data=tr, val=va, overrides=sets, progress=False)
            for label, model, sets in (("bt", "bt", []), ("K=2", "maxmin", ["model.n_heads=2", "model.hidden=(64,)", "model.input_dropout=0"]), ("default", "maxmin", []))}
    return pop, tr, te, fits


def test_em_recovers_a_ten_to_one_minority_that_bt_fails(ten_to_one):
    """2 groups at 10:1. With as many heads as groups, EM recovers the groups (ARI >= 0.9); with the default
    6 heads the majority may spread over several heads, but the minority's users share no head with it.
    Either way the minority is served far better than by one BT reward. Heads start at random."""
    _, tr, te, fits = ten_to_one
    minority = {}
    for label, res in fits.items():
        rows = predict(res, list(tr.users), te, shots=10)
        minority[label] = group_report(rows[rows.seen])["groups"].set_index("group").loc["g1", "expected"]
        if label != "bt":
            heads = np.asarray(res.seen[0]).argmax(1)
            if label == "K=2":
                assert adjusted_rand_index(heads, tr.user_group) >= 0.9
            else:
                assert not set(heads[tr.user_group == 1]) & set(heads[tr.user_group == 0])
            unseen = group_report(rows[~rows.seen])["groups"].set_index("group")
            assert unseen.loc["g1", "expected"] > 0.7  # new minority users assigned from 10 shots
    assert minority["bt"] < 0.6, minority
    assert minority["K=2"] > minority["bt"] + 0.25 and minority["default"] > minority["bt"] + 0.25, minority


def _objective(pi, rewards, beta, ref):
    return (rewards @ pi).min() - beta * np.sum(pi * np.log(np.maximum(pi, 1e-12) / ref))


def test_the_maxmin_policy_is_the_egalitarian_optimum_and_helps_the_worst_group():
    R = np.array([[1.0, 0.0, 0.55], [0.0, 1.0, 0.55]])  # group 0 loves candidate 0, group 1 candidate 1
    ref, beta = np.full(3, 1 / 3), 0.05
    pi, lam = maxmin_policy(jnp.asarray(R), beta)
    pi = np.asarray(pi, np.float64)
    grid = np.linspace(0, 1, 201)
    best = max(_objective(np.array([a, b, 1 - a - b]), R, beta, ref)
               for a in grid for b in grid if a + b <= 1)
    assert _objective(pi, R, beta, ref) >= best - 2e-3
    util = np.asarray(utilitarian_policy(jnp.asarray(R), jnp.asarray([0.9, 0.1]), beta), np.float64)
    assert (R @ pi).min() > (R @ util).min() + 0.2  # the worst-off group gains
    assert util.argmax() == 0 and pi.argmax() == 2  # majority's favourite vs the compromise
    np.testing.assert_allclose(np.asarray(lam).sum(), 1.0, rtol=1e-5)


@pytest.mark.slow  # about 30 s: run with -m slow
def test_restarts_run_in_one_model_and_the_best_likelihood_is_kept(tmp_path):
    """4 groups (0.4 / 0.3 / 0.2 / 0.1), 20 pairs per user, 4 heads, 4 EM restarts from independent random
    initialisations (trunk (64,), narrower than the default, whose restarts end closer together): the restarts
    end in different optima, and the model's restart is the one whose hard
    assignment explains the training pairs best (full-data log-likelihood, computed here per restart)."""
    from personas import IdealPointConfig, simulate_ideal_point

    cfg = IdealPointConfig(n_groups=4, group_sizes=(0.4, 0.3, 0.2, 0.1), dim=16, train_pairs=20, n_prompts=0, seed=2)
    simulate_ideal_point(cfg).write(tmp_path / "pop")
    tr, va = (read_table(tmp_path / f"pop/{k}.parquet") for k in ("train", "val"))
    res = fit("maxmin", tmp_path / "pop/train.parquet", tmp_path / "run", data=tr, val=va, progress=False, seed=1,
              overrides=["model.n_heads=4", "model.restarts=4", "model.hidden=(64,)"])  # (64,): its restarts'
    # optima differ more than the default (256, 256)'s (full log-likelihoods spread over 8.6 there, 10 needed here)
    model = res.model(0)
    assert model.mlp.kernels[0].shape[0] == 4
    k0 = np.asarray(model.mlp.kernels[0][...])
    assert min(np.abs(k0[i] - k0[j]).max() for i in range(4) for j in range(i)) > 0.1  # not copies
    full = []
    for r in range(4):
        ll = np.asarray(model.head_loglik(tr.prompt, tr.chosen, tr.rejected, r), np.float64)  # (N, K)
        per_user = np.zeros((tr.n_users, 4))
        np.add.at(per_user, np.asarray(tr.user), ll)
        full.append(per_user.max(1).sum())  # each user on its best head
    full = np.array(full)
    assert full.max() - np.sort(full)[-2] > 2.0 and full.max() - full.min() > 10.0, full  # the optima differ
    assert int(model.best()) == int(full.argmax()), (int(model.best()), full)


def test_the_egalitarian_policy_serves_the_minority_by_its_own_judgement(ten_to_one):
    """Candidates judged by the true groups of a 10:1 population: policies built from MaxMin's learned heads
    (2 heads), the egalitarian one raises the worst group's true expected reward and win rate over the
    utilitarian one (weights = the heads' shares of users), at a cost to the majority."""
    from analysis.policy import policies, policy_report

    pop, _, _, fits = ten_to_one
    res = fits["K=2"]
    model = res.model(0)
    rng = np.random.default_rng(1)
    y = rng.normal(size=(40, 8, 32))
    y /= np.linalg.norm(y, axis=-1, keepdims=True)  # 40 prompts x 8 candidate responses
    heads = np.moveaxis(np.asarray(model.head_rewards(np.zeros((40, 8, 0), np.float32), y.astype(np.float32))), -1, 0)
    truth = -pop.scale * ((y[None] - pop.prototypes[:, None, None]) ** 2).sum(-1)  # (2, 40, 8) true group rewards
    pols = policies(heads, np.asarray(res.seen[0]).mean(0), beta=0.5)
    rep = policy_report(pols, truth, ["g0", "g1"], shares=[10, 1]).set_index(["policy", "group"])
    egal, util = rep.loc["maxmin"], rep.loc["utilitarian"]
    assert egal.loc["worst", "expected_reward"] > util.loc["worst", "expected_reward"] + 0.5, rep
    assert egal.loc["g1", "win_rate"] > util.loc["g1", "win_rate"] + 0.1, rep
    assert egal.loc["g0", "expected_reward"] < util.loc["g0", "expected_reward"], rep  # the majority pays
