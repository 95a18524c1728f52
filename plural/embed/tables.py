"""`plural embed IN OUT`: add the `*_embedding` columns of a preference table ahead of time.

    from plural.embed.tables import embed_table
    embed_table("prefs.jsonl", "prefs.parquet")

IN is a table as `plural fit` reads it (Parquet, JSON Lines or a directory of them), checked the same
way (one-line errors naming file, column and row); OUT is one `.parquet` or `.jsonl` file holding every
input column plus `chosen_embedding`, `rejected_embedding` and, if the table has a `prompt` column,
`prompt_embedding` (a missing prompt is embedded as the empty text). Embedding columns already in IN
are replaced, so all embeddings of OUT come from one embedder. `plural fit` on OUT gives the same
embeddings as `plural fit` on IN directly.

Crash safety: the texts are embedded in chunks, each kept in the embedding cache as it finishes
(`plural.embed`), so `plural embed` run again after being killed computes only the texts it had not
finished, and writes the same OUT, bit for bit, as an uninterrupted run. OUT is written to a temporary
file next to it and renamed over it at the end: never half a table (a killed run's temporary file is
removed by the next write of OUT). Memory: the rows are embedded and written `BLOCK_ROWS` at a time
(one Parquet row group each), so memory holds the input table and one block's embeddings, not the
table's; a text repeated across blocks is encoded once (the cache).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from plural.errors import PluralError, where

BLOCK_ROWS = 32_768  # rows embedded and written at a time (set by hand: ~150 MB of embeddings for 3 text columns)
OUT_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}


def _drop(table, names: list[str]):
    from plural.data.table import _MixedTable

    if isinstance(table, _MixedTable):
        return _MixedTable({k: v for k, v in table.arrays.items() if k not in names}, table.num_rows)
    return table.drop_columns(names)


def embed_table(inp: str | Path, out: str | Path, embedder: str = "minilm", chunk: int | None = None,
                block: int | None = None, progress: bool | None = None) -> dict:
    """Embed the text columns of table `inp` and write the table with its embeddings to `out`.

    `chunk`: distinct texts per chunk of work kept in the cache (default `$PLURAL_EMBED_CHUNK` or
    `plural.embed.CHUNK`). `block`: rows embedded and written at a time (default `$PLURAL_EMBED_BLOCK` or
    `BLOCK_ROWS`).
    `progress`: one bar over the table's texts (None: when stderr is a terminal). Returns {"rows", "texts",
    "distinct" (over the whole table), "cached" (distinct texts not encoded by this call: found in the
    cache), "computed" (texts encoded; with an unusable cache a text repeated across blocks is encoded in
    each), "dim", "columns", "out"}.
    """
    from plural.data.table import EMBEDDING_COLUMNS, PendingTexts, _check_groups, _list_files, _read_file, _validate
    from plural.embed import EMBEDDERS, _check_embedder, chunk_size, count_setting, default_cache_dir, embed_texts
    from plural.embed.cache import EmbeddingCache
    from plural.embed.minilm import progress_bar

    inp, out = Path(inp), Path(out)
    if out.suffix.lower() not in OUT_SUFFIXES:
        raise PluralError(f"{out}: unknown output type '{out.suffix}' (expected .parquet or .jsonl)")
    _check_embedder(embedder)
    chunk = chunk_size(chunk)
    block = count_setting(block, "PLURAL_EMBED_BLOCK", BLOCK_ROWS, "embedding block", "rows")
    files = _list_files(inp)
    frames, embeddings, replaced = [], [], set()
    for f in files:
        table, is_jsonl = _read_file(f)
        cols = set(table.column_names)
        missing = [c for c in ("chosen", "rejected") if c not in cols]
        if missing:
            raise PluralError(f"{where(f, missing[0])}: required column is missing "
                              "(plural embed embeds the text columns: needs chosen and rejected text)")
        old = [c for c in EMBEDDING_COLUMNS if c in cols]
        replaced.update(old)
        df, emb = _validate(_drop(table, old) if old else table, f, is_jsonl)
        assert all(isinstance(v, PendingTexts) for v in emb.values())
        frames.append(df)
        embeddings.append(emb)
    for k in embeddings[0]:
        if any(k not in e for e in embeddings):
            raise PluralError(f"{inp}: column '{k[:-len('_embedding')]}' is present in some files of the directory but not all")
    if replaced:
        print(f"plural: note: replacing the existing {', '.join(sorted(replaced))} column(s) of {inp}", file=sys.stderr)
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    _check_groups(df, files, [len(fr) for fr in frames])  # before the work: a refused table costs no embedding
    del frames
    columns = [c for c in EMBEDDING_COLUMNS if c in embeddings[0]]
    texts = {c: [t for e in embeddings for t in e[c]] for c in columns}  # each column's texts, files in order
    del embeddings
    n, total = len(df), len(columns) * len(df)
    computed = 0
    # one cache for every block: a cache found unusable warns once (its blocks then re-encode repeated texts)
    cache = EmbeddingCache(default_cache_dir(), EMBEDDERS[embedder]["name"], EMBEDDERS[embedder]["dim"])
    # the table is written block by block as each block's embeddings are ready: memory holds the input and one
    # block's embeddings, however long the table. A block's texts are encoded in the cache's chunks (see
    # plural.embed), so a rerun after a kill recomputes only unfinished chunks and writes the same bytes.
    with _Writer(out, df, columns) as w, progress_bar(total, progress) as bar:
        for start in range(0, n, block):
            stop = min(n, start + block)
            part = [t for c in columns for t in texts[c][start:stop]]
            stats: dict = {}
            try:
                vectors = embed_texts(part, embedder=embedder, cache_dir=cache, chunk=chunk, stats=stats, bar=bar)
            except PluralError as err:
                raise PluralError(f"{inp}: embedding the text-only table: {err}")
            computed += stats["computed"]
            m = stop - start
            w.write(start, stop, {c: vectors[i * m:(i + 1) * m] for i, c in enumerate(columns)})
    distinct = len({t for c in columns for t in texts[c]})
    return {"rows": n, "texts": total, "distinct": distinct, "cached": max(0, distinct - computed),
            "computed": computed, "dim": EMBEDDERS[embedder]["dim"], "columns": columns, "out": str(out)}


class _Writer:
    """`df`'s rows plus embedding columns, written to `out` block by block (Parquet: one row group per
    block; JSON Lines: one line per row) into a temporary file renamed over `out` when all went well."""

    def __init__(self, out: Path, df: pd.DataFrame, columns: list[str]):
        self.out, self.df, self.columns = out, df, columns
        self.parquet = OUT_SUFFIXES[out.suffix.lower()] == "parquet"
        if self.parquet:  # checked before any embedding work: a table Parquet cannot hold costs none
            try:
                self.base = pa.Table.from_pandas(df, preserve_index=False)
            except (pa.ArrowException, TypeError, ValueError) as e:
                raise PluralError(f"{out}: a pass-through column cannot be stored as Parquet "
                                  f"({str(e).splitlines()[0][:200]}); write .jsonl instead")

    def __enter__(self):
        from plural.files import atomic_path

        self._atomic = atomic_path(self.out)
        try:
            tmp = self._atomic.__enter__()
        except OSError as e:
            raise PluralError(f"{self.out}: cannot write ({type(e).__name__}: {e})") from None
        try:
            if self.parquet:
                import pyarrow.parquet as pq

                schema = self.base.schema
                for c in self.columns:
                    schema = schema.append(pa.field(c, pa.list_(pa.float32())))
                self.sink = pq.ParquetWriter(tmp, schema)
            else:
                self.sink = open(tmp, "w", encoding="utf-8")
        except (OSError, pa.ArrowException) as e:
            self._atomic.__exit__(type(e), e, e.__traceback__)  # removes the temporary file
            what = "cannot write" if isinstance(e, OSError) else "a pass-through column cannot be stored as Parquet"
            raise PluralError(f"{self.out}: {what} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
        return self

    def write(self, start: int, stop: int, emb: dict[str, np.ndarray]) -> None:
        """Rows [start, stop) of the frame with their embeddings `emb` (each (stop - start, dim))."""
        try:
            if self.parquet:
                table = self.base.slice(start, stop - start)
                for c, E in emb.items():
                    n, d = E.shape
                    offsets = pa.array(np.arange(0, n * d + 1, d, dtype=np.int32))
                    values = pa.array(np.ascontiguousarray(E, np.float32).reshape(-1))  # a view of E, no copy
                    table = table.append_column(c, pa.ListArray.from_arrays(offsets, values))
                self.sink.write_table(table)
            else:
                fmts = {c: "[" + ",".join(["%.9g"] * E.shape[1]) + "]" for c, E in emb.items()}  # 9 digits: float32 exact
                for i, rec in enumerate(self.df.iloc[start:stop].to_dict(orient="records")):
                    line = json.dumps({k: _jsonable(v) for k, v in rec.items()}, ensure_ascii=False, default=str)
                    vecs = ", ".join(f'"{c}": {fmts[c] % tuple(E[i].tolist())}' for c, E in emb.items())
                    self.sink.write(line + "\n" if not vecs else (line[:-1] + ", " if len(line) > 2 else "{") + vecs + "}\n")
        except OSError as e:
            raise PluralError(f"{self.out}: cannot write ({type(e).__name__}: {e})")

    def __exit__(self, kind, err, tb):
        """Close the sink; on success rename the temporary file over OUT, else remove it (OUT untouched). An
        error of the body propagates as it was; an error of closing or renaming becomes one line."""
        failed = None
        try:
            self.sink.close()
        except Exception as e:  # noqa: BLE001 - reported below unless the body already failed
            failed = e
        if kind is None and failed is not None:
            kind, err, tb = type(failed), failed, failed.__traceback__
        try:
            self._atomic.__exit__(kind, err, tb)  # success: sync and rename; an error: remove the temporary file
        except OSError as e:
            raise PluralError(f"{self.out}: cannot write ({type(e).__name__}: {e})") from None
        if failed is not None and err is failed:
            if isinstance(failed, OSError):
                raise PluralError(f"{self.out}: cannot write ({type(failed).__name__}: {failed})") from None
            raise failed
        return False


def _write(df: pd.DataFrame, emb: dict[str, np.ndarray], out: Path) -> None:
    """Write `df` plus the embedding columns `emb` ((len(df), dim) each) to `out`, atomically."""
    with _Writer(out, df, list(emb)) as w:
        w.write(0, len(df), emb)


def _jsonable(v):
    """A JSON value for one cell: numpy scalars and arrays as Python values, NaN as null."""
    if isinstance(v, np.ndarray):
        return [_jsonable(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, (pd.Timestamp,)):
        return v.isoformat()
    return v
