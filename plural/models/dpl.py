"""DPL: distributional preference learning (Siththaranjan, Laidlaw & Hadfield-Menell, ICLR 2024,
"Distributional Preference Learning: Understanding and Accounting for Hidden Context in RLHF").

Comparisons come from labellers who differ in a way the data does not show (hidden context). A single
BT reward then aggregates them by a Borda count; DPL instead gives every response a distribution of
rewards, whose spread says how contested the response is. Trained on anonymous comparisons (user ids
are not read), one shared MLP over [e(x), e(y)] gives, per response:

- `variant="mean_var"`: mu(x, y) and sigma(x, y) = softplus(s(x, y)) + `min_sigma`;
      P(y_w > y_l) = Phi((mu_w - mu_l) / sqrt(sigma_w^2 + sigma_l^2)),  loss -log P;
- `variant="categorical"`: a distribution p(x, y) over N = `n_atoms` atoms evenly spaced on [0, 1];
      P(y_w > y_l) = sum_ij p_w(i) p_l(j) ([i > j] + [i = j] / 2),
      loss -log P - `entropy_bonus` x mean entropy of p_w and p_l (the paper's 0.1).

The reward a policy would optimise is the distribution's mean, or with `model.risk_quantile=q` in (0, 1)
its lower q-quantile (risk-averse: a response many labellers dislike scores low even if others love it):
mu + Phi^-1(q) sigma, or the smallest atom whose cumulative probability reaches q. `spread(prompt,
response)` is the disagreement DPL predicts: sigma, or the categorical distribution's standard deviation.

DPL knows no users: every user gets the same reward (states are empty, adaptation is the identity).

Defaults: `variant` mean_var over categorical on validation data of the defaults suite
(experiments/mixtures.py, results/mixtures: 0.671 vs 0.668); `hidden` (64,) over (256, 256) on the same
suite (experiments/widths.py, results/widths: 0.671 vs 0.666); the paper's entropy bonus (0.1) and atom
count (10) were not swept.

Predicted disagreement. `pair_spread` = sqrt(s_w^2 + s_l^2), the standard deviation of the margin between
independent draws for the two responses (`plural evaluate` writes it as the `spread` column). Its truth is
the between-group standard deviation of the pair's margin, which the simulators record per row
(`disagreement`). On the hidden-context population (personas.hidden_context: 2 groups with opposite
stances on 30% of responses and one consensus elsewhere, the paper's synthetic setting) the mean-variance
model's spread ranks test pairs like the truth (Spearman 0.77 at seed 0, 0.81 at seed 1; 0.48 with 3 groups
0.6 / 0.3 / 0.1 whose middle group is neutral), where BT's -|margin| scores 0.05 (tests/test_hidden_context.py).
Known shortfalls: (1) the categorical variant's spread does not (0.05, whatever the entropy bonus): with
atoms on [0, 1] every response needs a wide distribution to express the labels' Bradley-Terry noise, and
the standard deviation cannot tell that width from a split between groups. (2) Where groups disagree about
every response by degrees, as on the ideal-point populations, sigma does not track the spread (Spearman
about 0 per pair; 0.5 with clustered items), and cannot fully: there the between-group variance of a
margin r(a) - r(b) has a cross term in (a, b), so no per-response sigma_a^2 + sigma_b^2 matches it (the
true per-response spreads themselves reach 0.63). The mean difference still ranks pairs like the
share-weighted group margin (Spearman 0.97; tests/test_dpl.py).

Departure from the paper: its reward models are LLMs fine-tuned with a mean / sigma (or N-logit) head;
here the heads sit on an MLP over frozen sentence embeddings, as every family in this library does.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal
import math

import jax
import jax.numpy as jnp
from flax import nnx

from plural.config import NonNegative, Positive, PositiveInt, Range, Rate
from plural.models.base import MLP, RewardModel, active, drop_batch, masked_accuracy, refuse_unread


@dataclasses.dataclass(frozen=True)
class DPLHparams:
    variant: Literal["mean_var", "categorical"] = "mean_var"
    input_dropout: Rate | None = None  # dropout on e(y_w), e(y_l) while training; None: `auto_dropout` by table size
    # (RewardModel.resolve_data). Suite validation (results/input_dropout) at 0 / 0.25 / 0.5: small real-text
    # tables 0.592 / 0.612 / 0.624, simulated populations 0.7019 / 0.7027 / 0.6981
    hidden: tuple[PositiveInt, ...] = (64,)
    activation: Literal["gelu", "relu", "tanh", "silu", "linear"] = "gelu"
    n_atoms: Annotated[int, Range(ge=2)] = 10  # categorical: reward atoms on [0, 1]
    entropy_bonus: NonNegative = 0.1  # categorical: weight of the atoms' entropy
    min_sigma: Positive = 1e-3  # mean_var: floor on sigma (keeps the probit finite)
    risk_quantile: Rate = 0.0  # 0: the reward is the mean; q in (0, 1): the lower q-quantile


def _probit_inverse(q: float) -> float:
    """Phi^-1(q) for q in (0, 1) (bisection on the normal CDF; runs once per model, not under jit)."""
    lo, hi = -12.0, 12.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.5 * math.erfc(-mid / math.sqrt(2)) < q else (lo, mid)
    return (lo + hi) / 2


class DPL(RewardModel):
    name = "dpl"
    summary = "a distribution of rewards per response (mean-variance or categorical) from anonymous comparisons"
    reference = ("Siththaranjan, Laidlaw & Hadfield-Menell, Distributional Preference Learning: Understanding "
                 "and Accounting for Hidden Context in RLHF, ICLR 2024")
    demo = {"dpl": [], "dpl (categorical)": ["model.variant=categorical"]}
    Hparams = DPLHparams
    auto_dropout = (0.25, 0.5)  # input_dropout=None: (rate, small-table rate), see Hparams
    traced = ("entropy_bonus", "min_sigma", "input_dropout")
    train_defaults = {"steps": 3000}

    @classmethod
    def check_settings(cls, hp: DPLHparams, batches) -> None:
        """Each variant's own settings: the atoms' with `categorical`, sigma's floor with `mean_var`."""
        if hp.variant == "mean_var":
            refuse_unread(hp, ("n_atoms", "entropy_bonus"), "applies to model.variant=categorical, not mean_var")
        else:
            refuse_unread(hp, ("min_sigma",), "applies to model.variant=mean_var, not categorical")

    def __init__(self, spec: dict, hp: DPLHparams, rngs: nnx.Rngs):
        self.hp = hp
        d_out = 2 if hp.variant == "mean_var" else hp.n_atoms
        self.mlp = MLP(spec["prompt_dim"] + spec["dim"], tuple(hp.hidden), d_out, rngs, hp.activation)
        self.z_q = _probit_inverse(hp.risk_quantile) if hp.risk_quantile > 0 else 0.0

    # -- the reward distribution -------------------------------------------------------------------------
    def _out(self, prompt, response):
        return self.mlp(jnp.concatenate([prompt, response], axis=-1))

    def mean_sigma(self, prompt, response):
        """mean_var: (mu (...), sigma (...))."""
        o = self._out(prompt, response)
        return o[..., 0], jax.nn.softplus(o[..., 1]) + self.hp.min_sigma

    def atom_probs(self, prompt, response):
        """categorical: (..., N) probabilities over the atoms linspace(0, 1, N)."""
        return jax.nn.softmax(self._out(prompt, response), -1)

    def atoms(self):
        return jnp.linspace(0.0, 1.0, self.hp.n_atoms)

    def spread(self, prompt, response):
        """The predicted disagreement about a response (...): sigma, or the categorical standard deviation."""
        if self.hp.variant == "mean_var":
            return self.mean_sigma(prompt, response)[1]
        p, a = self.atom_probs(prompt, response), self.atoms()
        mean = (p * a).sum(-1)
        return jnp.sqrt(jnp.maximum((p * (a - mean[..., None]) ** 2).sum(-1), 0.0))

    def pair_spread(self, prompt, chosen, rejected):
        """The disagreement DPL predicts about a pair (...): the standard deviation of the reward margin
        between one draw for `chosen` and an independent draw for `rejected`, sqrt(s_w^2 + s_l^2) with s
        the per-response `spread` (in the units of `reward`)."""
        return jnp.sqrt(self.spread(prompt, chosen) ** 2 + self.spread(prompt, rejected) ** 2)

    def reward(self, prompt, response, state=None):
        """The mean of the response's reward distribution, or its lower `risk_quantile`-quantile."""
        if self.hp.variant == "mean_var":
            mu, sigma = self.mean_sigma(prompt, response)
            return mu + self.z_q * sigma
        p, a = self.atom_probs(prompt, response), self.atoms()
        if self.hp.risk_quantile == 0:
            return (p * a).sum(-1)
        first = jnp.argmax(jnp.cumsum(p, -1) >= self.hp.risk_quantile, -1)
        return a[first]

    def preference_logprob(self, prompt, chosen, rejected):
        """log P(chosen > rejected) under the distributions (...)."""
        if self.hp.variant == "mean_var":
            mu_w, s_w = self.mean_sigma(prompt, chosen)
            mu_l, s_l = self.mean_sigma(prompt, rejected)
            return jax.scipy.stats.norm.logcdf((mu_w - mu_l) / jnp.sqrt(s_w ** 2 + s_l ** 2))
        p_w, p_l = self.atom_probs(prompt, chosen), self.atom_probs(prompt, rejected)
        cdf_l = jnp.cumsum(p_l, -1)
        beats = (p_w * (cdf_l - 0.5 * p_l)).sum(-1)  # sum_i p_w(i) (P(l < i) + P(l = i) / 2)
        return jnp.log(jnp.clip(beats, 1e-7, 1.0))

    def loss(self, batch, key, step):
        batch = drop_batch(batch, self.hp.input_dropout, key)
        logp = self.preference_logprob(batch["prompt"], batch["chosen"], batch["rejected"])
        mask = batch["mask"]
        nll = -(logp * mask).sum() / jnp.maximum(mask.sum(), 1.0)
        loss = nll
        if self.hp.variant == "categorical" and active(self.hp.entropy_bonus):
            def entropy(p):
                return -(p * jnp.log(jnp.clip(p, 1e-12, 1.0))).sum(-1)
            h = 0.5 * (entropy(self.atom_probs(batch["prompt"], batch["chosen"]))
                       + entropy(self.atom_probs(batch["prompt"], batch["rejected"])))
            loss = nll - self.hp.entropy_bonus * (h * mask).sum() / jnp.maximum(mask.sum(), 1.0)
        m = self.margin(batch["prompt"], batch["chosen"], batch["rejected"], None)
        return loss, {"accuracy": masked_accuracy(m, mask), "nll": nll}
