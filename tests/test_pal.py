"""PAL-A / PAL-B against ground truth: close the single-to-oracle gap for seen users and for unseen
users from 10 shots, K = 1 cannot (it is a single reward, like BT), per-user mixtures recover the groups
and the learned prototypes match the true ones up to permutation."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from analysis import accuracy_table, adjusted_rand_index, gap_closed, kmeans, match_components
from personas import IdealPointConfig, simulate_ideal_point
from plural import cluster
from plural.cli import main
from plural.data import device_data, read_table
from plural.evaluate import predict
from plural.models import get_family
from plural.models.base import user_directions
from plural.run import configs_for
from plural.train import Trainer, train


@pytest.fixture(scope="module")
def population(tmp_path_factory):
    """3 groups (0.6 / 0.3 / 0.1), no prompt (one fixed context), 60 seen + 30 unseen users."""
    pop = simulate_ideal_point(IdealPointConfig(n_prompts=0, test_pairs=80, seed=0))
    d = pop.write(tmp_path_factory.mktemp("pal_pop"))
    return pop, read_table(d / "train.parquet"), read_table(d / "test.parquet")


SEEDS = (0, 1, 2)  # training seeds fitted at once: the claims must hold for each, not on average


K3 = ["model.n_prototypes=3"]  # the true number of groups: the recovery claims are about these 3 prototypes
# (the defaults use more prototypes, chosen on validation data; spare ones must then stay unused)


def _fit(name, tr, *overrides, seeds=(0,)):
    c = configs_for(name, (K3 if name.startswith("pal") else []) + list(overrides))
    return train(get_family(name), c["model"], c["train"], tr, seeds=seeds, progress=False)


@pytest.fixture(scope="module", params=["pal-a", "pal-b"])
def fitted(request, population):
    pop, tr, te = population
    return request.param, _fit(request.param, tr, seeds=SEEDS)


def _summary(rows):
    t = accuracy_table(rows, by=None, n_boot=10).iloc[0]
    return t["expected"], gap_closed(t["expected"], t["single"], t["oracle"])


@pytest.mark.parametrize("seed_index", range(len(SEEDS)))
def test_pal_closes_the_gap_for_seen_and_unseen_users(fitted, population, seed_index):
    name, result = fitted
    pop, tr, te = population
    rows = predict(result, list(tr.users), te, shots=10, seed_index=seed_index)
    seen, unseen = rows[rows.seen], rows[~rows.seen]
    assert _summary(seen)[1] >= 0.8, (name, accuracy_table(seen, by=None).to_dict("records"))
    assert _summary(unseen)[1] >= 0.7, (name, accuracy_table(unseen, by=None).to_dict("records"))
    groups = accuracy_table(seen, by="group", n_boot=10).set_index("group")
    assert groups.loc["g2", "expected"] > groups.loc["g2", "single"] + 0.15  # the 10% minority is served
    # more shots, better mixtures
    few = predict(result, list(tr.users), te, shots=1, seed_index=seed_index)
    assert _summary(unseen)[0] > _summary(few[~few.seen])[0] + 0.03


def test_mixture_weights_recover_the_groups(fitted, population):
    name, result = fitted
    pop, tr, te = population
    for i in range(len(SEEDS)):
        mix = np.asarray(result.seen[i])  # (U, K) softmax(w_i) of the seen users
        assert mix.shape == (len(tr.users), 3)
        np.testing.assert_allclose(mix.sum(1), 1.0, rtol=1e-5)
        assert adjusted_rand_index(kmeans(mix, 3), tr.user_group) >= 0.8, (name, SEEDS[i])


def test_user_directions_point_at_the_true_prototypes(population):
    """The mean chosen-minus-rejected embedding of a user's pairs points at its group's true prototype
    (the rewards are linear in e(y) on the sphere), so k-means on them finds the groups."""
    pop, tr, te = population
    v = np.asarray(user_directions(device_data(tr)))  # (U, D), unit rows
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    cos = v @ (pop.prototypes / np.linalg.norm(pop.prototypes, axis=1, keepdims=True)).T  # (U, G)
    assert (cos.argmax(1) == tr.user_group).mean() >= 0.95
    labels = np.asarray(cluster.kmeans(jnp.asarray(v), 3, jax.random.key(0)))
    assert adjusted_rand_index(labels, tr.user_group) == 1.0


@pytest.mark.parametrize("name", ["pal-a", "pal-b"])
def test_kmeans_start_puts_each_group_on_its_own_prototype(population, name):
    """`user_init=kmeans` (the default): before the first step each group's users lean on one prototype
    of their own, for every seed; `user_init=random` starts everyone at the uniform mixture."""
    pop, tr, te = population
    for user_init in ("kmeans", "random"):
        c = configs_for(name, K3 + [f"model.user_init={user_init}"])
        params = Trainer(get_family(name), c["model"], c["train"], tr, seeds=SEEDS).init()[0]
        mix = np.asarray(jax.nn.softmax(params["w"][...], -1))  # (S, U, K)
        for m in mix:
            if user_init == "random":
                assert m.max() < 0.6
                continue
            top = m.argmax(1)
            assert adjusted_rand_index(top, tr.user_group) == 1.0
            assert len({int(np.bincount(top[tr.user_group == g]).argmax()) for g in range(3)}) == 3
            assert m.max(1).min() > 0.7


@pytest.mark.parametrize("name, shares, overrides", [
    pytest.param("pal-a", (0.4, 0.35, 0.25), ("model.mixture_entropy=0", "train.lr=3e-3"), id="pal-a"),
    pytest.param("pal-b", (0.6, 0.3, 0.1), (), id="pal-b"),
])
def test_training_from_a_random_start_recovers_the_groups(population, tmp_path, name, shares, overrides):
    """With `user_init=random` the groups are not given at the start (users' mixtures are noise around the
    uniform one: ARI ~ 0); training alone puts each group on a prototype of its own, for each of 3 seeds.

    PAL-A from a random start does not reliably separate the 10% minority of the 0.6 / 0.3 / 0.1 population
    (pal.py's docstring: it settles with two groups on one prototype), nor, with the entropy prior on,
    any 3 groups (premature commitment: two of 6 seeds merge groups even at equal shares). So PAL-A is tested
    without the prior on shares 0.4 / 0.35 / 0.25 (6 of 6 seeds recover the groups exactly), PAL-B with its
    defaults on the test population (seeds 0-5: ARI 1, 1, 0.97, 0.95, 1, 0.88 after 1000 steps)."""
    if shares == population[0].config.group_sizes:
        tr = population[1]
    else:
        pop = simulate_ideal_point(IdealPointConfig(n_prompts=0, group_sizes=shares, seed=0))
        tr = read_table(pop.write(tmp_path) / "train.parquet")
    c = configs_for(name, K3 + ["model.user_init=random", "train.steps=1000", *overrides])
    trainer = Trainer(get_family(name), c["model"], c["train"], tr, seeds=SEEDS)
    start = np.asarray(jax.nn.softmax(trainer.init()[0]["w"][...], -1))  # (S, U, K) before the first step
    result = trainer.run(progress=False)
    for i, seed in enumerate(SEEDS):
        assert adjusted_rand_index(kmeans(start[i], 3), tr.user_group) < 0.2, (name, seed)
        assert adjusted_rand_index(kmeans(np.asarray(result.seen[i]), 3), tr.user_group) >= 0.9, (name, seed)


def test_learned_ideal_points_match_the_true_prototypes(fitted, population):
    """Each group's ideal point (its users' mean mixture) ranks probe responses like the group's true
    prototype, and the K prototypes themselves match the 3 true ones up to permutation."""
    name, result = fitted
    pop, tr, te = population
    model = result.model(0)
    rng = np.random.default_rng(7)
    y = rng.normal(size=(400, pop.config.dim))
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    true = -((y[None] - pop.prototypes[:, None]) ** 2).sum(-1)  # (G, N) true group rewards (up to scale)

    def profile(mix):  # (M, K) mixtures -> (M, N) model rewards of the probes
        return np.stack([np.asarray(model.reward(jnp.zeros((len(y), 0)), jnp.asarray(y, jnp.float32),
                                                 jnp.broadcast_to(jnp.asarray(m, jnp.float32), (len(y), 3))))
                         for m in mix])

    mix = np.asarray(result.seen[0])
    group_mix = np.stack([mix[tr.user_group == g].mean(0) for g in range(3)])
    assignment, corr = match_components(profile(group_mix), true)
    assert list(assignment) == [0, 1, 2] and corr.min() >= 0.9, corr
    _, corr_vertices = match_components(profile(np.eye(3)), true)
    assert corr_vertices.min() >= 0.6, corr_vertices


@pytest.mark.slow  # about 40 s: run with -m slow
def test_one_prototype_is_a_single_reward(population):
    """K = 1: every user has the same ideal point, so PAL cannot beat the best single reward (as BT)."""
    pop, tr, te = population
    bt = predict(_fit("bt", tr, "model.hidden=(64,)", "train.steps=1000"), list(tr.users), te, shots=10)
    bt_acc, _ = _summary(bt[bt.seen])
    for name in ("pal-a", "pal-b"):
        rows = predict(_fit(name, tr, "model.n_prototypes=1"), list(tr.users), te, shots=10)
        acc, gap = _summary(rows[rows.seen])
        assert gap < 0.1, (name, gap)
        assert abs(acc - bt_acc) < 0.04, (name, acc, bt_acc)


def test_new_users_mixtures_land_on_their_group(fitted, population):
    """Adapting only the K mixture weights from 10 shots places a new user next to its own group's seen
    users (nearest group-mean mixture) for most unseen users, minority included."""
    name, result = fitted
    pop, tr, te = population
    model = result.model(0)
    mix = np.asarray(result.seen[0])
    group_mix = np.stack([mix[tr.user_group == g].mean(0) for g in range(3)])
    frame = te.frame
    hits, groups = [], []
    adapt = jax.jit(model.adapt)
    for uid in frame.loc[~frame["seen"], "user_id"].unique():
        idx = np.flatnonzero(frame["user_id"].to_numpy() == uid)[:10]
        ctx = {"prompt": jnp.asarray(te.prompt[idx]), "chosen": jnp.asarray(te.chosen[idx]),
               "rejected": jnp.asarray(te.rejected[idx]), "mask": jnp.ones(len(idx))}
        a = np.asarray(adapt(ctx, jax.random.key(0)))
        assert a.shape == (3,) and abs(a.sum() - 1) < 1e-5 and (a >= 0).all()
        g = int(frame["group"].iat[idx[0]][1:])
        hits.append(np.argmin(((group_mix - a) ** 2).sum(1)) == g)
        groups.append(g)
    hits, groups = np.array(hits), np.array(groups)
    assert hits.mean() >= 0.8, hits.mean()
    assert hits[groups == 2].mean() >= 0.5  # the minority's new users too


def test_pal_from_the_cli(tiny, tmp_path):
    _, d = tiny
    run = tmp_path / "pal"
    assert main(["fit", "--model", "pal-b", "--data", str(d / "train.parquet"), "--out", str(run),
                 "--set", "train.steps=60", "--set", "n_prototypes=2", "--set", "loss=hinge"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model_hparams"]["n_prototypes"] == 2 and config["model_hparams"]["loss"] == "hinge"
    out = tmp_path / "m.json"
    assert main(["evaluate", "--run", str(run), "--data", str(d / "test.parquet"), "--shots", "5", "--out", str(out)]) == 0
    m = json.loads(out.read_text())
    assert m["shots"] == 5 and 0 <= m["accuracy"] <= 1 and m["per_user"]


@pytest.mark.slow
def test_pal_on_persona_statements_with_real_embeddings(tmp_path):
    """Real text: MiniLM embeddings of persona statements, 4 groups x 6 dimensions, 10% label noise (the
    `experiments/paper.py` population; train / val / test statements disjoint, near-duplicates kept in one
    split). With early stopping on the val table, both variants at their defaults close much of the
    majority-to-oracle gap for seen users and, from 10 shots, for unseen users; BT, one reward, cannot (it
    stays below the majority). Thresholds: below every seed of results/paper (PAL-A 0.76 / 0.70, PAL-B
    0.65 / 0.52 mean over 3 seeds)."""
    from personas.statements import StatementsConfig, simulate_statements

    pop = simulate_statements(StatementsConfig(n_groups=4, n_dims=6, n_users=60, train_pairs=60, test_pairs=30,
                                               label_noise=0.1, seed=0))
    d = pop.write(tmp_path / "pop")
    tr, va, te = (read_table(d / f"{k}.parquet") for k in ("train", "val", "test"))

    def fit(name):
        c = configs_for(name, [])
        return train(get_family(name), c["model"], c["train"], tr, progress=False, val=va)

    bt = predict(fit("bt"), list(tr.users), te, shots=10)
    assert _summary(bt[bt.seen])[1] < 0.1
    for name, (min_seen, min_unseen) in (("pal-a", (0.65, 0.55)), ("pal-b", (0.5, 0.35))):
        rows = predict(fit(name), list(tr.users), te, shots=10)
        seen, unseen = _summary(rows[rows.seen])[1], _summary(rows[~rows.seen])[1]
        assert seen >= min_seen and unseen >= min_unseen, (name, seen, unseen)


def test_bad_pal_hyper_parameters_are_one_line_errors(tiny, tmp_path, capsys):
    _, d = tiny
    for i, bad in enumerate(("model.input_dropout=1.0", "model.user_init=spectral")):
        code = main(["fit", "--model", "pal-b", "--data", str(d / "train.parquet"), "--out", str(tmp_path / str(i)),
                     "--set", "train.steps=10", "--set", bad])
        err = capsys.readouterr().err.strip()
        assert code == 2 and bad in err and "\n" not in err, err
