"""k-means in JAX: one jitted implementation for the library (PAL's data-driven mixture start) and for
`analysis` (do per-user vectors recover the groups?)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp


@partial(jax.jit, static_argnames=("k", "iters", "n_init"))
def kmeans(x: jax.Array, k: int, key: jax.Array, iters: int = 50, n_init: int = 16) -> jax.Array:
    """Cluster labels (N,) of the rows of x (N, D) into k clusters: k-means++ seeding, `iters` Lloyd
    steps, the best (lowest within-cluster sum of squares) of `n_init` starts. Pure and jit-friendly."""
    n = x.shape[0]

    def seed(key):  # k-means++: each next centre drawn with probability proportional to D(x)^2
        def pick(i, carry):
            centres, d2, key = carry
            key, sub = jax.random.split(key)
            p = jnp.where(d2.sum() > 0, d2 / jnp.maximum(d2.sum(), 1e-30), 1.0 / n)  # all points equal: uniform
            j = jax.random.choice(sub, n, p=p)
            centres = centres.at[i].set(x[j])
            return centres, jnp.minimum(d2, jnp.sum((x - x[j]) ** 2, -1)), key

        key, sub = jax.random.split(key)
        j0 = jax.random.randint(sub, (), 0, n)
        centres = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[j0])
        centres, _, _ = jax.lax.fori_loop(1, k, pick, (centres, jnp.sum((x - x[j0]) ** 2, -1), key))
        return centres

    def lloyd(_, centres):
        labels = jnp.argmin(jnp.sum((x[:, None] - centres[None]) ** 2, -1), 1)
        onehot = jax.nn.one_hot(labels, k, dtype=x.dtype)
        count = onehot.sum(0)[:, None]
        return jnp.where(count > 0, onehot.T @ x / jnp.maximum(count, 1), centres)  # empty: keep the centre

    def one(key):
        centres = jax.lax.fori_loop(0, iters, lloyd, seed(key))
        d2 = jnp.sum((x[:, None] - centres[None]) ** 2, -1)
        return jnp.argmin(d2, 1), jnp.min(d2, 1).sum()

    labels, inertia = jax.vmap(one)(jax.random.split(key, n_init))
    return labels[jnp.argmin(inertia)]
