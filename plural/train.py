"""The one trainer: every model family trains through `train()`.

A step is a pure, jit-compiled function over `nnx.split` state: draw a batch on device from
(seed, step), compute the family's loss, apply an optax update. Steps run `log_every` at a time inside
one `lax.scan` (one dispatch per chunk), S seeds at once along a leading seed axis (`jax.vmap`, or
`lax.map` where batched matmuls are slower than plain ones), and batches are split over a 'data' device
mesh. Orbax checkpoints every `ckpt_every` steps; `resume=True` continues from the latest one to the
same bytes an uninterrupted run gives, because the data order and all randomness are functions of
(seed, step) only and chunk boundaries do not depend on where a run started.

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

import copy
import dataclasses
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
from plural.data.batching import eval_rows
from plural.errors import PluralError
from plural.models import RewardModel
from plural.models.base import bt_nll, masked_accuracy, row_states
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
    early: dict | None = None  # with validation: per seed "best_step", "best_score", "stopped_step" lists

    def model(self, i: int = 0) -> RewardModel:
        """The NNX module of seed index `i`."""
        take = partial(jax.tree.map, lambda x: x[i])
        return nnx.merge(self.graphdef, take(self.params), take(self.rest))

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


class Trainer:
    """Compiled training of one family on one table for S seeds. Use `train()` for the common path."""

    def __init__(self, family: type[RewardModel], hp, cfg: TrainConfig, data: PreferenceData, seeds=(0,),
                 val: PreferenceData | None = None):
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
        if cfg.val_metric not in ("accuracy", "nll"):
            raise PluralError(f"--set train.val_metric={cfg.val_metric}: expected accuracy or nll")
        if cfg.eval_every < 0 or cfg.early_stopping < 0:
            raise PluralError("train.eval_every and train.early_stopping must be >= 0")
        self.vd = None
        if val is not None and cfg.eval_every > 0:
            rows = eval_rows(val, data.users, data.groups)
            if (rows["user"] >= 0).any():  # seen users' held-out pairs, each scored with its own state
                rows = {k: v[rows["user"] >= 0] for k, v in rows.items()}
            self.vd = jax.tree.map(jnp.asarray, rows) if self.mesh is None else jax.device_put(rows, replicated(self.mesh))
        self.tx = optimizer_for(family, hp, cfg)
        self.graphdef = nnx.split(nnx.eval_shape(lambda: family(self.spec, hp, nnx.Rngs(0))))[0]
        self._chunks: dict[int, Callable] = {}  # compiled programs live (and die) with the Trainer
        self._validate = jax.jit(self._validate_all)

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
        """Steps at which a chunk ends: multiples of log_every, ckpt_every and (validating) eval_every, and the last step."""
        c = self.cfg
        ends = {c.steps}
        for every in (c.log_every, c.ckpt_every, c.eval_every if self.vd is not None else 0):
            if every > 0:
                ends.update(range(every, c.steps, every))
        return sorted(ends)

    def seen_states(self, params, rest):
        def one(p, r):
            return nnx.merge(self.graphdef, p, r).seen_states(self.dd)
        return jax.jit(jax.vmap(one))(params, rest)

    def _validate_all(self, params, rest, dd, vd):
        """(val_loss (S,), val_accuracy (S,)) of every seed on the validation rows (jitted per Trainer)."""
        def one(p, r):
            model = nnx.merge(self.graphdef, p, r)
            states = row_states(model, model.seen_states(dd), vd["user"], vd["group"])
            m = model.margin(vd["prompt"], vd["chosen"], vd["rejected"], states)
            return bt_nll(m), masked_accuracy(m)
        return jax.vmap(one)(params, rest)

    @staticmethod
    @jax.jit
    def _keep_best(best, params, improved):
        """Per seed, `params` where `improved` (S,) else `best` (new buffers: params are donated later)."""
        def pick(b, p):
            return jnp.where(improved.reshape((-1,) + (1,) * (p.ndim - 1)), p, b)
        return jax.tree.map(pick, best, params)

    def _early_update(self, early: dict, end: int, loss, acc) -> np.ndarray:
        """Record one evaluation in `early` (in place); returns which seeds improved."""
        score = np.asarray(acc, np.float64) if self.cfg.val_metric == "accuracy" else -np.asarray(loss, np.float64)
        improved = np.zeros(len(self.seeds), bool)
        for i, sc in enumerate(score.tolist()):
            if early["stopped_step"][i] is not None:
                continue  # frozen: a stopped seed's result must not depend on the seeds beside it
            if sc > early["best_score"][i]:
                improved[i] = True
                early["best_score"][i], early["best_step"][i], early["bad"][i] = sc, end, 0
            else:
                early["bad"][i] += 1
            if self.cfg.early_stopping and early["bad"][i] >= self.cfg.early_stopping:
                early["stopped_step"][i] = end
        return improved

    # -- the loop ----------------------------------------------------------------------------------------
    def run(self, workdir: str | Path | None = None, resume: bool = False, progress: bool = True,
            on_chunk: Callable[[int], None] | None = None) -> TrainResult:
        """Train all seeds to `cfg.steps` (or until every seed stops early); checkpoint under `workdir/checkpoints`.

        `on_chunk(step)` is called after each chunk (and its checkpoint); tests use it to simulate a crash.
        """
        params, rest, opt_state, train_keys = self.init()
        S = len(self.seeds)
        validating = self.vd is not None
        early = {"best_score": [-math.inf] * S, "best_step": [0] * S, "bad": [0] * S, "stopped_step": [None] * S}
        best = jax.tree.map(jnp.copy, params) if validating else None
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
                params, opt_state, rest, best, history, early, start = self._restore(mngr, latest, params, opt_state, rest, best)
                params, opt_state, rest, best = self._place((params, opt_state, rest, best))
                if start not in self.boundaries() or start > self.cfg.steps:
                    raise PluralError(f"{workdir}: checkpoint at step {start} does not match this configuration")
        done = validating and all(s is not None for s in early["stopped_step"])
        bar = tqdm(total=self.cfg.steps, initial=start, disable=not progress or None, desc=self.family.name,
                   unit="step", dynamic_ncols=True, leave=False)
        try:
            for end in self.boundaries():
                if end <= start or done:
                    continue
                params, opt_state, ms = self.chunk_fn(end - start)(params, rest, opt_state, train_keys, start, self.dd)
                history.append({"step": end, **{k: np.asarray(v, np.float64).tolist() for k, v in ms.items()}})
                if validating and (end % self.cfg.eval_every == 0 or end == self.cfg.steps):
                    loss, acc = self._validate(params, rest, self.dd, self.vd)
                    history[-1]["val_loss"] = np.asarray(loss, np.float64).tolist()
                    history[-1]["val_accuracy"] = np.asarray(acc, np.float64).tolist()
                    improved = self._early_update(early, end, loss, acc)
                    best = self._keep_best(best, params, jnp.asarray(improved))
                    done = all(s is not None for s in early["stopped_step"])
                bar.update(end - start)
                bar.set_postfix(loss=f"{np.mean(history[-1]['loss']):.4f}",
                                **({"val_acc": f"{np.mean(history[-1]['val_accuracy']):.3f}"} if "val_accuracy" in history[-1] else {}))
                start = end
                is_ckpt = self.cfg.ckpt_every > 0 and end % self.cfg.ckpt_every == 0
                if mngr is not None and (is_ckpt or end == self.cfg.steps or done):
                    self._save(mngr, end, params, opt_state, rest, best, history, early if validating else None)
                if on_chunk is not None:
                    on_chunk(end)
        finally:
            bar.close()
            if mngr is not None:
                mngr.wait_until_finished()
                mngr.close()
        if validating:
            params = best
        seen = self.seen_states(params, rest)
        return TrainResult(self.family, self.hp, self.cfg, self.spec, self.seeds, self.graphdef,
                           params, rest, seen, history,
                           {k: early[k] for k in ("best_step", "best_score", "stopped_step")} if validating else None)

    @staticmethod
    def _leaves(*trees) -> dict:
        return {str(i): x for i, x in enumerate(jax.tree.leaves(trees))}

    def _save(self, mngr, step, params, opt_state, rest, best, history, early):
        items = {"state": ocp.args.StandardSave(self._leaves(params, opt_state, rest)),
                 # copies: Orbax writes in the background while the next chunk appends to `history`
                 "history": ocp.args.JsonSave(copy.deepcopy({"history": history, "seeds": list(self.seeds), "early": early}))}
        if early is not None:
            items["best"] = ocp.args.StandardSave(self._leaves(best))
        mngr.save(step, args=ocp.args.Composite(**items))

    def _restore(self, mngr, step, params, opt_state, rest, best):
        meta = mngr.restore(step, args=ocp.args.Composite(history=ocp.args.JsonRestore()))["history"]
        if meta["seeds"] != list(self.seeds):
            raise PluralError(f"checkpoint at step {step} was written for seeds {meta['seeds']}, not {list(self.seeds)}")
        if (meta.get("early") is None) != (best is None):
            raise PluralError(f"checkpoint at step {step} was written {'without' if best is not None else 'with'} "
                              "validation; resume with the same validation data and train.eval_every")
        items = {"state": ocp.args.StandardRestore(self._leaves(params, opt_state, rest))}
        if best is not None:
            items["best"] = ocp.args.StandardRestore(self._leaves(best))
        got = mngr.restore(step, args=ocp.args.Composite(**items))
        params, opt_state, rest = _unflatten((params, opt_state, rest), got["state"])
        if best is not None:
            best = _unflatten(best, got["best"])
        early = meta.get("early") or {}
        return params, opt_state, rest, best, meta["history"], early, step


def _unflatten(like, leaves: dict):
    """The pytree `like` with its leaves replaced by `leaves` ({"0": ..., "1": ...}, `_leaves` order)."""
    return jax.tree.unflatten(jax.tree.structure(like), [leaves[str(i)] for i in range(len(leaves))])


def train(family: type[RewardModel], hp, cfg: TrainConfig, data: PreferenceData, seeds=(0,), workdir=None,
          resume: bool = False, progress: bool = True, on_chunk=None, val: PreferenceData | None = None) -> TrainResult:
    """Train `family` on `data` for each seed in `seeds` at once, validating on `val` if given. See `Trainer.run`."""
    return Trainer(family, hp, cfg, data, seeds, val).run(workdir, resume, progress, on_chunk)


def restore_params(family: type[RewardModel], hp, spec: dict, cfg: TrainConfig, seeds, workdir) -> tuple:
    """(graphdef, params, rest, step) of the latest checkpoint under `workdir` (leading seed axis).

    With validation, `params` are the best ones (the "best" item), which is what training returned."""
    graphdef = nnx.split(nnx.eval_shape(lambda: family(spec, hp, nnx.Rngs(0))))[0]
    init_one = partial(init_state, family, hp, spec, optimizer_for(family, hp, cfg))
    keys = jnp.stack([seed_key(s, INIT_STREAM) for s in seeds])
    params, rest, opt_state = jax.eval_shape(jax.vmap(init_one), keys)
    mngr = ocp.CheckpointManager(Path(workdir).absolute() / "checkpoints")
    step = mngr.latest_step()
    if step is None:
        raise PluralError(f"{workdir}: no checkpoint found")
    meta = mngr.restore(step, args=ocp.args.Composite(history=ocp.args.JsonRestore()))["history"]
    items = {"state": ocp.args.StandardRestore(Trainer._leaves(params, opt_state, rest))}
    if meta.get("early") is not None:
        items["best"] = ocp.args.StandardRestore(Trainer._leaves(params))
    got = mngr.restore(step, args=ocp.args.Composite(**items))
    mngr.close()
    params, _, rest = _unflatten((params, opt_state, rest), got["state"])
    if "best" in items:
        params = _unflatten(params, got["best"])
    return graphdef, params, rest, step
