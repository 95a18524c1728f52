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
file next to it and renamed over it at the end: never half a table. Memory: every embedding is held
once (one array, each column a slice of it), plus one chunk.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from plural.errors import PluralError, where

OUT_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}


def _drop(table, names: list[str]):
    from plural.data.table import _MixedTable

    if isinstance(table, _MixedTable):
        return _MixedTable({k: v for k, v in table.arrays.items() if k not in names}, table.num_rows)
    return table.drop_columns(names)


def embed_table(inp: str | Path, out: str | Path, embedder: str = "minilm", chunk: int | None = None) -> dict:
    """Embed the text columns of table `inp` and write the table with its embeddings to `out`.

    `chunk`: distinct texts per chunk of work kept in the cache (default `$PLURAL_EMBED_CHUNK` or
    `plural.embed.CHUNK`). Returns {"rows", "texts", "distinct", "cached" (distinct texts found in the
    cache), "computed", "dim", "columns", "out"}.
    """
    from plural.data.table import EMBEDDING_COLUMNS, PendingTexts, _check_groups, _list_files, _read_file, _validate
    from plural.embed import EMBEDDERS, _check_embedder, chunk_size, embed_texts

    inp, out = Path(inp), Path(out)
    if out.suffix.lower() not in OUT_SUFFIXES:
        raise PluralError(f"{out}: unknown output type '{out.suffix}' (expected .parquet or .jsonl)")
    _check_embedder(embedder)
    chunk = chunk_size(chunk)
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
    columns = [c for c in EMBEDDING_COLUMNS if c in embeddings[0]]
    # one text list, column by column (files in order within a column): each column's embeddings are then
    # a slice of the one array embed_texts returns, never copied
    texts = [t for c in columns for e in embeddings for t in e[c]]
    del embeddings
    stats: dict = {}
    try:
        vectors = embed_texts(texts, embedder=embedder, chunk=chunk, stats=stats)
    except PluralError as err:
        raise PluralError(f"{inp}: embedding the text-only table: {err}")
    n = len(df)
    emb = {c: vectors[i * n:(i + 1) * n] for i, c in enumerate(columns)}
    _write(df, emb, out)
    return {"rows": n, "texts": stats["texts"], "distinct": stats["distinct"], "cached": stats["cached"],
            "computed": stats["computed"], "dim": EMBEDDERS[embedder]["dim"], "columns": columns, "out": str(out)}


def _write(df: pd.DataFrame, emb: dict[str, np.ndarray], out: Path) -> None:
    """Write `df` plus the embedding columns to `out`, atomically (a temporary file renamed over it)."""
    from plural.files import atomic_path

    try:
        with atomic_path(out) as tmp:
            if OUT_SUFFIXES[out.suffix.lower()] == "parquet":
                import pyarrow.parquet as pq

                try:
                    table = pa.Table.from_pandas(df, preserve_index=False)
                except (pa.ArrowException, TypeError, ValueError) as e:
                    raise PluralError(f"{out}: a pass-through column cannot be stored as Parquet ({str(e).splitlines()[0][:200]}); "
                                      "write .jsonl instead")
                for c, E in emb.items():
                    n, d = E.shape
                    offsets = pa.array(np.arange(0, n * d + 1, d, dtype=np.int32))
                    values = pa.array(np.ascontiguousarray(E, np.float32).reshape(-1))  # a view of E, no copy
                    table = table.append_column(c, pa.ListArray.from_arrays(offsets, values))
                pq.write_table(table, tmp)
            else:
                fmts = {c: "[" + ",".join(["%.9g"] * E.shape[1]) + "]" for c, E in emb.items()}  # 9 digits: float32 exact
                with open(tmp, "w", encoding="utf-8") as fh:
                    for i, rec in enumerate(df.to_dict(orient="records")):
                        line = json.dumps({k: _jsonable(v) for k, v in rec.items()}, ensure_ascii=False, default=str)
                        vecs = ", ".join(f'"{c}": {fmts[c] % tuple(E[i].tolist())}' for c, E in emb.items())
                        fh.write(line + "\n" if not vecs else (line[:-1] + ", " if len(line) > 2 else "{") + vecs + "}\n")
    except OSError as e:
        raise PluralError(f"{out}: cannot write ({type(e).__name__}: {e})")


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
