"""The model protocol every family implements, and helpers they share.

A family is one `RewardModel` subclass in one file, registered by name in `plural.models`. It provides:

- `Hparams`: a frozen dataclass of its hyper-parameters (`--set model.<name>=...`).
- `__init__(spec, hp, rngs)`: build the parameters eagerly; `spec` is `PreferenceData.spec()`
  (dim, prompt_dim, n_users, attr_names).
- `batch_kind`: "pairs" (independent comparisons) or "users" (per-user context + target sets); the
  trainer draws batches of that kind (see `plural.data.batching`).
- `loss(batch, key, step) -> (scalar, {name: scalar})`: the training objective on one batch.
- `reward(prompt, response, state) -> (...)`: the scalar reward of responses for users described by
  `state` (a pytree whose leaves carry the same leading dims as `prompt`).
A user state is an array or a flat dict of arrays (it is stored in an .npz file).
- `seen_states(dd) -> state (U, ...)`: what the model learned of each training user, from the
  device data of the training table (`plural.data.device_data`).
- `population_state() -> state`: the user-agnostic prediction (`--shots 0` for unseen users).
- `adapt(context, key) -> state`: a new user's state from K labelled pairs `context` (dict of (K, ...)
  arrays with a (K,) `mask`), without touching the shared parameters. BT's adapt is the identity.

Everything runs under `jax.jit` as a pure function of `nnx.split` state; no Python side effects.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass(frozen=True)
class NoHparams:
    pass


class RewardModel(nnx.Module):
    """Base class of a model family; see the module docstring for the protocol."""

    name: ClassVar[str] = ""
    Hparams: ClassVar[type] = NoHparams
    batch_kind: ClassVar[str] = "pairs"

    def loss(self, batch: dict, key: jax.Array, step: jax.Array) -> tuple[jax.Array, dict]:
        raise NotImplementedError  # abstract: each family defines its objective

    def reward(self, prompt: jax.Array, response: jax.Array, state: Any) -> jax.Array:
        raise NotImplementedError  # abstract

    def margin(self, prompt: jax.Array, chosen: jax.Array, rejected: jax.Array, state: Any) -> jax.Array:
        """r(x, y_w) - r(x, y_l) per pair; > 0 means the model agrees with the label."""
        return self.reward(prompt, chosen, state) - self.reward(prompt, rejected, state)

    def seen_states(self, dd: dict) -> Any:
        return jnp.zeros((dd["user_count"].shape[0], 0))

    def population_state(self) -> Any:
        return jnp.zeros((0,))

    def adapt(self, context: dict, key: jax.Array) -> Any:
        return self.population_state()


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


ACTIVATIONS = {"gelu": jax.nn.gelu, "relu": jax.nn.relu, "tanh": jnp.tanh, "silu": jax.nn.silu}


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
