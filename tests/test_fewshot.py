"""The few-shot family: the inner loop against a hand-computed gradient step, first- vs second-order outer
gradients under jit, LoRe's pruning and its B = 1 case, GPO's neural-process structure (targets scored
independently, context order irrelevant, 0 shots defined, too many shots refused), settings of another
variant refused, and on a population with known ground truth: accuracy rises with K and meta-learning
beats fine-tuned BT with the same shots and inner steps."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from analysis import group_report
from plural.cli import main
from plural.data import read_table
from plural.errors import PluralError
from plural.evaluate import predict
from plural.models.fewshot import FewShot, FewShotHparams, flip_user_pairs
from plural.models.fewshot.maml import meta_loss
from plural.run import fit

SPEC = {"dim": 5, "prompt_dim": 3, "n_users": 4, "groups": [], "attr_names": []}


def _pairs(n, seed=0, lead=()):
    r = np.random.default_rng(seed)
    out = {"prompt": r.normal(size=(*lead, n, 3)), "chosen": r.normal(size=(*lead, n, 5)),
           "rejected": r.normal(size=(*lead, n, 5))}
    out = {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}
    out["mask"] = jnp.ones((*lead, n)).at[..., -1].set(0.0)  # the last pair is padding
    return out


@pytest.mark.parametrize("inner_loss", ["mean", "sum"])
def test_one_inner_step_of_the_head_is_the_hand_computed_gradient_step(inner_loss):
    model = FewShot(SPEC, FewShotHparams(hidden=(4,), adapt_params="head", inner_steps=1, inner_lr=0.5,
                                         inner_loss=inner_loss, adapt_init="population"), nnx.Rngs(0))
    net, ctx = model.net, _pairs(6)
    w = {k: np.asarray(v, np.float64) for k, v in net.weights().items()}

    def features(p, y):  # the hidden layer, written out: gelu(W0^T [x, y] + b0)
        return np.asarray(jax.nn.gelu(jnp.asarray(np.concatenate([p, y], -1) @ w["w0"] + w["b0"])), np.float64)

    hw, hl = features(ctx["prompt"], ctx["chosen"]), features(ctx["prompt"], ctx["rejected"])
    m = (hw - hl) @ w["w1"][:, 0]
    mask = np.asarray(ctx["mask"])
    coef = -mask / (1 + np.exp(m))  # d/dm of -log sigma(m) on the 5 valid pairs: their sum, or their mean
    coef = coef / mask.sum() if inner_loss == "mean" else coef
    expected_w1 = w["w1"] - 0.5 * ((hw - hl) * coef[:, None]).sum(0)[:, None]
    got = model.adapt(ctx, None)
    np.testing.assert_allclose(np.asarray(got["w1"]), expected_w1, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got["b1"]), w["b1"], atol=1e-7)  # a bias cancels in a margin
    assert set(got) == {"w1", "b1"}
    empty = model.adapt({**ctx, "mask": jnp.zeros(6)}, None)  # 0 shots: the meta-learned weights
    np.testing.assert_allclose(np.asarray(empty["w1"]), w["w1"], atol=1e-7)


@pytest.mark.parametrize("variant", ["maml", "reptile", "finetune"])
def test_adapt_inner_steps_adapts_by_that_many_steps(variant):
    """`adapt_inner_steps` (steps outside meta-training) = 10 adapts like 5 steps and 5 more from where they
    ended (plain gradient steps on one batch have no state); 0 keeps `inner_steps`."""
    hp = FewShotHparams(variant=variant, hidden=(4,), inner_steps=5, inner_lr=0.3, adapt_init="population")
    five, ten = (FewShot(SPEC, dataclasses.replace(hp, adapt_inner_steps=k), nnx.Rngs(0)) for k in (0, 10))
    ctx = _pairs(6)
    twice = five.net.inner(five.adapt(ctx, None), ctx, 5, True)
    got, once = ten.adapt(ctx, None), five.adapt(ctx, None)
    for k in got:
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(twice[k]), rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(np.asarray(got[k]), np.asarray(once[k]), atol=1e-4) for k in got)
    same = FewShot(SPEC, dataclasses.replace(hp, adapt_inner_steps=5), nnx.Rngs(0)).adapt(ctx, None)
    for k in once:
        np.testing.assert_allclose(np.asarray(same[k]), np.asarray(once[k]), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("variant", ["maml", "finetune"])
def test_a_new_user_starts_from_the_seen_users_heads_weighted_by_the_shots_likelihood(variant):
    """`adapt_init=seen`: the start is the seen users' adapted heads averaged with weights proportional to the
    likelihood of the shots under each (written out here in numpy), then the inner steps run from there; at
    inner rate 0 the adapted state is that start. `population` starts from the meta-learned head."""
    hp = FewShotHparams(variant=variant, hidden=(4,), adapt_params="head", inner_lr=0.0, adapt_init="seen")
    model = FewShot(SPEC, hp, nnx.Rngs(0))
    w = {k: np.asarray(v, np.float64) for k, v in model.net.weights().items()}
    ctx = _pairs(6, 4)

    def features(p, y):
        return np.asarray(jax.nn.gelu(jnp.asarray(np.concatenate([p, y], -1) @ w["w0"] + w["b0"])), np.float64)

    diff = features(ctx["prompt"], ctx["chosen"]) - features(ctx["prompt"], ctx["rejected"])
    heads = np.stack([diff[:5].mean(0), -diff[:5].mean(0), np.zeros(4)]) * 3.0  # agrees, disagrees, indifferent
    seen = {"w1": jnp.asarray(heads[:, :, None], jnp.float32), "b1": jnp.asarray([[0.5], [-1.0], [2.0]], jnp.float32)}
    loglik = (-np.log1p(np.exp(-(diff @ heads.T))) * np.asarray(ctx["mask"])[:, None]).sum(0)  # (3,)
    post = np.exp(loglik - loglik.max())
    post /= post.sum()
    assert 0.5 < post[0] < 0.999  # the first leads without taking everything: the average is tested
    got = model.adapt(ctx, None, seen)
    np.testing.assert_allclose(np.asarray(got["w1"])[:, 0], post @ heads, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got["b1"]), post @ np.asarray([[0.5], [-1.0], [2.0]]), rtol=1e-4, atol=1e-6)
    stepped = FewShot(SPEC, dataclasses.replace(hp, inner_lr=0.5), nnx.Rngs(0))
    expected = stepped.net.inner(got, ctx, 5, True)  # the same 5 steps as from theta, from the start
    for k, v in stepped.adapt(ctx, None, seen).items():
        np.testing.assert_allclose(np.asarray(v), np.asarray(expected[k]), rtol=1e-5, atol=1e-6)
    own = FewShot(SPEC, dataclasses.replace(hp, adapt_init="population"), nnx.Rngs(0)).adapt(ctx, None, seen)
    np.testing.assert_allclose(np.asarray(own["w1"]), w["w1"], atol=1e-7)  # rate 0 from theta: theta
    with pytest.raises(PluralError, match="adapt_init=seen"):  # a caller that forgets the seen users
        model.adapt(ctx, None)


@pytest.mark.parametrize("start", ["seen", "population"])
def test_seen_users_are_adapted_from_the_meta_learned_weights_whatever_a_new_users_start(start):
    """A seen user's state is its inner loop from theta on all its pairs (the padding masked), for either
    `adapt_init`: the empirical-Bayes start is built from these states, not the other way round."""
    hp = FewShotHparams(hidden=(4,), adapt_params="head", inner_lr=0.3, adapt_init=start)
    model = FewShot(SPEC, hp, nnx.Rngs(0))
    p = _pairs(7, 5)
    dd = {"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"],
          "user_rows": jnp.asarray([[0, 1, 2, 0], [3, 4, 5, 6]]), "user_count": jnp.asarray([3, 4])}
    states = model.seen_states(dd)
    theta = model.net.theta()
    for u, rows in enumerate(([0, 1, 2], [3, 4, 5, 6])):
        one = {k: p[k][jnp.asarray(rows)] for k in ("prompt", "chosen", "rejected")}
        alone = model.net.inner(theta, {**one, "mask": jnp.ones(len(rows))}, 5, True)
        for k in alone:
            np.testing.assert_allclose(np.asarray(states[k][u]), np.asarray(alone[k]), rtol=1e-5, atol=1e-6)


def test_reptile_inner_minibatches_take_the_valid_pairs_in_turn():
    """inner_batches=2, 2 steps of the head: step 1 on the 1st, 3rd, 5th valid pair, step 2 on the 2nd and
    4th (a masked pair is skipped when dealing), each the hand-computed mean-loss gradient step."""
    hp = FewShotHparams(variant="reptile", hidden=(4,), inner_steps=2, inner_lr=0.5, inner_batches=2)
    net = FewShot(SPEC, hp, nnx.Rngs(0)).net
    ctx = _pairs(7, 3)
    ctx["mask"] = jnp.asarray([1, 1, 0, 1, 1, 1, 0], jnp.float32)  # valid pairs: 0, 1, 3, 4, 5
    w = {k: np.asarray(v, np.float64) for k, v in net.weights().items()}

    def features(p, y):
        return np.asarray(jax.nn.gelu(jnp.asarray(np.concatenate([p, y], -1) @ w["w0"] + w["b0"])), np.float64)

    diff = features(ctx["prompt"], ctx["chosen"]) - features(ctx["prompt"], ctx["rejected"])
    head = w["w1"][:, 0].copy()
    for rows in ([0, 3, 5], [1, 4]):
        m = diff[rows] @ head
        head = head - 0.5 * (diff[rows] * (-1 / (1 + np.exp(m)))[:, None]).mean(0)
    theta = {k: jnp.asarray(v) for k, v in net.weights().items()}
    got = net.inner({"w1": theta["w1"], "b1": theta["b1"]}, ctx, 2, True, batches=2)
    np.testing.assert_allclose(np.asarray(got["w1"])[:, 0], head, rtol=1e-4, atol=1e-6)
    whole = net.inner({"w1": theta["w1"], "b1": theta["b1"]}, ctx, 2, True)
    assert not np.allclose(np.asarray(whole["w1"]), np.asarray(got["w1"]), atol=1e-4)
    with pytest.raises(PluralError, match="inner_batches=3"):  # a minibatch no step would take
        FewShot.check_settings(dataclasses.replace(hp, inner_batches=3), FewShot.batches)


def test_second_and_first_order_maml_run_under_jit_and_differ():
    batch = {"context": _pairs(4, 1, (3,)), "target": _pairs(5, 2, (3,)), "user": jnp.arange(3)}
    grads = {}
    for first in (False, True):
        model = FewShot(SPEC, FewShotHparams(hidden=(8,), first_order=first), nnx.Rngs(0))
        graphdef, params = nnx.split(model)

        @jax.jit
        def grad(p):
            return jax.grad(lambda q: meta_loss(nnx.merge(graphdef, q).net, "maml", batch, 3, first)[0])(p)

        grads[first] = jax.tree.leaves(grad(params))
    assert all(np.isfinite(np.asarray(g)).all() for g in grads[False] + grads[True])
    diff = max(float(jnp.abs(a - b).max()) for a, b in zip(grads[False], grads[True]))
    assert diff > 1e-4  # the second-order terms are there


def test_lore_with_one_column_is_one_linear_reward_and_pruning_masks_unused_columns():
    one = FewShot(SPEC, FewShotHparams(variant="lore", rank=1), nnx.Rngs(0))
    p = _pairs(6)
    states = one.net.seen_states()  # (4 users, 1): every user weighs the single column fully
    np.testing.assert_allclose(np.asarray(states), 1.0)
    v = np.asarray(one.net.V[...])[:, 0]
    r = np.concatenate([np.asarray(p["prompt"]), np.asarray(p["chosen"])], -1) @ v
    np.testing.assert_allclose(np.asarray(one.reward(p["prompt"], p["chosen"], jnp.ones((6, 1)))), r, rtol=1e-5)
    lore = FewShot(SPEC, FewShotHparams(variant="lore", rank=4, prune_threshold=0.2), nnx.Rngs(0))
    logits = np.full((4, 4), -5.0)
    logits[:, 0], logits[:2, 2] = 5.0, 5.0  # columns 1 and 3: nobody uses them
    lore.net.logits[...] = jnp.asarray(logits)
    assert np.asarray(lore.net.kept()).tolist() == [True, False, True, False]
    w = np.asarray(lore.adapt(p, None))
    assert w[1] == 0 and w[3] == 0 and abs(w.sum() - 1) < 1e-5


@pytest.mark.parametrize("readout", ["linear", "dot"])
def test_gpo_scores_targets_independently_ignores_context_order_and_refuses_too_many_shots(readout):
    model = FewShot(SPEC, FewShotHparams(variant="gpo", d_model=16, n_layers=2, n_heads=2, max_context=8, readout=readout),
                    nnx.Rngs(0))
    ctx = _pairs(5, 3)
    state = model.adapt(ctx, None)
    shuffled = model.adapt({k: v[jnp.array([3, 0, 4, 1, 2])] for k, v in ctx.items()}, None)
    t = _pairs(7, 4)
    per = jax.tree.map(lambda s: jnp.broadcast_to(s, (7, *s.shape)), state)
    r_all = np.asarray(model.reward(t["prompt"], t["chosen"], per))
    r_one = np.asarray(model.reward(t["prompt"][:1], t["chosen"][:1], jax.tree.map(lambda s: s[:1], per)))
    np.testing.assert_allclose(r_one, r_all[:1], rtol=1e-5)
    per_shuffled = jax.tree.map(lambda s: jnp.broadcast_to(s, (7, *s.shape)), shuffled)
    np.testing.assert_allclose(np.asarray(model.reward(t["prompt"], t["chosen"], per_shuffled)), r_all, rtol=1e-4, atol=1e-5)
    flipped = model.adapt({**ctx, "chosen": ctx["rejected"], "rejected": ctx["chosen"]}, None)
    per_flipped = jax.tree.map(lambda s: jnp.broadcast_to(s, (7, *s.shape)), flipped)
    assert np.abs(np.asarray(model.reward(t["prompt"], t["chosen"], per_flipped)) - r_all).max() > 1e-4  # labels matter
    pop = model.population_state()
    assert pop["mask"].tolist() == [1.0] + [0.0] * 8
    from plural.errors import PluralError
    with pytest.raises(PluralError, match="max_context"):
        model.adapt(_pairs(9, 5), None)


def test_gpo_dot_readout_is_the_response_features_dotted_with_the_target_stream():
    model = FewShot(SPEC, FewShotHparams(variant="gpo", d_model=8, n_layers=1, n_heads=2, max_context=4, readout="dot"),
                    nnx.Rngs(1))
    net, t = model.net, _pairs(3, 6)
    state = jax.tree.map(lambda s: jnp.broadcast_to(s, (3, *s.shape)), model.adapt(_pairs(4, 7), None))
    r = np.asarray(model.reward(t["prompt"], t["chosen"], state))
    # by hand: run the linear readout, then add phi(x, y) . LN(t_L) / sqrt(d_model) with the same weights
    feats = np.concatenate([t["prompt"], t["chosen"]], -1) @ np.asarray(net.features.kernel[...]) + np.asarray(net.features.bias[...])
    net.readout = "linear"
    linear = np.asarray(model.reward(t["prompt"], t["chosen"], state))
    h = t["chosen"].shape[0]
    stream = net.embed_target(jnp.concatenate([t["prompt"], t["chosen"]], -1))[:, None, :]
    stream = net.blocks[0].attend(stream, state["k"][:, 0], state["v"][:, 0], state["mask"])
    out = np.asarray(net.ln(stream[:, 0]))
    assert out.shape == (h, 8)
    np.testing.assert_allclose(r, linear + (feats * out).sum(-1) / np.sqrt(8), rtol=1e-4, atol=1e-5)
    assert np.abs(r - linear).max() > 1e-3  # the dot term is there


@pytest.mark.parametrize("variant", ["maml", "reptile", "gpo"])
def test_input_dropout_perturbs_meta_training_only(variant):
    sets = ({"d_model": 8, "n_layers": 1, "n_heads": 2, "max_context": 8} if variant == "gpo"
            else {"hidden": (8,), "adapt_init": "population"})
    batch = {"context": _pairs(6, 8, lead=(4,)), "target": _pairs(5, 9, lead=(4,))}
    losses = {}
    for rate in (0.0, 0.5):
        model = FewShot(SPEC, FewShotHparams(variant=variant, input_dropout=rate, **sets), nnx.Rngs(0))
        losses[rate] = [float(model.loss(batch, jax.random.key(k), 0)[0]) for k in (0, 1)]
        reward = model.reward(batch["target"]["prompt"][0], batch["target"]["chosen"][0], model.adapt(
            {k: v[0] for k, v in batch["context"].items()}, None))
        if rate == 0.0:
            plain = np.asarray(reward)
    assert losses[0.0][0] == losses[0.0][1]  # no dropout: the key does not matter
    assert losses[0.5][0] != losses[0.5][1] and losses[0.5][0] != losses[0.0][0]  # dropout: a fresh draw per key
    np.testing.assert_array_equal(np.asarray(reward), plain)  # same weights, no dropout outside training


def test_flip_augmentation_reverses_whole_users_in_context_and_targets_alike():
    ctx, tgt = _pairs(6, seed=1, lead=(64,)), _pairs(4, seed=2, lead=(64,))
    batch = {"context": ctx, "target": tgt}
    for p in (0.0, 1.0):
        out = flip_user_pairs(batch, jax.random.key(0), p)
        for part, orig in (("context", ctx), ("target", tgt)):
            want = ("rejected", "chosen") if p else ("chosen", "rejected")
            np.testing.assert_array_equal(out[part]["chosen"], orig[want[0]])
            np.testing.assert_array_equal(out[part]["rejected"], orig[want[1]])
            np.testing.assert_array_equal(out[part]["mask"], orig["mask"])
    out = flip_user_pairs(batch, jax.random.key(3), 0.25)
    flipped = []
    for part, orig in (("context", ctx), ("target", tgt)):
        same = np.all(np.asarray(out[part]["chosen"]) == np.asarray(orig["chosen"]), axis=(1, 2))
        swapped = np.all(np.asarray(out[part]["chosen"]) == np.asarray(orig["rejected"]), axis=(1, 2))
        assert np.all(same ^ swapped)  # every user whole: all of its pairs or none
        flipped.append(swapped)
    np.testing.assert_array_equal(flipped[0], flipped[1])  # the same users in context and targets
    assert 4 <= flipped[0].sum() <= 30  # about a quarter of 64 users (binomial: 16 +- 3.5)


def test_settings_of_another_variant_are_refused(tmp_path, capsys):
    from personas import IdealPointConfig, simulate_ideal_point

    simulate_ideal_point(IdealPointConfig(n_users=6, n_unseen=2, train_pairs=10, test_pairs=5, dim=8)).write(tmp_path)
    for sets in (["model.rank=4"], ["model.variant=lore", "model.inner_lr=0.5"], ["model.variant=gpo", "model.first_order=true"],
                 ["model.variant=gpo", "model.max_context=8"], ["model.variant=reptile", "model.adapt_params=head"],
                 ["model.variant=lore", "model.flip_users=0.2"], ["model.variant=finetune", "model.flip_users=0.2"],
                 ["model.variant=gpo", "model.adapt_inner_steps=10"], ["model.readout=dot"],
                 ["model.variant=lore", "model.input_dropout=0.2"]):
        args = ["fit", "--model", "fewshot", "--data", str(tmp_path / "train.parquet"), "--out", str(tmp_path / "r")]
        assert main(args + [a for s in sets for a in ("--set", s)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and sets[-1].split("=")[0] in err, err
        assert not (tmp_path / "r").exists()  # refused before the run directory is written


@pytest.fixture(scope="module")
def ideal(tmp_path_factory):
    from personas import IdealPointConfig, simulate_ideal_point

    d = tmp_path_factory.mktemp("ideal")
    simulate_ideal_point(IdealPointConfig(n_prompts=0, test_pairs=60, seed=0)).write(d)
    return d, *(read_table(d / f"{k}.parquet") for k in ("train", "val", "test"))


def _curve(ideal, name, sets):
    d, tr, va, te = ideal
    res = fit("fewshot", d / "train.parquet", d / name, data=tr, val=va, progress=False, overrides=sets)
    out = {}
    for shots in (0, 4, 16):
        rows = predict(res, list(tr.users), te, shots=shots, score_from=16)
        out[shots] = group_report(rows[~rows.seen])["overall"]["gap_closed"].iat[0]
    return out


@pytest.mark.slow  # about a minute (two 3000-step fits): run with -m slow
def test_meta_learning_beats_fine_tuned_bt_with_the_same_shots_and_steps(ideal):
    """3 groups (0.6 / 0.3 / 0.1), unseen users, the same scored rows at every K: MAML's accuracy rises with
    K, and beats BT trained on pooled pairs then adapted by the same 5 steps at the same rate."""
    maml = _curve(ideal, "maml", ["model.inner_lr=0.3"])
    tuned = _curve(ideal, "finetune", ["model.variant=finetune", "model.inner_lr=0.3"])
    assert maml[0] < maml[4] < maml[16] and maml[16] > 0.6, maml
    assert maml[16] > tuned[16] + 0.3, (maml, tuned)
    assert abs(maml[0]) < 0.2 and abs(tuned[0]) < 0.2  # 0 shots: a user-blind reward either way
    # the same meta-learned weights, each new user's steps starting at theta (the paper's start): worse at few shots
    theta = _curve(ideal, "maml-theta", ["model.inner_lr=0.3", "model.adapt_init=population"])
    assert theta[4] < maml[4] - 0.03 and theta[16] < maml[16], (theta, maml)


def test_lore_places_a_new_user_by_the_seen_users_who_answer_alike(ideal):
    """LoRe's accuracy on unseen users rises with K; its empirical-Bayes start (the seen users' weights by the
    shots' likelihood) beats the paper's start from the population's mean weights at few shots."""
    d, tr, va, te = ideal
    res = fit("fewshot", d / "train.parquet", d / "lore", data=tr, val=va, progress=False,
              overrides=["model.variant=lore"])

    def gap(shots):
        rows = predict(res, list(tr.users), te, shots=shots, score_from=16)
        return group_report(rows[~rows.seen])["overall"]["gap_closed"].iat[0]

    seen_start = {k: gap(k) for k in (0, 4, 16)}
    assert seen_start[0] < seen_start[4] < seen_start[16] and seen_start[16] > 0.7, seen_start
    model = res.model(0)
    model.net.adapt_init = "population"  # the same fitted basis and seen users, the paper's start
    res = dataclasses.replace(res, graphdef=nnx.split(model)[0])
    pop4 = gap(4)
    assert pop4 < seen_start[4] - 0.1, (pop4, seen_start)


@pytest.mark.slow  # benchmark plumbing (two compiled trainers, ~25 s): run with -m slow
def test_bench_adapt_times_each_variant(tmp_path):
    import json

    out = tmp_path / "adapt.json"
    assert main(["bench", "adapt", "--models", "fewshot:lore,micro", "--dim", "8", "--users", "4",
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    for name in ("fewshot:lore", "micro"):
        assert res[f"{name}_ms_per_user_single"] > 0 and res[f"{name}_ms_per_user_batched"] > 0


def test_a_variant_can_bring_its_own_training_defaults_and_set_still_wins():
    from plural.run import configs_for

    assert configs_for("fewshot")["train"].lr == 1e-3
    assert configs_for("fewshot", ["model.variant=lore"])["train"].lr == 1e-2
    assert configs_for("fewshot", ["model.variant=lore", "train.lr=3e-3"])["train"].lr == 3e-3
    assert configs_for("fewshot", ["train.lr=3e-3", "model.variant=lore"])["train"].lr == 3e-3


def test_seen_mixture_start_follows_the_likelihood_of_the_shots():
    from plural.models.base import seen_mixture_start

    basis = jnp.eye(2)  # two basis rewards on 2-d responses: r_k(y) = y_k
    seen = jnp.asarray([[0.9, 0.1], [0.1, 0.9]])  # one seen user leans on each

    def margin_fn(logits, prompt, chosen, rejected):
        return 5.0 * (chosen - rejected) @ basis @ jax.nn.softmax(logits)

    shots = {"prompt": jnp.zeros((6, 1)), "chosen": jnp.tile(jnp.asarray([[1.0, 0.0]]), (6, 1)),
             "rejected": jnp.tile(jnp.asarray([[0.0, 1.0]]), (6, 1)), "mask": jnp.ones(6)}
    # likelihood ratio of the two seen users: (sigma(4) / sigma(-4))^6 = e^24, so the start is the first's
    np.testing.assert_allclose(np.asarray(seen_mixture_start(margin_fn, seen, shots)), [0.9, 0.1], atol=1e-6)
    none = seen_mixture_start(margin_fn, seen, {**shots, "mask": jnp.zeros(6)})
    np.testing.assert_allclose(np.asarray(none), [0.5, 0.5], atol=1e-6)  # no shots: the seen users' mean
