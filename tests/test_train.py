"""The one trainer: determinism per seed, resume to identical bytes, S seeds at once == one by one,
sharded batches == one device, and the per-user batch sampler."""

import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from plural.config import TrainConfig
from plural.errors import PluralError
from plural.data import device_data, read_table, sample_pairs, sample_users
from plural.models import get_family
from plural.run import configs_for, fit
from plural.train import Trainer, seed_keys, train

FAST = ["model.hidden=(16,)", "train.steps=200", "train.log_every=50", "train.ckpt_every=100", "batch.batch_size=64"]


class Crash(Exception):
    pass


def _cfgs(*extra):
    c = configs_for("bt", FAST + list(extra))
    return c["model"], c["train"]


def test_same_seed_gives_identical_metrics_files(tiny, tmp_path):
    _, d = tiny
    fit("bt", d / "train.parquet", tmp_path / "a", overrides=FAST, progress=False)
    fit("bt", d / "train.parquet", tmp_path / "b", overrides=FAST, progress=False)
    assert (tmp_path / "a/metrics.json").read_bytes() == (tmp_path / "b/metrics.json").read_bytes()
    fit("bt", d / "train.parquet", tmp_path / "c", seed=1, overrides=FAST, progress=False)
    assert (tmp_path / "a/metrics.json").read_bytes() != (tmp_path / "c/metrics.json").read_bytes()


def test_resume_after_crash_gives_identical_metrics(tiny, tmp_path):
    _, d = tiny
    fit("bt", d / "train.parquet", tmp_path / "full", overrides=FAST, progress=False)

    def crash(step):
        if step == 150:  # after the checkpoint at 100, before the one at 200
            raise Crash

    with pytest.raises(Crash):
        fit("bt", d / "train.parquet", tmp_path / "cut", overrides=FAST, progress=False, on_chunk=crash)
    assert not (tmp_path / "cut/metrics.json").exists()
    fit("bt", d / "train.parquet", tmp_path / "cut", overrides=FAST, progress=False, resume=True)
    assert (tmp_path / "full/metrics.json").read_bytes() == (tmp_path / "cut/metrics.json").read_bytes()


@pytest.mark.slow
def test_cli_run_killed_then_resumed_is_identical(pop3, tmp_path):
    """A real SIGKILL of `plural fit` after its first checkpoint, then `--resume`."""
    _, d = pop3
    args = ["--model", "bt", "--data", str(d / "train.parquet"), "--set", "train.steps=3000",
            "--set", "train.ckpt_every=100", "--set", "train.log_every=100"]
    cli = [sys.executable, "-m", "plural.cli", "fit"]
    subprocess.run(cli + args + ["--out", str(tmp_path / "full")], check=True, capture_output=True)
    proc = subprocess.Popen(cli + args + ["--out", str(tmp_path / "cut")], start_new_session=True)
    ckpts = tmp_path / "cut/checkpoints"
    while not (ckpts.exists() and any(p.name.isdigit() for p in ckpts.iterdir())):
        assert proc.poll() is None, "fit ended before its first checkpoint"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "cut/metrics.json").exists()
    subprocess.run(cli + args + ["--out", str(tmp_path / "cut"), "--resume"], check=True, capture_output=True)
    assert (tmp_path / "full/metrics.json").read_bytes() == (tmp_path / "cut/metrics.json").read_bytes()


def test_existing_run_needs_resume(tiny, tmp_path):
    from plural.errors import PluralError
    _, d = tiny
    fit("bt", d / "train.parquet", tmp_path / "r", overrides=FAST, progress=False)
    with pytest.raises(PluralError, match="--resume"):
        fit("bt", d / "train.parquet", tmp_path / "r", overrides=FAST, progress=False)
    with pytest.raises(PluralError, match="different"):
        fit("bt", d / "train.parquet", tmp_path / "r", overrides=FAST + ["train.lr=0.1"], progress=False, resume=True)


@pytest.mark.parametrize("batching", ["vmap", "map"])
def test_seeds_at_once_equal_seeds_one_by_one(tiny, batching):
    _, d = tiny
    data = read_table(d / "train.parquet")
    hp, cfg = _cfgs(f"train.seed_batching={batching}")
    together = train(get_family("bt"), hp, cfg, data, seeds=(0, 1, 2), progress=False)
    for i, s in enumerate((0, 1, 2)):
        alone = train(get_family("bt"), hp, cfg, data, seeds=(s,), progress=False)
        for a, b in zip(jax.tree.leaves(together.params), jax.tree.leaves(alone.params)):
            np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b[0]), atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose([h["loss"][i] for h in together.history],
                                   [h["loss"][0] for h in alone.history], atol=1e-5, rtol=1e-5)
    assert not np.allclose(jax.tree.leaves(together.params)[0][0], jax.tree.leaves(together.params)[0][1])


def test_batches_sharded_over_eight_devices_match_one_device(tiny):
    assert jax.device_count() == 8, "tests run with 8 fake CPU devices (conftest)"
    _, d = tiny
    data = read_table(d / "train.parquet")
    hp, cfg = _cfgs()
    one = Trainer(get_family("bt"), hp, TrainConfig(**{**cfg.__dict__, "mesh": (1, 1)}), data)
    eight = Trainer(get_family("bt"), hp, TrainConfig(**{**cfg.__dict__, "mesh": (1, 8)}), data)
    assert one.mesh is None and eight.mesh.shape == {"replica": 1, "data": 8}
    params, rest, opt, keys = eight.init()
    hlo = eight.chunk_fn(10).lower(params, rest, opt, keys, eight.h, 0, eight.dd).compile().as_text()
    assert "all-reduce" in hlo  # gradients are reduced across the data shards
    r1, r8 = one.run(progress=False), eight.run(progress=False)
    for a, b in zip(jax.tree.leaves(r1.params), jax.tree.leaves(r8.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("batching", ["vmap", "map"])
def test_replicas_sharded_over_a_2d_mesh_match_one_device(tiny, batching):
    """4 replicas (2 seeds x 2 learning rates) on a 2 x 4 ('replica', 'data') mesh of the 8 fake devices: each
    device pair trains 2 replicas on its halves of their batches; the numbers are those of one device."""
    _, d = tiny
    data, val = read_table(d / "train.parquet"), read_table(d / "val.parquet")
    hp, cfg = _cfgs(f"train.seed_batching={batching}", "train.eval_every=50")
    traced = {"train.lr": [1e-3, 1e-3, 3e-3, 3e-3]}
    runs = {}
    for mesh in ((1, 1), (2, 4)):
        t = Trainer(get_family("bt"), hp, TrainConfig(**{**cfg.__dict__, "mesh": mesh}), data, seeds=(0, 1, 0, 1),
                    val=val, traced=traced)
        runs[mesh] = t.run(progress=False)
        if mesh == (2, 4):
            assert t.mesh.shape == {"replica": 2, "data": 4}
            assert jax.tree.leaves(runs[mesh].params)[0].sharding.spec[0] == "replica"
    for a, b in zip(jax.tree.leaves(runs[(1, 1)].params), jax.tree.leaves(runs[(2, 4)].params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)
    assert runs[(1, 1)].early["best_step"] == runs[(2, 4)].early["best_step"]


def test_mesh_settings_that_cannot_work_are_refused_in_one_line(tiny):
    _, d = tiny
    data = read_table(d / "train.parquet")
    hp, cfg = _cfgs()
    for mesh, msg in (((3, 1), "3 devices"), ((1, 16), "16 devices"), ((1, 3), "batch of 256"), ((0, 2), ">= 1")):
        with pytest.raises(PluralError, match=r"--set train.mesh=.*" + msg):
            Trainer(get_family("bt"), hp, TrainConfig(**{**cfg.__dict__, "mesh": mesh}), data, seeds=(0, 1))


def _margins(result, i, data, train_users):
    from plural.evaluate import predict

    return predict(result, list(train_users), data, seed_index=i)["margin"].to_numpy()


@pytest.mark.slow  # ~45 s; run with pytest -m slow
def test_points_in_one_program_equal_each_point_alone(tiny):
    """Replicas differing in traced settings (learning rate, weight decay, and a model field: VPL's KL weight)
    train as one program and each equals its point trained alone; a traced setting the family does not
    declare is refused."""
    _, d = tiny
    data, val = read_table(d / "train.parquet"), read_table(d / "val.parquet")
    base = ["train.steps=40", "train.log_every=20", "model.width=16", "model.pair_hidden=(16,)",
            "model.decoder_hidden=(16,)", "batch.users_per_batch=8", "batch.context_max=8", "batch.targets_per_user=4"]
    points = [{"train.lr": 1e-3, "train.weight_decay": 0.0, "model.beta": 0.3},
              {"train.lr": 3e-3, "train.weight_decay": 0.1, "model.beta": 1.0}]
    c = configs_for("vpl", base)
    together = train(get_family("vpl"), c["model"], c["train"], data, seeds=(0, 0), progress=False, batches=c["batch"],
                     traced={k: [p[k] for p in points] for k in points[0]})
    assert together.model(1).hp.beta == 1.0 and together.model(0).hp.beta == pytest.approx(0.3)
    for i, point in enumerate(points):
        ci = configs_for("vpl", base + [f"{k}={v}" for k, v in point.items()])
        alone = train(get_family("vpl"), ci["model"], ci["train"], data, seeds=(0,), progress=False, batches=ci["batch"])
        # the functions, not the bits of every parameter: a constant and a traced scalar may round differently,
        # and Adam turns the rounding noise of a parameter whose gradient vanishes (attention's key bias) into
        # lr-sized steps that change nothing
        np.testing.assert_allclose(_margins(together, i, val, data.users), _margins(alone, 0, val, data.users), atol=1e-4, rtol=1e-4)
        for key in ("loss", "kl"):
            np.testing.assert_allclose([h[key][i] for h in together.history], [h[key][0] for h in alone.history],
                                       rtol=1e-5, err_msg=key)
    with pytest.raises(PluralError, match="model.width: not a setting vpl can vary within one program"):
        train(get_family("vpl"), c["model"], c["train"], data, seeds=(0, 0), progress=False, batches=c["batch"],
              traced={"model.width": [16, 32]})


def test_a_replica_whose_loss_turns_non_finite_fails_alone(tiny):
    """A learning rate that blows one replica up (its loss turns non-finite) records that replica as failed at
    the chunk where it happened; the replica beside it trains on to the same numbers as alone."""
    _, d = tiny
    data = read_table(d / "train.parquet")
    hp, cfg = _cfgs("train.steps=100", "train.log_every=20", "train.grad_clip=0", "train.warmup_steps=0")
    together = train(get_family("bt"), hp, cfg, data, seeds=(0, 0), progress=False,
                     traced={"train.lr": [1e-3, 1e38]})
    alone = train(get_family("bt"), hp, cfg, data, seeds=(0,), progress=False)
    assert together.failed[0] is None and together.failed[1] is not None and together.failed[1] <= 100
    assert not np.isfinite(together.history[-1]["loss"][1])
    for a, b in zip(jax.tree.leaves(together.params), jax.tree.leaves(alone.params), strict=True):
        np.testing.assert_allclose(np.asarray(a[0]), np.asarray(b[0]), atol=1e-5, rtol=1e-5)


def test_seed_keys_in_one_program_equal_each_seed_s_own_key():
    seeds = [0, 1, 7, 12345, 2**31 - 1]
    for stream in (0, 1, 2):
        expected = np.stack([np.asarray(jax.random.fold_in(jax.random.PRNGKey(s), stream)) for s in seeds])
        got = np.asarray(seed_keys(seeds, stream))
        assert got.dtype == np.uint32 and np.array_equal(got, expected)
    with pytest.raises(PluralError, match="seed 8589934592: outside"):  # would alias seed 0's key
        seed_keys([2**33], 0)


def test_pair_batches_are_a_pure_function_of_the_key(tiny):
    _, d = tiny
    dd = device_data(read_table(d / "train.parquet"))
    k = jax.random.PRNGKey(3)
    a, b = sample_pairs(k, dd, 32), sample_pairs(k, dd, 32)
    c = sample_pairs(jax.random.fold_in(k, 1), dd, 32)
    assert all(np.array_equal(a[f], b[f]) for f in a)
    assert not np.array_equal(a["chosen"], c["chosen"])


def test_user_batches_draw_disjoint_context_and_targets_from_the_users_own_rows(tiny):
    _, d = tiny
    data = read_table(d / "train.parquet")
    dd = device_data(data)
    rows_of = data.user_rows()
    row_of_chosen = {data.chosen[r].tobytes(): r for r in range(data.n_pairs)}
    sizes = []
    for seed in range(5):
        b = sample_users(jax.random.PRNGKey(seed), dd, users_per_batch=6, context_min=2, context_max=8, targets=6)
        assert len(set(np.asarray(b["user"]).tolist())) == 6  # distinct users when possible
        for i, u in enumerate(np.asarray(b["user"])):
            cm, tm = np.asarray(b["context"]["mask"][i]) > 0, np.asarray(b["target"]["mask"][i]) > 0
            ctx = {row_of_chosen[x.tobytes()] for x in np.asarray(b["context"]["chosen"][i])[cm]}
            tgt = {row_of_chosen[x.tobytes()] for x in np.asarray(b["target"]["chosen"][i])[tm]}
            assert ctx | tgt <= set(rows_of[u].tolist())
            assert not ctx & tgt and len(ctx) == cm.sum() and len(tgt) == tm.sum()
            assert 2 <= cm.sum() <= 8 and tm.sum() >= 1
            assert (np.asarray(b["user"][i]) == np.asarray(b["context"]["user"][i])[cm]).all()
            sizes.append(int(cm.sum()))
    assert len(set(sizes)) > 2  # the context size varies


def test_user_batches_keep_a_target_for_users_with_few_rows():
    from plural.data import PreferenceData
    import pandas as pd
    df = pd.DataFrame({"user_id": ["a", "a", "b", "b", "b"]})
    emb = {"chosen_embedding": np.eye(5, 3, dtype=np.float32), "rejected_embedding": np.zeros((5, 3), np.float32)}
    dd = device_data(PreferenceData.from_frame(df, emb))
    b = sample_users(jax.random.PRNGKey(0), dd, 2, context_min=4, context_max=4, targets=4)
    assert np.asarray(b["target"]["mask"]).sum(1).min() >= 1
    assert (np.asarray(b["context"]["mask"]).sum(1) + np.asarray(b["target"]["mask"]).sum(1)).tolist() == \
        [int(jnp.asarray(dd["user_count"])[u]) for u in np.asarray(b["user"])]


def test_parameter_groups_get_their_own_learning_rates(tiny):
    """A family can scale train.lr per parameter group: a frozen group (factor 0) must not move."""
    from plural.models.bt import BT

    class HalfFrozen(BT):
        @classmethod
        def param_group(cls, path):
            return "first" if "0" in path else "rest"

        @classmethod
        def lr_multipliers(cls, hp):
            return {"first": 0.0, "rest": 1.0}

    _, d = tiny
    data = read_table(d / "train.parquet")
    hp, cfg = _cfgs("train.steps=50")
    r = train(HalfFrozen, hp, cfg, data, progress=False)
    init = Trainer(HalfFrozen, hp, cfg, data).init()[0]
    before, after = init["mlp"]["layers"], r.params["mlp"]["layers"]
    np.testing.assert_array_equal(np.asarray(before[0]["kernel"][...]), np.asarray(after[0]["kernel"][...]))
    assert not np.allclose(np.asarray(before[1]["kernel"][...]), np.asarray(after[1]["kernel"][...]))


def test_adapt_by_gradient_recovers_a_linear_user():
    from plural.models.base import adapt_by_gradient

    rng = np.random.default_rng(0)
    w_true = np.array([2.0, -1.0, 0.5], np.float32)
    c, r = rng.normal(size=(2, 200, 3)).astype(np.float32)
    swap = (c - r) @ w_true < 0
    c, r = np.where(swap[:, None], r, c), np.where(swap[:, None], c, r)
    ctx = {"prompt": np.zeros((200, 0), np.float32), "chosen": c, "rejected": r, "mask": np.ones(200, np.float32)}
    w = adapt_by_gradient(lambda w, p, a, b: (a - b) @ w, jnp.zeros(3), ctx, steps=300, lr=0.05)
    cos = float(np.dot(w, w_true) / np.linalg.norm(w) / np.linalg.norm(w_true))
    assert cos > 0.98


def test_batched_cosine_matches_eager():
    """A jitted, vmapped cosine score over (users, mixtures, shots, d) equals the eager one: jaxlib 0.10's
    CPU YNNPACK fusions got this wrong (plural/__init__.py turns them off)."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    A = jnp.asarray(rng.dirichlet(np.ones(3), 60), jnp.float32)
    P = jnp.asarray(rng.normal(size=(3, 32)), jnp.float32)
    Z = jnp.asarray(rng.normal(size=(30, 50, 32)), jnp.float32)

    def score(z):
        u = jnp.einsum("uk,skd->usd", A, jnp.broadcast_to(P, (z.shape[0],) + P.shape))
        return 16.0 * jnp.sum(u * z, -1) / jnp.sqrt((jnp.sum(u * u, -1) + 1e-8) * (jnp.sum(z * z, -1) + 1e-8))

    eager = np.stack([np.asarray(score(Z[j])) for j in range(len(Z))])
    np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(score))(Z)), eager, atol=1e-3)


def test_a_run_whose_family_gained_a_parameter_fails_in_one_line_naming_it(tiny, tmp_path, monkeypatch, capsys):
    """Checkpoints are named by parameter path: a family that gained a parameter since the run was written
    is refused with that parameter's name (not an Orbax traceback, not a silent leaf swap); so is resuming."""
    from flax import nnx

    from plural import models
    from plural.errors import PluralError
    from plural.models.bt import BT
    from plural.run import load_run

    _, d = tiny
    fit("bt", d / "train.parquet", tmp_path / "run", overrides=FAST + ["train.steps=50"], progress=False)
    load_run(tmp_path / "run")  # loads as written

    class Grown(BT):
        def __init__(self, spec, hp, rngs):
            super().__init__(spec, hp, rngs)
            self.temperature = nnx.Param(jnp.ones(()))

    monkeypatch.setitem(models.FAMILIES, "bt", Grown)
    with pytest.raises(PluralError, match=r"parameter params/temperature .*checkpoint lacks"):
        load_run(tmp_path / "run")
    with pytest.raises(PluralError, match=r"params/temperature"):
        fit("bt", d / "train.parquet", tmp_path / "run", overrides=FAST + ["train.steps=50"], progress=False,
            resume=True)
    from plural.cli import main

    assert main(["evaluate", "--run", str(tmp_path / "run"), "--data", str(d / "test.parquet"),
                 "--out", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "params/temperature" in err[0]


def test_a_checkpoint_leaf_of_another_shape_is_refused_by_name(tiny, tmp_path):
    """Same names, different shapes (config.json edited to a wider MLP): refused naming the first leaf."""
    import json

    from plural.errors import PluralError
    from plural.run import load_run

    _, d = tiny
    fit("bt", d / "train.parquet", tmp_path / "run", overrides=FAST + ["train.steps=50"], progress=False)
    cfg = json.loads((tmp_path / "run/config.json").read_text())
    cfg["model_hparams"]["hidden"] = [32]
    (tmp_path / "run/config.json").write_text(json.dumps(cfg))
    with pytest.raises(PluralError, match=r"parameter params/mlp/layers/0/bias is \(1, 16\) float32 in the checkpoint but \(1, 32\)"):
        load_run(tmp_path / "run")


def test_hooks_run_at_their_own_cadence_and_see_the_loop_state(tiny):
    """A hook added with every=30 runs after steps 30, 60, 90 and the last one (100), on chunk boundaries
    it adds itself (log_every=50 alone would end chunks at 50 and 100), and sees the live state."""
    _, d = tiny
    data = read_table(d / "train.parquet")
    hp, cfg = _cfgs("train.steps=100", "train.log_every=50", "train.ckpt_every=0")
    trainer = Trainer(get_family("bt"), hp, cfg, data)
    seen = []
    trainer.add_hook(lambda st: seen.append((st.step, len(st.history), float(st.history[-1]["loss"][0]))), every=30)
    result = trainer.run(progress=False)
    assert [s for s, _, _ in seen] == [30, 60, 90, 100]
    assert [h["step"] for h in result.history] == [30, 50, 60, 90, 100]
    assert [n for _, n, _ in seen] == [1, 3, 4, 5]  # the history as it stood after each of those chunks
    assert seen[-1][2] == result.history[-1]["loss"][0]
