"""Bradley-Terry (BT): one shared reward for everybody, the baseline every pluralistic model must beat.

r(x, y) = MLP([e(x), e(y)]); loss -log sigma(r(x, y_w) - r(x, y_l)). With preferences drawn from a
mixture of K subgroups one BT model keeps an irreducible cross-entropy excess (MiCRo 2025, Thm 3.2).
It knows nothing of users: seen, unseen and adapted users all get the same reward (adapt = identity).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from plural.models.base import MLP, RewardModel, bt_nll, masked_accuracy


@dataclasses.dataclass(frozen=True)
class BTHparams:
    hidden: tuple[int, ...] = (256, 256)  # MLP widths
    activation: str = "gelu"


class BT(RewardModel):
    name = "bt"
    Hparams = BTHparams
    batch_kind = "pairs"

    def __init__(self, spec: dict, hp: BTHparams, rngs: nnx.Rngs):
        self.mlp = MLP(spec["prompt_dim"] + spec["dim"], tuple(hp.hidden), 1, rngs, hp.activation)

    def reward(self, prompt, response, state=None):
        """prompt (..., Dp), response (..., D) -> reward (...); `state` is ignored."""
        return self.mlp(jnp.concatenate([prompt, response], axis=-1))[..., 0]

    def loss(self, batch, key, step):
        m = self.margin(batch["prompt"], batch["chosen"], batch["rejected"], None)
        return bt_nll(m, batch["mask"]), {"accuracy": masked_accuracy(m, batch["mask"])}
