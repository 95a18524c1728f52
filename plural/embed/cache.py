"""On-disk embedding cache: one SQLite file per model, rows keyed by the SHA-256 of the text.

Location: the `cache_dir` argument, else `$PLURAL_CACHE/embeddings`, else
`${XDG_CACHE_HOME:-~/.cache}/plural/embeddings`. Safe to share between processes (SQLite locking) and
to delete at any time. A cache that cannot be opened or written is skipped with one warning: the
embeddings are then computed, never wrong.

Crash safety: each `put` is one SQLite transaction (`plural.embed` puts one chunk of texts at a time), so a
process killed at any point (SIGKILL included) leaves every chunk it finished and none of the one in
flight (SQLite rolls an interrupted transaction back from its journal when the file is next opened).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import sys
from pathlib import Path
from typing import Iterator

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
        return {keys[i]: v for i, v in self.lookup(keys)}

    def lookup(self, keys: list[str]) -> Iterator[tuple[int, np.ndarray]]:
        """(index into `keys`, vector) for each key in the cache, a few hundred keys at a time (nothing held
        beyond one query's rows); a cache that fails part way is skipped with its warning."""
        if not self.ok or not keys:
            return
        try:
            con = self._connect()
            try:
                for s in range(0, len(keys), _CHUNK):
                    chunk = keys[s:s + _CHUNK]
                    where = {k: s + i for i, k in enumerate(chunk)}
                    q = f"SELECT key, vec FROM emb WHERE key IN ({','.join('?' * len(chunk))})"
                    rows = con.execute(q, chunk).fetchall()
                    for k, blob in rows:
                        if len(blob) == 4 * self.dim:
                            yield where[k], np.frombuffer(blob, np.float32)
            finally:
                con.close()
        except (sqlite3.Error, OSError) as e:
            self._warn(e)

    def count(self) -> int:
        """Rows in the cache (0 when it cannot be read)."""
        try:
            con = self._connect()
            try:
                return int(con.execute("SELECT COUNT(*) FROM emb").fetchone()[0])
            finally:
                con.close()
        except (sqlite3.Error, OSError):
            return 0

    def put(self, keys: list[str], vectors: np.ndarray) -> None:
        """Store `vectors` under `keys`, all or none (one transaction)."""
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
