"""Shared reading, field checking and writing for the dataset converters.

Every input row is read with its location (file, 0-based row, 1-based line for JSON Lines and CSV), so a
malformed field is refused with one line naming the file, the field (dotted / indexed for nested JSON,
e.g. `summaries[1].text`) and the row: the same `where()` format as `plural.data.table`.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import json
import math
import sys
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from plural.errors import PluralError, where
from plural.files import atomic_path

JSONL = (".jsonl", ".json", ".ndjson")
KINDS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def kind_of(path: Path) -> str | None:
    """'jsonl', 'csv' or 'parquet' from the suffix (a trailing .gz is allowed for text formats)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
        k = KINDS.get(suffixes[-1]) if suffixes else None
        return k if k in ("jsonl", "csv") else None
    return KINDS.get(suffixes[-1]) if suffixes else None


@dataclasses.dataclass
class Rows:
    """The records of one input file with their locations."""

    path: Path
    records: list[dict]
    lines: list[int | None]
    kind: str  # jsonl | csv | parquet

    def __len__(self) -> int:
        return len(self.records)

    def fail(self, row: int | None, field: str | None, msg: str) -> NoReturn:
        line = self.lines[row] if row is not None and row < len(self.lines) else None
        raise PluralError(f"{where(self.path, field, row, line)}: {msg}")

    def get(self, row: int, obj: Any, key: str, kind: str, *, field: str | None = None, required: bool = True):
        """`obj[key]` checked against `kind` (str, int, number, bool, list, dict, scalar); None if absent and optional.

        Missing means: absent, JSON null, NaN, or (CSV) an empty cell. CSV cells are strings, so numbers,
        integers and booleans are parsed from them. `field` is the name used in errors (default `key`).
        """
        name = field or key
        if not isinstance(obj, dict):
            self.fail(row, name.rsplit(".", 1)[0] if "." in name else name, f"wrong type: expected a JSON object, got {_tname(obj)}")
        v = obj.get(key)
        if is_missing(v):
            if required:
                self.fail(row, name, "missing field")
            return None
        return self.check(row, name, v, kind)

    def check(self, row: int, name: str, v: Any, kind: str):
        csv_cell = self.kind == "csv" and isinstance(v, str)
        if kind == "str":
            if isinstance(v, str):
                return v
        elif kind == "scalar":  # ids and labels: strings, or integers written without quotes
            if isinstance(v, str):
                return v
            if isinstance(v, int) and not isinstance(v, bool):
                return str(v)
            if isinstance(v, float) and v.is_integer():
                return str(int(v))
        elif kind == "int":
            if csv_cell:
                try:
                    f = float(v)
                    if f.is_integer():
                        return int(f)
                except ValueError:
                    pass
            elif isinstance(v, int) and not isinstance(v, bool):
                return v
            elif isinstance(v, float) and v.is_integer():
                return int(v)
        elif kind == "number":
            if csv_cell:
                try:
                    f = float(v)
                    if math.isfinite(f):
                        return f
                except ValueError:
                    pass
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                if math.isfinite(v):
                    return float(v)
                self.fail(row, name, f"non-finite value {v}")
        elif kind == "bool":
            if isinstance(v, bool):
                return v
            if isinstance(v, str) and v.strip().lower() in ("true", "false", "1", "0"):  # CSV cells, CSV-derived files
                return v.strip().lower() in ("true", "1")
        elif kind == "list":
            if isinstance(v, (list, tuple)):
                return list(v)
        elif kind == "dict":
            if isinstance(v, dict):
                return v
        else:  # pragma: no cover - programming error
            raise ValueError(kind)
        want = {"str": "a string", "scalar": "a string", "int": "an integer", "number": "a number", "bool": "true or false",
                "list": "a list", "dict": "a JSON object"}[kind]
        self.fail(row, name, f"wrong type: expected {want}, got {_tname(v)} {v!r:.40}")


def _tname(v) -> str:
    return "null" if v is None else type(v).__name__


def is_missing(v) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return isinstance(v, str) and v == ""  # CSV writes a missing value as an empty cell


def _open_text(path: Path):
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def read_rows(path: str | Path, allowed: tuple[str, ...] = ("jsonl", "csv", "parquet")) -> Rows:
    """Read one JSON Lines / CSV / Parquet file (by suffix; .jsonl.gz and .csv.gz too) into `Rows`."""
    path = Path(path)
    if not path.exists():
        raise PluralError(f"{path}: no such file")
    if path.is_dir():
        raise PluralError(f"{path}: is a directory, expected a file")
    kind = kind_of(path)
    if kind is None or kind not in allowed:
        exts = {"jsonl": ".jsonl/.json", "csv": ".csv", "parquet": ".parquet"}
        raise PluralError(f"{path}: unknown file type '{''.join(path.suffixes)}' (expected {', '.join(exts[k] for k in allowed)})")
    try:
        if kind == "parquet":
            records = pq.read_table(path).to_pylist()
            rows = Rows(path, records, [None] * len(records), kind)
        elif kind == "csv":
            rows = _read_csv(path)
        else:
            rows = _read_jsonl(path)
    except PluralError:
        raise
    except (OSError, UnicodeDecodeError, EOFError, pa.ArrowException, csv.Error) as e:
        raise PluralError(f"{path}: cannot read file ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})")
    if not rows.records:
        raise PluralError(f"{path}: the file is empty (no rows)")
    return rows


def _read_jsonl(path: Path) -> Rows:
    records, lines = [], []
    with _open_text(path) as fh:
        text = fh.read()
    if text.lstrip().startswith("["):  # a JSON array of objects instead of JSON Lines
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise PluralError(f"{where(path, None, None, e.lineno)}: not valid JSON ({e.msg})")
        for i, rec in enumerate(data):
            if not isinstance(rec, dict):
                raise PluralError(f"{where(path, None, i)}: expected a JSON object, got {_tname(rec)}")
        return Rows(path, data, [None] * len(data), "jsonl")
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise PluralError(f"{where(path, None, len(records), lineno)}: not valid JSON ({e.msg})")
        if not isinstance(rec, dict):
            raise PluralError(f"{where(path, None, len(records), lineno)}: expected a JSON object, got {_tname(rec)}")
        records.append(rec)
        lines.append(lineno)
    return Rows(path, records, lines, "jsonl")


def _read_csv(path: Path) -> Rows:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    records, lines = [], []
    with _open_text(path) as fh:
        reader = csv.DictReader(fh, strict=True)  # strict: an unterminated quote is an error, not a swallowed rest
        prev = 0
        try:
            if not reader.fieldnames:
                raise PluralError(f"{path}: the file is empty (no header row)")
            prev = reader.line_num
            for rec in reader:
                start = prev + 1
                prev = reader.line_num
                if None in rec:
                    raise PluralError(f"{where(path, None, len(records), start)}: {len(reader.fieldnames) + len(rec[None])} "
                                      f"cells, but the header has {len(reader.fieldnames)}")
                records.append(rec)
                lines.append(start)
        except csv.Error as e:
            raise PluralError(f"{where(path, None, len(records), prev + 1)}: not valid CSV ({e}; a stray or unterminated quote?)")
    return Rows(path, records, lines, "csv")


def list_inputs(path: str | Path, allowed: tuple[str, ...] = ("jsonl", "csv", "parquet"),
                recursive: bool = False) -> list[Path]:
    """A file, or the readable files of a directory (and with `recursive` of its sub-directories) in path order."""
    path = Path(path)
    if not path.exists():
        raise PluralError(f"{path}: no such file or directory")
    if path.is_dir():
        files = sorted(p for p in (path.rglob("*") if recursive else path.iterdir()) if p.is_file() and kind_of(p) in allowed)
        if not files:
            raise PluralError(f"{path}: directory holds no input files ({', '.join(allowed)})")
        return files
    return [path]


def text(v) -> str | None:
    """A demographic / label value as a string (None when missing)."""
    if is_missing(v):
        return None
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


@dataclasses.dataclass
class Conversion:
    """A converted preference table plus what the converter counted on the way (skipped pairs, ties)."""

    source: str
    table: pd.DataFrame
    stats: dict
    out: Path | None = None

    def summary(self) -> str:
        t = self.table
        parts = [f"{len(t)} comparisons", f"{t['user_id'].nunique()} users"]
        if "group" in t.columns:
            parts.append(f"{t['group'].nunique()} groups")
        skipped = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.stats.items() if isinstance(v, int) and v)
        return f"{self.source}: {', '.join(parts)}" + (f" (skipped: {skipped})" if skipped else "") + \
            (f" -> {self.out}" if self.out else "")


def finish(rows: list[dict], row_src: list[tuple[Rows, int]], group: str | None, source: str, stats: dict,
           first: tuple[str, ...] = ("user_id", "group", "prompt", "chosen", "rejected")) -> Conversion:
    """Assemble the output table: set `group` from the chosen column and refuse a user whose group contradicts itself."""
    if not rows:
        where_ = row_src[0][0].path if row_src else "input"
        raise PluralError(f"{where_}: no comparisons could be built from this input ({_stats_line(stats)})")
    df = pd.DataFrame(rows)
    if group:
        if group not in df.columns:
            raise PluralError(f"--group {group}: no such column (available: {', '.join(c for c in df.columns if c not in first)})")
        df["group"] = [g if g is not None else "unknown" for g in df[group]]
        seen: dict[str, str] = {}
        for i, (u, g) in enumerate(zip(df["user_id"], df["group"])):
            if seen.setdefault(u, g) != g:
                src, r = row_src[i]
                src.fail(r, group, f"user {u!r} has {group} {g!r} here but {seen[u]!r} earlier; "
                                   f"a user's group must not contradict itself (choose another --group)")
    cols = [c for c in first if c in df.columns] + [c for c in df.columns if c not in first]
    return Conversion(source, df[cols], stats)


def _stats_line(stats: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in stats.items() if isinstance(v, int)) or "nothing usable"


def write_table(df: pd.DataFrame, out: str | Path) -> Path:
    """Write a table as Parquet or JSON Lines, by suffix, atomically."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".parquet", ".pq", ".jsonl", ".json", ".ndjson"):
        raise PluralError(f"{out}: unknown output type '{out.suffix}' (expected .parquet or .jsonl)")
    with atomic_path(out) as tmp:  # a killed conversion leaves no half-written table
        if suffix in (".parquet", ".pq"):
            df.to_parquet(tmp, index=False)
        else:
            with open(tmp, "w", encoding="utf-8") as fh:
                for rec in df.to_dict(orient="records"):
                    fh.write(json.dumps({k: _jsonable(v) for k, v in rec.items()}, ensure_ascii=False) + "\n")
    return out


def _jsonable(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        return v.item()
    return v
