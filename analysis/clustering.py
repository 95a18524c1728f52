"""Recovering group structure: k-means on per-user vectors and the adjusted Rand index (numpy only)."""

from __future__ import annotations

from math import comb

import numpy as np


def kmeans(x: np.ndarray, k: int, n_init: int = 10, iters: int = 100, seed: int = 0) -> np.ndarray:
    """Cluster labels (N,) of points x (N, F): Lloyd's algorithm, best of `n_init` k-means++ starts."""
    x = np.asarray(x, np.float64)
    rng = np.random.default_rng(seed)
    best, best_inertia = None, np.inf
    for _ in range(n_init):
        centers = [x[rng.integers(len(x))]]
        for _ in range(1, k):  # k-means++ seeding
            d2 = np.min(((x[:, None] - np.asarray(centers)[None]) ** 2).sum(-1), 1)
            centers.append(x[rng.choice(len(x), p=d2 / d2.sum())] if d2.sum() > 0 else x[rng.integers(len(x))])
        c = np.asarray(centers)
        for _ in range(iters):
            labels = ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)
            new = np.stack([x[labels == j].mean(0) if (labels == j).any() else c[j] for j in range(k)])
            if np.allclose(new, c):
                break
            c = new
        inertia = ((x - c[labels]) ** 2).sum()
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    return best


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
