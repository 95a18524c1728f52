"""Bradley-Terry (BT) rewards: the single-reward baseline and its two fair, user-aware variants.

`model.condition` picks the variant (all trained with the same trainer, regularisation and early stopping
as the pluralistic families):

- `none` (default): one shared reward r(x, y) = MLP([e(x), e(y)]); loss -log sigma(r(x, y_w) - r(x, y_l)).
  With preferences drawn from a mixture of K subgroups one BT model keeps an irreducible cross-entropy
  excess (MiCRo 2025, Thm 3.2). It knows nothing of users: every user gets the same reward.
- `group`: one reward head per group label, r_g(x, y) = MLP([e(x), e(y)])_g (a shared trunk, G outputs;
  with `model.hidden=()` G separate linear models). It reads the `group` column at train and at test time,
  so it is the "told the group" ceiling for group-structured data. A user's state is a weight vector over
  the heads, r = sum_g s_g r_g: one-hot on the user's group; the training groups' shares of users for a
  group it never saw (or a table without groups).
- `user` (P-RLHF, Li et al. 2024, *Personalized Language Modeling from Personalized Human Feedback*):
  r(x, y, u) = MLP([e(x), e(y), e_0 + o_u]) with a generic user embedding e_0 and a learned offset o_u per
  seen user. Each training pair is scored with the generic e_0 alone with probability `generic_prob` (user
  dropout), so e_0 is trained on every user's pairs; it is what unseen users get at 0 shots. An unseen user
  with K shots gets e_0 + o, o fitted on the shots by `adapt_steps` Adam steps with an L2 pull `adapt_l2` to
  its start (everything else frozen): 0 (`adapt_init=generic`, e_0 alone), or (`adapt_init=seen`, a departure
  from the paper) the seen users' offsets averaged in proportion to the likelihood of the K shots under each,
  the empirical-Bayes start PAL and LoRe use. `user_l2` penalises the seen users' offsets (shrinkage towards e_0).

Defaults (train.lr 1e-3, at most 3000 steps with early stopping; hidden (64,) for `none`) were chosen on
VALIDATION data of the defaults suite (experiments/defaults.py, results/defaults), with the same budget as
the pluralistic families: one point for every dataset, the best validation accuracy averaged over the suite;
the user-blind linear probe (`hidden=()`) is best at train.lr 3e-3, the group-told one at 3e-2. The width of
the `group` and `user` variants, (256, 256), was chosen on the same suite by experiments/bt_width.py
(results/bt_width: hidden (64,) or (256, 256) x train.lr 1e-3 or 1e-2 for every condition; suite validation
score at lr 1e-3, (256, 256) against (64,): group 0.797 vs 0.788, user 0.732 vs 0.729, none 0.669 vs 0.670).
The wider network learns the reward term every user shares on items of varying norm (-||y||^2 under an
ideal point on Gaussian items: group-told validation score 0.846 vs 0.776 on `gauss3`) and gives up a
little on the real-text tables (0.799 vs 0.826 on persona statements).
The user variant's settings were swept on the same suite afterwards (experiments/bt_user.py,
results/bt_user: user_dim 8 / 32, generic_prob 0.2 / 0.5, user_l2 1e-3 / 0.1, adapt_l2 0.1 / 1.0, six
points): validation selects user_dim 32 (suite validation score 0.729 against 0.726 for the old point; the
other changes score 0.706-0.726). Not swept: `adapt_steps`, `adapt_lr`.
Input dropout was swept on the same suite for every condition (experiments/input_dropout.py,
results/input_dropout: 0 / 0.25 / 0.5). Its default depends on the training table (`input_dropout=None`,
`plural.models.base.small_table`): validation scores on the suite's small real-text tables (persona
statements and HH, fewer than 13 pairs per embedding dimension), none 0.606 / 0.597 / 0.617, group 0.683 /
0.693 / 0.711, user 0.618 / 0.659 / 0.660, and on its simulated populations none 0.6964 / 0.6967 / 0.6963,
group 0.842 / 0.837 / 0.821, user 0.778 / 0.770 / 0.755, so 0.5 on small tables for every condition and
0.25 (none) or 0 (group, user) on larger ones (DROPOUT): on small tables the MLP memorises its training
responses, on the simulated populations, where every pair's items are fresh, dropout only costs.

Departure from P-RLHF: the paper conditions an LLM on the user embedding as soft-prompt tokens; here the
embedding is an input of the reward MLP over frozen embeddings, as every family in this library is.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from plural.config import Count, Fraction, NonNegative, Positive, PositiveInt, Rate
from plural.errors import PluralError
from plural.models.base import (MLP, RewardModel, active, adapt_by_gradient, bt_nll, drop_responses, masked_accuracy,
                                refuse_unread, seen_posterior_mean)


@dataclasses.dataclass(frozen=True)
class BTHparams:
    hidden: tuple[PositiveInt, ...] | None = None  # MLP widths; () = a linear probe; None: WIDTHS[condition]
    activation: Literal["gelu", "relu", "tanh", "silu", "linear"] = "gelu"
    condition: Literal["none", "group", "user"] = "none"  # none | group (one head per group label) | user (P-RLHF user embeddings)
    input_dropout: Rate | None = None  # dropout rate on e(y_w), e(y_l) while training; None: DROPOUT[condition] by table size
    user_dim: PositiveInt = 32  # condition=user: size of the user embedding. Suite (results/bt_user): 32 over 8
    generic_prob: Fraction = 0.2  # condition=user: share of training pairs scored with the generic e_0 alone
    user_l2: NonNegative = 1e-3  # condition=user: penalty on the mean squared user offset o_u
    adapt_steps: Count = 100  # condition=user: Adam steps fitting a new user's offset from its shots
    adapt_lr: Positive = 0.05
    adapt_l2: NonNegative = 0.1  # condition=user: pull of a new user's offset towards its start (adapt_init)
    adapt_init: Literal["generic", "seen"] = "generic"  # condition=user: a new user's offset starts at 0 (e_0 alone) | the seen users'
    # offsets weighted by the shots' likelihood. Suite validation (results/bt_user_start): 0.7320 vs 0.7317, generic kept


# The settings only `condition=user` reads.
USER_ONLY = ("user_dim", "generic_prob", "user_l2", "adapt_steps", "adapt_lr", "adapt_l2", "adapt_init")

# The default MLP widths per condition (suite validation: experiments/bt_width.py, results/bt_width).
WIDTHS = {"none": (64,), "group": (256, 256), "user": (256, 256)}
# ... and input dropout per condition, (rate, small-table rate) (`RewardModel.resolve_data`; suite validation:
# experiments/input_dropout.py, results/input_dropout).
DROPOUT = {"none": (0.25, 0.5), "group": (0.0, 0.5), "user": (0.0, 0.5)}


class BT(RewardModel):
    name = "bt"
    summary = ("Bradley-Terry reward; `model.condition=group` one head per group label, "
               "`model.condition=user` a learned embedding per user (P-RLHF)")
    reference = ("Bradley & Terry, Biometrika 1952; P-RLHF: Li et al., Personalized Language Modeling from "
                 "Personalized Human Feedback, 2024")
    demo = {"bt": [], "bt (group)": ["model.condition=group"], "bt (user)": ["model.condition=user"]}
    Hparams = BTHparams
    traced = ("input_dropout", "generic_prob", "user_l2")
    train_defaults = {"steps": 3000}  # the most steps, as PAL's; early stopping on validation ends sooner

    @classmethod
    def check_settings(cls, hp: BTHparams, batches) -> None:
        """The user-embedding settings are read by `condition=user` only: set with another condition, refused."""
        if hp.condition != "user":
            refuse_unread(hp, USER_ONLY, f"applies to model.condition=user, not {hp.condition}")

    @classmethod
    def resolve(cls, hp: BTHparams) -> BTHparams:
        """The condition's default width (WIDTHS) where it is not given."""
        return hp if hp.hidden is not None else dataclasses.replace(hp, hidden=WIDTHS[hp.condition])

    @classmethod
    def dropout_for(cls, hp: BTHparams) -> tuple[float, float]:
        return DROPOUT[hp.condition]

    def __init__(self, spec: dict, hp: BTHparams, rngs: nnx.Rngs):
        hp = self.resolve(hp)
        self.hp = hp
        d_in, d_out = spec["prompt_dim"] + spec["dim"], 1
        if hp.condition == "group":
            groups = spec.get("groups") or []
            if not groups:
                raise PluralError("--set model.condition=group: the training table has no 'group' column")
            d_out = len(groups)
            self.n_groups = len(groups)
        if hp.condition == "user":
            d_in += hp.user_dim
            self.generic = nnx.Param(0.1 * jax.random.normal(rngs.params(), (hp.user_dim,)))
            self.offsets = nnx.Param(jnp.zeros((spec["n_users"], hp.user_dim)))
        self.mlp = MLP(d_in, tuple(hp.hidden), d_out, rngs, hp.activation)
        if hp.condition == "group":  # shares of users per group, filled from the data (the unknown-group state)
            self.shares = nnx.Variable(jnp.full((d_out,), 1.0 / d_out))

    # -- rewards ------------------------------------------------------------------------------------------
    def reward(self, prompt, response, state=None):
        """prompt (..., Dp), response (..., D), state -> reward (...).

        state: ignored (none); head weights (..., G) (group); user embedding (..., E) (user)."""
        x = jnp.concatenate([prompt, response], axis=-1)
        if self.hp.condition == "user":
            return self.mlp(jnp.concatenate([x, state], axis=-1))[..., 0]
        out = self.mlp(x)
        if self.hp.condition == "group":
            return jnp.sum(out * state, -1)
        return out[..., 0]

    def loss(self, batch, key, step):
        chosen, rejected = batch["chosen"], batch["rejected"]
        k_drop, k_gen = jax.random.split(key)
        if active(self.hp.input_dropout):  # inverted dropout on the response embeddings, training only
            chosen, rejected = drop_responses(chosen, rejected, self.hp.input_dropout, k_drop)
        state, reg = None, 0.0
        if self.hp.condition == "group":
            state = jax.nn.one_hot(batch["group"], self.n_groups)
        elif self.hp.condition == "user":
            own = self.offsets[...][batch["user"]]
            generic_only = jax.random.bernoulli(k_gen, self.hp.generic_prob, batch["user"].shape)[:, None]
            state = self.generic[...] + jnp.where(generic_only, 0.0, own)
            reg = self.hp.user_l2 * jnp.mean(jnp.sum(self.offsets[...] ** 2, -1))
        m = self.margin(batch["prompt"], chosen, rejected, state)
        nll = bt_nll(m, batch["mask"])
        return nll + reg, {"accuracy": masked_accuracy(m, batch["mask"]), "nll": nll}

    # -- users --------------------------------------------------------------------------------------------
    def init_from_data(self, dd, rngs):
        if self.hp.condition == "group":
            ug = dd["group"][dd["user_rows"][:, 0]]  # each user's group (constant per user)
            counts = jnp.zeros(self.n_groups).at[ug].add(1.0)
            self.shares[...] = counts / counts.sum()

    def seen_states(self, dd):
        n_users = dd["user_count"].shape[0]
        if self.hp.condition == "group":
            return jax.nn.one_hot(dd["group"][dd["user_rows"][:, 0]], self.n_groups)
        if self.hp.condition == "user":
            return self.generic[...] + self.offsets[...]
        return jnp.zeros((n_users, 0))

    def population_state(self):
        if self.hp.condition == "group":
            return self.shares[...]
        if self.hp.condition == "user":
            return self.generic[...]
        return jnp.zeros((0,))

    def group_state(self, group):
        if self.hp.condition != "group":
            return super().group_state(group)
        known = (group >= 0)[..., None]
        return jnp.where(known, jax.nn.one_hot(group, self.n_groups), self.shares[...])

    def adapt(self, context, key, seen=None):
        if self.hp.condition != "user":
            return self.group_state(context["group"][0])
        e0 = jax.lax.stop_gradient(self.generic[...])

        def margin_fn(offset, prompt, chosen, rejected):
            s = jnp.broadcast_to(e0 + offset, (*chosen.shape[:-1], offset.shape[-1]))
            return self.margin(prompt, chosen, rejected, s)

        if self.hp.adapt_init == "seen":  # empirical Bayes over the seen users (as PAL's and LoRe's starts)
            start = seen_posterior_mean(margin_fn, jax.lax.stop_gradient(self.offsets[...]), context)
        else:
            start = jnp.zeros_like(e0)
        offset = adapt_by_gradient(margin_fn, start, context, self.hp.adapt_steps, self.hp.adapt_lr, self.hp.adapt_l2)
        return e0 + offset
