"""MaxMin-RLHF: EM over users for a mixture of reward models, and the egalitarian policy
(Chowdhury et al., ICML 2024, "MaxMin-RLHF: Alignment with Diverse Human Preferences").

Reward learning. K reward heads r_k(x, y) = MLP([e(x), e(y)])_k (a shared trunk with K outputs;
`hidden=()`: K linear models) and an assignment of every user to one head, by expectation-maximisation:

    E-step   q_u(k) proportional to exp( sum_{j in C_u} log sigma(r_k(x_j, y_w,j) - r_k(x_j, y_l,j)) )
             (hard: the arg-max head, the paper's; `model.assignment=soft`: q_u itself)
    M-step   minimise -mean_u sum_k q_u(k) mean_{t in T_u} log sigma(r_k(x_t, y_w,t) - r_k(x_t, y_l,t))

Each training step draws users with context pairs C_u (the E-step's evidence, up to `batch.context_max`
of the user's pairs, no gradient) and disjoint target pairs T_u (the M-step), so E and M alternate on
minibatches of users (stochastic EM). A user's state is its head weights q (K,), r(x, y | q) =
sum_k q_k r_k(x, y): seen users from all their training pairs, an unseen user from its K shots (the same
E-step), 0 shots the uniform mixture.

Egalitarian policy (`maxmin_policy`): given the heads' rewards R (G, n) of n candidate responses to a
prompt, the KL-regularised softmax policy pi over the candidates that maximises min_g E_pi[R_g] - beta
KL(pi || ref), found by mirror ascent on the simplex with the min's weights chosen by multiplicative
weights (a saddle point); `utilitarian_policy` maximises the share-weighted average instead
(closed form: softmax(log ref + R^T w / beta)).

Departures from the paper: the E-step sees a sample of each user's pairs per step rather than all of them
once per epoch; restarts of EM are the trainer's seeds (each seed is one EM run; pick by validation
likelihood) rather than restarts inside one fit; the policies act on a finite candidate set (the paper
fine-tunes an LLM policy with PPO against the min).

Defaults: `n_heads` 6 was selected on validation data of the defaults suite (experiments/mixtures.py,
results/mixtures: suite validation score 0.746 for 6 heads, 0.744 for 4 soft, 0.735 for 4, 0.712 for 2;
extra heads stay empty or split a group, which costs less than merging two); `hidden` (64,) as BT's and
hard assignment (the paper's) were not swept separately.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from plural.data.batching import UserBatches
from plural.errors import PluralError
from plural.models.base import MLP, RewardModel, masked_accuracy


@dataclasses.dataclass(frozen=True)
class MaxMinHparams:
    n_heads: int = 6  # K reward models. Suite (results/mixtures): 6 over 2 and 4 (and 4 soft)
    hidden: tuple[int, ...] = (64,)
    activation: Literal["gelu", "relu", "tanh", "silu"] = "gelu"
    assignment: Literal["hard", "soft"] = "hard"  # hard: the arg-max head (the paper's); soft: posterior weights


class MaxMin(RewardModel):
    name = "maxmin"
    summary = "EM over users for K reward heads (each user assigned to one); egalitarian max-min policy over candidates"
    reference = "Chowdhury et al., MaxMin-RLHF: Alignment with Diverse Human Preferences, ICML 2024"
    Hparams = MaxMinHparams
    batches = UserBatches(context_min=8, context_max=32, targets_per_user=16)
    train_defaults = {"steps": 3000}

    def __init__(self, spec: dict, hp: MaxMinHparams, rngs: nnx.Rngs):
        if hp.n_heads < 1:
            raise PluralError(f"--set model.n_heads={hp.n_heads}: must be >= 1")
        self.hp = hp
        self.mlp = MLP(spec["prompt_dim"] + spec["dim"], tuple(hp.hidden), hp.n_heads, rngs, hp.activation)

    def head_rewards(self, prompt, response):
        """(..., Dp), (..., D) -> (..., K)."""
        return self.mlp(jnp.concatenate([prompt, response], axis=-1))

    def head_loglik(self, prompt, chosen, rejected):
        """(..., K): log sigma(r_k(x, y_w) - r_k(x, y_l)) per pair and head."""
        return jax.nn.log_sigmoid(self.head_rewards(prompt, chosen) - self.head_rewards(prompt, rejected))

    def reward(self, prompt, response, state):
        return jnp.sum(state * self.head_rewards(prompt, response), -1)

    def assign(self, prompt, chosen, rejected, mask):
        """E-step from (n, ...) pairs with mask (n,): head weights (K,) (one-hot when hard; uniform with no pairs)."""
        total = (self.head_loglik(prompt, chosen, rejected) * mask[:, None]).sum(0)
        if self.hp.assignment == "hard":
            return jnp.where(mask.sum() > 0, jax.nn.one_hot(jnp.argmax(total), self.hp.n_heads),
                             jnp.full((self.hp.n_heads,), 1.0 / self.hp.n_heads))
        return jax.nn.softmax(total)

    def loss(self, batch, key, step):
        ctx, tgt = batch["context"], batch["target"]
        q = jax.lax.stop_gradient(jax.vmap(lambda c: self.assign(c["prompt"], c["chosen"], c["rejected"], c["mask"]))(ctx))
        ll = self.head_loglik(tgt["prompt"], tgt["chosen"], tgt["rejected"])  # (U, T, K)
        per_pair = -(q[:, None, :] * ll).sum(-1)  # (U, T)
        mask = tgt["mask"]
        nll = (per_pair * mask).sum() / jnp.maximum(mask.sum(), 1.0)
        m = self.margin(tgt["prompt"], tgt["chosen"], tgt["rejected"], jnp.broadcast_to(q[:, None, :], ll.shape))
        return nll, {"accuracy": masked_accuracy(m, mask), "nll": nll,
                     "heads_used": (q.sum(0) > 0.5).sum().astype(jnp.float32)}

    def seen_states(self, dd):
        rows, count = dd["user_rows"], dd["user_count"]
        mask = (jnp.arange(rows.shape[1])[None, :] < count[:, None]).astype(jnp.float32)
        return jax.vmap(lambda r, m: self.assign(dd["prompt"][r], dd["chosen"][r], dd["rejected"][r], m))(rows, mask)

    def population_state(self):
        return jnp.full((self.hp.n_heads,), 1.0 / self.hp.n_heads)

    def adapt(self, context, key):
        return self.assign(context["prompt"], context["chosen"], context["rejected"], context["mask"])


# -- policies over a finite candidate set -------------------------------------------------------------------

def utilitarian_policy(rewards: jax.Array, weights: jax.Array, beta: float, ref: jax.Array | None = None) -> jax.Array:
    """argmax_pi sum_g w_g E_pi[R_g] - beta KL(pi || ref) = softmax(log ref + w^T R / beta): (G, n) -> (n,)."""
    n = rewards.shape[-1]
    log_ref = jnp.log(ref) if ref is not None else jnp.full((n,), -jnp.log(n))
    return jax.nn.softmax(log_ref + weights @ rewards / beta)


def maxmin_policy(rewards: jax.Array, beta: float, ref: jax.Array | None = None, steps: int = 2000,
                  lr: float = 0.5) -> tuple[jax.Array, jax.Array]:
    """The egalitarian policy: argmax_pi min_g E_pi[R_g] - beta KL(pi || ref) over the simplex of n candidates.

    rewards (G, n). The objective is concave in pi and the min is a min over the group simplex, so the
    solution is the saddle point of sum_g lam_g E_pi[R_g] - beta KL; for fixed lam the best pi is the
    utilitarian policy of weights lam, and lam descends by multiplicative weights on E_pi[R_g] (mirror
    descent on the group simplex), averaged over iterations. Returns (pi (n,), lam (G,))."""
    G = rewards.shape[0]

    def body(carry, _):
        log_lam, lam_sum = carry
        lam = jax.nn.softmax(log_lam)
        pi = utilitarian_policy(rewards, lam, beta, ref)
        value = rewards @ pi  # (G,) each group's expected reward
        scale = jnp.maximum(jnp.abs(rewards).max(), 1e-6)
        return (log_lam - lr * value / scale, lam_sum + lam), None

    (_, lam_sum), _ = jax.lax.scan(body, (jnp.zeros(G), jnp.zeros(G)), None, length=steps)
    lam = lam_sum / steps
    return utilitarian_policy(rewards, lam, beta, ref), lam
