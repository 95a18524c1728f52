"""PAL: pluralistic alignment with ideal-point mixtures (Chen et al., ICLR 2025).

Ideal-point model: user i prefers what is close to their ideal point u_i in a learned latent space of
size d, and ideal points are mixtures of K shared prototypes with per-user weights

    a_i = softmax(w_i),   w_i in R^K (a row of the (n_users, K) parameter W)
    z(y) = f(e(y))        a shared item projector f (an MLP) of the response embedding

PAL-A (`pal-a`), prototypes are points P = (p_1, ..., p_K) in R^{K x d}:

    u_i = sum_k a_ik p_k,               r_i(x, y) = -||z(y) - u_i||

PAL-B (`pal-b`), prototypes are functions of the prompt, g_k(e(x)) in R^d (K heads of one MLP;
constant vectors when the table has no prompt embeddings):

    u_i(x) = sum_k a_ik g_k(e(x)),      r_i(x, y) = exp(min(s, log s_max)) * cos(u_i(x), z(y))

with a learned CLIP-style logit scale s (initialised at log(1/0.07), capped at s_max = 100).

Loss over a batch of comparisons (x, y_w, y_l, i), with margin m = r_i(x, y_w) - r_i(x, y_l):
Bradley-Terry -log sigma(m) (`loss="bt"`, PAL-B's default) or hinge max(0, hinge_margin - m)
(`loss="hinge"`, PAL-A's default), plus `mixture_entropy` x the mean entropy of the batch users' mixtures
H(a_i): a sparsity prior that puts each user near one prototype (K preference types);
`model.mixture_entropy=0` is the paper's objective, and the prior to drop where users truly blend types. Learning rates per parameter group (the paper's release: projectors
1e-4, prototypes and weights 5e-3): `projector_lr_factor`, `prototype_lr_factor` and `weight_lr_factor` scale
`train.lr` for f, for P / g (and the logit scale) and for W.

Start. Random logits put every user at the prototypes' centroid, and training can then settle with a
small minority merged into a larger group's prototype (about one fit in four on the 3-group test
population). With `user_init="kmeans"` (the default) each user's logits start at +`user_init_strength` on
its cluster of `user_directions` (the mean chosen-minus-rejected embedding, k-means into K clusters);
PAL-A's prototypes start orthogonal and far apart (`prototype_init_std`). From `user_init=random` PAL-A
merges groups on about half the training seeds (3 of 6 on the 3-group population, even at equal shares
while the entropy prior is on; tests/test_pal.py). Regularisers: an L2 penalty on the projector
(`projector_l2`), dropout on the response embeddings while training (`input_dropout`; PAL-B's cosine does
not see the projector's scale, so an L2 penalty does nothing there) and, for PAL-B, an L2 penalty on the
prompt-dependent part of its prototype functions (`prompt_l2`: with 64 distinct prompts and no penalty,
PAL-B learned per-prompt prototypes and memorised the training pairs, train accuracy 0.95 against 0.6 on
validation).

Defaults. Every default marked "suite" below was chosen on VALIDATION data of the defaults suite
(experiments/defaults.py, results/defaults: 5 simulated populations and 2 real-text tables, one point per
family with the best validation accuracy averaged over the suite; test numbers played no part), together
with early stopping on the validation pairs (train.eval_every / train.early_stopping).

Users. A seen user's state is the mixture a_i = softmax(w_i) (K,); `--shots 0` uses the mean mixture of
the seen users. A new user with S labelled pairs: everything is frozen and only the K logits w are fitted.
The start (`adapt_init="seen"`) is empirical Bayes over the seen users: their mixtures averaged with
weights proportional to the likelihood of the S pairs under each, which puts a new user next to the
seen users who answer alike; then `adapt_steps` jitted Adam steps on the pairs' BT loss with an L2 pull
`adapt_l2` towards that start (a free fit of K logits from a few pairs overshoots: 1 or 2 pairs do not
say which corner of the simplex a user belongs to). The pairs are projected once, so a step costs
O(S * K * d) and one user takes well under a millisecond on a CPU (`plural bench adapt`).
"""

from __future__ import annotations

import dataclasses
from typing import Literal
import math

import jax
import jax.numpy as jnp
from flax import nnx

from plural.cluster import kmeans
from plural.config import Count, NonNegative, Positive, PositiveInt, Rate
from plural.models.base import (MLP, RewardModel, active, adapt_by_gradient, bt_nll, drop_responses, masked_accuracy,
                                refuse_unread, seen_mixture_start, user_directions)


@dataclasses.dataclass(frozen=True)
class PALHparams:
    n_prototypes: PositiveInt = 4  # K (suite: 4 for PAL-A, 8 for PAL-B; 3..8 all within 0.01 of validation accuracy)
    latent_dim: PositiveInt = 16  # d, the size of the ideal-point space
    projector_hidden: tuple[PositiveInt, ...] = (64,)  # item projector f: e(y) -> R^d
    activation: Literal["gelu", "relu", "tanh", "silu", "linear"] = "gelu"
    loss: Literal["bt", "hinge"] = "hinge"
    hinge_margin: NonNegative = 1.0
    mixture_entropy: float = 0.1  # suite: 0.1 over 0; penalty on the entropy of the seen users' mixtures
    projector_l2: NonNegative = 0.0  # penalty on the projector's squared kernel weights (bounds the margins' scale)
    input_dropout: Rate = 0.0  # dropout rate on e(y_w), e(y_l) while training (a cosine reward ignores L2)
    weight_init_std: NonNegative = 0.1  # per-user logits w ~ N(0, std^2)
    user_init: Literal["kmeans", "random"] = "kmeans"  # "kmeans": + user_init_strength on the logit of the user's k-means cluster | "random"
    user_init_strength: NonNegative = 2.0
    prototype_init_std: Positive = 1.0  # PAL-A prototypes P: orthogonal rows of norm std (K <= d)
    projector_lr_factor: NonNegative = 1.0  # x train.lr for f
    prototype_lr_factor: NonNegative = 5.0  # x train.lr for P (PAL-A), g and the logit scale (PAL-B)
    weight_lr_factor: NonNegative = 20.0  # x train.lr for the per-user logits W
    adapt_steps: Count = 100  # Adam steps fitting a new user's K logits
    adapt_lr: Positive = 0.1
    adapt_l2: NonNegative = 1.0  # pull towards the starting logits (see adapt_init)
    adapt_entropy: NonNegative = 0.0  # entropy prior on the new user's mixture (total weight; per pair / shots)
    adapt_init: Literal["seen", "population"] = "seen"  # start: "seen" (seen users' mixtures weighted by the shots' likelihood) | "population"


@dataclasses.dataclass(frozen=True)
class PALAHparams(PALHparams):
    loss: Literal["bt", "hinge"] = "hinge"
    projector_hidden: tuple[PositiveInt, ...] = (256,)  # suite: (256,) over (128,); wide enough for a norm-dependent reward
    prototype_init_std: Positive = 10.0  # prototypes start far apart (beyond the items), so that they do not merge
    projector_l2: NonNegative = 0.0  # suite: 0 over 1e-3 (early stopping regularises; 1e-3 cut Gaussian items to 0.1 of the gap)


@dataclasses.dataclass(frozen=True)
class PALBHparams(PALHparams):
    loss: Literal["bt", "hinge"] = "bt"
    projector_hidden: tuple[PositiveInt, ...] = ()  # a linear f. Suite (results/widths): () over (256,), 0.749 vs 0.743
    n_prototypes: PositiveInt = 8  # suite
    latent_dim: PositiveInt = 32
    input_dropout: Rate | None = None  # None: `auto_dropout` by table size (RewardModel.resolve_data); the cosine is
    # blind to an L2 penalty on f. Suite validation (results/input_dropout) at 0 / 0.25 / 0.5: small real-text
    # tables 0.620 / 0.645 / 0.649, simulated populations 0.791 / 0.790 / 0.781
    prompt_hidden: tuple[PositiveInt, ...] = (64,)  # h: e(x) -> R^{K x d}, the prompt-dependent part of g
    prompt_l2: NonNegative = 100.0  # suite: 100 over 0 and 10; penalty on mean_k ||h_k(x)||^2 (prompt-dependence only where it pays)
    logit_scale_init: float = math.log(1 / 0.07)
    logit_scale_max: Positive = 100.0  # cap on exp(logit scale)


class PAL(RewardModel):
    """What PAL-A and PAL-B share: per-user mixture weights, the item projector, losses and adaptation."""

    train_defaults = {"steps": 3000}
    traced = ("input_dropout", "mixture_entropy", "hinge_margin", "projector_l2")
    reference = "Chen et al., PAL: Sample-Efficient Personalized Reward Modeling for Pluralistic Alignment, ICLR 2025"

    @classmethod
    def check_settings(cls, hp: PALHparams, batches) -> None:
        """Settings read only by another choice: the hinge's margin, the k-means start's strength."""
        if hp.loss != "hinge":
            refuse_unread(hp, ("hinge_margin",), f"applies with model.loss=hinge, not {hp.loss}")
        if hp.user_init != "kmeans":
            refuse_unread(hp, ("user_init_strength",), f"applies with model.user_init=kmeans, not {hp.user_init}")

    def __init__(self, spec: dict, hp: PALHparams, rngs: nnx.Rngs):
        self.hp = hp
        self.projector = MLP(spec["dim"], tuple(hp.projector_hidden), hp.latent_dim, rngs, hp.activation)
        self.w = nnx.Param(hp.weight_init_std * jax.random.normal(rngs.params(), (spec["n_users"], hp.n_prototypes)))

    # -- the variant's geometry -------------------------------------------------------------------------
    def prototypes_at(self, prompt: jax.Array) -> jax.Array:
        """The K prototypes in context `prompt` (..., Dp) -> (..., K, d)."""
        raise NotImplementedError  # abstract: PAL-A / PAL-B

    def score(self, u: jax.Array, z: jax.Array) -> jax.Array:
        """Reward of projected items z (..., d) for ideal points u (..., d)."""
        raise NotImplementedError  # abstract: PAL-A / PAL-B

    def ideal_point(self, prompt: jax.Array, mix: jax.Array) -> jax.Array:
        """u = sum_k mix_k prototype_k: prompt (..., Dp), mix (..., K) -> (..., d)."""
        return jnp.einsum("...k,...kd->...d", mix, self.prototypes_at(prompt))

    # -- the protocol -------------------------------------------------------------------------------------
    def reward(self, prompt, response, state):
        """prompt (..., Dp), response (..., D), state = mixture weights (..., K) -> reward (...)."""
        return self.score(self.ideal_point(prompt, state), self.projector(response))

    def margin(self, prompt, chosen, rejected, state):
        u = self.ideal_point(prompt, state)  # shared by both responses
        return self.score(u, self.projector(chosen)) - self.score(u, self.projector(rejected))

    def mixture(self, users: jax.Array) -> jax.Array:
        """softmax(w_i) of user indices (...) -> (..., K)."""
        return jax.nn.softmax(self.w[...][users], axis=-1)

    def loss(self, batch, key, step):
        mix = self.mixture(batch["user"])
        chosen, rejected = batch["chosen"], batch["rejected"]
        if active(self.hp.input_dropout):  # inverted dropout on the response embeddings, training only
            chosen, rejected = drop_responses(chosen, rejected, self.hp.input_dropout, key)
        m = self.margin(batch["prompt"], chosen, rejected, mix)
        mask = batch["mask"]
        nll = bt_nll(m, mask)
        if self.hp.loss == "hinge":
            hinge = jax.nn.relu(self.hp.hinge_margin - m)
            obj = (hinge * mask).sum() / jnp.maximum(mask.sum(), 1.0)
        else:
            obj = nll
        ent = (-jnp.sum(mix * jnp.log(mix + 1e-9), -1) * mask).sum() / jnp.maximum(mask.sum(), 1.0)
        obj = obj + self.hp.mixture_entropy * ent
        if active(self.hp.projector_l2):
            obj = obj + self.hp.projector_l2 * sum(jnp.sum(layer.kernel[...] ** 2) for layer in self.projector.layers)
        return obj, {"accuracy": masked_accuracy(m, mask), "nll": nll, "entropy": ent}

    def init_from_data(self, dd, rngs):
        """Break the prototypes' symmetry with the data: users who agree start on the same prototype.

        Random logits start every user at the prototypes' centroid, and gradient descent can then settle
        with two groups on one prototype and another prototype unused (seen on about one fit in four, a
        small minority merged into a larger group). Starting each user's logits at +strength on its
        cluster of `user_directions` (k-means, K clusters) avoids that local optimum."""
        if self.hp.user_init == "kmeans" and self.hp.n_prototypes > 1:
            labels = kmeans(user_directions(dd), self.hp.n_prototypes, rngs.params())
            self.w[...] += self.hp.user_init_strength * jax.nn.one_hot(labels, self.hp.n_prototypes)

    def seen_states(self, dd):
        return jax.nn.softmax(self.w[...], axis=-1)  # (U, K)

    def population_state(self):
        return jax.nn.softmax(self.w[...], axis=-1).mean(0)  # the seen users' mean mixture (K,)

    def adapt(self, context, key, seen=None):
        """Fit a new user's K logits on the context pairs; f, P / g (and W) stay frozen."""
        protos = jax.lax.stop_gradient(self.prototypes_at(context["prompt"]))  # (S, K, d)
        feats = {"prompt": protos, "mask": context["mask"],
                 "chosen": jax.lax.stop_gradient(self.projector(context["chosen"])),
                 "rejected": jax.lax.stop_gradient(self.projector(context["rejected"]))}

        def margin_fn(logits, g, zc, zr):
            u = jnp.einsum("k,skd->sd", jax.nn.softmax(logits), g)
            return self.score(u, zc) - self.score(u, zr)

        n = jnp.maximum(context["mask"].sum(), 1.0)

        def entropy(logits):  # a sparsity prior: a user sits near one prototype; weight adapt_entropy / n
            a = jax.nn.softmax(logits)
            return -(self.hp.adapt_entropy / n) * jnp.sum(a * jnp.log(a + 1e-9))

        if self.hp.adapt_init == "seen":
            # empirical Bayes over the seen users: their mixtures weighted by the likelihood of the shots
            start = seen_mixture_start(margin_fn, jax.lax.stop_gradient(self.seen_states(None)), feats)
            init = jnp.log(jnp.maximum(start, 1e-6))
        else:
            init = jnp.log(jnp.maximum(self.population_state(), 1e-6))
        logits = adapt_by_gradient(margin_fn, init, feats, self.hp.adapt_steps, self.hp.adapt_lr, self.hp.adapt_l2,
                                   penalty=entropy)
        return jax.nn.softmax(logits)

    # -- per-parameter-group learning rates -----------------------------------------------------------------
    @classmethod
    def param_group(cls, path):
        head = path[0] if path else ""
        if head == "projector":
            return "projector"
        if head == "w":
            return "weights"
        return "prototypes"  # P (PAL-A); g and the logit scale (PAL-B)

    @classmethod
    def lr_multipliers(cls, hp):
        return {"projector": hp.projector_lr_factor, "prototypes": hp.prototype_lr_factor,
                "weights": hp.weight_lr_factor}


class PALA(PAL):
    """PAL-A: prototypes are points; reward = minus the distance to the user's ideal point."""

    name = "pal-a"
    summary = "ideal points mixed from K prototype points; reward = -distance to the user's ideal point"
    Hparams = PALAHparams

    def __init__(self, spec: dict, hp: PALAHparams, rngs: nnx.Rngs):
        super().__init__(spec, hp, rngs)
        self.prototypes = nnx.Param(
            hp.prototype_init_std * jax.nn.initializers.orthogonal()(rngs.params(), (hp.n_prototypes, hp.latent_dim)))

    def prototypes_at(self, prompt):
        P = self.prototypes[...]
        return jnp.broadcast_to(P, (*prompt.shape[:-1], *P.shape))

    def ideal_point(self, prompt, mix):
        return mix @ self.prototypes[...]

    def score(self, u, z):
        return -jnp.sqrt(jnp.sum((z - u) ** 2, -1) + 1e-8)


class PALB(PAL):
    """PAL-B: prototypes are functions of the prompt; reward = scaled cosine to the user's ideal point."""

    name = "pal-b"
    summary = "K prompt-dependent prototype functions mixed per user; reward = scaled cosine similarity"
    Hparams = PALBHparams
    traced = PAL.traced + ("prompt_l2",)
    auto_dropout = (0.0, 0.5)  # input_dropout=None: (rate, small-table rate), see PALBHparams

    @classmethod
    def check_settings(cls, hp: PALBHparams, batches) -> None:
        super().check_settings(hp, batches)
        refuse_unread(hp, ("prototype_init_std",), "applies to pal-a (its orthogonal start), not pal-b")

    def __init__(self, spec: dict, hp: PALBHparams, rngs: nnx.Rngs):
        super().__init__(spec, hp, rngs)
        K, d = hp.n_prototypes, hp.latent_dim
        self.prototypes = nnx.Param(jax.random.normal(rngs.params(), (K, d)) / math.sqrt(d))
        if spec["prompt_dim"] > 0:
            self.prompt_fn = MLP(spec["prompt_dim"], tuple(hp.prompt_hidden), K * d, rngs, hp.activation)
            last = self.prompt_fn.layers[-1]
            last.kernel[...] = jnp.zeros_like(last.kernel[...])  # g_k starts as the constant p_k
        else:  # "one fixed context": the prototype functions are the constants p_k
            self.prompt_fn = None
        self.logit_scale = nnx.Param(jnp.asarray(hp.logit_scale_init, jnp.float32))

    def prompt_part(self, prompt):
        """h(e(x)): (..., Dp) -> (..., K, d); zeros without prompt embeddings."""
        K, d = self.hp.n_prototypes, self.hp.latent_dim
        if self.prompt_fn is None:
            return jnp.zeros((*prompt.shape[:-1], K, d))
        return self.prompt_fn(prompt).reshape(*prompt.shape[:-1], K, d)

    def prototypes_at(self, prompt):
        return self.prototypes[...] + self.prompt_part(prompt)

    def loss(self, batch, key, step):
        obj, metrics = super().loss(batch, key, step)
        if self.prompt_fn is None or not active(self.hp.prompt_l2):
            return obj, metrics
        h2 = jnp.sum(self.prompt_part(batch["prompt"]) ** 2, -1).mean()
        return obj + self.hp.prompt_l2 * h2, {**metrics, "prompt_norm2": h2}

    def scale(self):
        return jnp.exp(jnp.minimum(self.logit_scale[...], math.log(self.hp.logit_scale_max)))

    def score(self, u, z):
        cos = jnp.sum(u * z, -1) / jnp.sqrt((jnp.sum(u * u, -1) + 1e-8) * (jnp.sum(z * z, -1) + 1e-8))
        return self.scale() * cos
