"""The one trainer: every model family trains through `train()`.

A step is a pure, jit-compiled function over `nnx.split` state: draw a batch on device from
(seed, step), compute the family's loss, apply an optax update. Steps run `log_every` at a time inside
one `lax.scan` (one dispatch per chunk). R replicas train at once along a leading replica axis: the seeds
of a fit, or a grid's (hyper-parameter point, seed) pairs whose points differ only in traced settings
(learning rate, weight decay, the family's `traced` loss weights: per-replica scalars inside the program,
`traced_keys`). Replicas are split over the 'replica' axis of a ('replica', 'data') device mesh
(plural.parallel) and, on each device, vmapped or run one after another (`lax.map`), whichever is faster
(`Trainer.batching`); batches are split over 'data'. A replica whose loss turns non-finite is recorded as
failed; the others train on. The family's sampler (`family.batches`, plural.data.batching) draws each batch.

Between chunks, hooks (plural.hooks) run at their own cadences: validation and early stopping, named
Orbax checkpoints (plural.checkpoint) every `ckpt_every` steps, the progress bar, and any added with
`Trainer.add_hook`. `resume=True` continues from the latest checkpoint to the same bytes an
uninterrupted run gives, because the data order and all randomness are functions of (seed, step) only
and chunk boundaries do not depend on where a run started.

Validation. Given validation data, every `eval_every` steps a jitted evaluation scores its rows of seen
users (each with what the model has learned of that user; rows of users unseen in training get the
model's population / group prediction when the table has no seen user's rows), records `val_loss` (BT
negative log-likelihood of sigma(margin)) and `val_accuracy` in the history, and keeps each seed's best
parameters (by `val_metric`). A seed stops after `early_stopping` evaluations without improvement; its
best parameters are frozen from then on, so a seed's result does not depend on which seeds train beside
it, and training ends when every seed has stopped. The best parameters are checkpointed beside the latest
ones ("best" item) and are what the run returns and `restore_params` loads.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import PartitionSpec as P

from plural import checkpoint
from plural.config import TrainConfig, check_config
from plural.data import PreferenceData, device_data
from plural.data.batching import eval_rows, shot_contexts
from plural.hooks import Callback, Checkpointer, Hook, LoopState, Progress, Validation
from plural.errors import PluralError
from plural.models import RewardModel
from plural.models.base import bt_nll, masked_accuracy, row_states, view_of
from plural.parallel import by_replica, replicated, shard_batch, to_host, training_mesh

# Independent PRNG streams derived from one seed.
INIT_STREAM, TRAIN_STREAM, ADAPT_STREAM = 0, 1, 2


def seed_key(seed: int, stream: int) -> jax.Array:
    """The raw uint32 key (2,) of `stream` for `seed`."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), stream)


@jax.jit
def _seed_keys(seeds, stream):
    return jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(s), stream))(seeds)


def check_seeds(seeds) -> None:
    """Refuse a seed outside int32: JAX's 32-bit keys would alias it with another (2**33 gets seed 0's key)."""
    for s in seeds:
        if not -2**31 <= int(s) < 2**31:
            raise PluralError(f"seed {s}: outside the 32-bit range of JAX's keys (-2**31 .. 2**31 - 1)")


def seed_keys(seeds, stream: int) -> jax.Array:
    """`seed_key(s, stream)` of every seed in `seeds`, stacked (S, 2): one compiled program for any stream,
    where the per-seed eager calls compile five small ones (start-up time, `plural bench startup`)."""
    check_seeds(seeds)
    return _seed_keys(np.asarray(seeds, np.int32), np.uint32(stream))


def make_optimizer(cfg: TrainConfig, multipliers: dict[str, float] | None = None,
                   labels: Callable | None = None) -> optax.GradientTransformation:
    """Global-norm clipping + AdamW under the configured schedule (warmup then constant/cosine/linear).

    With `multipliers` ({group: factor}) and `labels` (params -> pytree of group names), each group
    gets its own AdamW at `factor * schedule` (per-parameter-group learning rates).
    """
    warm = min(cfg.warmup_steps, max(cfg.steps - 1, 0))
    end = cfg.end_lr_fraction
    # The schedule's shape with peak 1, times train.lr: the same for a Python lr and a traced one (a program
    # whose replicas differ in lr, plural.train.Trainer's `traced`), which optax's value checks refuse.
    if cfg.schedule == "constant":
        unit = optax.join_schedules([optax.linear_schedule(0.0, 1.0, max(warm, 1)), optax.constant_schedule(1.0)], [warm]) if warm else optax.constant_schedule(1.0)
    elif cfg.schedule == "cosine":
        unit = optax.warmup_cosine_decay_schedule(0.0 if warm else 1.0, 1.0, warm, max(cfg.steps, warm + 1), end)
    else:  # "linear" (TrainConfig.schedule is a checked Literal)
        unit = optax.join_schedules([optax.linear_schedule(0.0 if warm else 1.0, 1.0, max(warm, 1)),
                                     optax.linear_schedule(1.0, end, max(cfg.steps - warm, 1))], [warm])

    def sched(t):
        return cfg.lr * unit(t)
    parts = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip > 0 else []
    if not multipliers or set(multipliers) == {"default"} and isinstance(multipliers["default"], float) and multipliers["default"] == 1.0:
        parts.append(optax.adamw(sched, weight_decay=cfg.weight_decay))
    else:
        parts.append(optax.multi_transform(
            {g: optax.adamw(lambda t, f=f: f * sched(t), weight_decay=cfg.weight_decay) for g, f in multipliers.items()},
            labels))
    return optax.chain(*parts)


def optimizer_for(family: type[RewardModel], hp, cfg: TrainConfig) -> optax.GradientTransformation:
    """The family's optimiser: `make_optimizer` with its parameter groups and learning-rate factors."""

    def labels(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: family.param_group(tuple(checkpoint.path_name(path).split("/"))), params)

    return make_optimizer(cfg, family.lr_multipliers(hp), labels)


TRACED_TRAIN = ("lr", "weight_decay")  # train.* settings a program may vary per replica (no shape depends on them)


def traced_keys(family: type[RewardModel]) -> tuple[str, ...]:
    """The settings that replicas of one compiled program may differ in: `train.lr`, `train.weight_decay`
    and the family's `traced` model fields (values used only in arithmetic, never in Python control flow
    or in a shape)."""
    return tuple(f"train.{k}" for k in TRACED_TRAIN) + tuple(f"model.{k}" for k in getattr(family, "traced", ()))


def with_traced(hp, cfg: TrainConfig, values: dict) -> tuple[Any, TrainConfig]:
    """(hp, cfg) with the traced settings in `values` ({"train.lr": v, "model.beta": v, ...}) put in: traced
    scalars inside a program, Python floats outside."""
    own = {sec: {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith(sec + ".")} for sec in ("model", "train")}
    return (dataclasses.replace(hp, **own["model"]) if own["model"] else hp,
            dataclasses.replace(cfg, **own["train"]) if own["train"] else cfg)


def init_state(family: type[RewardModel], hp, spec: dict, tx: optax.GradientTransformation, key, dd=None):
    """(params, rest, opt_state) of one freshly initialised model (pure: vmap it over seed keys).

    With the training table's device data `dd`, the family's `init_from_data` hook then adjusts the
    fresh parameters (PAL: mixture weights started from k-means clusters of the users)."""
    rngs = nnx.Rngs(key)
    model = family(spec, hp, rngs)
    if dd is not None:
        model.init_from_data(dd, rngs)
    _, params, rest = nnx.split(model, nnx.Param, ...)
    return params, rest, tx.init(params)


_GRAPHDEFS: dict = {}


def graphdef_of(family: type[RewardModel], spec: dict, hp):
    """The NNX graph definition of `family(spec, hp)`, built abstractly (no arrays), which also runs the family's
    own checks of its settings against the data. Kept per process by (family, spec, hp): `plural fit` asks for it
    before writing anything and again in the trainer."""
    key = (family, json.dumps(spec, sort_keys=True, default=str), repr(hp))
    if key not in _GRAPHDEFS:
        _GRAPHDEFS[key] = nnx.split(nnx.eval_shape(lambda: family(spec, hp, nnx.Rngs(0))))[0]
    return _GRAPHDEFS[key]


@jax.jit
def _take_replica(tree, i):
    """Replica `i` of every leaf (leading axis), as one program rather than an eager slice per leaf."""
    return jax.tree.map(lambda x: x[i], tree)


@dataclasses.dataclass
class TrainResult:
    """What `train` returns. Leaves of `params`, `rest` and `seen` carry a leading seed axis (S, ...)."""

    family: type[RewardModel]
    hp: Any
    cfg: TrainConfig
    spec: dict
    seeds: tuple[int, ...]
    graphdef: Any
    params: Any
    rest: Any
    seen: Any  # per-seed `seen_states` of the training users: (S, U, ...)
    history: list[dict]  # one entry per chunk: {"step": int, "loss": [S floats], <metric>: [S floats]}
    early: dict | None = None  # with validation: per seed "best_step", "best_score", "stopped_step" lists
    traced: dict | None = None  # per replica values of traced settings: {"train.lr": [S floats], ...}
    failed: list | None = None  # per replica: the step at which its loss turned non-finite (None: never)
    compile_s: float = 0.0  # seconds spent compiling the training program(s)
    train_s: float = 0.0  # seconds spent in training steps, validation and hooks (compilation excluded)
    pairs_per_step: int = 0  # comparisons in one replica's training batch

    def values(self, i: int) -> dict:
        """The traced settings of replica `i` as Python floats ({} when the program traced none)."""
        return {k: float(v[i]) for k, v in (self.traced or {}).items()}

    def model(self, i: int = 0) -> RewardModel:
        """The NNX module of seed (replica) index `i`, with its own traced model settings."""
        params, rest = _take_replica((self.params, self.rest), i)
        model = nnx.merge(self.graphdef, params, rest)
        if hasattr(model, "hp"):  # this replica's settings (a grid cell's own, where one program trained several)
            model.hp = with_traced(self.hp, self.cfg, self.values(i))[0]
        return model

    def subset(self, indices, hp=None, cfg=None) -> "TrainResult":
        """The replicas at `indices` as their own result (a grid cell's seeds), with the cell's own `hp` and
        `cfg` (whose traced settings are those replicas' values) when given."""
        idx = np.asarray(indices)
        take = partial(jax.tree.map, lambda x: x[idx])
        pick = lambda v: [v[i] for i in idx]  # noqa: E731
        history = [{k: (v if k == "step" else pick(v)) for k, v in h.items()} for h in self.history]
        traced = None if hp is not None or not self.traced else {k: pick(v) for k, v in self.traced.items()}
        return dataclasses.replace(
            self, hp=self.hp if hp is None else hp, cfg=self.cfg if cfg is None else cfg, seeds=tuple(pick(self.seeds)),
            params=take(self.params), rest=take(self.rest), seen=take(self.seen), history=history,
            early=None if self.early is None else {k: pick(v) for k, v in self.early.items()}, traced=traced,
            failed=None if self.failed is None else pick(self.failed))

    def seed_metrics(self, i: int = 0) -> dict:
        """The deterministic training metrics of seed index `i` (what `metrics.json` holds)."""
        last = self.history[-1] if self.history else {}
        out = {
            "seed": self.seeds[i],
            "steps": self.cfg.steps,
            "final_loss": last.get("loss", [math.nan])[i],
            "final_train_accuracy": last.get("accuracy", [math.nan])[i],
            "history": [{k: (v if k == "step" else v[i]) for k, v in h.items()} for h in self.history],
        }
        if self.early is not None:
            best = self.early["best_step"][i]
            at = next(h for h in self.history if h["step"] == best)
            out.update(best_step=best, stopped_step=self.early["stopped_step"][i],
                       best_val_loss=at["val_loss"][i], best_val_accuracy=at["val_accuracy"][i])
        return out


def _shot_rows(val: PreferenceData, rows: dict, shots: int) -> dict:
    """`train.val_shots`: the unseen users of a validation table with more than `shots` rows, as contexts
    (their first `shots` rows in file order, (n, K) per `eval_rows` field, plus `mask`) and targets (their
    later rows, with `slot`: which context's user each is). A one-line error when there are none."""
    users, ctx_rows, slot, pos = shot_contexts(val.user, val.n_users, rows["user"] >= 0, shots)
    if not len(users):
        raise PluralError(f"--set train.val_shots={shots}: the validation table {val.source} has no user unseen in "
                          f"training with more than {shots} pairs")
    target = np.flatnonzero((slot[val.user] >= 0) & (pos >= shots))
    context = {k: v[ctx_rows] for k, v in rows.items()}
    return {"context": {**context, "mask": np.ones((len(users), shots), np.float32)},
            "target": {**{k: v[target] for k, v in rows.items()}, "slot": slot[val.user[target]].astype(np.int32)}}


class Trainer:
    """Compiled training of one family on one table for R replicas at once. Use `train()` for the common path.

    A replica is one model: its seed (`seeds[i]`, which may repeat) and, optionally, its own values of the
    traced settings (`traced` = {"train.lr": [R values], "model.beta": [R values], ...}, keys from
    `traced_keys(family)`), so that seeds and hyper-parameter points that share every shape train as one
    program. `batches` is the family's sampler (`family.batches` with `batch.*` settings applied; see
    `plural.data.batching`). Hooks (plural.hooks) run between chunks: validation when `val` is given,
    checkpointing with a workdir, the progress bar, and any added with `add_hook(fn, every=)`."""

    def __init__(self, family: type[RewardModel], hp, cfg: TrainConfig, data: PreferenceData, seeds=(0,),
                 val: PreferenceData | None = None, batches=None, traced: dict | None = None):
        hp, cfg = check_config(hp, "model"), check_config(cfg, "train")
        hp = family.resolve_data(hp, data)  # defaults that depend on the table (input_dropout=None)
        self.family, self.hp, self.cfg, self.seeds = family, hp, cfg, tuple(int(s) for s in seeds)
        self.batches = check_config(family.batches if batches is None else batches, "batch")
        self.spec = data.spec()
        self.traced = self._check_traced(traced or {})
        try:
            self.mesh = training_mesh(len(self.seeds), self.batches.size, cfg.mesh)
        except ValueError as e:
            raise PluralError(f"--set train.mesh={cfg.mesh}: {e}")
        self.h = self.place_replicas(self.traced)  # (R,) per traced setting
        self.dd = device_data(data, replicated(self.mesh))
        self.vd = self.vu = None  # validation rows: seen users' (or, without any, every row); unseen users' shots
        if cfg.val_shots and (val is None or cfg.eval_every == 0):
            raise PluralError(f"--set train.val_shots={cfg.val_shots}: needs validation (--val, or data.val_fraction > 0) "
                              f"and train.eval_every > 0")
        if val is not None and cfg.eval_every > 0:
            rows = eval_rows(val, data.users, data.groups)
            seen = rows["user"] >= 0
            if cfg.val_shots:
                self.vu = self.place(_shot_rows(val, rows, cfg.val_shots))
            if seen.any() or self.vu is None:  # seen users' held-out pairs, each scored with its own state
                self.vd = self.place({k: v[seen] for k, v in rows.items()} if seen.any() else rows)
        self.adapt_keys = self.place_replicas(seed_keys(self.seeds, ADAPT_STREAM))
        self.tx = optimizer_for(family, hp, cfg)
        self.graphdef = graphdef_of(family, self.spec, hp)
        self._chunks: dict[int, Callable] = {}  # compiled programs live (and die) with the Trainer
        self._compiled: dict[int, Callable] = {}
        self._mode: str | None = None  # seed_batching=auto's measured choice (batching())
        self.compile_s = 0.0
        self._validate = jax.jit(self._validate_all)
        self.hooks: list[Hook] = []

    def _check_traced(self, traced: dict) -> dict:
        """`traced` checked, as (R,) float32 arrays; a None value (an automatic default, e.g. input_dropout by
        table size) is the value `resolve_data` gave `hp`."""
        allowed = traced_keys(self.family)
        for key in traced:
            if key not in allowed:
                raise PluralError(f"{key}: not a setting {self.family.name or self.family.__name__} can vary within one "
                                  f"program (traced: {', '.join(allowed)})")
        own = lambda key: getattr(self.hp if key.startswith("model.") else self.cfg, key.split(".", 1)[1])  # noqa: E731
        traced = {k: [own(k) if v is None else v for v in values] for k, values in traced.items()}
        for key, values in traced.items():
            if len(values) != len(self.seeds):
                raise PluralError(f"{key}: {len(values)} values for {len(self.seeds)} replicas")
            with_traced(self.hp, self.cfg, {key: float(values[0])})  # the field exists
        return {k: np.asarray(v, np.float32) for k, v in traced.items()}

    # -- pure functions --------------------------------------------------------------------------------
    def _init_one(self, key, dd):
        return init_state(self.family, self.hp, self.spec, self.tx, key, dd)

    def _merge(self, params, rest, h) -> RewardModel:
        """The module of one replica, its traced model settings put in (traced scalars inside a program)."""
        model = nnx.merge(self.graphdef, params, rest)
        if any(k.startswith("model.") for k in h):
            model.hp = with_traced(self.hp, self.cfg, h)[0]
        return model

    def _step_one(self, params, rest, opt_state, train_key, h, step, dd):
        k_batch, k_model = jax.random.split(jax.random.fold_in(train_key, step))
        batch = shard_batch(self.batches.sample(k_batch, dd), self.mesh)
        tx = optimizer_for(self.family, *with_traced(self.hp, self.cfg, h)) if h else self.tx

        def loss_fn(p):
            loss, metrics = self._merge(p, rest, h).loss(batch, k_model, step)
            return loss, metrics

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, {"loss": loss, **metrics}

    def _chunk_one(self, params, rest, opt_state, train_key, h, start, dd, n):
        def body(carry, step):
            p, o = carry
            p, o, m = self._step_one(p, rest, o, train_key, h, step, dd)
            return (p, o), m

        (params, opt_state), ms = jax.lax.scan(body, (params, opt_state), start + jnp.arange(n))
        return params, opt_state, jax.tree.map(jnp.mean, ms)

    def batching(self, state=None) -> str:
        """'vmap' or 'map': how each device's replicas train at once (`train.seed_batching`).

        `auto`: vmap on GPU/TPU, wherever a device holds one replica, and across processes. On a CPU the faster of the two is
        measured for each shape (`measure_batching`), because neither wins everywhere: with 16 BT replicas
        over 2 CPU devices, vmap takes 0.41x the one-by-one time at hidden (32,), D = 24, 256 pairs per step
        (lax.map 1.0x and more), but lax.map wins at D = 384, 1024 pairs (hidden (64,): 0.91x vs vmap 0.99x;
        (256, 256): 0.98x vs 1.01x) (`plural bench grid`, this project's 2-core machine)."""
        mode = self.cfg.seed_batching
        if mode != "auto":
            return mode
        if self._mode is None:
            r = self.mesh.shape["replica"] if self.mesh is not None else 1
            if jax.default_backend() != "cpu" or len(self.seeds) // r <= 1 or jax.process_count() > 1:
                self._mode = "vmap"  # (several processes must run the same program: no per-process measuring)
            else:  # measured once per shape and machine, then remembered in the cache folder (plural.cache)
                from plural.cache import remembered

                self._mode = remembered("batching", self._shape_key(), lambda: self.measure_batching(state))
        return self._mode

    def _shape_key(self) -> str:
        """What the speed of this program depends on: family, settings, sampler, table and replica shapes,
        mesh, machine."""
        return json.dumps([self.family.name, repr(self.hp), repr(self.batches), repr(self.cfg.mesh), self.spec["dim"],
                           self.spec["prompt_dim"], self.spec["n_users"], len(self.seeds),
                           int(self.dd["chosen"].shape[0]), dict(self.mesh.shape) if self.mesh is not None else None,
                           jax.devices()[0].device_kind, jax.device_count(), jax.__version__], sort_keys=True)

    def measure_batching(self, state=None, steps: int = 3, repeats: int = 2) -> str:
        """The faster of vmap and lax.map for this program's shapes on this machine, by timing `steps` steps of
        each (best of `repeats`, after a warm-up) from `state` ((params, rest, opt_state, train_keys); a fresh
        `init()` if None; nothing is donated or kept). The time spent here counts into `compile_s`."""
        start_all = time.perf_counter()
        params, rest, opt_state, keys = state if state is not None else self.init()
        best = {}
        for mode in ("vmap", "map"):
            fn = jax.jit(self._many(steps, mode)).lower(params, rest, opt_state, keys, self.h, 0, self.dd).compile()
            jax.block_until_ready(fn(params, rest, opt_state, keys, self.h, 0, self.dd))
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                jax.block_until_ready(fn(params, rest, opt_state, keys, self.h, 0, self.dd))
                times.append(time.perf_counter() - t)
            best[mode] = min(times)
        self.compile_s += time.perf_counter() - start_all
        return min(best, key=best.get)

    def _many(self, n: int, mode: str) -> Callable:
        """(params, rest, opt_state, train_keys, h, start, dd) -> n steps of every replica: each device trains
        its share ('replica' mesh axis, `shard_map`: no communication between replicas), vmapped or one after
        another (`lax.map`)."""
        one = partial(self._chunk_one, n=n)
        if mode == "vmap":
            many = jax.vmap(one, in_axes=(0, 0, 0, 0, 0, None, None))
        else:
            def many(params, rest, opt_state, keys, h, start, dd):
                return jax.lax.map(lambda a: one(*a, start, dd), (params, rest, opt_state, keys, h))
        if self.mesh is not None and self.mesh.shape["replica"] > 1:
            rep = P("replica")
            many = jax.shard_map(many, mesh=self.mesh, in_specs=(rep, rep, rep, rep, rep, P(), P()),
                                 out_specs=rep, axis_names={"replica"}, check_vma=False)
        return many

    def chunk_fn(self, n: int) -> Callable:
        """jit(params, rest, opt_state, train_keys, h, start, dd) -> advanced by n steps, for all replicas
        (`_many` with `batching()`; params and optimiser state donated)."""
        if n not in self._chunks:
            self._chunks[n] = jax.jit(self._many(n, self.batching()), donate_argnums=(0, 2))
        return self._chunks[n]

    def _run_chunk(self, n: int, state: LoopState):
        """Advance `state` by n steps; the first call of each length compiles it (timed into `compile_s`)."""
        args = (state.params, state.rest, state.opt_state, state.train_keys, self.h, state.step, self.dd)
        if n not in self._compiled:
            self.batching(args[:4])  # (measured once, on this state, when auto on a CPU; timed by itself)
            t = time.perf_counter()
            self._compiled[n] = self.chunk_fn(n).lower(*args).compile()
            self.compile_s += time.perf_counter() - t
        return self._compiled[n](*args)

    def _validate_all(self, params, rest, h, keys, dd, vd, vu):
        """(val_loss (S,), val_accuracy (S,)) of every seed on the validation rows (jitted per Trainer): the
        seen users' rows `vd`, and with `train.val_shots` the unseen users' later rows under the state adapted
        from their shots `vu` (user j with key fold_in(keys[seed], j), as `plural evaluate`), the two averaged.
        Memory: every unseen user is adapted at once and each target row gathers its user's state, per replica
        (unlike `evaluate`, which works in chunks): fine for validation tables of thousands of rows."""
        def one(p, r, hh, key):
            model = self._merge(p, r, hh)
            parts, seen = [], model.seen_states(dd)
            if vd is not None:
                states = row_states(model, seen, vd["user"], vd["group"])
                parts.append(model.margin(vd["prompt"], vd["chosen"], vd["rejected"], states))
            if vu is not None:
                ctx, tgt = vu["context"], vu["target"]
                users = jax.vmap(lambda c, k: model.adapt(c, k, seen))(ctx, jax.vmap(lambda j: jax.random.fold_in(key, j))(
                    jnp.arange(ctx["mask"].shape[0], dtype=jnp.uint32)))
                states = jax.tree.map(lambda s: s[tgt["slot"]], users)
                parts.append(model.margin(tgt["prompt"], tgt["chosen"], tgt["rejected"], states))
            return (sum(bt_nll(m) for m in parts) / len(parts), sum(masked_accuracy(m) for m in parts) / len(parts))
        return jax.vmap(one)(params, rest, h, keys)

    def validate(self, params, rest):
        """(val_loss (S,), val_accuracy (S,)) on the validation rows given to the Trainer."""
        return self._validate(params, rest, self.h, self.adapt_keys, self.dd, self.vd, self.vu)

    @property
    def validating(self) -> bool:
        return self.vd is not None or self.vu is not None

    def init(self):
        """(params, rest, opt_state, train_keys), each with a leading replica axis."""
        keys = seed_keys(self.seeds, INIT_STREAM)
        params, rest, opt_state = jax.jit(jax.vmap(self._init_one, in_axes=(0, None)))(keys, self.dd)
        train_keys = seed_keys(self.seeds, TRAIN_STREAM)
        return self.place_replicas((params, rest, opt_state, train_keys))

    def place(self, tree):
        """A pytree of host or device arrays on the device, replicated over the mesh if there is one.
        (`device_put`, not `jnp.asarray`, which compiles a small copying program per shape.)"""
        return jax.device_put(tree) if self.mesh is None else jax.device_put(tree, replicated(self.mesh))

    def place_replicas(self, tree):
        """A pytree with a leading replica axis on the device, split over the mesh's 'replica' axis if there is one."""
        return jax.device_put(tree) if self.mesh is None else jax.device_put(tree, by_replica(self.mesh))

    def seen_states(self, params, rest):
        def one(p, r, hh):
            return self._merge(p, r, hh).seen_states(self.dd)
        return jax.jit(jax.vmap(one))(params, rest, self.h)

    def pairs_per_step(self) -> int:
        """Comparison slots in one replica's training batch: the entries of its `mask`s (pair batches: the
        batch; per-user batches: context and target slots)."""
        batch = jax.eval_shape(lambda k: self.batches.sample(k, self.dd), jax.ShapeDtypeStruct((2,), jnp.uint32))
        masks = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(batch)
                 if getattr(path[-1], "key", None) == "mask"]
        return int(sum(np.prod(m.shape) for m in masks))

    # -- hooks and the loop ------------------------------------------------------------------------------
    def add_hook(self, hook: Hook | Callable[[LoopState], None], every: int | None = None) -> Hook:
        """Run `hook` (a `Hook`, or fn(state)) after chunks at cadence `every` (plural.hooks); returns it."""
        hook = hook if isinstance(hook, Hook) else Callback(hook, every)
        self.hooks.append(hook)
        return hook

    def boundaries(self) -> list[int]:
        """Steps at which a chunk ends: multiples of log_every, ckpt_every, (validating) eval_every and every
        added hook's cadence, and the last step."""
        c = self.cfg
        ends = {c.steps}
        cadences = [c.log_every, c.ckpt_every, c.eval_every if self.validating else 0]
        for every in cadences + [h.every or 0 for h in self.hooks]:
            if every > 0:
                ends.update(range(every, c.steps, every))
        return sorted(ends)

    def default_hooks(self, workdir, resume: bool, progress: bool) -> list[Hook]:
        """Validation (with val data), checkpointing (with a workdir), progress: in that order."""
        hooks: list[Hook] = []
        if self.validating:
            hooks.append(Validation(self.cfg.eval_every, self.cfg.early_stopping, self.cfg.val_metric))
        if workdir is not None:
            hooks.append(Checkpointer(workdir, self.cfg.ckpt_every, resume))
        hooks.append(Progress(self.cfg.steps, self.family.name, progress))
        return hooks

    def run(self, workdir: str | Path | None = None, resume: bool = False, progress: bool = True,
            on_chunk: Callable[[int], None] | None = None) -> TrainResult:
        """Train all replicas to `cfg.steps` (or until every one has stopped early or failed); checkpoint under
        `workdir/checkpoints`.

        A replica whose training loss turns non-finite is recorded as failed at that chunk's last step
        (`TrainResult.failed`) and is not waited for; the others train on unaffected (replicas share no
        arithmetic). `on_chunk(step)` runs after each chunk and its checkpoint (tests use it to simulate a crash)."""
        hooks = self.default_hooks(workdir, resume, progress) + self.hooks
        if on_chunk is not None:
            hooks.append(Callback(lambda st: on_chunk(st.step)))
        params, rest, opt_state, train_keys = self.init()
        state = LoopState(0, params, opt_state, rest, train_keys, history=[], failed=[None] * len(self.seeds))
        start = time.perf_counter()
        try:
            for hook in hooks:
                hook.start(self, state)
            for end in self.boundaries():
                if end <= state.step or state.done:
                    continue
                state.params, state.opt_state, ms = self._run_chunk(end - state.step, state)
                state.history.append({"step": end, **{k: np.asarray(v, np.float64).tolist() for k, v in to_host(ms).items()}})
                state.step = end
                for i, loss in enumerate(state.history[-1]["loss"]):
                    if state.failed[i] is None and not math.isfinite(loss):
                        state.failed[i] = end
                state.done = state.done or all(f is not None for f in state.failed)
                for hook in hooks:
                    if hook.due(end, last=end == self.cfg.steps or state.done):
                        hook(self, state)
        finally:
            for hook in hooks:
                hook.close()
        train_s = time.perf_counter() - start - self.compile_s
        params = state.best if state.best is not None else state.params
        early = None if state.early is None else {k: state.early[k] for k in ("best_step", "best_score", "stopped_step")}
        traced = {k: v.tolist() for k, v in self.traced.items()} or None
        rest, seen = state.rest, self.seen_states(params, state.rest)
        if jax.process_count() > 1:  # replicas live on several hosts: every process gets all of them
            params, rest, seen = to_host((params, rest, seen))
        return TrainResult(self.family, self.hp, self.cfg, self.spec, self.seeds, self.graphdef, params, rest, seen,
                           state.history, early, traced, list(state.failed), self.compile_s, train_s,
                           self.pairs_per_step())


def train(family: type[RewardModel], hp, cfg: TrainConfig, data: PreferenceData, seeds=(0,), workdir=None,
          resume: bool = False, progress: bool = True, on_chunk=None, val: PreferenceData | None = None,
          batches=None, traced: dict | None = None) -> TrainResult:
    """Train `family` on `data` for each seed in `seeds` at once (each replica with its own `traced` settings,
    if given), validating on `val` if given. See `Trainer.run`.
    The tables are read as the family reads them (`view_of`: attribute scores appended for those that read them)."""
    data, val = view_of(family, data), (view_of(family, val) if val is not None else None)
    return Trainer(family, hp, cfg, data, seeds, val, batches, traced).run(workdir, resume, progress, on_chunk)


def restore_params(family: type[RewardModel], hp, spec: dict, cfg: TrainConfig, seeds, workdir) -> tuple:
    """(graphdef, params, rest, step) of the latest checkpoint under `workdir` (leading seed axis).

    With validation, `params` are the best ones (the "best" item), which is what training returned.
    The same named restore as resuming (plural.checkpoint): a changed family fails in one line."""
    graphdef = graphdef_of(family, spec, hp)
    init_one = partial(init_state, family, hp, spec, optimizer_for(family, hp, cfg))
    keys = seed_keys(seeds, INIT_STREAM)
    params, rest, opt_state = jax.eval_shape(jax.vmap(init_one), keys)
    mngr = checkpoint.manager(workdir)
    try:
        step = mngr.latest_step()
        if step is None:
            raise PluralError(f"{workdir}: no checkpoint found")
        validated = checkpoint.read_meta(mngr, step, str(workdir)).get("early") is not None
        trees, best, _ = checkpoint.restore(mngr, step, {"params": params, "opt_state": opt_state, "rest": rest},
                                            params if validated else None, str(workdir))
    finally:
        mngr.close()
    return graphdef, best if validated else trees["params"], trees["rest"], step
