"""A plain numpy forward pass of all-MiniLM-L6-v2, straight from the Hugging Face parameter names.

Written independently of the Flax module (no shared code beyond the tokenizer) so that the test can check
the JAX encoder against it, and the benchmark can time the JAX encoder against it in the same run.
"""

from __future__ import annotations

import numpy as np


def _erf(x: np.ndarray) -> np.ndarray:
    """erf by Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7); numpy has no erf of its own.

    |x| is clipped at 9 (erf = 1 there in float32) so exp(-x^2) never reaches slow denormal floats.
    """
    s = np.sign(x)
    a = np.minimum(np.abs(x), np.float32(9.0))
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * np.exp(-a * a)
    return s * y


def _layer_norm(x, w, b, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def numpy_forward(w: dict[str, np.ndarray], ids: np.ndarray, mask: np.ndarray, layers: int = 6, heads: int = 12) -> np.ndarray:
    """ids, mask (B, L) -> unit-norm mean-pooled sentence embeddings (B, H), float32.

    Everything stays float32 (numpy scalars are cast first: a float64 scalar would upcast the arrays).
    """
    B, L = ids.shape
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:L][None] \
        + w["embeddings.token_type_embeddings.weight"][0]
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    H = x.shape[-1]
    dh = H // heads
    neg = np.where(mask, 0.0, np.finfo(np.float32).min).astype(np.float32)[:, None, None, :]
    for i in range(layers):
        p = f"encoder.layer.{i}."
        def dense(t, name, p=p):  # one 2-D matmul: numpy runs a stacked (B, L, H) @ (H, O) far slower
            return (t.reshape(-1, t.shape[-1]) @ w[p + name + ".weight"].T + w[p + name + ".bias"]).reshape(*t.shape[:-1], -1)

        def split(t, axes):  # (B, L, H) -> per-head, made contiguous: numpy's stacked matmul needs that for BLAS
            return np.ascontiguousarray(t.reshape(B, L, heads, dh).transpose(axes))

        q = split(dense(x, "attention.self.query"), (0, 2, 1, 3))
        k = split(dense(x, "attention.self.key"), (0, 2, 3, 1))
        v = split(dense(x, "attention.self.value"), (0, 2, 1, 3))
        s = q @ k * np.float32(1.0 / np.sqrt(dh)) + neg
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(0, 2, 1, 3).reshape(B, L, H)
        x = _layer_norm(x + dense(ctx, "attention.output.dense"),
                        w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"])
        h = dense(x, "intermediate.dense")
        h = 0.5 * h * (1.0 + _erf(h * np.float32(1.0 / np.sqrt(2.0))))
        x = _layer_norm(x + dense(h, "output.dense"), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
    m = mask[..., None].astype(np.float32)
    pooled = (x * m).sum(1) / np.maximum(m.sum(1), np.float32(1e-9))
    return (pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def numpy_encode(w: dict[str, np.ndarray], token_ids: list[list[int]], batch_size: int = 64) -> np.ndarray:
    """The plain way: batches in input order, each padded to its longest text."""
    out = []
    for s in range(0, len(token_ids), batch_size):
        chunk = token_ids[s:s + batch_size]
        L = max(len(t) for t in chunk)
        ids = np.zeros((len(chunk), L), np.int64)
        mask = np.zeros((len(chunk), L), bool)
        for r, t in enumerate(chunk):
            ids[r, :len(t)] = t
            mask[r, :len(t)] = True
        out.append(numpy_forward(w, ids, mask))
    return np.concatenate(out) if out else np.zeros((0, w["embeddings.LayerNorm.weight"].shape[0]), np.float32)
