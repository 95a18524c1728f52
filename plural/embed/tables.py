"""`plural embed IN OUT`: add the `*_embedding` columns of a preference table ahead of time.

    from plural.embed.tables import embed_table
    embed_table("prefs.jsonl", "prefs.parquet")

IN is a table as `plural fit` reads it (Parquet, JSON Lines or a directory of them), checked the same
way (one-line errors naming file, column and row); OUT is one `.parquet` or `.jsonl` file holding every
input column plus `chosen_embedding`, `rejected_embedding` and, if the table has a `prompt` column,
`prompt_embedding` (a missing prompt is embedded as the empty text). Embedding columns already in IN
are replaced, so all embeddings of OUT come from one embedder. `plural fit` on OUT gives the same
embeddings as `plural fit` on IN directly.
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


def embed_table(inp: str | Path, out: str | Path, embedder: str = "minilm") -> dict:
    """Embed the text columns of table `inp` and write the table with its embeddings to `out`.

    Returns {"rows", "texts", "distinct", "dim", "columns", "out"}.
    """
    from plural.data.table import EMBEDDING_COLUMNS, PendingTexts, _check_groups, _list_files, _read_file, _validate, embed_pending

    inp, out = Path(inp), Path(out)
    if out.suffix.lower() not in OUT_SUFFIXES:
        raise PluralError(f"{out}: unknown output type '{out.suffix}' (expected .parquet or .jsonl)")
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
    if replaced:
        print(f"plural: note: replacing the existing {', '.join(sorted(replaced))} column(s) of {inp}", file=sys.stderr)
    texts = sum(len(v) for e in embeddings for v in e.values())
    distinct = len({t for e in embeddings for v in e.values() for t in v})
    embed_pending(embeddings, inp, embedder)
    for k in embeddings[0]:
        if any(k not in e for e in embeddings):
            raise PluralError(f"{inp}: column '{k[:-len('_embedding')]}' is present in some files of the directory but not all")
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    _check_groups(df, files, [len(fr) for fr in frames])
    columns = [c for c in EMBEDDING_COLUMNS if c in embeddings[0]]
    emb = {c: np.concatenate([e[c] for e in embeddings]).astype(np.float32) for c in columns}
    _write(df, emb, out)
    return {"rows": len(df), "texts": texts, "distinct": distinct, "dim": int(emb["chosen_embedding"].shape[1]),
            "columns": columns, "out": str(out)}


def _write(df: pd.DataFrame, emb: dict[str, np.ndarray], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
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
                table = table.append_column(c, pa.ListArray.from_arrays(offsets, pa.array(E.ravel())))
            pq.write_table(table, tmp)
        else:
            fmts = {c: "[" + ",".join(["%.9g"] * E.shape[1]) + "]" for c, E in emb.items()}  # 9 digits: float32 exact
            with open(tmp, "w", encoding="utf-8") as fh:
                for i, rec in enumerate(df.to_dict(orient="records")):
                    line = json.dumps({k: _jsonable(v) for k, v in rec.items()}, ensure_ascii=False, default=str)
                    vecs = ", ".join(f'"{c}": {fmts[c] % tuple(E[i].tolist())}' for c, E in emb.items())
                    fh.write(line + "\n" if not vecs else (line[:-1] + ", " if len(line) > 2 else "{") + vecs + "}\n")
        tmp.replace(out)
    except OSError as e:
        raise PluralError(f"{out}: cannot write ({type(e).__name__}: {e})")
    finally:
        if tmp.exists():
            tmp.unlink()


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
