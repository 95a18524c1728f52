"""The one trainer: every model family trains through `train()`.

A step is a pure, jit-compiled function over `nnx.split` state: draw a batch on device from
(seed, step), compute the family's loss, apply an optax update. Steps run `log_every` at a time inside
one `lax.scan` (one dispatch per chunk), S seeds at once along a leading seed axis (`jax.vmap`, or
`lax.map` where batched matmuls are slower than plain ones), and batches are split over a 'data' device
mesh. Orbax checkpoints every `ckpt_every` steps; `resume=True` continues from the latest one to the
same bytes an uninterrupted run gives, because the data order and all randomness are functions of
(seed, step) only and chunk boundaries do not depend on where a run started.
"""

from __future__ import annotations

import dataclasses
import json
import math
from functools import partial
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from tqdm.auto import tqdm

from plural.config import TrainConfig
from plural.data import PreferenceData, device_data, sample_pairs, sample_users
from plural.errors import PluralError
from plural.models import RewardModel
from plural.parallel import data_mesh, replicated, shard_batch

# Independent PRNG streams derived from one seed.
INIT_STREAM, TRAIN_STREAM, ADAPT_STREAM = 0, 1, 2


def seed_key(seed: int, stream: int) -> jax.Array:
    """The raw uint32 key of `stream` for `seed`."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), stream)


def make_optimizer(cfg: TrainConfig, multipliers: dict[str, float] | None = None,
                   labels: Callable | None = None) -> optax.GradientTransformation:
    """Global-norm clipping + AdamW under the configured schedule (warmup then constant/cosine/linear).

    With `multipliers` ({group: factor}) and `labels` (params -> pytree of group names), each group
    gets its own AdamW at `factor * schedule` (per-parameter-group learning rates).
    """
    warm = min(cfg.warmup_steps, max(cfg.steps - 1, 0))
    end = cfg.lr * cfg.end_lr_fraction
    if cfg.schedule == "constant":
        sched = optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, max(warm, 1)), optax.constant_schedule(cfg.lr)], [warm]) if warm else optax.constant_schedule(cfg.lr)
    elif cfg.schedule == "cosine":
        sched = optax.warmup_cosine_decay_schedule(0.0 if warm else cfg.lr, cfg.lr, warm, max(cfg.steps, warm + 1), end)
    elif cfg.schedule == "linear":
        sched = optax.join_schedules([optax.linear_schedule(0.0 if warm else cfg.lr, cfg.lr, max(warm, 1)),
                                      optax.linear_schedule(cfg.lr, end, max(cfg.steps - warm, 1))], [warm])
    else:
        raise PluralError(f"--set train.schedule={cfg.schedule}: expected constant, cosine or linear")
    parts = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip > 0 else []
    if not multipliers or set(multipliers) == {"default"} and multipliers["default"] == 1.0:
        parts.append(optax.adamw(sched, weight_decay=cfg.weight_decay))
    else:
        parts.append(optax.multi_transform(
            {g: optax.adamw(lambda t, f=f: f * sched(t), weight_decay=cfg.weight_decay) for g, f in multipliers.items()},
            labels))
    return optax.chain(*parts)


def _key_name(k):
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return getattr(k, attr)
    return str(k)


def optimizer_for(family: type[RewardModel], hp, cfg: TrainConfig) -> optax.GradientTransformation:
    """The family's optimiser: `make_optimizer` with its parameter groups and learning-rate factors."""

    def labels(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: family.param_group(tuple(_key_name(k) for k in path)), params)

    return make_optimizer(cfg, family.lr_multipliers(hp), labels)


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

    def model(self, i: int = 0) -> RewardModel:
        """The NNX module of seed index `i`."""
        take = partial(jax.tree.map, lambda x: x[i])
        return nnx.merge(self.graphdef, take(self.params), take(self.rest))

    def seed_metrics(self, i: int = 0) -> dict:
        """The deterministic training metrics of seed index `i` (what `metrics.json` holds)."""
        last = self.history[-1] if self.history else {}
        return {
            "seed": self.seeds[i],
            "steps": self.cfg.steps,
            "final_loss": last.get("loss", [math.nan])[i],
            "final_train_accuracy": last.get("accuracy", [math.nan])[i],
            "history": [{k: (v if k == "step" else v[i]) for k, v in h.items()} for h in self.history],
        }


class Trainer:
    """Compiled training of one family on one table for S seeds. Use `train()` for the common path."""

    def __init__(self, family: type[RewardModel], hp, cfg: TrainConfig, data: PreferenceData, seeds=(0,)):
        self.family, self.hp, self.cfg, self.seeds = family, hp, cfg, tuple(int(s) for s in seeds)
        self.spec = data.spec()
        batch = cfg.batch_size if family.batch_kind == "pairs" else cfg.users_per_batch
        if batch < 1 or cfg.steps < 1:
            raise PluralError("train.steps and the batch size must be positive")
        if family.batch_kind == "users" and not (1 <= cfg.context_min <= cfg.context_max):
            raise PluralError("--set train.context_min/context_max: need 1 <= context_min <= context_max")
        try:
            self.mesh = data_mesh(batch, cfg.mesh_data)
        except ValueError as e:
            raise PluralError(f"--set train.mesh_data={cfg.mesh_data}: {e}")
        if self.mesh is not None and batch % self.mesh.size:
            raise PluralError(f"batch size {batch} is not divisible by the {self.mesh.size} devices of the mesh")
        self.dd = device_data(data, replicated(self.mesh))
        self.tx = optimizer_for(family, hp, cfg)
        self.graphdef = nnx.split(nnx.eval_shape(lambda: family(self.spec, hp, nnx.Rngs(0))))[0]
        self._chunks: dict[int, Callable] = {}

    # -- pure functions --------------------------------------------------------------------------------
    def _init_one(self, key, dd):
        return init_state(self.family, self.hp, self.spec, self.tx, key, dd)

    def _sample(self, key, dd):
        c = self.cfg
        if self.family.batch_kind == "pairs":
            return sample_pairs(key, dd, c.batch_size)
        return sample_users(key, dd, c.users_per_batch, c.context_min, c.context_max, c.targets_per_user)

    def _step_one(self, params, rest, opt_state, train_key, step, dd):
        k_batch, k_model = jax.random.split(jax.random.fold_in(train_key, step))
        batch = shard_batch(self._sample(k_batch, dd), self.mesh)

        def loss_fn(p):
            loss, metrics = nnx.merge(self.graphdef, p, rest).loss(batch, k_model, step)
            return loss, metrics

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = self.tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, {"loss": loss, **metrics}

    def _chunk_one(self, params, rest, opt_state, train_key, start, dd, n):
        def body(carry, step):
            p, o = carry
            p, o, m = self._step_one(p, rest, o, train_key, step, dd)
            return (p, o), m

        (params, opt_state), ms = jax.lax.scan(body, (params, opt_state), start + jnp.arange(n))
        return params, opt_state, jax.tree.map(jnp.mean, ms)

    def chunk_fn(self, n: int) -> Callable:
        """jit(params, rest, opt_state, train_keys, start, dd) -> advanced by n steps, for all seeds."""
        if n not in self._chunks:
            one = partial(self._chunk_one, n=n)
            mode = self.cfg.seed_batching
            if mode == "auto":
                mode = "map" if jax.default_backend() == "cpu" else "vmap"
            if mode == "vmap":
                many = jax.vmap(one, in_axes=(0, 0, 0, 0, None, None))
            elif mode == "map":
                def many(params, rest, opt_state, keys, start, dd):
                    return jax.lax.map(lambda a: one(*a, start, dd), (params, rest, opt_state, keys))
            else:
                raise PluralError(f"--set train.seed_batching={self.cfg.seed_batching}: expected vmap, map or auto")
            self._chunks[n] = jax.jit(many, donate_argnums=(0, 2))
        return self._chunks[n]

    def init(self):
        """(params, rest, opt_state, train_keys), each with a leading seed axis."""
        keys = jnp.stack([seed_key(s, INIT_STREAM) for s in self.seeds])
        params, rest, opt_state = jax.jit(jax.vmap(self._init_one, in_axes=(0, None)))(keys, self.dd)
        train_keys = jnp.stack([seed_key(s, TRAIN_STREAM) for s in self.seeds])
        return self._place((params, rest, opt_state, train_keys))

    def _place(self, tree):
        """Replicate a pytree over the mesh (a no-op on one device)."""
        return tree if self.mesh is None else jax.device_put(tree, replicated(self.mesh))

    def boundaries(self) -> list[int]:
        """Steps at which a chunk ends: multiples of log_every and ckpt_every, and the last step."""
        c = self.cfg
        ends = {c.steps}
        for every in (c.log_every, c.ckpt_every):
            if every > 0:
                ends.update(range(every, c.steps, every))
        return sorted(ends)

    def seen_states(self, params, rest):
        def one(p, r):
            return nnx.merge(self.graphdef, p, r).seen_states(self.dd)
        return jax.jit(jax.vmap(one))(params, rest)

    # -- the loop ----------------------------------------------------------------------------------------
    def run(self, workdir: str | Path | None = None, resume: bool = False, progress: bool = True,
            on_chunk: Callable[[int], None] | None = None) -> TrainResult:
        """Train all seeds to `cfg.steps`; checkpoint under `workdir/checkpoints` when given.

        `on_chunk(step)` is called after each chunk (and its checkpoint); tests use it to simulate a crash.
        """
        params, rest, opt_state, train_keys = self.init()
        history: list[dict] = []
        start = 0
        mngr = None
        if workdir is not None:
            mngr = ocp.CheckpointManager(
                Path(workdir).absolute() / "checkpoints",
                options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True),
            )
            latest = mngr.latest_step()
            if latest is not None and not resume:
                raise PluralError(f"{workdir}: already holds checkpoints; pass --resume to continue, or use a new --out")
            if latest is not None:
                params, opt_state, history, start = self._restore(mngr, latest, params, opt_state)
                params, opt_state = self._place((params, opt_state))
                if start not in self.boundaries() or start > self.cfg.steps:
                    raise PluralError(f"{workdir}: checkpoint at step {start} does not match this configuration")
        bar = tqdm(total=self.cfg.steps, initial=start, disable=not progress or None, desc=self.family.name,
                   unit="step", dynamic_ncols=True, leave=False)
        try:
            for end in self.boundaries():
                if end <= start:
                    continue
                params, opt_state, ms = self.chunk_fn(end - start)(params, rest, opt_state, train_keys, start, self.dd)
                history.append({"step": end, **{k: np.asarray(v, np.float64).tolist() for k, v in ms.items()}})
                bar.update(end - start)
                bar.set_postfix(loss=f"{np.mean(history[-1]['loss']):.4f}")
                start = end
                is_ckpt = self.cfg.ckpt_every > 0 and end % self.cfg.ckpt_every == 0
                if mngr is not None and (is_ckpt or end == self.cfg.steps):
                    self._save(mngr, end, params, opt_state, history)
                if on_chunk is not None:
                    on_chunk(end)
        finally:
            bar.close()
            if mngr is not None:
                mngr.wait_until_finished()
                mngr.close()
        seen = self.seen_states(params, rest)
        return TrainResult(self.family, self.hp, self.cfg, self.spec, self.seeds, self.graphdef,
                           params, rest, seen, history)

    @staticmethod
    def _leaves(params, opt_state) -> dict:
        return {str(i): x for i, x in enumerate(jax.tree.leaves((params, opt_state)))}

    def _save(self, mngr, step, params, opt_state, history):
        mngr.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(self._leaves(params, opt_state)),
            history=ocp.args.JsonSave({"history": history, "seeds": list(self.seeds)}),
        ))

    def _restore(self, mngr, step, params, opt_state):
        target = self._leaves(params, opt_state)
        got = mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), history=ocp.args.JsonRestore()))
        if got["history"]["seeds"] != list(self.seeds):
            raise PluralError(f"checkpoint at step {step} was written for seeds {got['history']['seeds']}, not {list(self.seeds)}")
        treedef = jax.tree.structure((params, opt_state))
        leaves = [got["state"][str(i)] for i in range(len(target))]
        params, opt_state = jax.tree.unflatten(treedef, leaves)
        return params, opt_state, got["history"]["history"], step


def train(family: type[RewardModel], hp, cfg: TrainConfig, data: PreferenceData, seeds=(0,), workdir=None,
          resume: bool = False, progress: bool = True, on_chunk=None) -> TrainResult:
    """Train `family` on `data` for each seed in `seeds` at once. See `Trainer.run`."""
    return Trainer(family, hp, cfg, data, seeds).run(workdir, resume, progress, on_chunk)


def restore_params(family: type[RewardModel], hp, spec: dict, cfg: TrainConfig, seeds, workdir) -> tuple:
    """(graphdef, params, rest) of the latest checkpoint under `workdir` (leading seed axis)."""
    graphdef = nnx.split(nnx.eval_shape(lambda: family(spec, hp, nnx.Rngs(0))))[0]
    init_one = partial(init_state, family, hp, spec, optimizer_for(family, hp, cfg))
    keys = jnp.stack([seed_key(s, INIT_STREAM) for s in seeds])
    params, rest, opt_state = jax.eval_shape(jax.vmap(init_one), keys)
    rest = jax.jit(jax.vmap(init_one))(keys)[1] if jax.tree.leaves(rest) else rest
    mngr = ocp.CheckpointManager(Path(workdir).absolute() / "checkpoints")
    step = mngr.latest_step()
    if step is None:
        raise PluralError(f"{workdir}: no checkpoint found")
    target = {str(i): x for i, x in enumerate(jax.tree.leaves((params, opt_state)))}
    got = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    mngr.close()
    treedef = jax.tree.structure((params, opt_state))
    params, _ = jax.tree.unflatten(treedef, [got["state"][str(i)] for i in range(len(target))])
    return graphdef, params, rest, step
