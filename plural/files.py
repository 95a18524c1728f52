"""Output files: paths checked before any work (a bad `--out` is one line, not a traceback at the end), and
every file written atomically (`atomic_path`: readers and a killed writer see the old file or the whole new one).

`check_output` refuses an output that cannot be written (under an existing file, a directory where a file
goes or the other way round) or that would overwrite one of the command's inputs, and creates the missing
parent folders of an output file (a command creates its output folder itself, once its inputs are read).
`write_parquet` writes a table atomically, keeping pass-through columns of mixed types as JSON text.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from glob import escape as glob_escape
from pathlib import Path

import pandas as pd

from plural.errors import PluralError


def check_output(path: str | Path, folder: bool, flag: str = "--out", inputs=()) -> Path:
    """`path` as an output file (`folder` False: not a folder, its missing parents made) or folder to write
    into: never under an existing file, never one of `inputs` (paths given to the same command), and a file
    never inside an input folder (where it would later be read as a table)."""
    path = Path(path)
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise PluralError(f"{flag} {path}: cannot write there, {blocking} is a file, not a folder")
    if path.exists() and path.is_dir() != folder:
        raise PluralError(f"{flag} {path}: " + ("is a file; give a folder" if folder else "is a folder; give a file name"))
    for i in (Path(i) for i in inputs if i is not None):
        if path.exists() and i.exists() and path.resolve() == i.resolve():
            raise PluralError(f"{flag} {path}: is an input of this command; writing it would destroy it")
        if not folder and i.is_dir() and i.resolve() in path.resolve().parents:
            raise PluralError(f"{flag} {path}: is inside the input folder {i}, where it would be read as a table")
    if not folder:
        path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    """Write `df` to `path` as Parquet, atomically (a temporary file renamed onto `path`).

    A pass-through column whose values mix types (a JSON Lines column with ints in some rows and strings
    in others, which Parquet cannot hold) is written as each value's JSON text, said on stderr per column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        table = pa.Table.from_pandas(df, preserve_index=False)  # the one conversion, when every column converts
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        df = df.copy(deep=False)
        for c in df.columns:
            if df[c].dtype == object:
                try:
                    pa.array(df[c])
                except (pa.ArrowException, TypeError, ValueError, OverflowError):
                    kinds = sorted({type(v).__name__ for v in df[c] if v is not None})
                    print(f"plural: column '{c}' mixes value types ({', '.join(kinds)}): written to {path} as JSON "
                          "text", file=sys.stderr)
                    df[c] = [None if v is None else json.dumps(v, default=str) for v in df[c]]
        table = pa.Table.from_pandas(df, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


# -- atomic files -------------------------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path next to `path`; on success it is synced and renamed onto `path` (os.replace),
    so readers (and a killed writer) see the old file or the whole new one. On error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(path)
    while True:  # a fresh name (not mkstemp: its 0600 mode would become the file's)
        tmp = path.with_name(f".{path.name}.{_HOST}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            open(tmp, "x").close()
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _host() -> str:
    """This machine in a temporary file's name: its node name made file-safe, shortened, and a hash of the
    full name (two hosts whose names clean up alike still differ)."""
    import hashlib

    node = os.uname().nodename
    safe = "".join(c if c.isalnum() or c == "-" else "-" for c in node)[:24] or "host"
    return f"{safe}-{hashlib.sha1(node.encode()).hexdigest()[:8]}"


_HOST = _host()


def _remove_orphans(path: Path) -> None:
    """Delete the temporary files of `path` left by a killed writer: those named exactly as `atomic_path` names
    them for this host whose process is gone. Another host's (a shared file system), a live process's, or
    any other file are left alone. (Containers that share a volume, a host name and not their process ids
    could take a live writer's file for an orphan; that writer then fails, its target stays whole.)"""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{re.escape(_HOST)}\.(\d{{1,10}})\.[0-9a-f]{{8}}\.tmp")
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.{_HOST}.*.tmp"):
        m = pattern.fullmatch(tmp.name)
        if m is None:
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                tmp.unlink()
        except (OSError, OverflowError):  # alive under another user; or no such process id
            pass


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write `data` (text as UTF-8) to `path` atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
