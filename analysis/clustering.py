"""Recovering group structure: k-means on per-user vectors, the adjusted Rand index, and matching learned
components to true ones."""

from __future__ import annotations

from math import comb

import jax
import jax.numpy as jnp
import numpy as np

from plural import cluster


def kmeans(x: np.ndarray, k: int, n_init: int = 16, iters: int = 100, seed: int = 0) -> np.ndarray:
    """Cluster labels (N,) of points x (N, F): the best of `n_init` k-means++ starts of `iters` Lloyd
    steps (`plural.cluster.kmeans`, the library's one implementation; deterministic per `seed`)."""
    x = jnp.asarray(np.asarray(x, np.float32))
    return np.asarray(cluster.kmeans(x, int(k), jax.random.key(seed), iters=iters, n_init=n_init))


def adjusted_rand_index(a, b) -> float:
    """Adjusted Rand index of two labelings (1 = identical up to renaming, ~0 = chance)."""
    a = np.unique(np.asarray(a), return_inverse=True)[1]
    b = np.unique(np.asarray(b), return_inverse=True)[1]
    table = np.zeros((a.max() + 1, b.max() + 1), np.int64)
    np.add.at(table, (a, b), 1)
    pairs = sum(comb(int(n), 2) for n in table.ravel())
    rows = sum(comb(int(n), 2) for n in table.sum(1))
    cols = sum(comb(int(n), 2) for n in table.sum(0))
    expected = rows * cols / comb(len(a), 2)
    top = (rows + cols) / 2 - expected
    return float((pairs - expected) / top) if top else 1.0


def match_components(learned: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Match learned components to true ones up to permutation, by the correlation of their profiles.

    learned: (K, N), true: (G, N) -- e.g. each prototype's reward of N probe responses, or directions.
    Returns (assignment, corr): `assignment[g]` is the learned component matched to true component g
    (distinct components, the assignment maximising the summed correlation; needs K >= G, brute force
    over permutations, fine for K <= 8) and `corr[g]` the Pearson correlation of that match.
    """
    import itertools

    learned, true = np.asarray(learned, float), np.asarray(true, float)
    if learned.shape[0] < true.shape[0]:
        raise ValueError(f"need at least as many learned components ({learned.shape[0]}) as true ones ({true.shape[0]})")
    z = lambda a: (a - a.mean(1, keepdims=True)) / (a.std(1, keepdims=True) + 1e-12)  # noqa: E731
    c = z(true) @ z(learned).T / true.shape[1]  # (G, K)
    best = max(itertools.permutations(range(learned.shape[0]), true.shape[0]),
               key=lambda p: sum(c[g, k] for g, k in enumerate(p)))
    assignment = np.asarray(best)
    return assignment, c[np.arange(true.shape[0]), assignment]
