"""LoRe: low-rank reward modelling (Bose et al., 2025, "LoRe: Personalizing LLMs via Low-Rank Reward
Modeling").

Every user's reward is a mixture of B shared basis rewards on frozen features:

    r_u(x, y) = phi(x, y)^T V w_u,   phi(x, y) = [e(x), e(y)],   V (D_phi x B) shared,   w_u = softmax(l_u)

(the prompt half of phi cancels in a margin; it is kept so that the features are the pair's, as the
paper's are a frozen reward model's embedding of (x, y)). V and the seen users' logits l_u are fitted
jointly by the Bradley-Terry loss on their pairs. A new user fits only w, on the simplex, from its K
pairs (`adapt_steps` Adam steps at `adapt_lr`, pulled with `adapt_l2` towards a start); 0 shots is the
seen users' mean w. B = 1 is a linear BT reward. The start (`adapt_init="seen"`, a departure from the
paper, which fits w from the population's weights) is empirical Bayes over the seen users, as PAL's: their
weights averaged in proportion to the likelihood of the K pairs under each, so that a few pairs place a
new user beside the seen users who answer alike rather than anywhere on the simplex.

Pruning: a basis column that no seen user weighs at `prune_threshold` or more is pruned, i.e. masked out
of every user's mixture (the weights are renormalised over the kept columns), so that B is an upper
bound the data trims (`basis_used` in the training metrics counts the kept columns).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from plural.models.base import adapt_by_gradient, bt_nll, masked_accuracy, seen_mixture_start


class LoReNet(nnx.Module):
    def __init__(self, d_phi: int, n_users: int, rank: int, rngs: nnx.Rngs, prune_threshold: float,
                 adapt_steps: int, adapt_lr: float, adapt_l2: float, adapt_init: str = "seen"):
        self.V = nnx.Param(jax.random.normal(rngs.params(), (d_phi, rank)) / jnp.sqrt(d_phi))
        self.logits = nnx.Param(0.01 * jax.random.normal(rngs.params(), (n_users, rank)))
        self.prune_threshold = prune_threshold
        self.adapt_steps, self.adapt_lr, self.adapt_l2, self.adapt_init = adapt_steps, adapt_lr, adapt_l2, adapt_init

    def kept(self) -> jax.Array:
        """(B,) bool: the basis columns some seen user weighs at prune_threshold or more."""
        most = jax.nn.softmax(self.logits[...], -1).max(0)
        return (most >= self.prune_threshold).at[jnp.argmax(most)].set(True)  # never prune every column

    def weights(self, logits: jax.Array) -> jax.Array:
        """softmax over the kept columns only (pruned ones get weight 0): (..., B) -> (..., B)."""
        return jax.nn.softmax(jnp.where(self.kept(), logits, -jnp.inf), -1)

    def basis_rewards(self, prompt, response):
        """(..., B): every basis reward phi(x, y)^T V."""
        return jnp.concatenate([prompt, response], -1) @ self.V[...]

    def reward(self, prompt, response, w):
        return jnp.sum(self.basis_rewards(prompt, response) * w, -1)

    def loss(self, batch):
        """BT loss of every sampled pair under its user's mixture (a `UserBatches` batch)."""
        pairs = {k: jnp.concatenate([batch["context"][k], batch["target"][k]], 1)
                 for k in ("prompt", "chosen", "rejected", "mask")}
        w = jax.nn.softmax(self.logits[...][batch["user"]], -1)[:, None, :]  # unpruned while fitting
        m = self.reward(pairs["prompt"], pairs["chosen"], w) - self.reward(pairs["prompt"], pairs["rejected"], w)
        nll = bt_nll(m, pairs["mask"])
        return nll, {"accuracy": masked_accuracy(m, pairs["mask"]), "nll": nll,
                     "basis_used": self.kept().sum().astype(jnp.float32)}

    def seen_states(self):
        return self.weights(self.logits[...])

    def population_state(self):
        return self.seen_states().mean(0)

    def adapt(self, context):
        feats = {k: context[k] for k in ("prompt", "chosen", "rejected", "mask")}
        V = jax.lax.stop_gradient(self.V[...])

        def margin_fn(logits, prompt, chosen, rejected):
            w = self.weights(logits)
            return (jnp.concatenate([prompt, chosen], -1) - jnp.concatenate([prompt, rejected], -1)) @ V @ w

        start = (seen_mixture_start(margin_fn, jax.lax.stop_gradient(self.seen_states()), feats)
                 if self.adapt_init == "seen" else self.population_state())
        prior = jnp.log(jnp.maximum(start, 1e-9))
        logits = adapt_by_gradient(margin_fn, prior, feats, self.adapt_steps, self.adapt_lr, self.adapt_l2)
        return self.weights(logits)
