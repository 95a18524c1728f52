"""MiCRo: mixture modelling with context-aware routing (Shen et al., 2025, "MiCRo: Mixture Modeling and
Context-aware Routing for Personalized Preference Learning").

Stage 1, trained without user ids. K reward heads, linear and without bias, over shared features of
the response (of (x, y) with `heads_see_prompt`), and a router over the prompt:

    phi(y)    = act(MLP(e(y)))  or  act(MLP([e(x), e(y)]))   shared features (`hidden`; () = the embeddings)
    r_k(x, y) = v_k^T phi(x, y)                              k = 1..K (`n_heads`)
    pi(x)     = softmax(A e(x) + c)                          the router (`router_hidden` () = linear, as the
                                                             release; constant logits c without prompts)
    loss      = -log sum_k pi_k(x) sigma(r_k(x, y_w) - r_k(x, y_l))  +  alpha sum_k pi_k(x) log pi_k(x)

averaged over a batch of comparisons; the second term (alpha = `router_entropy`; the paper's 0.5) rewards a
spread-out router, which keeps it from collapsing onto one head (and, selected on validation, is off by
default: see Defaults). `model.router=false` keeps the logits constant: the static mixture
("MiCRo without the router"), the paper's ablation.

A user's (or a context's) reward mixes the heads with the router shifted by the user's state b (K,):

    r(x, y | b) = sum_k softmax(A e(x) + c + b)_k r_k(x, y)

Stage 2 (the paper's online routing; not in its release). From B labelled pairs j of a new user, Hedge
multiplies the weights of the heads by exp(-L_kj / tau) with L_kj = -log sigma(r_k(x_j, y_w,j) - r_k(x_j,
y_l,j)), starting from the router's (geometric) mean over the pairs' prompts:

    log w = log_softmax( mean_j log pi(x_j) - sum_j L_kj / tau )

and the router is distilled toward w by cross-entropy. The distillation is restricted to the additive
shift b, whose cross-entropy minimiser for a constant router is b = log w - mean_j log pi(x_j) (exact
for the static mixture; for a prompt-dependent router it moves every prompt's routing by the same
logits), so a user's state is K numbers and adapting is one jitted pass (`evaluate --shots B`). With
tau = 1, w is the Bayes posterior over "this user follows head k" under the mixture model; the paper's
tau (1e-3 .. 1e-4) makes it a hard arg-min after one pair. Seen users get the same Stage 2 from their
training pairs (the model never saw their ids); 0 shots = the router alone.

`hedge_stream` runs Stage 2 pair by pair for a user whose preferences arrive online and reports the
cumulative regret of the Hedge mixture against the best fixed head in hindsight.

Identifiability. Trained on anonymous single comparisons with a router that sees nothing of the labeller
(no prompt embeddings, or prompts unrelated to the group), the objective depends only on the mixture
probability of each pair, so the heads need not align with the groups: on the 3-group ideal-point
population (shares 0.6 / 0.3 / 0.1, no prompts) the 10% minority shares a head with another group. The
router, fed prompts that carry who is asking, is what makes the heads separable.

Context. When the prompt says who is asking (`context_signal` 1 in personas.ideal_point, anonymous rows,
0 shots), the router alone reads the group: with the defaults (heads that see the response only, no
router entropy) MiCRo closes 0.91 of the gap between the best user-blind model and the oracle, and each
group's pairs are explained by one head (purity 0.997; tests/test_context.py). Two settings undo this.
A router entropy bonus keeps the routing spread out, so that the majority takes two heads and the
minority shares one (3 heads, 1 seed: alpha 0.1 closes 0.70 of the gap, alpha 0.5 0.47). Heads that also see the prompt (the
paper's heads see the whole sequence) learn the prompt-conditional reward themselves and specialise
less (0.89 of the gap, purity 0.91).

Routing budget (experiments/micro_budget.py, results/micro_budget, 3 seeds). Unseen users of the 3-group
population with 64 prompts, test gap closed on the same rows after B = 0 / 5 / 20 / 50 labelled pairs:
context_signal 0: -0.11 / 0.13 / 0.29 / 0.30; 0.25: 0.33 / 0.75 / 0.79 / 0.79; 0.5: 0.78 / 0.89 /
0.88 / 0.89; 1: 0.90 / 0.93 / 0.93 / 0.93. BT, which reads the prompt too but no user: -0.21, 0.24,
0.71, 0.89; the static mixture (no router) reaches 0.51 at 50 pairs whatever the signal. So at signal 0
the static mixture adapts better than MiCRo (the router learns spurious routing from prompts that say
nothing, and its heads align less with the groups), and from 0.25 on MiCRo beats both.

Defaults, selected on validation data of the defaults suite plus two populations whose prompts carry the
asker's group (experiments/micro.py, results/micro: mean validation score over the 9 datasets):
`heads_see_prompt` false and `router_entropy` 0 score 0.731, alpha 0.1 0.725, alpha 0.5 0.721; heads
that see the prompt 0.718 to 0.722. 4 heads (over 8, experiments/mixtures.py); the linear router is the
paper's; `hidden` (64,) over (256, 256) on the defaults suite (experiments/widths.py, results/widths: 0.695
vs 0.689); `tau` 1 is set by hand.

Departures from the paper: frozen sentence embeddings stand in for the LLM backbone's last hidden state
(the heads stay bias-free linear maps of a shared representation), and by default the heads read the
response only (`heads_see_prompt=true` restores the paper's input); no router entropy by default (the
paper's 0.5 is one `--set` away); the router distillation is the
closed-form shift above rather than gradient steps on the router's weights.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from plural.config import Positive, PositiveInt, Rate
from plural.models.base import ACTIVATIONS, MLP, RewardModel, bt_nll, drop_batch, masked_accuracy, refuse_unread


@dataclasses.dataclass(frozen=True)
class MiCRoHparams:
    n_heads: PositiveInt = 4  # K reward heads
    input_dropout: Rate | None = None  # dropout on e(y_w), e(y_l) while training; None: `auto_dropout` by table size
    # (RewardModel.resolve_data). Suite validation (results/input_dropout) at 0 / 0.25 / 0.5: small real-text
    # tables 0.607 / 0.613 / 0.628, simulated populations 0.730 / 0.714 / 0.705
    hidden: tuple[PositiveInt, ...] = (64,)  # shared feature MLP widths; () = heads straight on [e(x), e(y)]
    activation: Literal["gelu", "relu", "tanh", "silu", "linear"] = "gelu"
    router: bool = True  # False: constant mixture logits (the static mixture ablation)
    router_hidden: tuple[PositiveInt, ...] = ()  # () = a linear router (the release); widths of an MLP router otherwise
    router_entropy: float = 0.0  # alpha on sum_k pi_k log pi_k (the paper's 0.5); 0 selected (experiments/micro.py)
    tau: Positive = 1.0  # Hedge temperature (1 = Bayes posterior over heads)
    heads_see_prompt: bool = False  # False (selected): phi(y) only, so that only the router uses the prompt


class MiCRo(RewardModel):
    name = "micro"
    summary = "K bias-free reward heads mixed by a prompt router, trained without user ids; Hedge routing from K shots"
    reference = ("Shen et al., MiCRo: Mixture Modeling and Context-aware Routing for Personalized Preference "
                 "Learning, arXiv 2505.24846, 2025")
    Hparams = MiCRoHparams
    auto_dropout = (0.0, 0.5)  # input_dropout=None: (rate, small-table rate), see Hparams
    traced = ("router_entropy", "tau", "input_dropout")
    train_defaults = {"steps": 3000}

    @classmethod
    def check_settings(cls, hp: MiCRoHparams, batches) -> None:
        """The router's widths are read only when there is a router."""
        if not hp.router:
            refuse_unread(hp, ("router_hidden",), "applies with model.router=true (the prompt router), not false")

    def __init__(self, spec: dict, hp: MiCRoHparams, rngs: nnx.Rngs):
        self.hp = hp
        d_in = (spec["prompt_dim"] if hp.heads_see_prompt else 0) + spec["dim"]
        if hp.hidden:
            self.features = MLP(d_in, tuple(hp.hidden[:-1]), hp.hidden[-1], rngs, hp.activation)
            d_feat = hp.hidden[-1]
        else:
            self.features, d_feat = None, d_in
        self.heads = nnx.Linear(d_feat, hp.n_heads, use_bias=False, rngs=rngs)
        self.logits = nnx.Param(jnp.zeros((hp.n_heads,)))  # c: the router's constant part
        use_router = hp.router and spec["prompt_dim"] > 0
        self.router = MLP(spec["prompt_dim"], tuple(hp.router_hidden), hp.n_heads, rngs, hp.activation) if use_router else None

    # -- the model ------------------------------------------------------------------------------------------
    def head_rewards(self, prompt, response):
        """(..., Dp), (..., D) -> (..., K): every head's reward."""
        x = jnp.concatenate([prompt, response], axis=-1) if self.hp.heads_see_prompt else response
        if self.features is not None:
            x = ACTIVATIONS[self.hp.activation](self.features(x))
        return self.heads(x)

    def route(self, prompt):
        """(..., Dp) -> (..., K) router logits (before the user's shift)."""
        base = jnp.broadcast_to(self.logits[...], (*prompt.shape[:-1], self.hp.n_heads))
        return base if self.router is None else base + self.router(prompt)

    def reward(self, prompt, response, state):
        """r(x, y | b) = sum_k softmax(route(x) + b)_k r_k(x, y); state b (..., K)."""
        weights = jax.nn.softmax(self.route(prompt) + state, -1)
        return jnp.sum(weights * self.head_rewards(prompt, response), -1)

    def head_margins(self, prompt, chosen, rejected):
        return self.head_rewards(prompt, chosen) - self.head_rewards(prompt, rejected)

    def loss(self, batch, key, step):
        batch = drop_batch(batch, self.hp.input_dropout, key)
        log_pi = jax.nn.log_softmax(self.route(batch["prompt"]), -1)  # (B, K)
        m_k = self.head_margins(batch["prompt"], batch["chosen"], batch["rejected"])  # (B, K)
        log_p = jax.nn.logsumexp(log_pi + jax.nn.log_sigmoid(m_k), -1)  # log sum_k pi_k sigma(m_k)
        mask = batch["mask"]
        nll = -(log_p * mask).sum() / jnp.maximum(mask.sum(), 1.0)
        neg_entropy = ((jnp.exp(log_pi) * log_pi).sum(-1) * mask).sum() / jnp.maximum(mask.sum(), 1.0)
        mixture_margin = log_p - jnp.log1p(-jnp.exp(jnp.minimum(log_p, -1e-7)))  # logit of the mixture probability
        return nll + self.hp.router_entropy * neg_entropy, {
            "accuracy": masked_accuracy(mixture_margin, mask), "nll": nll,
            "router_entropy": -neg_entropy, "bt_nll_of_mix": bt_nll(mixture_margin, mask)}

    # -- Stage 2: Hedge over the heads, distilled into a router shift ------------------------------------------
    def hedge_shift(self, prompt, chosen, rejected, mask):
        """(n, ...) labelled pairs with mask (n,) -> the user's router shift b (K,) (module docstring)."""
        log_pi = jax.nn.log_softmax(self.route(prompt), -1)  # (n, K)
        losses = -jax.nn.log_sigmoid(self.head_margins(prompt, chosen, rejected))  # (n, K)
        n = jnp.maximum(mask.sum(), 1.0)
        mean_log_pi = (log_pi * mask[:, None]).sum(0) / n
        log_w = jax.nn.log_softmax(mean_log_pi - (losses * mask[:, None]).sum(0) / self.hp.tau)
        return log_w - mean_log_pi

    def seen_states(self, dd):
        rows, count = dd["user_rows"], dd["user_count"]
        mask = (jnp.arange(rows.shape[1])[None, :] < count[:, None]).astype(jnp.float32)

        def one(r, m):
            return self.hedge_shift(dd["prompt"][r], dd["chosen"][r], dd["rejected"][r], m)

        return jax.vmap(one)(rows, mask)

    def population_state(self):
        return jnp.zeros((self.hp.n_heads,))

    def adapt(self, context, key, seen=None):
        return self.hedge_shift(context["prompt"], context["chosen"], context["rejected"], context["mask"])


def hedge_stream(model: MiCRo, prompt, chosen, rejected) -> dict:
    """Stage 2 online: one user's pairs (n, ...) in arrival order, weights updated after each pair.

    Returns {"weights": (n + 1, K) the Hedge weights held before each pair (before the first: the router at
    its prompt; then as in `hedge_shift` over the pairs seen so far) and after the last, "mixture_loss": (n,)
    -log sum_k w_k sigma(m_k) of each pair under the weights held before it, "head_loss": (n, K) each head's
    -log sigma(m_k), "regret": (n,) cumulative mixture loss minus that of the best fixed head in hindsight
    so far (nats)}. Jit-friendly (a `lax.scan`)."""
    log_pi = jax.nn.log_softmax(model.route(prompt), -1)  # (n, K)
    log_sig = jax.nn.log_sigmoid(model.head_margins(prompt, chosen, rejected))  # (n, K)

    def step(carry, inp):
        sum_log_pi, sum_log_lik, t = carry  # over the pairs seen so far
        lp, ll = inp
        prior = jnp.where(t > 0, sum_log_pi / jnp.maximum(t, 1.0), lp)  # before any pair: this prompt's routing
        log_w = jax.nn.log_softmax(prior + sum_log_lik / model.hp.tau)
        mix_loss = -jax.nn.logsumexp(log_w + ll)
        return (sum_log_pi + lp, sum_log_lik + ll, t + 1.0), (jnp.exp(log_w), mix_loss)

    K = log_pi.shape[-1]
    (s_lp, s_ll, t), (weights, mix_loss) = jax.lax.scan(step, (jnp.zeros(K), jnp.zeros(K), 0.0), (log_pi, log_sig))
    last = jnp.exp(jax.nn.log_softmax(s_lp / t + s_ll / model.hp.tau))
    head_loss = -log_sig
    regret = jnp.cumsum(mix_loss) - jnp.min(jnp.cumsum(head_loss, 0), -1)
    return {"weights": jnp.concatenate([weights, last[None]], 0), "mixture_loss": mix_loss, "head_loss": head_loss,
            "regret": regret}
