"""The conformance suite: every registered family (parametrised over `plural.models.FAMILIES`, so a new
family joins by registering, and a registered family that breaks the protocol turns CI red) through the
one trainer and the one scorer, on a tiny population:

- protocol: shapes of seen / population / group / adapted states, margins = reward differences;
- the same seed gives the same bytes; a run killed after a checkpoint resumes to the same bytes and
  parameters; S seeds trained at once equal each seed trained alone;
- `plural evaluate` at 0 and K shots and `plural score` on its run directory;
- `--shots K` adapts unseen users on their first K rows and scores only the rest.
And the registry: README table, `--model` help and demo variants are made from it."""

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from personas import IdealPointConfig, simulate_ideal_point
from plural.cli import main
from plural.data import PreferenceData, read_table
from plural.data.batching import eval_rows
from plural.errors import PluralError
from plural.evaluate import predict, user_states
from plural.models import FAMILIES, demo_models, family_table, get_family, register
from plural.models.base import SMALL_TABLE, small_table, view_of
from plural.run import configs_for, fit, load_run
from plural.train import traced_keys, train

# Small widths per family (tiny data: D = 8, 12 users); a family missing here trains at its defaults.
SMALL = {
    "bt": ["model.hidden=(16,)", "batch.batch_size=64"],
    "vpl": ["model.width=16", "model.pair_hidden=(16,)", "model.decoder_hidden=(16,)", "batch.users_per_batch=8",
            "batch.context_max=8", "batch.targets_per_user=4"],
    "pal-a": ["model.projector_hidden=(16,)", "model.latent_dim=8", "batch.batch_size=64"],
    "pal-b": ["model.latent_dim=8", "model.prompt_hidden=(8,)", "batch.batch_size=64"],
    "micro": ["model.hidden=(16,)", "batch.batch_size=64"],
    "dpl": ["model.hidden=(16,)", "batch.batch_size=64"],
    "maxmin": ["model.hidden=(16,)", "batch.users_per_batch=8", "batch.context_max=8", "batch.targets_per_user=4"],
    "palette": ["model.hidden=16", "batch.pairs_per_group=32"],
}
# 40 steps in chunks of 10, checkpoints at 20 and 40, validation (fit's held-out pairs) at every chunk; one
# device (compiles a third faster; sharded batches are tested in test_train).
STEPS = ["train.steps=40", "train.log_every=10", "train.ckpt_every=20", "train.eval_every=10", "train.mesh=(1,1)"]
K = 4  # shots in the evaluation tests
NO_USER_STATE = {"bt", "dpl"}  # families whose adapt is the identity: a new user's shots change nothing
ROOT = Path(__file__).resolve().parents[1]


class Crash(Exception):
    pass


def _overrides(name, *extra):
    return STEPS + SMALL.get(name, []) + list(extra)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def full_run(request, tiny, tmp_path_factory):
    """(family, run directory, result) of one uninterrupted 40-step `fit` of seed 0 on the tiny table,
    validating on its val table (so the best parameters are tracked, checkpointed and resumed too)."""
    name = request.param
    _, d = tiny
    out = tmp_path_factory.mktemp(name) / "full"
    result = fit(name, d / "train.parquet", out, overrides=_overrides(name), progress=False,
                 val_path=d / "val.parquet")
    return name, out, result


def _fit(name, d, out, **kw):
    return fit(name, d / "train.parquet", out, overrides=_overrides(name), progress=False, val_path=d / "val.parquet",
               **kw)


# -- the protocol --------------------------------------------------------------------------------------

def test_states_and_margins_have_the_protocol_shapes(full_run, tiny):
    """seen_states (U, ...), population_state (...), group_state (N,) -> (N, ...), adapt(K pairs) -> a state
    shaped like the population state; margin and reward (N,) finite, margin = reward(chosen) - reward(rejected)."""
    name, out, result = full_run
    _, d = tiny
    te = view_of(get_family(name), read_table(d / "test.parquet"))  # as the family reads it
    model = result.model(0)
    users = json.loads((out / "config.json").read_text())["users"]
    n_users = result.spec["n_users"]
    pop = model.population_state()
    seen = jax.tree.map(lambda s: s[0], result.seen)
    assert jax.tree.structure(seen) == jax.tree.structure(pop)
    for s, p in zip(jax.tree.leaves(seen), jax.tree.leaves(pop), strict=True):
        assert s.shape == (n_users, *p.shape) and n_users == 12
    rows = eval_rows(te, users, result.spec["groups"])
    N = te.n_pairs
    by_group = model.group_state(jnp.asarray(rows["group"]))
    for g, p in zip(jax.tree.leaves(by_group), jax.tree.leaves(pop), strict=True):
        assert g.shape == (N, *p.shape)
    K = 4
    ctx = {k: jnp.asarray(v[:K]) for k, v in rows.items()} | {"mask": jnp.ones((K,), jnp.float32)}
    adapted = model.adapt(ctx, jax.random.PRNGKey(0), seen)  # the protocol: every caller passes the seen users
    assert jax.tree.structure(adapted) == jax.tree.structure(pop)
    for a, p in zip(jax.tree.leaves(adapted), jax.tree.leaves(pop), strict=True):
        assert a.shape == p.shape and np.isfinite(np.asarray(a)).all()
    m = model.margin(te.prompt, te.chosen, te.rejected, by_group)
    r_c, r_r = model.reward(te.prompt, te.chosen, by_group), model.reward(te.prompt, te.rejected, by_group)
    assert m.shape == r_c.shape == (N,) and np.isfinite(np.asarray(m)).all()
    np.testing.assert_allclose(np.asarray(m), np.asarray(r_c - r_r), rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(m)).max() > 0  # trained, not a constant


def test_resume_after_a_crash_gives_the_same_bytes_and_parameters(full_run, tiny, tmp_path):
    """A second fit of the same seed, crashed after step 30 and resumed from its checkpoint at 20, writes the
    same metrics.json bytes and parameters as the uninterrupted one: training is deterministic per seed (the
    crashed fit computed steps 1-20 on its own) and resumable."""
    name, full, full_result = full_run
    _, d = tiny
    m = json.loads((full / "metrics.json").read_text())
    assert [h["step"] for h in m["history"]] == [10, 20, 30, 40]
    assert all("val_loss" in h for h in m["history"]) and m["best_step"] in (10, 20, 30, 40)  # validation ran
    cut = tmp_path / "cut"

    def crash(step):
        if step == 30:  # after the checkpoint at 20, before the one at 40
            raise Crash

    with pytest.raises(Crash):
        _fit(name, d, cut, on_chunk=crash)
    assert not (cut / "metrics.json").exists()
    resumed = _fit(name, d, cut, resume=True)
    assert (cut / "metrics.json").read_bytes() == (full / "metrics.json").read_bytes()
    for a, b in zip(_leaves((full_result.params, full_result.rest, full_result.seen)),
                    _leaves((resumed.params, resumed.rest, resumed.seen)), strict=True):
        np.testing.assert_array_equal(a, b)
    # and what a later `evaluate` loads from the resumed run directory (the best parameters)
    loaded = load_run(cut).result
    for a, b in zip(_leaves((full_result.params, full_result.seen)), _leaves((loaded.params, loaded.seen)), strict=True):
        np.testing.assert_array_equal(a, b)


def test_seeds_at_once_equal_a_seed_alone(full_run, tiny):
    """Seed 0 trained second of two at once (vmap) equals seed 0 trained alone by `fit` (the full run;
    seed_batching=auto, lax.map on a CPU): neither the seed's position, nor the seed beside it, nor the
    seed batching changes it. To 1e-5, not bit for bit: the batched and the looped programs may order
    their reductions differently (as in test_train)."""
    name, _, alone = full_run
    _, d = tiny
    c = configs_for(name, _overrides(name, "train.seed_batching=vmap"))
    data, val = read_table(d / "train.parquet"), read_table(d / "val.parquet")
    point = _other_point(name, c)  # seed 1 trains at another point of every traced setting, in the same program
    together = train(get_family(name), c["model"], c["train"], data, seeds=(1, 0), progress=False, val=val,
                     batches=c["batch"], traced={k: [v, _value(c, k)] for k, v in point.items()})
    assert together.seed_metrics(1)["best_step"] == alone.seed_metrics(0)["best_step"]
    for a, b in zip(_leaves((together.params, together.seen)), _leaves((alone.params, alone.seen)), strict=True):
        np.testing.assert_allclose(a[1], b[0], atol=1e-5, rtol=1e-5)
    assert [h["step"] for h in together.history] == [h["step"] for h in alone.history] == [10, 20, 30, 40]
    for both, one in zip(together.history, alone.history):
        assert set(both) == set(one)
        for k in set(both) - {"step"}:
            np.testing.assert_allclose(both[k][1], one[k][0], atol=1e-5, rtol=1e-5, err_msg=k)
    assert any(not np.allclose(x[0], x[1]) for x in _leaves(together.params) if x[0].size > 1)  # two models
    # and seed 1 equals its own point trained alone (margins: see test_train's points test for why not bits)
    c1 = configs_for(name, _overrides(name, *[f"{k}={v}" for k, v in point.items()]))
    other = train(get_family(name), c1["model"], c1["train"], data, seeds=(1,), progress=False, val=val,
                  batches=c1["batch"])
    te = read_table(d / "test.parquet")
    np.testing.assert_allclose(predict(together, list(data.users), te, seed_index=0)["margin"],
                               predict(other, list(data.users), te)["margin"], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose([h["loss"][0] for h in together.history], [h["loss"][0] for h in other.history],
                               rtol=1e-5)


DROPOUT = sorted(n for n in FAMILIES if any(f.name == "input_dropout" for f in dataclasses.fields(get_family(n).Hparams)))


@pytest.mark.parametrize("name", DROPOUT)
def test_input_dropout_reaches_training(name, tiny):
    """Two replicas of one program, the same seed, input_dropout 0 and 0.5: their losses part from the first
    step (the dropout draw reaches the loss), and a family reading the setting lets replicas differ in it."""
    _, d = tiny
    assert "model.input_dropout" in traced_keys(get_family(name))
    c = configs_for(name, SMALL.get(name, []) + ["train.steps=2", "train.log_every=1", "train.mesh=(1,1)",
                                                   "train.seed_batching=vmap"])
    res = train(get_family(name), c["model"], c["train"], read_table(d / "train.parquet"), seeds=(0, 0),
                progress=False, batches=c["batch"], traced={"model.input_dropout": [0.0, 0.5]})
    first = np.asarray(res.history[0]["loss"])
    assert first.shape == (2,) and abs(first[0] - first[1]) > 1e-6, first


def test_every_family_but_palette_offers_input_dropout():
    """Dropout on the response embeddings is the regulariser every family on the defaults suite is swept over
    (experiments/input_dropout.py); palette, which needs attribute columns and so is not on the suite, has its
    own attribute dropout and weight decay, chosen on its populations (experiments/palette.py)."""
    assert set(FAMILIES) - set(DROPOUT) == {"palette"}


# input_dropout's default by table size (RewardModel.resolve_data): (rate, small-table rate) per family as
# the defaults suite's validation chose them (results/input_dropout; docs/defaults.md)
AUTO_DROPOUT = {"bt": (0.25, 0.5), "bt (group)": (0.0, 0.5), "bt (user)": (0.0, 0.5), "vpl": (0.0, 0.5),
                "pal-a": (0.0, 0.0), "pal-b": (0.0, 0.5), "micro": (0.0, 0.5), "dpl": (0.25, 0.5),
                "maxmin": (0.0, 0.5), "fewshot": (0.0, 0.0)}


def _table(dim, users, pairs):
    """The training table of a small simulated population (users x pairs comparisons of dimension dim)."""
    df = simulate_ideal_point(IdealPointConfig(dim=dim, n_users=users, n_unseen=2, train_pairs=pairs, test_pairs=4,
                                               seed=5)).train
    emb = {c: np.stack(df[c].to_numpy()).astype(np.float32) for c in ("chosen_embedding", "rejected_embedding")}
    return PreferenceData.from_frame(df.drop(columns=list(emb)), emb)


def test_small_table_is_fewer_than_13_pairs_per_dimension():
    """The boundary of `small_table`: 13 x D training pairs make a large table, one fewer a small one."""
    assert SMALL_TABLE == 13.0
    assert small_table(_table(dim=8, users=13, pairs=8 - 1)) and not small_table(_table(dim=8, users=13, pairs=8))
    assert small_table(_table(dim=64, users=12, pairs=20)) and not small_table(_table(dim=4, users=12, pairs=20))


@pytest.mark.parametrize("label", sorted(AUTO_DROPOUT))
def test_input_dropout_default_follows_the_table_size(label):
    """Each family's default input dropout: its small-table rate on 240 pairs of D = 64 (3.75 per dimension),
    its other rate on 240 pairs of D = 4 (60); a rate that is set is kept on either."""
    name, sets = (label.split(" (")[0], [f"model.condition={label.split('(')[1][:-1]}"]) if "(" in label else (label, [])
    family = get_family(name)
    hp = configs_for(name, sets)["model"]
    small, large = _table(dim=64, users=12, pairs=20), _table(dim=4, users=12, pairs=20)
    assert (family.resolve_data(hp, large).input_dropout, family.resolve_data(hp, small).input_dropout) == AUTO_DROPOUT[label]
    given = configs_for(name, sets + ["model.input_dropout=0.1"])["model"]
    assert family.resolve_data(given, small).input_dropout == family.resolve_data(given, large).input_dropout == 0.1


def test_fit_records_the_input_dropout_it_trained_with(tmp_path):
    """`plural fit` resolves the automatic default on the table it trains on (after holding out validation
    pairs) and writes the rate to config.json; the trainer runs at it."""
    for dim, rate in ((64, 0.5), (4, 0.25)):
        simulate_ideal_point(IdealPointConfig(dim=dim, n_users=12, n_unseen=2, train_pairs=20, test_pairs=4, seed=5)).write(tmp_path / str(dim))
        result = fit("bt", tmp_path / str(dim) / "train.parquet", tmp_path / f"run{dim}", progress=False,
                     overrides=["train.steps=10", "train.eval_every=10", "train.log_every=10", "model.hidden=(8,)"])
        config = json.loads((tmp_path / f"run{dim}" / "config.json").read_text())
        assert config["model_hparams"]["input_dropout"] == result.hp.input_dropout == rate
        assert config["validation"] == {"held_out_fraction": 0.1}


def _value(c, key):
    section, field = key.split(".")
    return getattr(c[section], field)


def _other_point(name, c) -> dict:
    """Another value of every setting the family lets replicas of one program differ in (traced_keys) and this
    configuration reads (`bt`'s user settings only with condition=user: others are refused): the learning rate
    doubled, weight decay 0.01 more, each traced model field halved plus 0.05 (within range)."""
    out = {}
    for key in traced_keys(get_family(name)):
        v = _value(c, key)
        v = 0.3 if v is None else v  # an automatic default (input_dropout by table size): any other rate
        new = 2 * v if key == "train.lr" else v + 0.01 if key == "train.weight_decay" else round(0.5 * v + 0.05, 6)
        try:
            configs_for(name, _overrides(name, f"{key}={new}"))
        except PluralError as e:
            assert ": applies " in str(e), e  # a setting of another variant (refuse_unread), not a bad value
            continue
        out[key] = new
    return out


# -- the command line on the run directory: evaluate at 0 and K shots, score ------------------------------

def test_evaluate_at_zero_and_k_shots_and_score(full_run, tiny, tmp_path):
    name, out, _ = full_run
    _, d = tiny
    te = read_table(d / "test.parquet")
    train_users = set(json.loads((out / "config.json").read_text())["users"])
    per_unseen = [len(r) for u, r in enumerate(te.user_rows()) if te.users[u] not in train_users]
    assert len(per_unseen) == 6 and min(per_unseen) > K
    counts = {}
    for shots in (0, K):
        assert main(["evaluate", "--run", str(out), "--data", str(d / "test.parquet"), "--shots", str(shots),
                     "--out", str(tmp_path / f"m{shots}.json")]) == 0
        m = json.loads((tmp_path / f"m{shots}.json").read_text())
        assert m["shots"] == shots and 0.0 <= m["accuracy"] <= 1.0 and set(m["per_group"]) == set(te.groups)
        counts[shots] = m["n_pairs"]
    assert counts == {0: te.n_pairs, K: te.n_pairs - K * len(per_unseen)}
    assert main(["score", "--run", str(out), "--data", str(d / "test.parquet"), "--shots", str(K),
                 "--out", str(tmp_path / "scores.parquet")]) == 0
    scores = pd.read_parquet(tmp_path / "scores.parquet")
    assert len(scores) == te.n_pairs and scores[["chosen_reward", "rejected_reward"]].notna().all().all()
    run = load_run(out)
    rows = predict(run.result, run.users, te, shots=K)
    scored = scores.iloc[rows["row"].to_numpy()]
    np.testing.assert_allclose((scored["chosen_reward"] - scored["rejected_reward"]).to_numpy(),
                               rows["margin"].to_numpy(), rtol=1e-5, atol=1e-5)
    assert int(scores["adapt_row"].sum()) == K * len(per_unseen)


# -- one registration -------------------------------------------------------------------------------------

def test_the_readme_table_and_the_cli_help_are_the_registry(capsys):
    readme = (ROOT / "README.md").read_text()
    assert family_table() in readme, "README's family table differs from plural.models.family_table()"
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    helptext = " ".join(capsys.readouterr().out.split())
    assert all(name in helptext for name in FAMILIES)
    headings = [line[3:] for line in (ROOT / "docs/methods.md").read_text().splitlines() if line.startswith("## ")]
    assert all(any(name in h.split(" / ") for h in headings) for name in FAMILIES), headings  # each documented
    labels = demo_models()
    assert {fam for fam, _ in labels.values()} == set(FAMILIES)  # the demo fits every family
    for label, (fam, sets) in labels.items():
        configs_for(fam, sets)  # and its settings are valid


def test_register_refuses_an_incomplete_or_taken_family():
    from plural.models.bt import BT

    class NoReference(BT):
        name, reference = "no-reference", ""

    class Taken(BT):
        pass

    with pytest.raises(TypeError, match="no reference"):
        register(NoReference)
    with pytest.raises(TypeError, match="'bt' is taken"):
        register(Taken)
    assert "no-reference" not in FAMILIES


# -- --shots K: an unseen user's first K rows (file order) adapt the model, only the rest is scored --------


def _flipped(data: PreferenceData, rows) -> PreferenceData:
    """`data` with chosen and rejected swapped on `rows` (everything else as it was)."""
    flip = np.zeros(data.n_pairs, bool)
    flip[np.asarray(rows, int)] = True
    emb = {"chosen_embedding": np.where(flip[:, None], data.rejected, data.chosen),
           "rejected_embedding": np.where(flip[:, None], data.chosen, data.rejected)}
    if data.prompt_dim:
        emb["prompt_embedding"] = data.prompt
    frame = data.frame.copy()
    for a in data.attr_names:  # the responses' attribute scores travel with them
        c, r = frame[f"chosen_attr_{a}"].to_numpy(), frame[f"rejected_attr_{a}"].to_numpy()
        frame[f"chosen_attr_{a}"], frame[f"rejected_attr_{a}"] = np.where(flip, r, c), np.where(flip, c, r)
    return PreferenceData.from_frame(frame, emb)


@pytest.fixture(scope="module")
def shots(full_run, tiny):
    """The full run scored at --shots K on the test table (rows shuffled, so users interleave), on the same
    table with the unseen users' scored rows flipped, and with their K context rows flipped.

    Returns (family, the shuffled table, its unseen users {user index: rows in file order},
    {variant: (`predict` rows, leaves of the per-row user states)})."""
    name, out, _ = full_run
    _, d = tiny
    run = load_run(out)
    te = read_table(d / "test.parquet")
    te = te.take(np.random.default_rng(0).permutation(te.n_pairs))
    unseen = {u: r for u, r in enumerate(te.user_rows()) if te.users[u] not in set(run.users)}
    tables = {"base": te, "scored flipped": _flipped(te, np.concatenate([r[K:] for r in unseen.values()])),
              "context flipped": _flipped(te, np.concatenate([r[:K] for r in unseen.values()]))}
    out = {k: (predict(run.result, run.users, t, shots=K), _leaves(user_states(run.result, run.users, t, K)[0].rows()))
           for k, t in tables.items()}
    return name, te, unseen, out


def test_exactly_the_rows_after_the_first_k_of_each_unseen_user_are_scored(shots):
    name, te, unseen, out = shots
    assert len(unseen) == 6 and all(len(r) > K for r in unseen.values())
    assert not all(np.array_equal(r, np.arange(r[0], r[0] + len(r))) for r in unseen.values())  # interleaved
    rows = out["base"][0]
    context = {int(i) for r in unseen.values() for i in r[:K]}
    assert rows["row"].tolist() == [i for i in range(te.n_pairs) if i not in context]  # file order
    assert rows.loc[~rows.seen, "row"].isin(np.concatenate([r[K:] for r in unseen.values()])).all()
    assert rows.loc[rows.seen, "user_id"].nunique() == te.n_users - len(unseen)  # seen users: every row


def test_flipping_scored_rows_flips_their_margins_and_leaves_the_adapted_state(shots):
    name, te, unseen, out = shots
    (before, s0), (after, s1) = out["base"], out["scored flipped"]
    assert before["row"].tolist() == after["row"].tolist()
    flipped = before["row"].isin(np.concatenate([r[K:] for r in unseen.values()])).to_numpy()
    assert flipped.sum() == sum(len(r) - K for r in unseen.values())
    m0, m1 = before["margin"].to_numpy(), after["margin"].to_numpy()
    assert np.median(np.abs(m0[flipped])) > 1e-3  # a sign flip is visible
    # exactly, up to float rounding (PAL-B's cosine is not computed antisymmetrically to the last bit)
    np.testing.assert_allclose(m1[flipped], -m0[flipped], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(m1[~flipped], m0[~flipped])
    for a, b in zip(s0, s1, strict=True):
        np.testing.assert_array_equal(a, b)


def test_flipping_the_k_context_rows_changes_the_adapted_state(shots):
    """For the families that adapt (VPL, PAL-A, PAL-B); BT (no user state) must not change at all."""
    name, te, unseen, out = shots
    (before, s0), (after, s1) = out["base"], out["context flipped"]
    seen_rows = np.setdiff1d(np.arange(te.n_pairs), np.concatenate(list(unseen.values())))
    for a, b in zip(s0, s1, strict=True):
        np.testing.assert_array_equal(a[seen_rows], b[seen_rows])  # seen users untouched
    adapts = sum(a.size for a in s0) > 0
    assert adapts == (name not in NO_USER_STATE)
    for u, r in unseen.items():
        change = max(np.abs(a[r[K:]] - b[r[K:]]).max(initial=0.0) for a, b in zip(s0, s1))
        assert (change > 1e-3) if adapts else change == 0, (name, te.users[u], change)
    unseen_margins = before.loc[~before.seen, "margin"].to_numpy(), after.loc[~after.seen, "margin"].to_numpy()
    if adapts:
        assert not np.allclose(*unseen_margins, atol=1e-4)
    else:
        np.testing.assert_array_equal(*unseen_margins)
