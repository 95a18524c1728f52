"""The model protocol every family implements, and helpers they share.

A family is one `RewardModel` subclass in one file, registered by name in `plural.models`. It provides:

- `name`, `summary` (one line), `reference` (the paper) and `demo` ({label: [--set ...]}, the variants
  `plural demo` fits): what the registry (`plural.models.register`), `plural --help`, the demo and the
  README's family table are made from.
- `Hparams`: a frozen dataclass of its hyper-parameters (`--set model.<name>=...`).
- `__init__(spec, hp, rngs)`: build the parameters eagerly; `spec` is `PreferenceData.spec()`
  (dim, prompt_dim, n_users, groups, attr_names).
- `batches`: its sampler with the family's defaults (`PairBatches()`: independent comparisons;
  `UserBatches(...)`: per-user context + target sets; see `plural.data.batching`), whose fields are the
  `batch.*` settings. The trainer only calls `sample(key, dd)`.
- `train_defaults`: the family's own defaults for `train.*` (before `--set`); `train_defaults_for(hp)` may
  make them depend on the model's settings (a variant's learning rate), and `resolve(hp)` fills model
  defaults that depend on other model settings (`bt`'s width on its condition); `check_settings(hp, batches)`
  refuses model and batch settings that cannot work together, before anything runs.
- `auto_dropout = (rate, small-table rate)`: for a family whose `input_dropout` defaults to None ("auto"),
  the rate `resolve_data(hp, data)` fills in from the training table (`small_table`); the trainer, `plural
  fit` and `plural grid` resolve it before anything is built, so config.json holds the rate used.
- `loss(batch, key, step) -> (scalar, {name: scalar})`: the training objective on one batch.
- `reward(prompt, response, state) -> (...)`: the scalar reward of responses for users described by
  `state` (a pytree whose leaves carry the same leading dims as `prompt`).
A user state is an array or a flat dict of arrays (it is stored in an .npz file).
- `seen_states(dd) -> state (U, ...)`: what the model learned of each training user, from the
  device data of the training table (`plural.data.device_data`).
- `population_state() -> state`: the user-agnostic prediction (`--shots 0` for unseen users).
- `group_state(group) -> state`: the state of users known only by their group (index into `spec["groups"]`,
  -1 unknown), (...,) -> (..., state); what unseen users get before any shots. Default: `population_state`
  for every group; group-conditioned models (`bt` with `model.condition=group`) use the label.
- `traced`: the `Hparams` fields that only enter arithmetic (loss weights, rates, temperatures: never a
  shape or Python control flow; `active(v)` guards an optional term), so a grid trains points that differ
  only in them as replicas of one compiled program (`model.hp` then holds traced scalars).
- `reads_attributes`: True for families that read the table's attribute scores; they get responses as
  [e(y), a_1(y) .. a_A(y)] (`view_of`), spec["dim"] = D + A.
- `adapt(context, key, seen) -> state`: a new user's state from K labelled pairs `context` (dict of (K, ...)
  arrays with a (K,) `mask`), without touching the shared parameters. BT's adapt is the identity. `seen`
  holds the seen users' states (`seen_states`, leading axis U), which every caller passes, so that a family
  may start a new user from the seen users who answer alike (`seen_posterior_mean`); most families read
  their own parameters instead and ignore it.

Optional hooks:
- `param_group(path) -> str` (a classmethod) names the learning-rate group of the parameter at `path` (a tuple of
  the parameter's path names, as in its checkpoint name), and `lr_multipliers(hp) -> {group: factor}` scales `train.lr` per group
  (PAL's projector vs prototypes and weights). Default: one group, factor 1.
- `init_from_data(dd, rngs)` adjusts freshly built parameters in place using the training table's device
  data `dd` (PAL starts the users' mixture weights from k-means clusters of `user_directions`); it runs
  once, under jit, before the first step. Default: nothing.
- `adapt_by_gradient` below fits a small per-user state by a few jitted Adam steps on the K context
  pairs (PAL mixture weights, LoRe user weights).

Everything runs under `jax.jit` as a pure function of `nnx.split` state; no Python side effects.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from plural.data.batching import PairBatches
from plural.errors import PluralError


@dataclasses.dataclass(frozen=True)
class NoHparams:
    pass


class RewardModel(nnx.Module):
    """Base class of a model family; see the module docstring for the protocol."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line: what the family models (README table, --help)
    reference: ClassVar[str] = ""  # the paper it implements, "Authors, Title, Venue Year"
    demo: ClassVar[dict[str, list[str]] | None] = None  # {label: [key=value, ...]} fitted by `plural demo`; None: {name: []}
    Hparams: ClassVar[type] = NoHparams
    batches: ClassVar[Any] = PairBatches()  # the family's sampler (plural.data.batching) with its defaults
    train_defaults: ClassVar[dict] = {}  # the family's own defaults for `train.*` (before --set)
    reads_attributes: ClassVar[bool] = False  # responses arrive as [e(y), attribute scores] (`view_of`)
    traced: ClassVar[tuple[str, ...]] = ()  # Hparams fields replicas of one program may differ in (plural.train)
    auto_dropout: ClassVar[tuple[float, float] | None] = None  # `input_dropout=None`: (rate, small-table rate)

    def loss(self, batch: dict, key: jax.Array, step: jax.Array) -> tuple[jax.Array, dict]:
        raise NotImplementedError  # abstract: each family defines its objective

    def reward(self, prompt: jax.Array, response: jax.Array, state: Any) -> jax.Array:
        raise NotImplementedError  # abstract

    def margin(self, prompt: jax.Array, chosen: jax.Array, rejected: jax.Array, state: Any) -> jax.Array:
        """r(x, y_w) - r(x, y_l) per pair; > 0 means the model agrees with the label."""
        return self.reward(prompt, chosen, state) - self.reward(prompt, rejected, state)

    @classmethod
    def check_settings(cls, hp, batches) -> None:
        """Refuse (PluralError, one line) model and batch settings that cannot work together, and settings the
        chosen variant does not read (`refuse_unread`); runs before anything is written or trained. Default:
        nothing to check."""

    @classmethod
    def resolve(cls, hp):
        """`hp` with the defaults that depend on other settings filled in (e.g. `bt`'s width, which depends on
        its `condition`); `configs_for` applies it after `--set`, so config.json holds the values used.
        Default: `hp` unchanged."""
        return hp

    @classmethod
    def dropout_for(cls, hp) -> tuple[float, float]:
        """(rate, small-table rate) that `input_dropout=None` resolves to (default: `auto_dropout`)."""
        return cls.auto_dropout

    @classmethod
    def resolve_data(cls, hp, data):
        """`hp` with the defaults that depend on the training table filled in: `input_dropout=None` ("auto")
        becomes the family's small-table rate on a table with fewer than SMALL_TABLE pairs per embedding
        dimension (`small_table`), its other rate otherwise (`dropout_for`). Unchanged where given."""
        if getattr(hp, "input_dropout", 0.0) is not None:
            return hp
        rate, small = cls.dropout_for(hp)
        return dataclasses.replace(hp, input_dropout=small if small_table(data) else rate)

    @classmethod
    def train_defaults_for(cls, hp) -> dict:
        """The `train.*` defaults for a model with settings `hp` (default: `train_defaults`)."""
        return cls.train_defaults

    @classmethod
    def param_group(cls, path: tuple) -> str:
        """Learning-rate group of the parameter at `path`, e.g. ('mlp', 'layers', '0', 'kernel')."""
        return "default"

    @classmethod
    def lr_multipliers(cls, hp) -> dict[str, float]:
        return {"default": 1.0}

    def init_from_data(self, dd: dict, rngs: nnx.Rngs) -> None:
        """Adjust the fresh parameters from the training data (optional hook; default: nothing)."""

    def seen_states(self, dd: dict) -> Any:
        return jnp.zeros((dd["user_count"].shape[0], 0))

    def population_state(self) -> Any:
        return jnp.zeros((0,))

    def group_state(self, group: jax.Array) -> Any:
        pop = self.population_state()
        return jax.tree.map(lambda s: jnp.broadcast_to(s, (*group.shape, *jnp.shape(s))), pop)

    def adapt(self, context: dict, key: jax.Array, seen: Any = None) -> Any:
        return self.group_state(context["group"][0])


def active(value) -> bool:
    """Whether an optional term with weight (or rate) `value` is computed: not for a Python 0 (skipped), always
    for a traced value (replicas of one program that differ in it, `RewardModel.traced`; a traced 0 then adds
    exactly nothing)."""
    if value is None:  # a data-dependent default the caller has not resolved: a bug, not a user's error
        raise PluralError("an automatic setting (None) reached the model unresolved: build it from "
                          "RewardModel.resolve_data(hp, data)")
    return not isinstance(value, (int, float)) or value != 0


# Input dropout's automatic default (`input_dropout=None`) tells small tables from large ones by their training
# pairs per embedding dimension. On the defaults suite (experiments/input_dropout.py, results/input_dropout) the
# real-text tables have 4.7 (persona statements: 1800 pairs, D = 384) and 5.9 (HH: 2264 pairs, D = 384) and
# validation prefers dropout 0.5 on them for every family but PAL-A, while the simulated populations have 28
# to 188 (sphere2: 1800 pairs, D = 64; gauss6: 4500, D = 24) and validation prefers 0 (0.25 for the plain BT
# and DPL, by < 0.001).
# Any threshold between 5.9 and 28 splits the suite the same way; 13 is their geometric mean.
SMALL_TABLE = 13.0


def small_table(data) -> bool:
    """Whether a training table (`PreferenceData`) has fewer than SMALL_TABLE pairs per embedding dimension,
    where a reward network on the embeddings can memorise its training responses."""
    return data.n_pairs < SMALL_TABLE * max(data.dim, 1)


def view_of(family, data):
    """The data as `family` reads it: with each response's attribute scores appended to its embedding
    (`PreferenceData.with_attributes`) for families that read attributes, else unchanged. Every path from
    a table to a model (fit, evaluate, score) goes through it."""
    return data.with_attributes() if getattr(family, "reads_attributes", False) else data


def row_states(model: RewardModel, seen: Any, user: jax.Array, group: jax.Array) -> Any:
    """Per-row user states: `seen[user]` for rows of seen users (user >= 0), `model.group_state(group)` otherwise.

    seen: states of the training users (U, ...); user, group: (N,) int indices (-1 = not a training user /
    unknown group). Returns states with leading axis N. Pure (jit-friendly)."""
    base = model.group_state(group)
    take = jax.tree.map(lambda s: s[jnp.maximum(user, 0)], seen)

    def pick(t, b):
        cond = (user >= 0).reshape(user.shape + (1,) * (t.ndim - 1))
        return jnp.where(cond, t, b)

    return jax.tree.map(pick, take, base)


def adapt_by_gradient(margin_fn, init_state, context: dict, steps: int = 100, lr: float = 0.1,
                      l2: float = 0.0, penalty=None):
    """Fit a user state by `steps` Adam steps on the context pairs' BT loss (jit-friendly, no Python loop).

    `margin_fn(state, prompt, chosen, rejected) -> (K,)` margins; `context` holds (K, ...) arrays and a
    (K,) `mask`; `l2` pulls the state towards `init_state` (a prior for few shots); `penalty(state)`, if
    given, is added to the loss (another prior, e.g. PAL's entropy of the mixture). Returns the state.
    """
    import optax

    tx = optax.adam(lr)

    def loss(state):
        m = margin_fn(state, context["prompt"], context["chosen"], context["rejected"])
        reg = sum(jnp.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(init_state)))
        return bt_nll(m, context["mask"]) + l2 * reg + (penalty(state) if penalty is not None else 0.0)

    def body(_, carry):
        state, opt = carry
        g = jax.grad(loss)(state)
        updates, opt = tx.update(g, opt, state)
        return optax.apply_updates(state, updates), opt

    state, _ = jax.lax.fori_loop(0, steps, body, (init_state, tx.init(init_state)))
    return state


def refuse_unread(hp, names, why: str) -> None:
    """Refuse any of the settings `names` that `hp` changes from its class's default, since the configuration
    at hand does not read them (no setting is accepted and then ignored): "--set model.<name>=<value>: <why>"."""
    default = type(hp)()
    for name in names:
        if getattr(hp, name) != getattr(default, name):
            raise PluralError(f"--set model.{name}={getattr(hp, name)}: {why}")


def seen_posterior_mean(margin_fn, seen, context: dict):
    """Empirical Bayes start for a new user's state: the seen users' states `seen` (a pytree with a leading
    user axis U) averaged with weights proportional to the likelihood of the context pairs under each, i.e.
    the posterior mean of the state when the prior is uniform over the seen users.

    `margin_fn(state, prompt, chosen, rejected) -> (S,)` margins under one state; `context` holds (S, ...)
    arrays and a (S,) `mask`. With no shots every seen user weighs the same (the seen users' mean state).
    Memory: U x S margins at once."""
    m = jax.vmap(lambda s: margin_fn(s, context["prompt"], context["chosen"], context["rejected"]))(seen)  # (U, S)
    post = jax.nn.softmax((jax.nn.log_sigmoid(m) * context["mask"]).sum(-1))  # (U,)
    return jax.tree.map(lambda x: jnp.tensordot(post, x, axes=1), seen)


def seen_mixture_start(margin_fn, seen: jax.Array, context: dict) -> jax.Array:
    """`seen_posterior_mean` for mixture weights: the seen users' weights `seen` (U, K) -> (K,), with
    `margin_fn(logits, prompt, chosen, rejected)` taking a mixture by its log-weights. Shared by the mixture
    families' `adapt` (PAL, LoRe)."""
    return seen_posterior_mean(lambda a, *pair: margin_fn(jnp.log(a + 1e-9), *pair), seen, context)


def user_directions(dd: dict) -> jax.Array:
    """Each training user's mean of e(y_w) - e(y_l) over their pairs, L2-normalised: (U, D).

    Under a reward linear in e(y) the expected difference points along the user's reward direction, so
    this is a crude, training-free estimate of who agrees with whom (used to initialise mixtures).
    """
    n_users = dd["user_count"].shape[0]
    total = jax.ops.segment_sum(dd["chosen"] - dd["rejected"], dd["user"], num_segments=n_users)
    return total / jnp.sqrt(jnp.sum(total ** 2, -1, keepdims=True) + 1e-12)


def drop_responses(chosen: jax.Array, rejected: jax.Array, rate, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Inverted dropout at `rate` on the response embeddings e(y_w), e(y_l) (any shape (..., D)), each entry
    dropped independently: training only, so that a reward cannot memorise single responses."""
    keep = 1.0 - rate
    k_c, k_r = jax.random.split(key)
    return (chosen * jax.random.bernoulli(k_c, keep, chosen.shape) / keep,
            rejected * jax.random.bernoulli(k_r, keep, rejected.shape) / keep)


def drop_batch(batch: dict, rate, key: jax.Array) -> dict:
    """A family's `input_dropout` on its training batch: `drop_responses` on a pair batch's `chosen` /
    `rejected` (leading dims any), or on a user batch's `context` and `target` pairs, each with a draw of
    its own; the batch unchanged where `rate` is inactive. `key` is the loss's key: the draws come from
    fold_in(key, 1), so the family's other draws from that key stay as they are."""
    if not active(rate):
        return batch

    def drop(part, k):
        if "context" in part:
            k_c, k_t = jax.random.split(k)
            return {**part, "context": drop(part["context"], k_c), "target": drop(part["target"], k_t)}
        chosen, rejected = drop_responses(part["chosen"], part["rejected"], rate, k)
        return {**part, "chosen": chosen, "rejected": rejected}

    return drop(batch, jax.random.fold_in(key, 1))


def bt_nll(margin: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean Bradley-Terry negative log-likelihood -log sigma(margin) over valid entries."""
    nll = -jax.nn.log_sigmoid(margin)
    if mask is None:
        return nll.mean()
    return (nll * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def masked_accuracy(margin: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    hit = (margin > 0).astype(jnp.float32)
    if mask is None:
        return hit.mean()
    return (hit * mask).sum() / jnp.maximum(mask.sum(), 1.0)


ACTIVATIONS = {"gelu": jax.nn.gelu, "relu": jax.nn.relu, "tanh": jnp.tanh, "silu": jax.nn.silu, "linear": lambda x: x}


class StackedMLP(nnx.Module):
    """`n` independent MLPs d_in -> hidden... -> d_out evaluated as one batched computation (each initialised
    like `MLP`, from its own draw): (..., d_in) -> (n, ..., d_out), or with `member=i` (an int or a traced
    index) member i only: (..., d_out)."""

    def __init__(self, n: int, d_in: int, hidden: tuple[int, ...], d_out: int, rngs: nnx.Rngs, activation: str = "gelu"):
        dims = (d_in, *hidden, d_out)
        init = nnx.initializers.lecun_normal(batch_axis=(0,))
        self.kernels = nnx.List([nnx.Param(init(rngs.params(), (n, a, b))) for a, b in zip(dims[:-1], dims[1:])])
        self.biases = nnx.List([nnx.Param(jnp.zeros((n, b))) for b in dims[1:]])
        self.activation = activation

    def __call__(self, x: jax.Array, member=None) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        last = len(self.kernels) - 1
        if member is not None:
            for i, (k, b) in enumerate(zip(self.kernels, self.biases)):
                x = x @ k[...][member] + b[...][member]
                x = x if i == last else act(x)
            return x
        for i, (k, b) in enumerate(zip(self.kernels, self.biases)):
            spec = "...a,nab->n...b" if i == 0 else "n...a,nab->n...b"
            x = jnp.einsum(spec, x, k[...])
            x = x + b[...].reshape(b.shape[0], *(1,) * (x.ndim - 2), b.shape[1])
            x = x if i == last else act(x)
        return x


class MLP(nnx.Module):
    """Dense layers d_in -> hidden... -> d_out with an activation between them (none after the last)."""

    def __init__(self, d_in: int, hidden: tuple[int, ...], d_out: int, rngs: nnx.Rngs, activation: str = "gelu"):
        dims = (d_in, *hidden, d_out)
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:])])
        self.activation = activation

    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        for layer in self.layers[:-1]:
            x = act(layer(x))
        return self.layers[-1](x)
