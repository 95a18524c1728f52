"""Reading and validating the preference table of docs/data-format.md.

`read_table(path)` accepts a parquet file, a JSON Lines file or a directory of them and returns a
validated `PreferenceData`. Every check runs before any training and fails with a one-line
`PluralError` naming the file, the column and the first offending row (0-based; JSON Lines errors
also give the 1-based line). A text-only table (no embedding columns) is checked, then embedded with the
offline embedder `plural.embed` (cached on disk). `read_frame(path)` runs the same checks without embedding
and returns the rows as stored (for `plural split`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from plural.data.arrays import PreferenceData, aligned, aligned_empty
from plural.errors import PluralError, where

EMBEDDING_COLUMNS = ("prompt_embedding", "chosen_embedding", "rejected_embedding")
TEXT_COLUMNS = ("prompt", "chosen", "rejected")
SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}


def read_table(path: str | Path, embedder: str = "minilm") -> PreferenceData:
    """Read, validate and index a preference table (file or directory of files).

    A text-only table (`chosen` / `rejected` text, no embedding columns) is embedded with `embedder`
    (`plural.embed`, cached on disk): chosen, rejected and, if the table has a `prompt` column, the
    prompt (a missing prompt in a row is embedded as the empty text, i.e. one fixed context).
    """
    df, emb, _ = read_embedded(path, embedder)
    return PreferenceData.from_frame(df, emb, source=str(Path(path)))


def read_embedded(path: str | Path, embedder: str = "minilm") -> tuple[pd.DataFrame, dict[str, np.ndarray], bool]:
    """What `read_table` indexes: (every non-embedding column as validated, {embedding column: (N, D) array},
    whether the embeddings were stored in the table rather than computed from its texts)."""
    path = Path(path)
    files, _, frames, embeddings = _read_validated(path, keep_tables=False)
    stored = not any(isinstance(v, PendingTexts) for e in embeddings for v in e.values())
    _check_files(path, files, frames, embeddings)  # before embedding anything
    embed_pending(embeddings, path, embedder)
    _check_files(path, files, frames, embeddings)  # the lengths of what was embedded
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    emb = {k: _concatenate([e[k] for e in embeddings]) for k in embeddings[0]}
    _check_groups(df, files, [len(fr) for fr in frames])
    return df, emb, stored


def _concatenate(parts: list[np.ndarray]) -> np.ndarray:
    """The files' rows as one aligned array (`arrays.aligned`): a single file's array is used as it is."""
    if len(parts) == 1:
        return aligned(parts[0])
    out = aligned_empty((sum(len(p) for p in parts), *parts[0].shape[1:]), parts[0].dtype)
    np.concatenate(parts, out=out)
    return out


def read_frame(path: str | Path) -> pd.DataFrame:
    """Validate a preference table exactly as `read_table` does, but embed nothing: the rows as stored.

    Returns one DataFrame row per input row in file order (files of a directory in name order), with
    every column as in the files: Parquet columns keep their Arrow types (`pd.ArrowDtype`), JSON Lines
    columns hold the parsed JSON values (dtype object), so writing a subset back loses nothing. For tools
    that move rows between tables (`plural split`) and must not need the embedder.
    """
    path = Path(path)
    files, tables, frames, embeddings = _read_validated(path)
    _check_files(path, files, frames, embeddings)
    _check_groups(pd.concat(frames, ignore_index=True), files, [len(fr) for fr in frames])
    raw = [t.to_pandas(types_mapper=pd.ArrowDtype) if isinstance(t, pa.Table)
           else pd.DataFrame({c: pd.Series(_as_list(t.column(c)), dtype=object) for c in t.column_names})
           for t in tables]
    return pd.concat(raw, ignore_index=True) if len(raw) > 1 else raw[0]


def _read_validated(path: Path, keep_tables: bool = True) -> tuple[list[Path], list, list[pd.DataFrame], list[dict]]:
    """Read and validate every file of `path`: (files, raw tables, validated frames, embeddings per file).

    Without `keep_tables` (raw tables returned as None), Parquet files are streamed by record batch into
    the final embedding arrays, so that reading holds the embeddings once, plus one batch."""
    files = _list_files(path)
    tables, frames, embeddings = [], [], []
    for f in files:
        if not keep_tables and SUFFIXES[f.suffix.lower()] == "parquet":
            table, (df, emb) = None, _read_parquet_streamed(f)
        else:
            table, is_jsonl = _read_file(f)
            df, emb = _validate(table, f, is_jsonl)
        tables.append(table)
        frames.append(df)
        embeddings.append(emb)
    return files, tables, frames, embeddings


STREAM_ROWS = 16_384  # rows per record batch when a Parquet file is streamed (set by hand: bounds the batch's memory)


def _read_parquet_streamed(f: Path) -> tuple[pd.DataFrame, dict]:
    """`_validate` of a Parquet file, one record batch at a time, each batch's embeddings copied into one
    aligned (N, D) array per column as it is checked (rows numbered from the start of the file)."""
    try:
        pf = pq.ParquetFile(f, pre_buffer=False, buffer_size=1 << 20)  # read pages as needed, not whole row groups
        n = pf.metadata.num_rows
        if n == 0:
            raise PluralError(f"{f}: the table is empty (no rows)")
        frames, emb, start = [], {}, 0
        for batch in pf.iter_batches(batch_size=STREAM_ROWS, use_threads=False):
            df, e = _validate(pa.Table.from_batches([batch]), f, False, offset=start)
            for k, v in e.items():
                if isinstance(v, PendingTexts):
                    emb.setdefault(k, PendingTexts([], f)).extend(v)
                    continue
                if k not in emb:
                    emb[k] = aligned_empty((n, v.shape[1]), np.float32)
                if v.shape[1] != emb[k].shape[1]:
                    raise PluralError(f"{where(f, k, start)}: ragged embeddings: length {v.shape[1]}, expected "
                                      f"{emb[k].shape[1]}")
                emb[k][start:start + len(v)] = v
            frames.append(df)
            start += len(df)
            del batch, e
            pa.default_memory_pool().release_unused()  # hand the batch's buffers back before the next one
    except PluralError:
        raise
    except (OSError, pa.ArrowException) as e:
        raise PluralError(f"{f}: cannot read file ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
    return (pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]), emb


def _check_files(path: Path, files: list[Path], frames: list[pd.DataFrame], embeddings: list[dict]) -> None:
    """The files of a directory agree on the columns that carry data (embeddings, `group`, attribute
    columns) and on the embedding length (texts still to be embedded, `PendingTexts`, have no length yet
    and are skipped)."""
    def carried(fr, e):
        return set(e) | {c for c in fr.columns if c == "group" or c.startswith(("chosen_attr_", "rejected_attr_"))}

    first = carried(frames[0], embeddings[0])
    for f, fr, e in zip(files, frames, embeddings):
        if carried(fr, e) != first:
            k = sorted(carried(fr, e) ^ first)[0]
            has, lacks = (f, files[0]) if k in carried(fr, e) else (files[0], f)
            raise PluralError(f"{path}: column '{k}' is in {has.name} but not in {lacks.name}; the files of a "
                              "directory must have the same embedding, group and attribute columns")
    dim = None
    for f, e in zip(files, embeddings):
        if isinstance(e["chosen_embedding"], PendingTexts):
            continue
        d = e["chosen_embedding"].shape[1]
        if dim is not None and d != dim:
            raise PluralError(f"{where(f, 'chosen_embedding', 0)}: embedding length {d}, but earlier files have {dim}")
        dim = d


class PendingTexts(list):
    """The texts of an embedding column still to be computed (text-only table); see `embed_pending`."""

    def __init__(self, texts, file: Path):
        super().__init__(texts)
        self.file = file


def embed_pending(embeddings: list[dict], path: Path, embedder: str = "minilm") -> None:
    """Replace every `PendingTexts` in `embeddings` (one dict per file) by its embedding matrix, in place.

    All texts of all files go through one `plural.embed.embed_texts` call (distinct texts once, cached).
    """
    pending = [(e, k) for e in embeddings for k, v in e.items() if isinstance(v, PendingTexts)]
    if not pending:
        return
    from plural.embed import EMBEDDERS, embed_texts

    try:
        dim = EMBEDDERS[embedder]["dim"]
    except KeyError:
        raise PluralError(f"unknown embedder {embedder!r} (available: {', '.join(EMBEDDERS)})")
    for e, k in pending:
        p = e.get("prompt_embedding")
        if k == "chosen_embedding" and isinstance(p, np.ndarray) and p.shape[1] != dim:
            raise PluralError(f"{where(e[k].file, 'prompt_embedding', 0)}: embedding length {p.shape[1]}, but the "
                              f"text-only responses are embedded by {embedder!r} with length {dim}")
    texts = [t for e, k in pending for t in e[k]]
    try:
        vectors = embed_texts(texts, embedder=embedder)
    except PluralError as err:
        raise PluralError(f"{path}: embedding the text-only table: {err}")
    start = 0
    for e, k in pending:
        n = len(e[k])
        e[k] = vectors[start:start + n]
        start += n


def _list_files(path: Path) -> list[Path]:
    if not path.exists():
        raise PluralError(f"{path}: no such file or directory")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
        if not files:
            raise PluralError(f"{path}: directory holds no .parquet or .jsonl files")
        return files
    if path.suffix.lower() not in SUFFIXES:
        raise PluralError(f"{path}: unknown file type '{path.suffix}' (expected .parquet or .jsonl)")
    return [path]


def _read_file(f: Path) -> tuple[pa.Table, bool]:
    """Read one file into an arrow table; JSON Lines is parsed line by line for exact error locations."""
    is_jsonl = SUFFIXES[f.suffix.lower()] == "jsonl"
    try:
        if not is_jsonl:
            table = pq.read_table(f)
        else:
            records = []
            with open(f, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise PluralError(f"{f}: row {len(records)} (line {lineno}): not valid JSON ({e.msg})")
                    if not isinstance(rec, dict):
                        raise PluralError(f"{f}: row {len(records)} (line {lineno}): expected a JSON object")
                    if "true" in line or "false" in line:  # arrow would read a boolean in a list of floats as 1.0
                        _refuse_booleans(rec, f, len(records), lineno)
                    records.append(rec)
            table = _records_to_table(records)
    except PluralError:
        raise
    except (OSError, UnicodeDecodeError, pa.ArrowException) as e:
        raise PluralError(f"{f}: cannot read file ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
    if table.num_rows == 0:
        raise PluralError(f"{f}: the table is empty (no rows)")
    return table, is_jsonl


def _refuse_booleans(rec: dict, f: Path, row: int, lineno: int) -> None:
    for c in EMBEDDING_COLUMNS:
        v = rec.get(c)
        if isinstance(v, list) and any(isinstance(x, bool) for x in v):
            raise PluralError(f"{where(f, c, row, lineno)}: wrong type: expected a list of floats, found bool")


def _records_to_table(records: list[dict]) -> pa.Table:
    """Column-wise arrow table from JSON records; a column with mixed types stays Python objects."""
    columns = {}
    for rec in records:
        for k in rec:
            columns.setdefault(k, None)
    arrays = {}
    for k in columns:
        values = [rec.get(k) for rec in records]
        try:
            arrays[k] = pa.array(values)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            arrays[k] = _ObjectColumn(values)
    return _MixedTable(arrays, len(records))


class _ObjectColumn(list):
    """A column arrow could not type (mixed types); validated element by element."""


class _MixedTable:
    """Minimal stand-in for a `pa.Table` whose columns may be `_ObjectColumn`s."""

    def __init__(self, arrays: dict, num_rows: int):
        self.arrays, self.num_rows, self.column_names = arrays, num_rows, list(arrays)

    def column(self, name):
        return self.arrays[name]


def _line(is_jsonl: bool, row: int, f: Path) -> int | None:
    """1-based line of data row `row` in a JSON Lines file (blank lines counted)."""
    if not is_jsonl:
        return None
    seen = -1
    with open(f, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                seen += 1
                if seen == row:
                    return lineno
    return None


def _validate(table, f: Path, is_jsonl: bool, offset: int = 0) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Check one file (or the part of it starting at row `offset`); return its non-embedding columns as a
    DataFrame and its embeddings as arrays (`PendingTexts` for the columns of a text-only table, still to be
    embedded)."""
    cols = set(table.column_names)

    def fail(column, row, msg):
        row = None if row is None else row + offset
        raise PluralError(f"{where(f, column, row, _line(is_jsonl, row, f) if row is not None else None)}: {msg}")

    if "user_id" not in cols:
        raise PluralError(f"{where(f, 'user_id')}: required column is missing")
    given = [c for c in ("chosen_embedding", "rejected_embedding") if c in cols]
    text_only = not given and {"chosen", "rejected"} <= cols  # embedded below (read_table -> embed_pending)
    if len(given) < 2 and not text_only:
        missing = [c for c in ("chosen_embedding", "rejected_embedding") if c not in cols]
        if given:
            raise PluralError(f"{where(f, missing[0])}: required column is missing (the table has {given[0]}; give both "
                              "embedding columns, or neither and chosen / rejected text to embed)")
        text = [c for c in ("chosen", "rejected") if c in cols]
        column = ({"chosen", "rejected"} - set(text)).pop() if text else missing[0]
        raise PluralError(f"{where(f, column)}: required column is missing (need chosen_embedding and rejected_embedding, or chosen and rejected text)")

    out: dict[str, object] = {}
    out["user_id"] = _string_column(table.column("user_id"), "user_id", fail, required=True)
    if "group" in cols:
        out["group"] = _string_column(table.column("group"), "group", fail, required=True)
    for c in TEXT_COLUMNS:
        if c in cols:
            out[c] = _string_column(table.column(c), c, fail, required=text_only and c != "prompt")

    emb: dict[str, np.ndarray | PendingTexts] = {}
    if text_only:
        emb["chosen_embedding"] = PendingTexts(out["chosen"], f)
        emb["rejected_embedding"] = PendingTexts(out["rejected"], f)
        if "prompt" in out and "prompt_embedding" not in cols:
            emb["prompt_embedding"] = PendingTexts(["" if p is None else p for p in out["prompt"]], f)
    dim = None
    for c in ("chosen_embedding", "rejected_embedding", "prompt_embedding"):
        if c in cols:
            emb[c] = _embedding_column(table.column(c), c, fail, dim)
            dim = emb[c].shape[1]

    attrs = sorted(c[len("chosen_attr_"):] for c in cols if c.startswith("chosen_attr_"))
    for c in sorted(cols):
        if c.startswith("rejected_attr_") and c[len("rejected_attr_"):] not in attrs:
            fail(c, None, f"has no matching 'chosen_attr_{c[len('rejected_attr_'):]}' column")
    for a in attrs:
        for side in ("chosen", "rejected"):
            c = f"{side}_attr_{a}"
            if c not in cols:
                fail(c, None, f"required column is missing (paired with '{'rejected' if side == 'chosen' else 'chosen'}_attr_{a}')")
            out[c] = _float_column(table.column(c), c, fail)

    known = {"user_id", "group", *TEXT_COLUMNS, *EMBEDDING_COLUMNS} | {c for c in out}
    for c in table.column_names:  # pass-through columns (ground truth, metadata) are kept, unvalidated
        if c not in known:
            col = table.column(c)
            out[c] = list(col) if isinstance(col, _ObjectColumn) else col.to_pandas()
    return pd.DataFrame(out), emb


def _as_list(col) -> list:
    return list(col) if isinstance(col, _ObjectColumn) else col.to_pylist()


def _string_column(col, name, fail, required: bool) -> np.ndarray:
    values = _as_list(col)
    for i, v in enumerate(values):
        if v is None:
            if required:
                fail(name, i, "missing value")
            continue
        if not isinstance(v, str):
            fail(name, i, f"wrong type: expected a string, got {type(v).__name__} {v!r:.40}")
    return np.asarray(values, dtype=object)


def _float_column(col, name, fail) -> np.ndarray:
    if not isinstance(col, _ObjectColumn) and (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
        if col.null_count:
            fail(name, int(np.flatnonzero(np.asarray(col.is_null()))[0]), "missing value")
        arr = np.asarray(col.to_numpy(), dtype=np.float64)
    else:
        values = _as_list(col)
        for i, v in enumerate(values):
            if v is None:
                fail(name, i, "missing value")
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                fail(name, i, f"wrong type: expected a number, got {type(v).__name__} {v!r:.40}")
            if isinstance(v, int) and abs(v) > 1.7e308:
                fail(name, i, "non-finite value (an integer too large for a float)")
        arr = np.asarray(values, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        fail(name, int(bad[0]), f"non-finite value {arr[bad[0]]}")
    return arr


def _embedding_column(col, name, fail, dim: int | None) -> np.ndarray:
    """Validate a list-of-float column and return it as a (rows, dim) float32 matrix."""
    if isinstance(col, _ObjectColumn) or not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)) \
            or not (pa.types.is_floating(col.type.value_type) or pa.types.is_integer(col.type.value_type)):
        return _embedding_slow(_as_list(col), name, fail, dim)
    arr = pa.concat_arrays(col.chunks) if isinstance(col, pa.ChunkedArray) else col
    if arr.null_count:
        fail(name, int(np.flatnonzero(np.asarray(arr.is_null()))[0]), "missing value (expected a list of floats)")
    lengths = np.asarray(pa.compute.list_value_length(arr))
    expect = dim if dim is not None else int(lengths[0])
    bad = np.flatnonzero(lengths != expect)
    if bad.size:
        r = int(bad[0])
        fail(name, r, f"ragged embeddings: length {lengths[r]}, expected {expect}")
    if expect == 0:
        fail(name, 0, "empty embedding")
    values = arr.flatten()
    if values.null_count:
        r = int(np.flatnonzero(np.asarray(values.is_null()))[0]) // expect
        fail(name, r, "null value inside the embedding")
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float32's range becomes inf, refused below
        mat = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, expect)
    return _finite_rows(mat, name, fail)


def _finite_rows(mat: np.ndarray, name, fail) -> np.ndarray:
    bad = np.flatnonzero(~np.isfinite(mat).all(axis=1))
    if bad.size:
        fail(name, int(bad[0]), "non-finite value in the embedding (NaN, inf, or beyond float32's range of 3.4e38)")
    return mat


def _embedding_slow(values: list, name, fail, dim: int | None) -> np.ndarray:
    """Element-by-element check of a column arrow could not type as list<float>."""
    expect = dim
    for i, v in enumerate(values):
        if v is None:
            fail(name, i, "missing value (expected a list of floats)")
        if not isinstance(v, (list, tuple)):
            fail(name, i, f"wrong type: expected a list of floats, got {type(v).__name__}")
        if expect is None:
            expect = len(v)
        if len(v) != expect:
            fail(name, i, f"ragged embeddings: length {len(v)}, expected {expect}")
        for x in v:
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                fail(name, i, f"wrong type: expected a list of floats, found {type(x).__name__} {x!r:.40}")
            if isinstance(x, int) and abs(x) > 3.4e38:  # also an int too large for any float (10**400)
                fail(name, i, "non-finite value in the embedding (beyond float32's range of 3.4e38)")
    if not expect:
        fail(name, 0, "empty embedding")
    with np.errstate(over="ignore", invalid="ignore"):
        return _finite_rows(np.asarray(values, dtype=np.float32), name, fail)


def _check_groups(df: pd.DataFrame, files: list[Path], sizes: list[int]) -> None:
    """A user's group label must not contradict itself across rows (or files)."""
    if "group" not in df.columns:
        return
    first = df.groupby("user_id", sort=False)["group"].transform("first")
    bad = np.flatnonzero((df["group"] != first).to_numpy())
    if bad.size:
        r = int(bad[0])
        ends = np.cumsum(sizes)
        k = int(np.searchsorted(ends, r, side="right"))
        local = r - (int(ends[k - 1]) if k else 0)
        is_jsonl = SUFFIXES[files[k].suffix.lower()] == "jsonl"
        raise PluralError(
            f"{where(files[k], 'group', local, _line(is_jsonl, local, files[k]))}: user {df['user_id'].iat[r]!r} "
            f"has group {df['group'].iat[r]!r} here but {first.iat[r]!r} earlier; a user's group label contradicts itself"
        )
