"""On-disk embedding cache: one SQLite file per model, rows keyed by the SHA-256 of the text.

Location: the `cache_dir` argument, else `$PLURAL_CACHE/embeddings`, else
`${XDG_CACHE_HOME:-~/.cache}/plural/embeddings`. Safe to share between processes (SQLite locking) and
to delete at any time. A cache that cannot be opened or written is skipped with one warning: the
embeddings are then computed, never wrong.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import sys
from pathlib import Path

import numpy as np

_CHUNK = 500  # keys per SELECT (SQLite limits bound parameters)


def default_cache_dir() -> Path:
    from plural.cache import cache_root

    return cache_root() / "embeddings"


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class EmbeddingCache:
    """get(keys) -> {key: vector}; put(keys, vectors). Vectors are float32 of length `dim`."""

    def __init__(self, directory: str | os.PathLike, model: str, dim: int):
        self.path = Path(directory) / f"{model}.sqlite"
        self.dim = dim
        self.ok = True

    def _warn(self, e: Exception) -> None:
        if self.ok:
            print(f"plural: warning: embedding cache {self.path} not used ({type(e).__name__}: {e})", file=sys.stderr)
        self.ok = False

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=60)
        con.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        return con

    def get(self, keys: list[str]) -> dict[str, np.ndarray]:
        if not self.ok or not keys:
            return {}
        found = {}
        try:
            con = self._connect()
            try:
                for s in range(0, len(keys), _CHUNK):
                    chunk = keys[s:s + _CHUNK]
                    q = f"SELECT key, vec FROM emb WHERE key IN ({','.join('?' * len(chunk))})"
                    for k, blob in con.execute(q, chunk):
                        if len(blob) == 4 * self.dim:
                            found[k] = np.frombuffer(blob, np.float32)
            finally:
                con.close()
        except (sqlite3.Error, OSError) as e:
            self._warn(e)
            return {}
        return found

    def put(self, keys: list[str], vectors: np.ndarray) -> None:
        if not self.ok or not keys:
            return
        vectors = np.ascontiguousarray(vectors, np.float32)
        try:
            con = self._connect()
            try:
                with con:
                    con.executemany("INSERT OR REPLACE INTO emb (key, vec) VALUES (?, ?)",
                                    ((k, v.tobytes()) for k, v in zip(keys, vectors)))
            finally:
                con.close()
        except (sqlite3.Error, OSError) as e:
            self._warn(e)
