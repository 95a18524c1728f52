"""Gradient-based meta-learning of a reward model: MAML, first-order MAML, Meta-SGD and Reptile, with
fine-tuned BT as the reference that learns nothing about adapting.

A reward r_theta(x, y) = MLP([e(x), e(y)]) (a scalar). A user's labelled pairs C adapt it by S steps of
gradient descent on their Bradley-Terry loss, written as a `lax.scan` (jit-friendly, differentiable):

    phi_0 = theta[A],   phi_{s+1} = phi_s - alpha * grad_phi L_C(theta with A := phi_s),   s < S = `inner_steps`

where A (`adapt_params`) is every parameter ("all") or the last layer ("head", as ANIL, Raghu et al.,
ICLR 2020, which keeps MAML's accuracy at a fraction of the state), L_C = mean_j -log sigma(r(x_j, y_w,j)
- r(x_j, y_l,j)) over C, and alpha = `inner_lr` (a scalar), or with `learn_inner_lr` one learnable rate
per adapted parameter entry (Meta-SGD, Li et al., 2017). A user's state is phi_S (a flat dict of arrays).
With `inner_loss=sum` L_C is the sum over C instead of the mean, so a step moves a user's weights in
proportion to how many pairs they gave: one step is then, to first order, a MAP step under a Gaussian prior
of variance alpha around theta (Grant et al., Recasting gradient-based meta-learning as hierarchical Bayes, ICLR
2018), where the mean takes as long a step from 1 pair as from 32.
Departure: a new user's inner loop starts (`adapt_init=seen`, the default, chosen on validation in
experiments/meta_start.py) not at theta[A] but at the seen users' adapted weights phi_S(u) averaged with
weights proportional to the likelihood of the new user's pairs under each, prod_j sigma(margin_j under
phi_S(u)) (empirical Bayes over the seen users, `seen_posterior_mean`; `FewShot.adapt`): meta-training is
unchanged, and the seen users' states themselves start at theta. The papers' start is `adapt_init=population`.
Departure: each inner gradient is clipped to global norm `inner_clip` (10; it does not bind on unit-norm
embeddings, and keeps the inner loop finite on embeddings of large norm, where plain SGD steps diverge).

Meta-training draws users with a context set C_u and disjoint targets T_u (`UserBatches`):

- `maml` (Finn, Abbeel & Levine, ICML 2017): minimise mean_u L_{T_u}(phi_S(C_u)), the gradient flowing
  through the inner loop (second order); `first_order=true` stops it at the inner gradients (FOMAML).
- `reptile` (Nichol, Achiam & Schulman, 2018): adapt on C_u + T_u, its pairs dealt into `inner_batches`
  disjoint minibatches that the inner steps take in turn (as the paper's inner loop: successive steps on
  different pairs give the update its term for weights whose gradient on some pairs helps on the others),
  then move theta towards the adapted weights: the update direction mean_u (phi_S - theta[A]) is the gradient of
  1/2 mean_u ||theta[A] - stop_gradient(phi_S)||^2, handed to the optimiser (Adam) like any loss gradient.
  It adapts every weight: weights outside A would get no update at all (`adapt_params` is refused).
- `finetune`: plain BT on the pooled pairs (the same sampler), adapted at test time by the same S steps:
  what meta-training must beat with the same shots and steps.

0 shots (empty C, masked) leaves theta as it is: the population reward.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from plural.models.base import ACTIVATIONS, bt_nll, masked_accuracy


class MetaMLP(nnx.Module):
    """The reward MLP with its weights addressable by name ("w0", "b0", ..., last layer "w{L}", "b{L}"), so
    that a user's adapted weights can replace some of them functionally."""

    def __init__(self, d_in: int, hidden: tuple[int, ...], rngs: nnx.Rngs, activation: str, adapt_params: str,
                 inner_lr: float, learn_inner_lr: bool, inner_clip: float = 0.0, inner_loss: str = "mean"):
        dims = (d_in, *hidden, 1)
        init = nnx.initializers.lecun_normal()
        self.w = nnx.List([nnx.Param(init(rngs.params(), (a, b))) for a, b in zip(dims[:-1], dims[1:])])
        self.b = nnx.List([nnx.Param(jnp.zeros((b,))) for b in dims[1:]])
        self.activation = activation
        last = len(dims) - 2
        self.scope = tuple(f"{k}{i}" for i in range(last + 1) for k in "wb") if adapt_params == "all" else (f"w{last}", f"b{last}")
        self.scalar_lr, self.clip, self.inner_sum = inner_lr, inner_clip, inner_loss == "sum"
        # Meta-SGD: one learnable rate per adapted entry, starting at inner_lr
        self.lr = nnx.List([nnx.Param(jnp.full(self.weights()[k].shape, inner_lr)) for k in self.scope]) if learn_inner_lr else None

    def weights(self) -> dict:
        return {**{f"w{i}": w[...] for i, w in enumerate(self.w)}, **{f"b{i}": b[...] for i, b in enumerate(self.b)}}

    def theta(self) -> dict:
        """The adapted subset of the meta-learned weights (the population state)."""
        full = self.weights()
        return {k: full[k] for k in self.scope}

    def apply(self, fast: dict, x: jax.Array) -> jax.Array:
        """r (...,) of inputs x (..., d_in) with the adapted weights `fast`, whose leaves may carry the leading
        dims of x (one set of weights per row) or none."""
        p = {**self.weights(), **fast}
        act = ACTIVATIONS[self.activation]
        n = len(self.w)
        for i in range(n):
            w, b = p[f"w{i}"], p[f"b{i}"]
            x = jnp.einsum("...a,...ab->...b", x, w) + b
            x = act(x) if i < n - 1 else x
        return x[..., 0]

    def inner(self, fast: dict, pairs: dict, steps: int, first_order: bool, batches: int = 1) -> dict:
        """S gradient steps of the pairs' masked BT loss from `fast` (jit-friendly; differentiable unless
        first_order). pairs: prompt (n, Dp), chosen / rejected (n, D), mask (n,). `batches` > 1: the valid
        pairs are dealt round-robin into that many disjoint minibatches and step s uses minibatch s mod
        `batches` (Reptile's inner loop on minibatches)."""
        xw = jnp.concatenate([pairs["prompt"], pairs["chosen"]], -1)
        xl = jnp.concatenate([pairs["prompt"], pairs["rejected"]], -1)
        lr = dict(zip(self.scope, (v[...] for v in self.lr))) if self.lr is not None else None
        rank = jnp.cumsum(pairs["mask"]) - 1  # each valid pair's place among the valid ones

        def loss(f, mask):
            nll = bt_nll(self.apply(f, xw) - self.apply(f, xl), mask)  # the mean over the pairs
            return nll * jnp.maximum(mask.sum(), 1.0) if self.inner_sum else nll

        def step(f, s):
            mask = pairs["mask"] if batches == 1 else pairs["mask"] * (jnp.mod(rank, batches) == jnp.mod(s, batches))
            g = jax.grad(loss)(f, mask)
            if first_order:
                g = jax.lax.stop_gradient(g)
            if self.clip:  # global-norm clip: a factor of exactly 1 below the threshold (results unchanged there)
                norm = jnp.sqrt(jnp.maximum(sum(jnp.sum(v ** 2) for v in g.values()), 1e-24))  # no sqrt'(0): a
                g = {k: v * jnp.minimum(1.0, self.clip / norm) for k, v in g.items()}  # user without shots has g = 0
            return {k: f[k] - (lr[k] if lr is not None else self.scalar_lr) * g[k] for k in f}, None

        fast, _ = jax.lax.scan(step, fast, jnp.arange(steps))
        return fast

    def margin(self, fast: dict, pairs: dict) -> jax.Array:
        return (self.apply(fast, jnp.concatenate([pairs["prompt"], pairs["chosen"]], -1))
                - self.apply(fast, jnp.concatenate([pairs["prompt"], pairs["rejected"]], -1)))


def meta_loss(net: MetaMLP, variant: str, batch: dict, steps: int, first_order: bool, inner_batches: int = 1):
    """The meta-training objective of `variant` on a `UserBatches` batch: (loss, metrics)."""
    ctx, tgt = batch["context"], batch["target"]
    theta = net.theta()
    if variant == "finetune":  # pooled BT on every sampled pair: no inner loop in training
        both = {k: jnp.concatenate([ctx[k], tgt[k]], 1) for k in ("prompt", "chosen", "rejected", "mask")}
        m = net.margin(theta, both)
        nll = bt_nll(m, both["mask"])
        return nll, {"accuracy": masked_accuracy(m, both["mask"]), "nll": nll}
    if variant == "maml":
        adapted = jax.vmap(lambda c: net.inner(theta, c, steps, first_order))(
            {k: ctx[k] for k in ("prompt", "chosen", "rejected", "mask")})
        m = jax.vmap(net.margin)(adapted, tgt)
        nll = bt_nll(m, tgt["mask"])
        return nll, {"accuracy": masked_accuracy(m, tgt["mask"]), "nll": nll}
    # reptile: adapt on all of the user's sampled pairs, pull theta towards the adapted weights
    both = {k: jnp.concatenate([ctx[k], tgt[k]], 1) for k in ("prompt", "chosen", "rejected", "mask")}
    adapted = jax.lax.stop_gradient(jax.vmap(lambda c: net.inner(theta, c, steps, True, inner_batches))(both))
    pull = sum(0.5 * jnp.sum((theta[k][None] - adapted[k]) ** 2) / adapted[k].shape[0] for k in theta)
    # monitoring only: targets under weights adapted on the context alone
    fast = jax.lax.stop_gradient(jax.vmap(lambda c: net.inner(theta, c, steps, True))(
        {k: ctx[k] for k in ("prompt", "chosen", "rejected", "mask")}))
    m = jax.vmap(net.margin)(fast, tgt)
    return pull, {"accuracy": masked_accuracy(m, tgt["mask"]), "nll": bt_nll(m, tgt["mask"])}
