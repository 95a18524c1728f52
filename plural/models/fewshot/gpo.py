"""GPO: an in-context reward model that reads a user's labelled pairs (Zhao et al., ICLR 2024, "Group
Preference Optimization: Few-Shot Alignment of Large Language Models"; the model-scale analogue of
FSPO, Singh et al. 2025). A transformer neural process:

- a context token per labelled pair, c_j = W_c [e(x_j), e(y_w,j), e(y_l,j)] (the label is the order:
  chosen first), and a learned null token c_0 that is always present (so 0 shots is defined: the
  population prediction);
- a target token per response to score, t = W_t [e(x), e(y)];
- `n_layers` pre-norm transformer blocks (`n_heads` heads, width `d_model`, MLP 4 x d_model). The
  context tokens attend to each other and the null token; a target attends to the context and the null
  token only (never to other targets), so targets are scored independently of each other;
- the reward r(x, y | context) = w^T LN(t_L) + b (`readout=linear`, the paper's), and P(y_w > y_l |
  context) = sigma(r_w - r_l), trained with the Bradley-Terry loss on each meta-training user's target
  pairs given its context pairs.

Because targets never serve as keys, a user's context can be encoded once: its state is every layer's
keys and values of the context tokens (`max_context` + 1 slots with a mask), and scoring a response
runs only the target's own stream against them. A user with more pairs than `max_context` is encoded
from its first `max_context` (seen users, in file order); `evaluate --shots K` needs K <= max_context.

Options beyond the paper: `readout=dot` adds phi(x, y)^T LN(t_L) / sqrt(d_model) to the reward, phi a
linear map of the target's embeddings, so that a user vector read from the context meets the response in
one product (a reward linear in the response is then one multiplication away, not an MLP's approximation
of one); the family's `input_dropout` drops entries of the response embeddings while meta-training.

Departure from the paper: GPO's tokens are LLM embeddings of (question, answer option) with the group's
preference score, and it predicts scores of single options; here a token is a comparison (and a
response to score), so that the model fits the pairwise data every family reads.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from plural.errors import PluralError
from plural.models.base import bt_nll, masked_accuracy


class Block(nnx.Module):
    def __init__(self, d: int, heads: int, rngs: nnx.Rngs):
        self.heads = heads
        self.ln1, self.ln2 = nnx.LayerNorm(d, rngs=rngs), nnx.LayerNorm(d, rngs=rngs)
        self.q, self.k, self.v, self.o = (nnx.Linear(d, d, rngs=rngs) for _ in range(4))
        self.up, self.down = nnx.Linear(d, 4 * d, rngs=rngs), nnx.Linear(4 * d, d, rngs=rngs)

    def keys_values(self, h):
        """Keys and values (..., n, d) of the token stream h (..., n, d) that other tokens attend to."""
        z = self.ln1(h)
        return self.k(z), self.v(z)

    def attend(self, h, k, v, mask):
        """h (..., n, d) attends to k, v (..., m, d) with key mask (..., m): the residual update of h."""
        d = h.shape[-1]
        dh = d // self.heads
        split = lambda a: a.reshape(*a.shape[:-1], self.heads, dh)  # noqa: E731
        q = split(self.q(self.ln1(h)))  # (..., n, H, dh)
        scores = jnp.einsum("...nhd,...mhd->...hnm", q, split(k)) / jnp.sqrt(dh)
        scores = jnp.where(mask[..., None, None, :] > 0, scores, -1e9)
        out = jnp.einsum("...hnm,...mhd->...nhd", jax.nn.softmax(scores, -1), split(v))
        h = h + self.o(out.reshape(*out.shape[:-2], d))
        return h + self.down(jax.nn.gelu(self.up(self.ln2(h))))


class GPONet(nnx.Module):
    def __init__(self, d_prompt: int, d: int, d_model: int, n_layers: int, n_heads: int, max_context: int,
                 rngs: nnx.Rngs, readout: str = "linear"):
        if d_model % n_heads:
            raise PluralError(f"--set model.d_model={d_model}: must be a multiple of model.n_heads={n_heads}")
        self.max_context, self.d_prompt, self.d = max_context, d_prompt, d
        self.embed_context = nnx.Linear(d_prompt + 2 * d, d_model, rngs=rngs)
        self.embed_target = nnx.Linear(d_prompt + d, d_model, rngs=rngs)
        self.null = nnx.Param(0.02 * jax.random.normal(rngs.params(), (d_model,)))
        self.blocks = nnx.List([Block(d_model, n_heads, rngs) for _ in range(n_layers)])
        self.ln = nnx.LayerNorm(d_model, rngs=rngs)
        self.head = nnx.Linear(d_model, 1, rngs=rngs)
        self.readout = readout
        if readout == "dot":
            self.features = nnx.Linear(d_prompt + d, d_model, rngs=rngs)

    def encode(self, pairs: dict) -> dict:
        """A user's state from its labelled pairs (n <= max_context, ...) with mask (n,): every layer's keys and
        values of [null, pairs] padded to max_context + 1 slots: {"k", "v": (L, C+1, d), "mask": (C+1,)}."""
        n = pairs["chosen"].shape[0]
        if n > self.max_context:
            raise PluralError(f"gpo holds at most model.max_context={self.max_context} labelled pairs per user, "
                              f"not {n} (--shots {n}?): raise it with --set model.max_context=...")
        pad = self.max_context - n
        tok = self.embed_context(jnp.concatenate([pairs["prompt"], pairs["chosen"], pairs["rejected"]], -1))
        h = jnp.concatenate([self.null[...][None], tok, jnp.zeros((pad, tok.shape[-1]))], 0)
        mask = jnp.concatenate([jnp.ones(1), pairs["mask"], jnp.zeros(pad)])
        ks, vs = [], []
        for block in self.blocks:
            k, v = block.keys_values(h)
            ks.append(k)
            vs.append(v)
            h = block.attend(h, k, v, mask)
        return {"k": jnp.stack(ks), "v": jnp.stack(vs), "mask": mask}

    def population_state(self) -> dict:
        """The state of a user with no labelled pairs (the null token alone)."""
        empty = {"prompt": jnp.zeros((0, self.d_prompt)), "chosen": jnp.zeros((0, self.d)),
                 "rejected": jnp.zeros((0, self.d)), "mask": jnp.zeros(0)}
        return self.encode(empty)

    def reward(self, prompt, response, state):
        """r (...,) of responses given their users' encoded contexts (state leaves with the leading dims)."""
        h = self.embed_target(jnp.concatenate([prompt, response], -1))[..., None, :]  # (..., 1, d)
        for i, block in enumerate(self.blocks):
            h = block.attend(h, state["k"][..., i, :, :], state["v"][..., i, :, :], state["mask"])
        out = self.ln(h[..., 0, :])
        r = self.head(out)[..., 0]
        if self.readout == "dot":
            r = r + jnp.sum(self.features(jnp.concatenate([prompt, response], -1)) * out, -1) / jnp.sqrt(out.shape[-1])
        return r

    def loss(self, batch):
        ctx, tgt = batch["context"], batch["target"]
        states = jax.vmap(self.encode)({k: ctx[k] for k in ("prompt", "chosen", "rejected", "mask")})
        per_pair = jax.tree.map(lambda s: s[:, None], states)  # (U, 1, ...): broadcasts over a user's targets
        m = self.reward(tgt["prompt"], tgt["chosen"], per_pair) - self.reward(tgt["prompt"], tgt["rejected"], per_pair)
        nll = bt_nll(m, tgt["mask"])
        return nll, {"accuracy": masked_accuracy(m, tgt["mask"]), "nll": nll}
