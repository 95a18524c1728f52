"""`fewshot`: reward models meta-learned to adapt to a new user from a few labelled pairs. One family, four
ways to adapt (`--set model.variant=...`), all meta-trained on the same per-user batches (a context set
and disjoint targets of one user, `UserBatches`) by the one trainer, and adapted by `evaluate --shots K`:

- `maml` (default), `reptile`, `finetune`: gradient steps on the K pairs from meta-learned weights
  (plural/models/fewshot/maml.py: MAML, first-order MAML, Meta-SGD, Reptile; `finetune` is pooled BT
  adapted by the same steps, the reference meta-learning must beat);
- `gpo`: a transformer that reads the K pairs in context (plural/models/fewshot/gpo.py);
- `lore`: a shared low-rank reward basis, a new user fits only its weights on the simplex
  (plural/models/fewshot/lore.py).

Settings that belong to another variant are refused rather than ignored (`model.rank` only applies to
lore, ...).

Defaults. `inner_steps` 5, `inner_lr` 0.1, `hidden` (64,), `rank` 8, `adapt_steps` 100 and `adapt_lr` 0.1
are set by hand. LoRe's train.lr 1e-2 and its new-user start come from the 3-group ideal-point
population's validation data (experiments/lore_start.py, results/lore_start): unseen users at 10 shots
close 0.72 of the gap from the population's mean weights, 0.78 from the seen users' (empirical Bayes)
and 0.87 with that start and `adapt_l2` 1.0 (2 seeds; rank 3: 0.81). The gradient variants' new users start
the same way (`adapt_init=seen`: the seen users' adapted weights by the shots' likelihood, then the inner
steps), chosen on the 60-user population's validation data (experiments/meta_start.py, results/meta_start,
2 seeds): validation-unseen users at 10 shots MAML 0.785 against 0.712 from theta, Meta-SGD 0.772 / 0.715,
Reptile 0.731 / 0.623; fine-tuned BT, given the same start, stays at 0.00 / -0.01 (its pooled features do
not tell the users apart). Test-unseen users at 10 shots: MAML 0.78, Meta-SGD 0.77, Reptile 0.73 (0.69,
0.69, 0.60 from theta). experiments/fewshot.py selects each variant's point per dataset on validation;
selecting the family's defaults on the defaults suite is still to do.

Results (experiments/fewshot.py, results/fewshot: test, 3 seeds, unseen users, gap closed on the same
rows at every K). 3-group ideal-point population, K = 10 / 16: LoRe 0.88 / 0.88, Meta-SGD 0.75 / 0.81, MAML
(last layer, inner rate 1.0) 0.74 / 0.81, Reptile 0.71 / 0.76, GPO (2 x 64) 0.55 / 0.62, fine-tuned BT (the
same start and steps) 0.11 / 0.25; PAL-A (K = 3) 0.87 / 0.88. Every variant but GPO closes 0.7 of the gap at
10 shots (from theta, before the seen start: MAML and Meta-SGD 0.65, experiments/meta_start.py). 30 groups of
4 seen users, K = 16: LoRe (rank 32) 0.47, Meta-SGD and Reptile 0.39, MAML 0.38, against PAL-A with 3 / 4 / 6 /
8 prototypes 0.10 / 0.10 / 0.17 / 0.17 and PAL-B 0.08 / 0.11 / 0.16 / 0.24. Why GPO falls short: its
validation accuracy peaks within a few hundred steps and falls, the in-context model learning 60 training
users' answers rather than how to read a context (Reptile, the weakest gradient learner, moves theta by the
pooled BT gradient plus a small meta term: the pooled part cancels only when tasks are symmetric, as with
shuffled class labels, not for three groups of unequal size). Meta-learners need many training users
(experiments/fewshot_users.py, results/fewshot_users: 120 test-unseen users, 2 seeds, run with the start at
theta): at 10 shots with 60 / 240 / 960 seen users of the same population MAML closes 0.69 / 0.78 /
0.75 of the gap, Meta-SGD 0.69 / 0.79 / 0.75, GPO 0.48 / 0.75 / 0.88, Reptile (`inner_batches` 5) 0.60 / 0.72 / 0.71 and LoRe
0.86 / 0.94 / 0.91: from 240 training users every meta-learner closes 0.7 of the gap at 10 shots. Tried on validation and not adopted: the inner loss as a sum over the pairs
(`inner_loss=sum`, experiments/maml_inner_loss.py), early stopping on new users' 10-shot accuracy
(`train.val_shots`, experiments/val_shots.py), more inner steps (experiments/maml_steps.py), meta-augmentation
(`flip_users`, experiments/meta_augment.py: 60 seen users, validation-unseen users at 10 shots MAML 0.71 at
0 and 0.1, 0.65 at 0.5; Reptile 0.62 -> 0.64 at 0.1; GPO 0.54 -> 0.56 at 0.25), adapting by more steps than
meta-training took (`adapt_inner_steps` 10 / 25 instead of 5, experiments/adapt_steps.py: validation-unseen
users at 10 shots MAML 0.71 / 0.71 / 0.64, Reptile 0.62 / 0.61 / 0.55). What lifts GPO on 60 users is
dropout on the response embeddings while meta-training (`input_dropout`, experiments/gpo_regularise.py:
without it its training accuracy reaches 0.97, above the oracle's 0.87): validation selects 0.5 (with
`readout=dot`), test-unseen users at 10 shots 0.48 -> 0.55, still short of 0.7.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from plural.data.batching import UserBatches
from plural.config import Count, Fraction, NonNegative, Positive, PositiveInt, Rate
from plural.errors import PluralError
from plural.models.base import RewardModel, active, drop_batch, refuse_unread, seen_posterior_mean
from plural.models.fewshot.gpo import GPONet
from plural.models.fewshot.lore import LoReNet
from plural.models.fewshot.maml import MetaMLP, meta_loss

GRADIENT = ("maml", "reptile", "finetune")


@dataclasses.dataclass(frozen=True)
class FewShotHparams:
    variant: Literal["maml", "reptile", "finetune", "gpo", "lore"] = "maml"
    # maml / reptile / finetune: the reward MLP and its inner loop
    hidden: tuple[PositiveInt, ...] = (64,)
    activation: Literal["gelu", "relu", "tanh", "silu", "linear"] = "gelu"
    inner_steps: PositiveInt = 5  # S gradient steps on a user's pairs (training and adaptation)
    adapt_inner_steps: Count = 0  # maml / reptile / finetune: the steps a user's state is adapted by outside
    # meta-training (a new user on its shots, a seen user on its pairs); 0: inner_steps. Reptile's paper adapts
    # by more steps at test time than it meta-trains with (Nichol et al. 2018: 8 and 50 on Mini-ImageNet).
    inner_lr: NonNegative = 0.1  # alpha
    inner_clip: NonNegative = 10.0  # most global norm of one inner step's gradient (0: none). Set by hand, not
    # swept: ~3.5x the largest on the validation table of the default ideal-point population (`plural simulate`:
    # 2.76 for MAML fitted with its defaults, 10 shots of each of the 90 validation users; Reptile 0.92), so it
    # does not bind on unit-norm embeddings; it keeps the inner loop finite on embeddings of norm ~100 and more
    inner_loss: Literal["mean", "sum"] = "mean"  # the inner loss over a user's pairs: their mean or their sum
    inner_batches: PositiveInt = 5  # reptile: meta-training's inner steps take the user's pairs in this many
    # disjoint minibatches, in turn (Nichol et al.'s inner loop; 1 = every step on every pair; at most
    # inner_steps). 5 (one pass over the pairs in the default 5 inner steps) chosen on validation (experiments/reptile_batches.py: 3-group population,
    # validation-unseen users at 10 shots 0.60 against 0.43 at 1, 2 seeds)
    first_order: bool = False  # maml: stop the outer gradient at the inner gradients (FOMAML)
    learn_inner_lr: bool = False  # maml: one learnable inner rate per adapted weight (Meta-SGD)
    adapt_params: Literal["all", "head"] = "all"  # which weights the inner loop adapts (head: last layer)
    input_dropout: Rate = 0.0  # maml / reptile / finetune / gpo: dropout on the response embeddings of a meta-training
    # user's context and target pairs (`drop_batch`), so that the reward cannot memorise training responses. 0 until
    # the family is swept on the defaults suite; on the 60-user population validation picks 0.5 for GPO
    # (experiments/gpo_regularise.py, results/gpo_regularise)
    flip_users: Fraction = 0.0  # maml / reptile / gpo: the share of meta-training users whose pairs are
    # all reversed, a fresh draw per user and step (meta-augmentation, `flip_user_pairs`)
    # gpo: the transformer (the paper's size)
    d_model: PositiveInt = 128
    n_layers: PositiveInt = 6
    n_heads: PositiveInt = 4
    max_context: PositiveInt = 64  # most labelled pairs a user's state holds
    readout: Literal["linear", "dot"] = "linear"  # gpo: the reward from the target's last token t_L (gpo.py). The
    # paper's linear head; dot was ahead on validation by 0.0016 at dropout 0.5 (results/gpo_regularise), not adopted
    # lore: the low-rank basis
    rank: PositiveInt = 8  # B basis rewards
    prune_threshold: NonNegative = 0.05  # prune a column no seen user weighs this much
    adapt_steps: PositiveInt = 100  # a new user's weights: Adam steps ...
    adapt_lr: Positive = 0.1  # ... at this rate ...
    adapt_l2: NonNegative = 1.0  # ... pulled towards the start ...
    adapt_init: Literal["seen", "population"] = "seen"  # where a new user starts. lore: the seen users' weights by the
    # shots' likelihood, or their mean. maml / reptile / finetune: the seen users' adapted weights by the shots'
    # likelihood (empirical Bayes), or theta (the papers'); then the inner steps. Chosen on validation for every
    # gradient variant (experiments/meta_start.py, results/meta_start: 60-user 3-group population, validation-unseen
    # users at 10 shots MAML 0.785 vs 0.712, Meta-SGD 0.772 vs 0.715, Reptile 0.731 vs 0.623, 2 seeds)


OWN = {  # the settings each variant reads, besides `variant`
    "maml": ("hidden", "activation", "inner_steps", "adapt_inner_steps", "inner_lr", "inner_clip", "inner_loss",
             "first_order", "learn_inner_lr", "adapt_params", "input_dropout", "flip_users", "adapt_init"),
    "reptile": ("hidden", "activation", "inner_steps", "adapt_inner_steps", "inner_lr", "inner_clip", "inner_loss",
                "inner_batches", "input_dropout", "flip_users", "adapt_init"),  # all weights: Reptile's pull trains only what adapts
    "finetune": ("hidden", "activation", "inner_steps", "adapt_inner_steps", "inner_lr", "inner_clip", "inner_loss",
                 "adapt_params", "input_dropout", "adapt_init"),
    "gpo": ("d_model", "n_layers", "n_heads", "max_context", "readout", "input_dropout", "flip_users"),
    "lore": ("rank", "prune_threshold", "adapt_steps", "adapt_lr", "adapt_l2", "adapt_init"),
}


def _check(hp: FewShotHparams) -> None:
    for f in dataclasses.fields(hp):
        if f.name != "variant" and f.name not in OWN[hp.variant]:
            users = [v for v, names in OWN.items() if f.name in names]
            refuse_unread(hp, (f.name,), f"applies to variant {' / '.join(users)}, not {hp.variant}")


def flip_user_pairs(batch: dict, key: jax.Array, p: float) -> dict:
    """Meta-augmentation (Rajendran, Irpan & Jang, "Meta-learning requires meta-augmentation", NeurIPS 2020):
    each user of a `UserBatches` batch (context and target leaves (U, n, ...)) has, with probability p, every
    pair reversed, chosen and rejected swapped in its context and its targets alike. A reversed user is a
    user whose reward is the negated one, so the meta-learner cannot score a user's targets from what it
    memorised of the training users: it must read the user's context. p trades that against the
    population prior (at p = 0.5 a user with no shots is a coin flip)."""
    n_users = batch["target"]["mask"].shape[0]
    flip = jax.random.bernoulli(key, p, (n_users,))

    def swap(part):
        f = flip.reshape(-1, *([1] * (part["chosen"].ndim - 1)))
        return {**part, "chosen": jnp.where(f, part["rejected"], part["chosen"]),
                "rejected": jnp.where(f, part["chosen"], part["rejected"])}

    return {**batch, "context": swap(batch["context"]), "target": swap(batch["target"])}


class FewShot(RewardModel):
    name = "fewshot"
    summary = "a reward meta-learned to adapt from a user's few pairs: MAML / Reptile, in-context GPO, low-rank LoRe"
    reference = ("Finn et al., MAML, ICML 2017; Nichol et al., Reptile, 2018; Zhao et al., Group Preference "
                 "Optimization, ICLR 2024; Bose et al., LoRe: Personalizing LLMs via Low-Rank Reward Modeling, 2025")
    # the demo's "fewshot" is LoRe, the variant that adapts best on its population (results/fewshot);
    # second-order MAML's 3000 steps would double the demo's time (the others: experiments/fewshot.py)
    demo = {"fewshot": ["model.variant=lore"]}
    Hparams = FewShotHparams
    traced = ("flip_users", "input_dropout")
    batches = UserBatches(context_min=0, context_max=32, targets_per_user=16)
    train_defaults = {"steps": 3000}

    @classmethod
    def check_settings(cls, hp, batches):
        _check(hp)
        if hp.variant == "reptile" and hp.inner_batches > hp.inner_steps:
            raise PluralError(f"--set model.inner_batches={hp.inner_batches}: more minibatches than model.inner_steps="
                              f"{hp.inner_steps} would leave some of a user's pairs unused; at most inner_steps")
        if hp.variant == "gpo" and batches.context_max > hp.max_context:
            raise PluralError(f"--set batch.context_max={batches.context_max}: gpo holds at most model.max_context="
                              f"{hp.max_context} labelled pairs per user; lower it or raise model.max_context")

    @classmethod
    def train_defaults_for(cls, hp):
        """LoRe trains at train.lr 1e-2: on the ideal-point population's validation data (experiments/fewshot.py)
        its unseen users at 8 shots close 0.69 of the gap at 1e-2 and 0.40 at the library's 1e-3."""
        return {**cls.train_defaults, "lr": 1e-2} if hp.variant == "lore" else cls.train_defaults

    def __init__(self, spec: dict, hp: FewShotHparams, rngs: nnx.Rngs):
        _check(hp)
        self.hp = hp
        d_in = spec["prompt_dim"] + spec["dim"]
        if hp.variant in GRADIENT:
            self.net = MetaMLP(d_in, tuple(hp.hidden), rngs, hp.activation, hp.adapt_params, hp.inner_lr,
                               hp.learn_inner_lr, hp.inner_clip, hp.inner_loss)
        elif hp.variant == "gpo":
            self.net = GPONet(spec["prompt_dim"], spec["dim"], hp.d_model, hp.n_layers, hp.n_heads, hp.max_context, rngs,
                              hp.readout)
        else:
            self.net = LoReNet(d_in, spec["n_users"], hp.rank, rngs, hp.prune_threshold, hp.adapt_steps, hp.adapt_lr,
                               hp.adapt_l2, hp.adapt_init)

    def loss(self, batch, key, step):
        if active(self.hp.flip_users):
            batch = flip_user_pairs(batch, key, self.hp.flip_users)
        batch = drop_batch(batch, self.hp.input_dropout, key)  # draws of its own: flip_users' stay as they were
        if self.hp.variant in GRADIENT:
            return meta_loss(self.net, self.hp.variant, batch, self.hp.inner_steps, self.hp.first_order,
                             self.hp.inner_batches)
        return self.net.loss(batch)

    def reward(self, prompt, response, state):
        if self.hp.variant in GRADIENT:
            return self.net.apply(state, jnp.concatenate([prompt, response], -1))
        return self.net.reward(prompt, response, state)

    def _pairs(self, context):
        return {k: context[k] for k in ("prompt", "chosen", "rejected", "mask")}

    def _adapt_from(self, start, pairs):
        """maml / reptile / finetune: `adapt_inner_steps` (or `inner_steps`) gradient steps on `pairs` from `start`."""
        return self.net.inner(start, pairs, self.hp.adapt_inner_steps or self.hp.inner_steps, True)

    def adapt(self, context, key, seen=None):
        if self.hp.variant in GRADIENT:
            pairs = self._pairs(context)
            if self.hp.adapt_init == "population":
                return self._adapt_from(self.net.theta(), pairs)
            if seen is None:  # a caller that does not pass the seen users' states: a bug, not a user's error
                raise PluralError(f"model.adapt_init=seen: {self.hp.variant}'s adaptation needs the seen users' states")
            start = seen_posterior_mean(lambda s, p, c, r: self.net.margin(s, {"prompt": p, "chosen": c, "rejected": r}),
                                        seen, pairs)
            return self._adapt_from(start, pairs)
        if self.hp.variant == "gpo":
            return self.net.encode(self._pairs(context))
        return self.net.adapt(self._pairs(context))

    def population_state(self):
        if self.hp.variant in GRADIENT:
            return self.net.theta()
        return self.net.population_state()

    def seen_states(self, dd):
        if self.hp.variant == "lore":
            return self.net.seen_states()
        rows, count = dd["user_rows"], dd["user_count"]
        if self.hp.variant == "gpo":
            rows = rows[:, : self.hp.max_context]
        mask = (jnp.arange(rows.shape[1])[None, :] < count[:, None]).astype(jnp.float32)

        def one(r, m):  # a seen user is adapted from where meta-training starts every user (theta), on all its pairs
            pairs = {"prompt": dd["prompt"][r], "chosen": dd["chosen"][r], "rejected": dd["rejected"][r], "mask": m}
            return self._adapt_from(self.net.theta(), pairs) if self.hp.variant in GRADIENT else self.net.encode(pairs)

        return jax.vmap(one)(rows, mask)
