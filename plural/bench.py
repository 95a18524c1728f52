"""Speed benchmarks. Targets are ratios measured in one run, never absolute timings in unit tests.

- `bench_fit`: BT training throughput (pairs/s) at embedding size D against a bare jitted matmul doing
  the same number of FLOPs per step, in the same process. Goal: >= 0.7 of the matmul's rate.
- `bench_grid`: S seeds trained one after another vs at once (vmap, and lax.map), same steps each.
- `bench_adapt`: time to adapt a new user from K shots (the family's `adapt`, jitted), per user: one
  user per call (latency) and many users in one vmapped call (throughput). PAL's goal: well under 50 ms.
- `bench_palette`: C communities' attribute-weighted models (`palette`) fitted at once (one program, the
  community axis vmapped) vs one after another (the same compiled program on each community's rows), same
  steps each. Goal: <= 0.3x the one-by-one time on the CPU at 200 communities.
- `bench_embed`: texts/s of the offline embedder (the jitted JAX encoder of `plural.embed`) against the
  plain numpy forward of the same model (`plural.embed.reference`) on the same texts. Goal: >= 3x.
- `bench_evaluate`: `plural evaluate` (predict + metrics) of random tables of growing size with unseen users
  adapting from K shots: time and peak memory per size. Goal: linear in rows; 1M rows with 100k unseen users
  in under 2 minutes on a 2-core CPU.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from plural.config import TrainConfig
from plural.errors import PluralError
from plural.data import PreferenceData
from plural.data.batching import PairBatches
from plural.models import get_family
from plural.models.bt import BT, BTHparams
from plural.train import Trainer


def random_table(n: int, dim: int, n_users: int = 64, seed: int = 0) -> PreferenceData:
    """n random comparisons with prompt and response embeddings of size dim."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"user_id": [f"u{i % n_users}" for i in range(n)]})
    emb = {k: rng.normal(size=(n, dim)).astype(np.float32) / math.sqrt(dim)
           for k in ("prompt_embedding", "chosen_embedding", "rejected_embedding")}
    return PreferenceData.from_frame(df, emb, source="<bench>")


def _best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


class _Runner:
    """Times `steps` training steps of a trainer (compiled once, ahead of time and timed apart; donated state
    threaded through)."""

    def __init__(self, trainer: Trainer, steps: int):
        self.t, self.steps = trainer, steps
        self.state = list(trainer.init())
        p, r, o, k = self.state
        start = time.perf_counter()
        self.fn = trainer.chunk_fn(steps).lower(p, r, o, k, trainer.h, 0, trainer.dd).compile()
        self.compile_s = time.perf_counter() - start
        self()  # warm up

    def __call__(self):
        p, r, o, k = self.state
        p, o, m = self.fn(p, r, o, k, self.t.h, 0, self.t.dd)
        jax.block_until_ready((p, o, m))
        self.state = [p, r, o, k]


def _environment() -> dict:
    d = jax.devices()[0]
    return {"backend": jax.default_backend(), "device": d.device_kind, "n_devices": jax.device_count(),
            "cpu": platform.processor() or platform.machine(), "jax": jax.__version__}


def step_flops(trainer: Trainer) -> float:
    """FLOPs of one training step of seed 0, from XLA's cost analysis of the compiled step."""
    p, r, o, k = trainer.init()
    one = jax.tree.map(lambda x: x[0], (p, r, o, k))
    step = jax.jit(lambda p, r, o, k, dd: trainer._step_one(p, r, o, k, {}, 0, dd))
    cost = step.lower(*one, trainer.dd).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def bench_fit(dim: int = 384, pairs: int = 1024, steps: int = 50, out: str | None = None, repeats: int = 3) -> dict:
    data = random_table(16 * pairs, dim)
    cfg = TrainConfig(steps=steps, log_every=steps, ckpt_every=0, mesh=(1, 1))
    trainer = Trainer(get_family("bt"), BTHparams(), cfg, data, seeds=(0,), batches=PairBatches(pairs))
    flops = step_flops(trainer)
    run = _Runner(trainer, steps)
    train_s = _best_of(run, repeats)

    n = max(int(round((flops / 2) ** (1 / 3))), 1)  # square matmul n x n x n with 2 n^3 = step FLOPs
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    mm = jax.jit(lambda a, b: a @ b)
    jax.block_until_ready(mm(a, b))

    def matmuls():
        for _ in range(steps):
            c = mm(a, b)
        jax.block_until_ready(c)

    mm_s = _best_of(matmuls, repeats) * flops / (2.0 * n**3)
    res = {
        "benchmark": "fit", "model": "bt", "hidden": list(BT.resolve(BTHparams()).hidden), "dim": dim, "pairs": pairs,
        "steps": steps, "step_flops": flops, "train_s": train_s, "pairs_per_s": steps * pairs / train_s,
        "train_gflops_per_s": steps * flops / train_s / 1e9, "matmul_n": n, "matmul_s_equal_flops": mm_s,
        "matmul_gflops_per_s": steps * flops / mm_s / 1e9, "ratio_to_matmul": mm_s / train_s, **_environment(),
    }
    _report(res, out)
    return res


def bench_grid(seeds: int = 16, dim: int = 384, pairs: int | None = None, steps: int = 500, model: str = "bt",
               overrides: list[str] = (), points: int = 0, out: str | None = None, repeats: int = 2) -> dict:
    """Replicas in one program against one by one, steady state over `steps` steps, compile times apart.

    Without `points`: `seeds` seeds of `model` (with `--set` `overrides`) on a random table of embedding size
    `dim`, `pairs` comparisons per step (PairBatches families), trained (a) one after another (one compiled
    single-replica program run `seeds` times), (b) at once on one device, vmapped and with `lax.map`, and (c)
    at once on the automatic mesh (replicas split over the devices: the host's cores on a CPU) with the
    automatic batching (`train.seed_batching=auto`). Ratios are (b), (c) over (a).

    With `points` = H: H (learning rate x weight decay) points x `seeds` seeds, on the 3-group ideal-point
    population (personas, D = 32), trained as one program (traced settings, automatic mesh and batching)
    against each point as its own program (its seeds at once, as `plural grid` ran cells before programs),
    end to end: compilation included, since one by one every point compiles anew. There the family's own batch
    (`batch.*` defaults) is used unless `pairs` is given."""
    from plural.run import configs_for

    if pairs is None and not points:
        pairs = 1024
    c = configs_for(model, [f"train.steps={steps}", f"train.log_every={steps}", "train.ckpt_every=0",
                            "train.eval_every=0", "data.val_fraction=0", *overrides]
                    + ([f"batch.batch_size={pairs}"] if pairs is not None and "batch_size" in type(get_family(model).batches).__dataclass_fields__ else []))
    fam = get_family(model)
    res = {"benchmark": "grid", "model": model, "overrides": list(overrides), "seeds": seeds, "steps": steps,
           "batch": dataclasses.asdict(c["batch"])}
    if points:
        return _bench_points(fam, c, seeds, points, steps, res, out)
    data = random_table(16 * pairs, dim)
    res.update(dim=dim, pairs=pairs)

    def runner(n, mesh, batching):
        cfg = dataclasses.replace(c["train"], mesh=mesh, seed_batching=batching)
        return _Runner(Trainer(fam, c["model"], cfg, data, seeds=tuple(range(n)), batches=c["batch"]), steps)

    single = runner(1, (1, 1), "auto")
    res["one_by_one_s"] = _best_of(lambda: [single() for _ in range(seeds)], repeats)
    res["one_compile_s"] = single.compile_s
    res["pairs_per_step"] = single.t.pairs_per_step()  # one replica's comparisons per step
    work = seeds * steps * res["pairs_per_step"]  # comparisons trained, all replicas together
    res["one_by_one_pairs_per_s"] = work / res["one_by_one_s"]
    for name, mesh, batching in (("vmap", (1, 1), "vmap"), ("map", (1, 1), "map"), ("mesh_auto", (), "auto")):
        r = runner(seeds, mesh, batching)
        res[f"{name}_s"] = _best_of(r, repeats)
        res[f"{name}_compile_s"] = r.compile_s
        res[f"{name}_over_one_by_one"] = res[f"{name}_s"] / res["one_by_one_s"]
        res[f"{name}_pairs_per_s"] = work / res[f"{name}_s"]  # in total; per replica: divided by `seeds`
        res[f"{name}_pairs_per_s_per_replica"] = work / res[f"{name}_s"] / seeds
        if mesh == ():
            res["mesh"] = dict(r.t.mesh.shape) if r.t.mesh is not None else {"replica": 1, "data": 1}
            res["auto_batching"] = r.t.batching()
    res.update(_environment())
    _report(res, out)
    return res


def _bench_points(fam, c, seeds: int, points: int, steps: int, res: dict, out) -> dict:
    import tempfile

    from personas import IdealPointConfig, simulate_ideal_point
    from plural.data import read_table

    with tempfile.TemporaryDirectory() as tmp:
        simulate_ideal_point(IdealPointConfig(seed=0)).write(tmp)
        data = read_table(Path(tmp) / "train.parquet")
    n_lr = math.ceil(points / 4)
    grid = [(float(lr), wd) for lr in np.geomspace(3e-4, 3e-3, n_lr) for wd in (0.0, 1e-3, 1e-2, 1e-1)][:points]
    S = tuple(range(seeds))

    def timed(trainer):
        start = time.perf_counter()
        result = trainer.run(progress=False)
        return time.perf_counter() - start, result

    traced = {"train.lr": [lr for lr, _ in grid for _ in S], "train.weight_decay": [wd for _, wd in grid for _ in S]}
    together_s, r = timed(Trainer(fam, c["model"], c["train"], data, seeds=S * len(grid), batches=c["batch"],
                                  traced=traced))
    res.update(points=points, replicas=points * seeds, together_s=together_s, together_compile_s=r.compile_s,
               together_train_s=r.train_s)
    one_s = compile_s = train_s = 0.0
    for lr, wd in grid:
        cfg = dataclasses.replace(c["train"], lr=lr, weight_decay=wd)
        t, ri = timed(Trainer(fam, c["model"], cfg, data, seeds=S, batches=c["batch"]))
        one_s, compile_s, train_s = one_s + t, compile_s + ri.compile_s, train_s + ri.train_s
        jax.clear_caches()  # as a grid does between programs (and so no point reuses another's compilation)
    res.update(one_by_one_s=one_s, one_by_one_compile_s=compile_s, one_by_one_train_s=train_s,
               together_over_one_by_one=together_s / one_s, steady_state_ratio=r.train_s / train_s)
    res.update(_environment())
    _report(res, out)
    return res


def bench_adapt(models=("pal-a", "pal-b"), shots: int = 10, dim: int = 384, users: int = 256, out: str | None = None,
                repeats: int = 20) -> dict:
    """Per-user adaptation time of each family in `models` from `shots` pairs of embedding size `dim`.
    A name `family:variant` (e.g. `fewshot:gpo`) sets `model.variant`."""
    from flax import nnx

    from plural.run import configs_for
    from plural.train import train

    data = random_table(4096, dim)
    rng = np.random.default_rng(1)
    ctx = {k: jnp.asarray(rng.normal(size=(users, shots, dim)).astype(np.float32) / math.sqrt(dim))
           for k in ("prompt", "chosen", "rejected")}
    ctx["mask"] = jnp.ones((users, shots), jnp.float32)
    ctx["user"] = ctx["group"] = -jnp.ones((users, shots), jnp.int32)  # new users of unknown group
    keys = jax.random.split(jax.random.key(0), users)
    res = {"benchmark": "adapt", "shots": shots, "dim": dim, "users": users}
    for name in models:
        family, _, variant = name.partition(":")
        sets = ["train.steps=20", "train.log_every=20", "train.ckpt_every=0"] + ([f"model.variant={variant}"] if variant else [])
        c = configs_for(family, sets)
        result = train(get_family(family), c["model"], c["train"], data, progress=False, batches=c["batch"])
        graphdef, params = nnx.split(result.model(0))
        seen = jax.tree.map(lambda s: s[0], result.seen)
        one = jax.jit(lambda p, c, k: nnx.merge(graphdef, p).adapt(c, k, seen))
        many = jax.jit(jax.vmap(lambda c, k, p=params: nnx.merge(graphdef, p).adapt(c, k, seen)))
        first = jax.tree.map(lambda x: x[0], ctx)
        jax.block_until_ready(one(params, first, keys[0]))
        jax.block_until_ready(many(ctx, keys))
        single_s = _best_of(lambda: jax.block_until_ready(one(params, first, keys[0])), repeats)
        batch_s = _best_of(lambda: jax.block_until_ready(many(ctx, keys)), max(repeats // 5, 2))
        res[f"{name}_ms_per_user_single"] = 1e3 * single_s
        res[f"{name}_ms_per_user_batched"] = 1e3 * batch_s / users
    res.update(_environment())
    _report(res, out)
    return res


# palette's benchmarks fit separate community models (the paper's form, no shared content layer), so that
# fitting the communities one by one fits the same model as fitting them at once
SEPARATE = "model.share_content=false"


def bench_palette(communities: int = 200, pairs: int = 500, steps: int = 50, out: str | None = None,
                  repeats: int = 2, fit_steps: int = 0) -> dict:
    """`communities` simulated communities (personas.communities: 19 attributes, D = 64, `pairs` training
    pairs each) fitted by `palette` at its defaults, as separate models (`SEPARATE`), for `steps` steps: all at once vs one by one. The one-by-one
    time runs one compiled single-community program on every community's rows in turn (compiled once:
    the comparison is of execution, not of compilation, which would only favour fitting at once).

    `fit_steps` > 0 also times whole fits end to end, as a user makes them (`plural.train.train`, `fit_steps`
    steps, validation on the community's val rows every 100 steps): one fit of every community at once vs
    one fit per community, with JAX's persistent compilation cache on and warm for both (a temporary folder,
    filled by one untimed fit of each kind), so that what is timed is a second run's set-up, tracing,
    cache loads, training and validation (`fit_at_once_s`, `fit_one_by_one_s`)."""
    import tempfile

    from personas.communities import CommunityConfig, simulate_communities
    from plural.data import read_table
    from plural.models.base import view_of
    from plural.run import configs_for

    cfg = CommunityConfig(n_communities=communities, n_users=communities, train_pairs=pairs, val_pairs=1 + 19 * bool(fit_steps),
                          test_pairs=1)
    with tempfile.TemporaryDirectory() as tmp:
        simulate_communities(cfg).write(tmp)
        family = get_family("palette")
        table, val = read_table(Path(tmp) / "train.parquet"), read_table(Path(tmp) / "val.parquet")
        data = view_of(family, table)
    c = configs_for("palette", [f"train.steps={steps}", f"train.log_every={steps}", "train.ckpt_every=0",
                                "train.mesh=(1, 1)", SEPARATE])

    def trainer(d):
        return Trainer(family, c["model"], c["train"], d, seeds=(0,), batches=c["batch"])

    together = _Runner(trainer(data), steps)
    rows = [np.flatnonzero(data.group == g) for g in range(len(data.groups))]
    one = _Runner(trainer(data.take(rows[0])), steps)
    each = [trainer(data.take(r)).dd for r in rows]

    def one_by_one():
        for dd in each:
            one.t.dd = dd
            one()

    res = {"benchmark": "palette", "communities": communities, "pairs_per_community": pairs, "steps": steps,
           "hidden": c["model"].hidden, "pairs_per_group": c["batch"].pairs_per_group,
           "at_once_s": _best_of(together, repeats), "one_by_one_s": _best_of(one_by_one, repeats)}
    res["at_once_over_one_by_one"] = res["at_once_s"] / res["one_by_one_s"]
    if fit_steps:
        res.update(_palette_fits(family, table, val, fit_steps))
    res.update(_environment())
    _report(res, out)
    return res


def _palette_fits(family, table, val, steps: int, cache: str | None = None) -> dict:
    """`bench_palette`'s end-to-end fits: every community at once vs one fit per community (see there), with
    JAX's persistent compilation cache in `cache` (default: a temporary folder); the process's own cache
    setting is put back afterwards."""
    import tempfile

    from jax.experimental.compilation_cache import compilation_cache as cc

    from plural.cache import MIN_COMPILE_S
    from plural.run import configs_for
    from plural.train import train

    c = configs_for("palette", [f"train.steps={steps}", "train.eval_every=100", "train.ckpt_every=0", "train.mesh=(1, 1)",
                                SEPARATE])

    def fit(d, v):
        return train(family, c["model"], c["train"], d, val=v, progress=False, batches=c["batch"])

    val_group = np.asarray(val.groups, dtype=object)[val.group]
    groups = [(np.flatnonzero(table.group == g), np.flatnonzero(val_group == name)) for g, name in enumerate(table.groups)]
    old = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    with tempfile.TemporaryDirectory() as tmp:
        jax.config.update("jax_compilation_cache_dir", str(cache or tmp))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_S)
        cc.reset_cache()  # JAX opens its cache folder once: make it open this one
        try:
            fit(table, val)  # warm the cache for both kinds of fit
            fit(table.take(groups[0][0]), val.take(groups[0][1]))
            t = time.perf_counter()
            fit(table, val)
            at_once = time.perf_counter() - t
            t = time.perf_counter()
            for rows, vrows in groups:
                fit(table.take(rows), val.take(vrows))
            one_by_one = time.perf_counter() - t
        finally:
            jax.config.update("jax_compilation_cache_dir", old[0])
            jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])
            cc.reset_cache()
    return {"fit_steps": steps, "fit_at_once_s": at_once, "fit_one_by_one_s": one_by_one,
            "fit_at_once_over_one_by_one": at_once / one_by_one}


_FIRST_CHUNK_PROBE = """
import os, sys, time
from plural import train  # first: plural sets the CPU device count before JAX starts
import jax
run_chunk = train.Trainer._run_chunk
def timed_chunk(self, *args, **kwargs):
    out = jax.block_until_ready(run_chunk(self, *args, **kwargs))
    if not getattr(timed_chunk, "seen", False):
        timed_chunk.seen = True
        print("FIRST_CHUNK", time.time() - float(os.environ["PLURAL_BENCH_T0"]), flush=True)
    return out
train.Trainer._run_chunk = timed_chunk
from plural.cli import main
sys.exit(main())
"""


def bench_startup(steps: int = 20, out: str | None = None, repeats: int = 3) -> dict:
    """Start-up of the command line: `plural fit` (PAL-A, `steps` steps, validation every 10) and `plural evaluate`
    (10 shots) of a small simulated population as fresh processes against one empty cache folder (`PLURAL_CACHE`):
    a first run of each compiles and stores its programs, then `repeats` more runs of each load them (the
    "second" runs). Times are end to end (start of the process to its exit), and for `fit` also from the spawn to
    the end of its first compiled chunk of steps (`*_first_chunk_s`: 10 steps, up to the first validation), an
    upper bound on the time to the first step. Second runs are reported each, by their median (`fit_second_*`,
    `evaluate_second_s`) and their best (`*_best_*`): on a shared machine a run's time varies by a quarter, and the
    best is the least disturbed measurement of the same work."""
    import os
    import subprocess
    import sys
    import tempfile

    from personas import IdealPointConfig, simulate_ideal_point

    if repeats < 1:
        raise PluralError(f"--repeats {repeats}: at least 1")
    res = {"benchmark": "startup", "model": "pal-a", "steps": steps, "repeats": repeats}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        simulate_ideal_point(IdealPointConfig(n_users=60, n_unseen=20, seed=0)).write(tmp / "pop")
        env = {**os.environ, "PLURAL_CACHE": str(tmp / "cache")}
        env.pop("PLURAL_JIT_CACHE", None)
        # the child prints when its first compiled chunk of steps has run, counted from before it was spawned
        cmd = [sys.executable, "-c", _FIRST_CHUNK_PROBE]

        def timed(args):
            """(seconds end to end, seconds to the end of the first chunk or None)."""
            start = time.perf_counter()
            done = subprocess.run(cmd + args, env={**env, "PLURAL_BENCH_T0": repr(time.time())}, capture_output=True,
                                  text=True)
            if done.returncode:
                raise RuntimeError(f"plural {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
            first = float(done.stdout.split("FIRST_CHUNK")[1].split()[0]) if "FIRST_CHUNK" in done.stdout else None
            return time.perf_counter() - start, first

        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import plural.cli, plural.run, plural.train"], env=env, check=True)
        res["import_s"] = time.perf_counter() - start
        fits, chunks, evals = [], [], []
        for run in range(1 + repeats):
            fit_s, chunk_s = timed(["fit", "--model", "pal-a", "--data", str(tmp / "pop" / "train.parquet"),
                                    "--val", str(tmp / "pop" / "val.parquet"), "--out", str(tmp / f"run_{run}"),
                                    "--set", f"train.steps={steps}", "--set", "train.eval_every=10"])
            eval_s, _ = timed(["evaluate", "--run", str(tmp / f"run_{run}"), "--data", str(tmp / "pop" / "test.parquet"),
                               "--shots", "10", "--out", str(tmp / f"m_{run}.json")])
            fits.append(fit_s), chunks.append(chunk_s), evals.append(eval_s)
        res.update(fit_first_s=fits[0], fit_first_first_chunk_s=chunks[0], evaluate_first_s=evals[0])
        for name, vals in (("fit_second_s", fits[1:]), ("fit_second_first_chunk_s", chunks[1:]),
                           ("evaluate_second_s", evals[1:])):
            res[name] = float(np.median(vals))
            res[name.replace("second", "second_best")] = min(vals)
            res[name.replace("second", "second_runs")] = [round(v, 3) for v in vals]
        res["cache_mb"] = sum(f.stat().st_size for f in (tmp / "cache").rglob("*") if f.is_file()) / 1e6
    res.update(_environment())
    _report(res, out)
    return res


def embed_corpus(tokenizer, n: int, seed: int = 0) -> list[str]:
    """n deterministic texts of mixed length for `bench_embed`: whole words of the model's vocabulary,
    log-normal word counts (median 24; a few reach the 256-token limit). The encoder's cost depends
    only on the token counts, not on whether the words make sentences."""
    words = sorted(t for t in tokenizer.get_vocab() if t.isascii() and t.isalpha() and len(t) > 1)
    rng = np.random.default_rng(seed)
    counts = np.clip(rng.lognormal(math.log(24), 1.0, size=n), 1, 400).astype(int)
    return [" ".join(rng.choice(words, k)) for k in counts]


def bench_embed(texts: int = 256, batch_size: int = 64, out: str | None = None, repeats: int = 2) -> dict:
    """JAX encoder vs the plain numpy forward of all-MiniLM-L6-v2 on the same texts, both from raw text
    (tokenizing included), both `batch_size` texts per batch; timed alternately, best of `repeats` each.
    The JAX encoder is timed after a first (compiling) call, whose time is reported separately.

    `speedup` is against numpy batching the texts in input order (each batch padded to its longest
    text), the plain way; `speedup_vs_sorted_numpy` against numpy batching them sorted by length (far
    less padding), which separates what packing saves from what the compiled forward gains."""
    from plural.embed import get_encoder, minilm
    from plural.embed.reference import numpy_encode

    enc = get_encoder("minilm")
    weights = minilm.load_weights(minilm.model_dir())
    corpus = embed_corpus(enc.tokenizer, texts)
    lengths = np.array([len(t) for t in minilm.tokenize(enc.tokenizer, corpus)])
    t = time.perf_counter()
    enc.encode(corpus, batch_size=batch_size, progress=False)
    first_s = time.perf_counter() - t
    order = np.argsort(-lengths, kind="stable")
    jax_s, numpy_s, sorted_s = [], [], []
    for _ in range(repeats):
        t = time.perf_counter()
        E = enc.encode(corpus, batch_size=batch_size, progress=False)
        jax_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        R = numpy_encode(weights, minilm.tokenize(enc.tokenizer, corpus), batch_size=batch_size)
        numpy_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        ids = minilm.tokenize(enc.tokenizer, corpus)
        S = np.empty_like(R)
        S[order] = numpy_encode(weights, [ids[i] for i in order], batch_size=batch_size)
        sorted_s.append(time.perf_counter() - t)
    jax_best, numpy_best, sorted_best = min(jax_s), min(numpy_s), min(sorted_s)
    padded = lambda ls: sum(len(ls[s:s + batch_size]) * int(ls[s:s + batch_size].max())  # noqa: E731
                            for s in range(0, texts, batch_size))
    jax_padded = sum(padded * width for _, padded, width in minilm.plan_batches(lengths, batch_size))
    res = {
        "benchmark": "embed", "model": minilm.NAME, "texts": texts, "batch_size": batch_size, "repeats": repeats,
        "tokens": int(lengths.sum()), "tokens_mean": float(lengths.mean()), "tokens_max": int(lengths.max()),
        "jax_s": jax_best, "numpy_s": numpy_best, "jax_first_call_s": first_s,
        "jax_texts_per_s": texts / jax_best, "numpy_texts_per_s": texts / numpy_best, "speedup": numpy_best / jax_best,
        "numpy_sorted_s": sorted_best, "numpy_sorted_texts_per_s": texts / sorted_best,
        "speedup_vs_sorted_numpy": sorted_best / jax_best,
        "jax_padded_tokens": int(jax_padded), "numpy_padded_tokens": padded(lengths),
        "numpy_sorted_padded_tokens": padded(lengths[order]),
        "max_abs_diff": float(max(np.abs(E - R).max(), np.abs(E - S).max())), **_environment(),
    }
    _report(res, out)
    print(f"JAX encoder {res['jax_texts_per_s']:.1f} texts/s vs plain numpy {res['numpy_texts_per_s']:.1f} texts/s: "
          f"{res['speedup']:.1f}x (goal >= 3x); vs numpy on length-sorted batches "
          f"{res['numpy_sorted_texts_per_s']:.1f} texts/s: {res['speedup_vs_sorted_numpy']:.1f}x")
    return res


def bench_embed_table(texts: int = 1_000_000, kill_at: float = 0.5, out: str | None = None) -> dict:
    """`plural embed` of a table of `texts` short distinct texts (texts / 2 rows of chosen / rejected, 3-12
    vocabulary words each), run as a user would: a fresh process, killed with SIGKILL once the cache holds
    `kill_at` of the texts, then run again to the end. Reports each run's time and peak resident memory, the
    texts the second run found in the cache and the ones it encoded, against the bytes of all the table's
    embeddings (which `plural embed` streams to disk block by block and never holds at once)."""
    import signal
    import subprocess
    import sys
    import tempfile

    import pandas as pd

    from plural.embed import get_encoder, minilm
    from plural.embed.cache import EmbeddingCache

    words = np.array(sorted(t for t in get_encoder("minilm").tokenizer.get_vocab()
                            if t.isascii() and t.isalpha() and len(t) > 1))
    rng = np.random.default_rng(0)
    rows = texts // 2
    picks = rng.integers(0, len(words), size=(2 * rows, 12))
    corpus = [" ".join(words[p[:k]]) for p, k in zip(picks, rng.integers(3, 13, size=2 * rows))]
    res = {"benchmark": "embed_table", "texts": 2 * rows, "rows": rows, "distinct": len(set(corpus)),
           "embeddings_gb": 2 * rows * minilm.DIM * 4 / 1e9, "runs": []}
    wrapper = ("import resource, sys; from plural.cli import main; code = main(sys.argv[1:]); "
               "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        table = tmp / "texts.parquet"
        pd.DataFrame({"user_id": [f"u{i % 1000}" for i in range(rows)], "chosen": corpus[:rows],
                      "rejected": corpus[rows:]}).to_parquet(table)
        del corpus
        env = dict(os.environ, PLURAL_CACHE=str(tmp / "cache"))
        cached = EmbeddingCache(tmp / "cache" / "embeddings", minilm.NAME, minilm.DIM).count
        cmd = [sys.executable, "-c", wrapper, "embed", str(table), str(tmp / "out.parquet")]

        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peak = 0.0
        while proc.poll() is None and cached() < kill_at * res["texts"]:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
                peak = max(peak, int(next(ln for ln in status.splitlines() if ln.startswith("VmHWM:")).split()[1]) / 1e6)
            except (OSError, StopIteration):
                pass
            time.sleep(1.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        res["runs"].append({"run": "killed", "s": time.perf_counter() - start, "cached_at_kill": cached(),
                            "peak_rss_gb": peak, "killed": proc.returncode == -signal.SIGKILL})
        start = time.perf_counter()
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if p.returncode:
            raise RuntimeError(p.stderr[-2000:])
        line = p.stdout.split("PEAK")[0].strip().splitlines()[-1]
        res["runs"].append({"run": "resumed", "s": time.perf_counter() - start, "report": line,
                            "peak_rss_gb": int(p.stdout.split("PEAK")[-1].split()[0]) * 1024 / 1e9})
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(tmp / "out.parquet").metadata
        res.update(out_rows=meta.num_rows, out_row_groups=meta.num_row_groups,
                   out_gb=(tmp / "out.parquet").stat().st_size / 1e9, cache_rows=cached())
    res["texts_per_s"] = res["texts"] / sum(r["s"] for r in res["runs"])
    res["peak_over_embeddings"] = max(r["peak_rss_gb"] for r in res["runs"]) / res["embeddings_gb"]
    res.update(_environment())
    _report(res, out)
    return res


def eval_table(rows: int, dim: int, unseen: float, user_rows: int, seen_users: int = 64, seed: int = 0) -> PreferenceData:
    """`rows` random comparisons (embeddings as `random_table`'s, drawn in float32): a fraction `unseen` of them
    from unseen users n0, n1, ... with `user_rows` rows each, the rest from the users u0 .. u{seen_users-1} of
    `random_table`; rows shuffled, so each user's rows lie scattered over the file."""
    rng = np.random.default_rng(seed)
    n_unseen = int(round(unseen * rows)) // user_rows
    ids = np.empty(rows, dtype=object)
    n_seen_rows = rows - n_unseen * user_rows
    ids[:n_seen_rows] = np.char.add("u", (np.arange(n_seen_rows) % seen_users).astype(str)).astype(object)
    ids[n_seen_rows:] = np.char.add("n", (np.arange(n_unseen * user_rows) // user_rows).astype(str)).astype(object)
    df = pd.DataFrame({"user_id": ids[rng.permutation(rows)]})
    emb = {}
    for k in ("prompt_embedding", "chosen_embedding", "rejected_embedding"):
        emb[k] = rng.standard_normal(size=(rows, dim), dtype=np.float32)
        emb[k] /= np.float32(math.sqrt(dim))
    return PreferenceData.from_frame(df, emb, source="<bench>")


def _peak_rss_mb(reset: bool = False) -> float:
    """The process's peak resident memory (MB) since the last reset (Linux: VmHWM, reset through
    /proc/self/clear_refs); elsewhere the peak of the whole process (`getrusage`)."""
    import resource

    try:
        if reset:
            Path("/proc/self/clear_refs").write_text("5")
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if platform.system() == "Darwin" else 1024)


def bench_evaluate(rows=(10_000, 100_000, 1_000_000), unseen: float = 0.1, shots: int = 10, model: str = "pal-a",
                   user_rows: int | None = None, dim: int = 384, steps: int = 20, out: str | None = None) -> dict:
    """`plural evaluate --shots K` (`predict` + `metrics`, as the command runs them, without reading the table
    from disk) of `model` fitted for `steps` steps on `random_table(4096, dim)` (64 users), on tables of each
    size in `rows` (`eval_table`): a fraction `unseen` of the rows from unseen users with `user_rows` rows each
    (default 2 K: K adapt, K are scored), the rest from the 64 seen users. Per size: the time of a first
    evaluation in the process (compilation included, as a fresh `plural evaluate`), the peak resident memory
    during it (the table itself included: `table_mb`), and the time of a second evaluation (`warm_*`: the
    programs already compiled)."""
    import resource

    from plural.evaluate import metrics, predict
    from plural.run import configs_for
    from plural.train import train

    user_rows = 2 * shots if user_rows is None else int(user_rows)
    c = configs_for(model, [f"train.steps={steps}", f"train.log_every={steps}", "train.ckpt_every=0",
                            "train.eval_every=0", "data.val_fraction=0"])
    fit_data = random_table(4096, dim)
    start = time.perf_counter()
    result = train(get_family(model), c["model"], c["train"], fit_data, progress=False, batches=c["batch"])
    res = {"benchmark": "evaluate", "model": model, "shots": shots, "unseen": unseen, "user_rows": user_rows,
           "dim": dim, "fit_steps": steps, "fit_users": int(fit_data.n_users), "fit_s": time.perf_counter() - start,
           "sizes": []}
    users = list(fit_data.users)
    for n in rows:
        data = eval_table(int(n), dim, unseen, user_rows, seed=1)
        n_unseen = int(round(unseen * n)) // user_rows
        table_mb = sum(a.nbytes for a in (data.prompt, data.chosen, data.rejected)) / 2**20
        _peak_rss_mb(reset=True)
        start = time.perf_counter()
        scored = predict(result, users, data, shots=shots)
        predict_s = time.perf_counter() - start
        m = metrics(scored, shots)
        evaluate_s = time.perf_counter() - start
        peak = _peak_rss_mb()
        del scored
        start = time.perf_counter()  # again: the same programs, compiled
        metrics(predict(result, users, data, shots=shots), shots)
        warm_s = time.perf_counter() - start
        size = {"rows": int(n), "unseen_users": n_unseen, "adapted_users": n_unseen if user_rows > shots else 0,
                "scored_rows": int(m["n_pairs"]), "evaluate_s": evaluate_s, "predict_s": predict_s,
                "metrics_s": evaluate_s - predict_s, "us_per_row": 1e6 * evaluate_s / n, "warm_evaluate_s": warm_s,
                "warm_us_per_row": 1e6 * warm_s / n, "table_mb": table_mb, "peak_rss_mb": peak}
        res["sizes"].append(size)
        print(f"{n:>9} rows, {n_unseen} unseen users: evaluate {evaluate_s:.2f} s ({size['us_per_row']:.1f} us/row; "
              f"predict {predict_s:.2f} s, metrics {size['metrics_s']:.2f} s), again {warm_s:.2f} s "
              f"({size['warm_us_per_row']:.1f} us/row); peak RSS {peak:.0f} MB (table {table_mb:.0f} MB)", flush=True)
        del data
    sizes = res["sizes"]
    if len(sizes) > 1:  # time per row, largest size over smallest: 1 when linear (below 1 while fixed costs dominate)
        res["us_per_row_growth"] = sizes[-1]["us_per_row"] / sizes[0]["us_per_row"]
        res["warm_us_per_row_growth"] = sizes[-1]["warm_us_per_row"] / sizes[0]["warm_us_per_row"]
    res["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res.update(_environment())
    _report(res, out)
    return res


def memory_table(path: Path, rows: int, dim: int, n_users: int = 1000, seed: int = 0, prompt: bool = True) -> int:
    """Write `rows` random comparisons (chosen / rejected and, with `prompt`, prompt embeddings of size `dim`,
    float32 lists) as Parquet, in row groups of 100k; returns the bytes of the embedding arrays as plural
    holds them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    writer = None
    for start in range(0, rows, 100_000):
        n = min(100_000, rows - start)
        cols = {"user_id": pa.array([f"u{i % n_users}" for i in range(start, start + n)])}
        for k in ("prompt_embedding", "chosen_embedding", "rejected_embedding")[0 if prompt else 1:]:
            values = pa.array((rng.standard_normal((n, dim), np.float32) / np.float32(math.sqrt(dim))).ravel())
            cols[k] = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * dim), values)
        table = pa.table(cols)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()
    return rows * dim * (3 if prompt else 2) * 4


def bench_memory(sizes=(100_000, 1_000_000), dim: int = 384, steps: int = 20, out: str | None = None,
                 prompt: bool = True) -> dict:
    """Peak resident memory of `plural fit` (BT, `steps` steps, no validation split) on random tables of
    each size in `sizes` (pairs, D = `dim`, response embeddings and, with `prompt`, prompt embeddings),
    each fit a fresh process, against the bytes of the table's embedding arrays (float32)."""
    import subprocess
    import sys
    import tempfile

    res = {"benchmark": "memory", "dim": dim, "steps": steps, "prompt_embeddings": prompt, "sizes": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rows in sizes:
            table = Path(tmp) / f"t{rows}.parquet"
            arrays = memory_table(table, rows, dim, prompt=prompt)
            cmd = [sys.executable, "-c", "import resource, sys; from plural.cli import main; code = main(sys.argv[1:]); "
                   "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)",
                   "fit", "--model", "bt", "--data", str(table), "--out", str(Path(tmp) / f"run{rows}"),
                   "--set", f"train.steps={steps}", "--set", f"train.log_every={steps}", "--set", "data.val_fraction=0",
                   "--set", "train.eval_every=0"]
            start = time.perf_counter()
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode:
                raise RuntimeError(p.stderr[-2000:])
            peak = int(p.stdout.split("PEAK")[-1].split()[0]) * 1024
            res["sizes"].append({"pairs": rows, "arrays_gb": arrays / 1e9, "peak_rss_gb": peak / 1e9,
                                 "peak_over_arrays": peak / arrays, "fit_s": time.perf_counter() - start})
            table.unlink()
    res["peak_gb_per_million_pairs"] = res["sizes"][-1]["peak_rss_gb"] / (sizes[-1] / 1e6)
    res.update(_environment())
    _report(res, out)
    return res


def _report(res: dict, out: str | None) -> None:
    for k, v in res.items():
        print(f"{k:>26}: {v:.4g}" if isinstance(v, float) else f"{k:>26}: {v}")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(res, indent=1) + "\n")
