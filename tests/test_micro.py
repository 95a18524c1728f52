"""MiCRo: Stage 2 (Hedge) is the Bayes posterior over heads at tau = 1, its online form keeps the Bayes
mixture's regret bound, the router reads prompts (and `router=false` does not), and adapting an unseen
user from labelled pairs helps on a population with known ground truth."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from analysis import group_report
from plural.data import read_table
from plural.evaluate import predict
from plural.models.micro import MiCRo, MiCRoHparams, hedge_stream
from plural.run import fit


def _model(prompt_dim=6, dim=5, **hp):
    spec = {"dim": dim, "prompt_dim": prompt_dim, "n_users": 3, "groups": [], "attr_names": []}
    return MiCRo(spec, MiCRoHparams(**{"n_heads": 3, "hidden": (8,), **hp}), nnx.Rngs(0))


def _pairs(n, prompt_dim=6, dim=5, seed=0):
    r = np.random.default_rng(seed)
    return (r.normal(size=(n, prompt_dim)).astype(np.float32), 3 * r.normal(size=(n, dim)).astype(np.float32),
            3 * r.normal(size=(n, dim)).astype(np.float32))


def test_hedge_at_tau_one_is_the_bayes_posterior_over_heads():
    """softmax(route(x) + b) with b from K pairs equals, for a constant router (no prompts), the posterior
    P(head k | pairs) = pi_k prod_j sigma(m_kj) / Z, computed here from the heads' margins in numpy."""
    model = _model(prompt_dim=0)
    model.logits[...] = jnp.asarray([0.5, -0.2, 0.1])
    p, c, r = _pairs(7, prompt_dim=0)
    b = model.adapt({"prompt": p, "chosen": c, "rejected": r, "mask": jnp.ones(7)}, jax.random.PRNGKey(0))
    got = np.asarray(jax.nn.softmax(model.route(p[:1]) + b, -1))[0]
    m = np.asarray(model.head_margins(p, c, r), np.float64)  # (7, K)
    prior = np.exp([0.5, -0.2, 0.1]) / np.exp([0.5, -0.2, 0.1]).sum()
    post = prior * np.prod(1 / (1 + np.exp(-m)), axis=0)
    np.testing.assert_allclose(got, post / post.sum(), rtol=1e-4, atol=1e-6)
    assert post.max() / post.sum() > 0.5  # the pairs moved the weights (not the prior)
    assert not np.allclose(post / post.sum(), prior, atol=0.05)
    masked = model.adapt({"prompt": p, "chosen": c, "rejected": r, "mask": jnp.zeros(7)}, jax.random.PRNGKey(0))
    np.testing.assert_allclose(np.asarray(jax.nn.softmax(model.route(p[:1]) + masked, -1))[0], prior, rtol=1e-5)


def test_online_hedge_keeps_the_bayes_regret_bound_and_ends_at_the_batch_state():
    """At tau = 1 the Hedge mixture's cumulative log loss exceeds the best head's by at most -log(prior of
    that head) at every step; its last weights are the batch Stage 2 on all pairs."""
    model = _model(prompt_dim=0)
    p, c, r = _pairs(40, prompt_dim=0, seed=1)
    out = hedge_stream(model, p, c, r)
    w = np.asarray(out["weights"])
    assert w.shape == (41, 3) and np.allclose(w.sum(1), 1, atol=1e-5)
    head_cum = np.cumsum(np.asarray(out["head_loss"], np.float64), 0)
    regret = np.asarray(out["regret"], np.float64)
    np.testing.assert_allclose(regret, np.cumsum(np.asarray(out["mixture_loss"])) - head_cum.min(1), rtol=1e-4, atol=1e-4)
    assert (regret <= np.log(3) + 1e-4).all()  # uniform prior over 3 heads (zero router logits)
    assert regret[-1] > -np.log(3)  # and not trivially negative
    b = model.adapt({"prompt": p, "chosen": c, "rejected": r, "mask": jnp.ones(40)}, jax.random.PRNGKey(0))
    np.testing.assert_allclose(w[-1], np.asarray(jax.nn.softmax(model.route(p[:1]) + b, -1))[0], rtol=1e-4, atol=1e-6)


def test_the_router_reads_the_prompt_unless_turned_off():
    p, _, _ = _pairs(5)
    routed = _model()
    assert np.asarray(routed.route(p)).std(0).max() > 1e-3
    static = _model(router=False)
    assert static.router is None and np.asarray(static.route(p)).std(0).max() == 0


def test_adapting_an_unseen_user_from_labelled_pairs_helps(tmp_path):
    """3 groups (0.6 / 0.3 / 0.1), one fixed context: the router is a constant mixture, a user-blind model;
    20 labelled pairs of an unseen user route them to their heads. Gap closed on the same rows."""
    from personas import IdealPointConfig, simulate_ideal_point

    pop = simulate_ideal_point(IdealPointConfig(n_prompts=0, seed=0))
    pop.write(tmp_path / "pop")
    tr, va, te = (read_table(tmp_path / f"pop/{k}.parquet") for k in ("train", "val", "test"))
    result = fit("micro", tmp_path / "pop/train.parquet", tmp_path / "run", data=tr, val=va, progress=False,
                 overrides=["model.n_heads=3"])
    gap = {}
    for shots in (0, 20):
        rows = predict(result, list(tr.users), te, shots=shots, score_from=20)
        gap[shots] = group_report(rows[~rows.seen])["overall"]["gap_closed"].iat[0]
    assert gap[0] < 0.2, gap  # the router knows nothing of the user
    assert gap[20] > gap[0] + 0.3, gap
