"""PrefPalette: attribute-weighted community reward models (Li et al., 2025, "PrefPalette: Personalized
Preference Modeling with Latent Attributes"; code release stellalisy/PrefPalette).

A community's preference is explained through attributes of the response (verbosity, formality, humour,
Schwartz values, ...). For a response y with embedding e(y) (and prompt e(x)) and its A attribute scores
a_1(y) .. a_A(y), one community's model is

    h_c      = act(W_c [e(x), e(y)] + b_c)                       the content representation (d = `hidden`)
    h_i      = a_i u_i + o_i                                     attribute i's representation (d)
    q        = W_q h_c   (d / 4: the query is a quarter of the width, as the release)
    k_i      = W_k h_i
    alpha_i  = softmax_i( v^T tanh(q + k_i) )                    attention over the attributes
    r(x, y)  = w^T h_c + b + A s * sum_i alpha_i tanh(10 t_i) a_i    s learned, starting at `scale_init` 0.5

trained with the Bradley-Terry loss on the community's pairs. While training, each attribute of a pair is
dropped (its score set to 0, so that it adds nothing and its key is its identity o_i alone; every
attribute dropped leaves the content reward w^T h_c + b) with a probability that rises linearly from 0 to
`attr_dropout_max` over the first `dropout_ramp_steps` steps, so that the model still works when
attributes are missing. The attention weights alpha, averaged over a community's responses, are its
profile (`plural profile`).

Departures from the paper, and why.
- The paper adds the attended attribute vectors to the content, h = h_c + s sum_i alpha_i h_i, and reads
  the reward out of h; how much attribute i moves the reward is then alpha_i (w^T h_i), and the read-out
  w^T h_i can grow for one attribute while its attention shrinks: the attention weights are not
  identified, and on simulated communities they ranked the true importances at Spearman 0.26 (8
  communities x 1000 pairs). Here every attribute has the same read-out, its signed score tanh(t_i) a_i
  (t_i learned: whether the community likes or dislikes it, |tanh| <= 1), so that how much it counts is
  carried by alpha_i alone.
  The factor A makes uniform attention add s times the sum of the signed scores, so that s need not
  climb from 0.5 to the reward's scale (about 5 on the simulated communities) one Adam step at a time,
  and the 10 in tanh(10 t_i) (`SIGN_RATE`) lets a sign settle in tens of steps rather than hundreds;
  before these two, the content path had overfitted (best validation step 200) before the attribute
  path had learned. Both were set by that reasoning and kept because validation accuracy rose (8
  communities x 4000 pairs: 0.868 -> 0.877; 8 x 1000: 0.805 -> 0.857; the populations of
  experiments/palette.py at hidden 16, lr 3e-3, weight decay 1.0).
- h_i is built from the observed score a_i(y) (the table's `chosen_attr_<name>` / `rejected_attr_<name>`
  columns), where the paper's is the hidden state of a 1B-parameter attribute predictor trained on
  counterfactual rewrites.
- The dropout ramp is 750 steps (the release: 75% of training), because early stopping usually ends
  training well before the step budget.
- `share_content=true` (an option, not the default): the content layer and its read-out (W, b, w, b_out)
  are one for all communities, trained on every community's pairs, while the attention, the signs and
  the scale stay per community: what the communities share (the quality of a response) is learned from
  all of their pairs, and how each weighs the attributes from its own. On both simulated community
  populations of experiments/palette_variants.py validation prefers it in every form (attention x
  content layer x weight decay; at the defaults, validation accuracy 0.888 vs 0.879 on 8 communities x
  4000 pairs and 0.862 vs 0.846 on 16 x 1000, 3 seeds), and selected per dataset it brings the test
  expected accuracy within 0.017 / 0.010 of the true model's. It is not the default because its content
  reward is the same for every community: with every attribute dropped at inference it falls to a
  community-blind reward (0.748 against the per-community content-only model's 0.795 on the population
  of tests/test_palette_science.py), where the separate models keep the content-only accuracy. (A shared
  content layer with a read-out per community keeps that fallback but ranked the true importances worse
  on the same populations: profile Spearman 0.66 / 0.71 for its selected points, seed 0.)
- Options, not defaults: `attention=fixed` replaces the content query by one learned weighting per
  community, alpha = softmax(l), the same for every response; `activation=linear` makes the content layer
  linear. On the simulated communities (whose rewards are linear with fixed weights) validation picks the
  linear content layer with the paper's attention (experiments/palette_variants.py); the defaults stay
  the paper's form, chosen by experiments/palette.py.

One model per community (the table's `group`; a table without one is one community): every parameter
has a leading community axis and all communities train at once, each step drawing `batch.pairs_per_group`
pairs of every community (`GroupBatches`), the communities vmapped in one program.

Users. A user's state is a weight per community (C,): a seen user's community (one-hot), a new user's
known group likewise, and otherwise the communities weighed by their shares of the training pairs (0
shots) or, after K pairs, by the likelihood of those pairs under each community's model (Bayes, with the
shares as the prior); the reward is the weighted sum of the communities' rewards.

Defaults. `attr_dropout_max` 0.5 and `scale_init` 0.5 are the release's. `hidden` 16, `train.lr` 3e-3,
`train.weight_decay` 1.0 and 3000 steps (with early stopping) were selected on validation accuracy by
experiments/palette.py (results/palette: two simulated community populations, hidden 16 / 64 x weight
decay 0.1 / 1.0; the content-only baseline got the same budget). Test there (8 communities x 4000 pairs;
16 x 1000): expected accuracy 0.846 / 0.817 against the true model's 0.876 / 0.865 and the content-only
model's 0.791 / 0.794; profiles vs the true importances, mean Spearman 0.84 / 0.68, where a logistic
regression on the true attribute scores reaches 0.90 / 0.73.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

import jax
import jax.numpy as jnp
from flax import nnx

from plural.data.batching import GroupBatches
from plural.config import PositiveInt, Range, Rate
from plural.errors import PluralError
from plural.models.base import ACTIVATIONS, RewardModel, bt_nll, masked_accuracy


@dataclasses.dataclass(frozen=True)
class PaletteHparams:
    hidden: Annotated[int, Range(ge=4)] = 16  # d: width of the content and attribute representations (>= 4: the query is a quarter of it)
    activation: Literal["gelu", "relu", "tanh", "silu", "linear"] = "gelu"  # of the content layer h_c
    attention: Literal["content", "fixed"] = "content"  # content: the paper's, queried by the response; fixed: one
    # learned weighting per community, the same for every response (see Departures)
    attr_dropout_max: Rate = 0.5  # cap of the attribute dropout probability
    dropout_ramp_steps: PositiveInt = 750  # steps over which it rises linearly from 0 to the cap (see Departures)
    scale_init: float = 0.5  # s at initialisation
    share_content: bool = False  # one content reward (W, b, w, b_out) for every community (an option, see
    # Departures; false: the paper's separate models, kept as the default, see experiments/palette_variants.py)


SIGN_RATE = 10.0  # t_i enters as tanh(10 t_i): its sign settles in tens of Adam steps (see Departures)


def _init(key, shape, fan_in):
    return jax.random.normal(key, shape) / jnp.sqrt(fan_in)


class Palette(RewardModel):
    name = "palette"
    summary = "one attribute-attention reward model per community; its attention weights are the community's profile"
    reference = "Li et al., PrefPalette: Personalized Preference Modeling with Latent Attributes, 2025"
    demo = None  # the demo population carries 4 attribute columns (projections of the responses)
    Hparams = PaletteHparams
    traced = ("attr_dropout_max",)
    batches = GroupBatches()
    reads_attributes = True
    train_defaults = {"steps": 3000, "lr": 3e-3, "weight_decay": 1.0}  # experiments/palette.py

    def __init__(self, spec: dict, hp: PaletteHparams, rngs: nnx.Rngs):
        names = spec.get("attr_names", [])
        if not names:
            raise PluralError("palette reads attribute scores: the table needs chosen_attr_<name> / "
                              "rejected_attr_<name> columns (docs/data-format.md)")
        self.hp = hp
        C, A, d = max(len(spec.get("groups", [])), 1), len(names), hp.hidden
        self.n_attr, self.d_emb = A, spec["dim"] - A  # responses arrive as [e(y), a(y)]
        d_in, dq = spec["prompt_dim"] + self.d_emb, d // 4
        key = rngs.params
        Cc = () if hp.share_content else (C,)  # the content parameters' community axis (none when shared)
        self.w_content = nnx.Param(_init(key(), (*Cc, d_in, d), d_in))
        self.b_content = nnx.Param(jnp.zeros((*Cc, d)))
        if hp.attention == "content":
            self.u = nnx.Param(_init(key(), (C, A, d), 1.0))
            self.o = nnx.Param(jnp.zeros((C, A, d)))
            self.w_q = nnx.Param(_init(key(), (C, d, dq), d))
            self.w_k = nnx.Param(_init(key(), (C, d, dq), d))
            self.v = nnx.Param(_init(key(), (C, dq), dq))
        else:  # one attention logit per attribute: uniform attention at the start, as the content query's is
            self.logits = nnx.Param(jnp.zeros((C, A)))
        self.sign = nnx.Param(jnp.zeros((C, A)))
        self.scale = nnx.Param(jnp.full((C,), hp.scale_init))
        self.w_out = nnx.Param(_init(key(), (*Cc, d), d))
        self.b_out = nnx.Param(jnp.zeros(Cc))
        self.share = nnx.Variable(jnp.full((C,), 1.0 / C))  # the communities' shares of the training pairs

    def init_from_data(self, dd, rngs):
        count = dd["group_count"].astype(jnp.float32)
        self.share[...] = count / count.sum()

    # -- one community's model ------------------------------------------------------------------------
    CONTENT = ("w_content", "b_content", "w_out", "b_out")  # one for every community with `share_content`

    def _params(self):
        attention = ("u", "o", "w_q", "w_k", "v") if self.hp.attention == "content" else ("logits",)
        return {k: getattr(self, k)[...] for k in ("w_content", "b_content", *attention, "sign", "scale", "w_out", "b_out")}

    def _axes(self):
        """vmap's in_axes over `_params()`: 0 (the community axis), None for the shared content parameters."""
        return {k: None if self.hp.share_content and k in self.CONTENT else 0 for k in self._params()}

    def _one(self, p, prompt, response, keep):
        """One community (params p without the community axis): reward (...,) and attention (..., A) of
        responses [e(y), a(y)] (..., D + A) with attribute mask keep (..., A) (1 = present)."""
        e, a = response[..., : self.d_emb], response[..., self.d_emb:] * keep
        h_c = ACTIVATIONS[self.hp.activation](jnp.concatenate([prompt, e], -1) @ p["w_content"] + p["b_content"])
        value = jnp.tanh(SIGN_RATE * p["sign"]) * a  # (..., A): the signed score, one read-out for every attribute
        if self.hp.attention == "fixed":
            alpha = jnp.broadcast_to(jax.nn.softmax(p["logits"]), a.shape)
        else:
            # k_i = W_k h_i with h_i = a_i u_i + o_i, computed as a_i (W_k u_i) + W_k o_i: no (..., A, d) tensor
            # (a dropped attribute, a_i = 0, keeps only its identity o_i)
            k = a[..., None] * (p["u"] @ p["w_k"]) + p["o"] @ p["w_k"]  # (..., A, d / 4)
            alpha = jax.nn.softmax(jnp.tanh((h_c @ p["w_q"])[..., None, :] + k) @ p["v"], -1)  # (..., A)
        return h_c @ p["w_out"] + p["b_out"] + self.n_attr * p["scale"] * (alpha * value).sum(-1), alpha

    def community_rewards(self, prompt, response, keep=None):
        """Every community's reward and attention: (C, ...) and (C, ..., A)."""
        keep = jnp.ones((*response.shape[:-1], self.n_attr)) if keep is None else keep
        return jax.vmap(lambda p: self._one(p, prompt, response, keep), in_axes=(self._axes(),))(self._params())

    def dropout(self, step):
        """The attribute dropout probability at a training step."""
        return self.hp.attr_dropout_max * jnp.minimum(step / self.hp.dropout_ramp_steps, 1.0)

    def loss(self, batch, key, step):
        # batch: (B, C, ...) pairs of every community (GroupBatches); one drop mask per pair and attribute
        keep = jax.random.bernoulli(key, 1.0 - self.dropout(step), (*batch["mask"].shape, self.n_attr))

        def community(p, x, yw, yl, k):
            return self._one(p, x, yw, k)[0] - self._one(p, x, yl, k)[0]

        m = jax.vmap(community, in_axes=(self._axes(), 1, 1, 1, 1), out_axes=1)(
            self._params(), batch["prompt"], batch["chosen"], batch["rejected"], keep.astype(jnp.float32))
        nll = bt_nll(m, batch["mask"])
        return nll, {"accuracy": masked_accuracy(m, batch["mask"]), "nll": nll}

    # -- users ------------------------------------------------------------------------------------------
    def reward(self, prompt, response, state):
        r, _ = self.community_rewards(prompt, response)  # (C, ...)
        return jnp.einsum("c...,...c->...", r, state)

    def population_state(self):
        return self.share[...]

    def group_state(self, group):
        C = self.share.shape[0]
        onehot = jax.nn.one_hot(jnp.maximum(group, 0), C)
        return jnp.where((group >= 0)[..., None], onehot, self.share[...])

    def seen_states(self, dd):
        first = dd["user_rows"][:, 0]
        return jax.nn.one_hot(jnp.maximum(dd["group"][first], 0), self.share.shape[0])

    def adapt(self, context, key, seen=None):
        """Bayes over the communities: prior = their shares, likelihood = the K pairs' under each model."""
        rw, _ = self.community_rewards(context["prompt"], context["chosen"])
        rl, _ = self.community_rewards(context["prompt"], context["rejected"])
        loglik = (jax.nn.log_sigmoid(rw - rl) * context["mask"]).sum(-1)  # (C,)
        return jax.nn.softmax(jnp.log(jnp.maximum(self.share[...], 1e-12)) + loglik)

    def profile(self, community: int, prompt, response):
        """Community `community`'s attention (..., A) over the attributes of the given responses."""
        p = {k: v if a is None else v[community] for (k, v), a in zip(self._params().items(), self._axes().values())}
        return self._one(p, prompt, response, jnp.ones((*response.shape[:-1], self.n_attr)))[1]
