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
E-step), 0 shots the mixture weighted by the heads' shares of users (tracked during training like the
restarts' NLL, below).

Restarts. EM finds local optima. `model.restarts=R` runs R EM fits from independent initialisations in
one compiled program (R stacked trunks, `StackedMLP`, trained by the one summed loss, whose terms share no
parameter), and keeps the one with the lowest running M-step NLL: each restart's NLL on the step's
target pairs is tracked by a parameter `restart_nll` (R,) fitted to it by a squared error whose gradient
reaches nothing else (and `head_share` (R, K) the share of each batch's users each head takes), so the
choice travels with the parameters through early stopping, checkpoints and
evaluation. The number of heads is chosen per dataset by validation likelihood in experiments/maxmin.py
(`select_metric: "log_loss"`, results/maxmin; K in 1, 2, 3, 4, 6, 8 x restarts 1, 4): it picks the true
number of groups on gauss3 (3), clust4 (4), gauss6 (6) and hh (2 objectives), and 8 heads on sphere3 (3
groups), statements (4) and the 2-group 10:1 population, 6 on sphere2 (2): extra heads that split a
group cost the validation likelihood almost nothing, so likelihood alone over-counts groups there. 4
restarts were selected on 5 of the 8 datasets, with validation log-losses within 0.02 of 1 restart.

Egalitarian policy (`maxmin_policy`): given the heads' rewards R (G, n) of n candidate responses to a
prompt, the KL-regularised softmax policy pi over the candidates that maximises min_g E_pi[R_g] - beta
KL(pi || ref), found by mirror ascent on the simplex with the min's weights chosen by multiplicative
weights (a saddle point); `utilitarian_policy` maximises the share-weighted average instead
(closed form: softmax(log ref + R^T w / beta)). `analysis.policy` builds both from a model's heads
over candidate sets and reports each true group's expected reward and win rate under them: on a 2-group
10:1 population (2 heads, beta 0.5, 40 prompts x 8 candidates) the minority's win rate against the
uniform policy rises from 0.50 (utilitarian) to 0.62 (egalitarian) and the majority's falls from 0.88 to
0.79 (tests/test_maxmin.py).

Departures from the paper: the E-step sees a sample of each user's pairs per step rather than all of them
once per epoch; the restart is chosen by the running minibatch NLL rather than a final full pass; the policies act on a finite candidate set (the paper
fine-tunes an LLM policy with PPO against the min).

Defaults: `n_heads` 6 was selected on validation data of the defaults suite (experiments/mixtures.py,
results/mixtures: suite validation score 0.746 for 6 heads, 0.744 for 4 soft, 0.735 for 4, 0.712 for 2;
extra heads stay empty or split a group, which costs less than merging two); `hidden` (256, 256) over (64,)
on the same suite (experiments/widths.py, results/widths: 0.752 vs 0.741; the wider trunk learns the reward
term every user shares on items of varying norm, `gauss3` 0.815 vs 0.757). Hard assignment (the paper's)
was not swept separately. `restarts` 1: see experiments/maxmin.py.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from plural.data.batching import UserBatches
from plural.config import PositiveInt, Rate
from plural.models.base import RewardModel, StackedMLP, drop_batch, masked_accuracy


@dataclasses.dataclass(frozen=True)
class MaxMinHparams:
    n_heads: PositiveInt = 6  # K reward models. Suite (results/mixtures): 6 over 2 and 4 (and 4 soft)
    hidden: tuple[PositiveInt, ...] = (256, 256)  # shared trunk. Suite (results/widths): over (64,)
    activation: Literal["gelu", "relu", "tanh", "silu", "linear"] = "gelu"
    assignment: Literal["hard", "soft"] = "hard"  # hard: the arg-max head (the paper's); soft: posterior weights
    restarts: PositiveInt = 1  # R EM runs in one program; the one with the lowest running NLL is the model
    input_dropout: Rate | None = None  # dropout on e(y_w), e(y_l) of the context and target pairs while training;
    # None: `auto_dropout` by table size (RewardModel.resolve_data). Suite validation (results/input_dropout) at
    # 0 / 0.25 / 0.5: small real-text tables 0.631 / 0.642 / 0.673, simulated populations 0.800 / 0.797 / 0.782


class MaxMin(RewardModel):
    name = "maxmin"
    summary = "EM over users for K reward heads (each user assigned to one); egalitarian max-min policy over candidates"
    reference = "Chowdhury et al., MaxMin-RLHF: Alignment with Diverse Human Preferences, ICML 2024"
    Hparams = MaxMinHparams
    auto_dropout = (0.0, 0.5)  # input_dropout=None: (rate, small-table rate), see Hparams
    traced = ("input_dropout",)
    batches = UserBatches(context_min=8, context_max=32, targets_per_user=16)
    train_defaults = {"steps": 3000}

    def __init__(self, spec: dict, hp: MaxMinHparams, rngs: nnx.Rngs):
        self.hp = hp
        self.mlp = StackedMLP(hp.restarts, spec["prompt_dim"] + spec["dim"], tuple(hp.hidden), hp.n_heads, rngs,
                              hp.activation)
        self.restart_nll = nnx.Param(jnp.full((hp.restarts,), jnp.log(2.0)))  # running M-step NLL per restart
        self.head_share = nnx.Param(jnp.full((hp.restarts, hp.n_heads), 1.0 / hp.n_heads))  # running share of users per head

    def best(self):
        """The index of the restart whose running training NLL is lowest (the model's reward)."""
        return jnp.argmin(self.restart_nll[...])

    def head_rewards(self, prompt, response, restart=None):
        """(..., Dp), (..., D) -> (..., K) for one restart (default: the best); restart="all": (R, ..., K)."""
        x = jnp.concatenate([prompt, response], axis=-1)
        return self.mlp(x) if isinstance(restart, str) else self.mlp(x, member=self.best() if restart is None else restart)

    def head_loglik(self, prompt, chosen, rejected, restart=None):
        """log sigma(r_k(x, y_w) - r_k(x, y_l)) per pair and head: (..., K), or (R, ..., K) for restart="all"."""
        return jax.nn.log_sigmoid(self.head_rewards(prompt, chosen, restart) - self.head_rewards(prompt, rejected, restart))

    def reward(self, prompt, response, state):
        return jnp.sum(state * self.head_rewards(prompt, response), -1)

    def _assign(self, loglik, mask):
        """E-step from per-pair log-likelihoods (n, K) with mask (n,): head weights (K,)."""
        total = (loglik * mask[:, None]).sum(0)
        if self.hp.assignment == "hard":
            return jnp.where(mask.sum() > 0, jax.nn.one_hot(jnp.argmax(total), self.hp.n_heads),
                             jnp.full((self.hp.n_heads,), 1.0 / self.hp.n_heads))
        return jax.nn.softmax(total)

    def assign(self, prompt, chosen, rejected, mask):
        """E-step of the best restart from (n, ...) pairs with mask (n,): head weights (K,) (one-hot when hard;
        uniform with no pairs)."""
        return self._assign(self.head_loglik(prompt, chosen, rejected), mask)

    def loss(self, batch, key, step):
        batch = drop_batch(batch, self.hp.input_dropout, key)
        ctx, tgt = batch["context"], batch["target"]
        ll_c = self.head_loglik(ctx["prompt"], ctx["chosen"], ctx["rejected"], "all")  # (R, U, C, K)
        q = jax.lax.stop_gradient(jax.vmap(jax.vmap(self._assign, in_axes=(0, 0)), in_axes=(0, None))(ll_c, ctx["mask"]))
        ll = self.head_loglik(tgt["prompt"], tgt["chosen"], tgt["rejected"], "all")  # (R, U, T, K)
        per_pair = -(q[:, :, None, :] * ll).sum(-1)  # (R, U, T)
        mask = tgt["mask"]
        nll_r = (per_pair * mask).sum((1, 2)) / jnp.maximum(mask.sum(), 1.0)  # (R,) each restart's M-step NLL
        # restart_nll follows each restart's NLL (a squared error whose gradient reaches nothing else)
        track = 0.01 * (jnp.sum((self.restart_nll[...] - jax.lax.stop_gradient(nll_r)) ** 2)
                        + jnp.sum((self.head_share[...] - q.mean(1)) ** 2))
        b = self.best()
        m = jnp.sum(q[b][:, None, :] * (self.head_rewards(tgt["prompt"], tgt["chosen"], b)
                                         - self.head_rewards(tgt["prompt"], tgt["rejected"], b)), -1)
        return nll_r.sum() + track, {"accuracy": masked_accuracy(m, mask), "nll": nll_r[b],
                                     "heads_used": (q[b].sum(0) > 0.5).sum().astype(jnp.float32),
                                     "restart_spread": nll_r.max() - nll_r.min()}

    def seen_states(self, dd):
        rows, count = dd["user_rows"], dd["user_count"]
        mask = (jnp.arange(rows.shape[1])[None, :] < count[:, None]).astype(jnp.float32)
        return jax.vmap(lambda r, m: self.assign(dd["prompt"][r], dd["chosen"][r], dd["rejected"][r], m))(rows, mask)

    def population_state(self):
        """The share-weighted mixture of the best restart's heads (the utilitarian reward of a new user)."""
        share = jnp.maximum(self.head_share[...][self.best()], 0.0)
        return share / jnp.maximum(share.sum(), 1e-6)

    def adapt(self, context, key, seen=None):
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
