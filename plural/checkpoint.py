"""Named checkpoints: pytrees saved by their parameter paths, one restore path for training and evaluation.

A checkpoint of step N (Orbax, under RUN/checkpoints/N/) holds
- `state`: {"params": ..., "opt_state": ..., "rest": ...} as nested dicts keyed by path names, e.g.
  params/projector/layers/0/kernel or opt_state/1/0/mu/projector/layers/0/kernel (NNX state paths; the
  trailing `.value` of a Variable dropped), every leaf with its leading seed axis;
- `best` (when validating): the per-seed best params, named the same way;
- `meta` (JSON): the training history, the seeds, the early-stopping record and every saved name with
  its shape and dtype.

Restoring compares the names and shapes the model expects with the saved ones first, so a run whose
family has since gained, lost or reshaped a parameter fails with one line naming it, never with an
Orbax traceback and never by silently swapping two same-shaped leaves (positional keys would).

Integrity: once Orbax has finished writing step N, `seal` records the size and SHA-256 of every file of
RUN/checkpoints/N/ in RUN/checkpoints/N/sha256.json (written last, atomically). Restoring checks them
first, so a truncated or overwritten file is reported in one line naming it (`Damaged`, a PluralError)
instead of an Orbax / TensorStore traceback (or, for some files, a silently wrong restore); a checkpoint
without the record (an older plural's, or one cut off between Orbax's commit and the record) is still
restored, its Orbax errors turned into the same one-line `Damaged`. `--resume` falls back to the previous
good checkpoint (plural.hooks.Checkpointer).

The run's own files (config.json, metrics.json, seen_states.npz) are written with `write_atomic`: a
killed process leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from plural.errors import PluralError
from plural.files import write_atomic

SEAL = "sha256.json"  # per checkpoint step: {"files": {relative path: [size, sha256]}}, written last


class Damaged(PluralError):
    """A checkpoint that cannot be restored because one of its files is damaged (or Orbax cannot read it).

    `file`: the file named (the step directory when Orbax's error names none), `step`, `detail`."""

    def __init__(self, file, step: int, detail: str, hint: str | None = None):
        self.file, self.step, self.detail = str(file), step, detail
        hint = hint if hint is not None else ("continue the run with plural fit --resume (same arguments: it goes "
                                              "back to the previous good checkpoint), or fit it again")
        super().__init__(f"{self.file}: damaged checkpoint (step {step}): {detail}; {hint}")


# -- run files ----------------------------------------------------------------------------------------------

def read_json(path: str | Path, hint: str):
    """The JSON value of `path`; a damaged (truncated, not JSON) file is one line naming it, plus `hint`."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PluralError(f"{path}: damaged ({type(e).__name__}: {e}); {hint}")


# -- checksums of a checkpoint step ------------------------------------------------------------------------

def step_dir(mngr: ocp.CheckpointManager, step: int) -> Path:
    return Path(mngr.directory) / str(step)


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file() and p.name != SEAL
                  and not p.name.endswith(".tmp"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def seal(mngr: ocp.CheckpointManager, step: int) -> None:
    """Record the size and SHA-256 of every file of step `step` (call once Orbax has finished writing it)."""
    d = step_dir(mngr, step)
    if jax.process_index() != 0 or not d.is_dir():
        return
    files = {f: [(d / f).stat().st_size, _sha256(d / f)] for f in _files(d)}
    write_atomic(d / SEAL, json.dumps({"version": 1, "files": files}, indent=1, sort_keys=True) + "\n")


_VERIFIED: set = set()  # (step dir, its files' sizes and mtimes) already checked in this process


def verify(mngr: ocp.CheckpointManager, step: int, where: str) -> None:
    """Raise `Damaged` naming the first file of step `step` that differs from its seal (missing, shorter /
    longer, other bytes). A step without a seal passes (its Orbax errors are caught on restoring)."""
    d = step_dir(mngr, step)
    shown = Path(where) / d.parent.name / d.name  # the step as the user names the run: RUN/checkpoints/N
    seal_path = d / SEAL
    if not seal_path.is_file():
        return
    try:
        files = json.loads(seal_path.read_text())["files"]
        files = {str(k): (int(v[0]), str(v[1])) for k, v in files.items()}
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as e:
        raise Damaged(shown / SEAL, step, f"its record of checksums is unreadable ({type(e).__name__})")
    stats = []
    for f, (size, _) in files.items():
        try:
            st = (d / f).stat()
        except OSError:
            raise Damaged(shown / f, step, "file missing")
        if st.st_size != size:
            raise Damaged(shown / f, step, f"{'truncated' if st.st_size < size else 'grown'} to {st.st_size} "
                                           f"bytes, {size} were written")
        stats.append((f, st.st_size, st.st_mtime_ns))
    key = (str(d), tuple(stats))
    if key in _VERIFIED:
        return
    for f, (_, digest) in files.items():
        if _sha256(d / f) != digest:
            raise Damaged(shown / f, step, "contents differ from what was written (SHA-256 mismatch)")
    _VERIFIED.add(key)


def _quiet_orbax_leftovers() -> None:
    """When an Orbax read fails, its other reads still in flight fail too, as exceptions nobody awaits:
    'Event loop is closed' from TensorStore's callbacks and Orbax coroutines collected with their error
    (each printed as an 'Exception ignored' traceback), futures and tasks of Orbax's event loop ('... exception
    was never retrieved', logged by asyncio), some before the read has even raised. So before any restore,
    drop those for the rest of the process (only those: unraisable exceptions raised in Orbax's code or about
    the closed loop, and asyncio's never-retrieved records, as plural runs no asyncio of its own): a damaged
    checkpoint stays one line."""
    previous = sys.unraisablehook
    if getattr(previous, "_plural_quiet", False):
        return

    def from_orbax(exc, tb) -> bool:
        if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
            return True
        while tb is not None:
            if f"{os.sep}orbax{os.sep}" in tb.tb_frame.f_code.co_filename:
                return True
            tb = tb.tb_next
        return False

    def hook(u):
        if not from_orbax(u.exc_value, u.exc_traceback):
            previous(u)

    class NeverRetrieved(logging.Filter):
        def filter(self, record):
            return "exception was never retrieved" not in str(record.msg)

    hook._plural_quiet = True
    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(NeverRetrieved())


def _orbax_error(e: Exception, mngr: ocp.CheckpointManager, step: int, where: str) -> Damaged:
    """An Orbax / TensorStore failure to read step `step` as one line, naming the file when the error does."""
    d = step_dir(mngr, step)
    shown = Path(where) / d.parent.name / d.name
    text = " ".join(str(e).split())
    named = shown
    for found in re.findall(re.escape(str(d)) + r"""/[^\s"'\\]*""", text):
        rel = found.rstrip("/:,;.)")[len(str(d)) + 1:]
        if rel and len(rel) > len(str(named.relative_to(shown))):
            named = shown / rel  # the deepest path the error names
    first = text[:160] + ("..." if len(text) > 160 else "")
    return Damaged(named, step, f"Orbax cannot read it ({type(e).__name__}: {first})")


def _key_name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def path_name(path) -> str:
    """'projector/layers/0/kernel' for a pytree key path (a Variable's trailing `.value` dropped)."""
    parts = [_key_name(k) for k in path]
    if parts and parts[-1] == "value" and isinstance(path[-1], jax.tree_util.GetAttrKey):
        parts = parts[:-1]
    return "/".join(parts)


def named(trees: dict[str, Any]) -> dict[str, Any]:
    """{"params/projector/layers/0/kernel": leaf, ...} for {"params": tree, ...}."""
    out = {}
    for prefix, tree in trees.items():
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            name = "/".join(p for p in (prefix, path_name(path)) if p)
            if name in out:
                raise ValueError(f"two leaves are both named {name}")
            out[name] = leaf
    return out


def _nest(flat: dict[str, Any]) -> dict:
    """{"a/b/c": x} -> {"a": {"b": {"c": x}}} (what Orbax stores; its keys are the path parts)."""
    root: dict = {}
    for name, leaf in flat.items():
        node = root
        *parents, last = name.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = leaf
    return root


def _unnest(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        name = f"{prefix}/{k}" if prefix else k
        out.update(_unnest(v, name) if isinstance(v, dict) else {name: v})
    return out


def _refill(trees: dict[str, Any], flat: dict[str, Any]) -> dict[str, Any]:
    """`trees` with every leaf replaced by `flat[its name]`."""
    return {prefix: jax.tree_util.tree_map_with_path(
        lambda path, _, prefix=prefix: flat["/".join(p for p in (prefix, path_name(path)) if p)], tree)
        for prefix, tree in trees.items()}


def _signature(flat: dict[str, Any]) -> dict[str, list]:
    return {k: [list(np.shape(v)), str(np.dtype(v.dtype))] for k, v in flat.items()}


def manager(workdir: str | Path, create: bool = False) -> ocp.CheckpointManager:
    """The Orbax manager of RUN/checkpoints (keeps the 2 latest steps).

    Orbax's own log lines while it lists the steps are silenced: a damaged step's metadata file would
    print one ahead of the one-line error that `verify` gives when that step is restored."""
    from absl import logging as absl_logging

    level = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.FATAL)
    try:
        return ocp.CheckpointManager(Path(workdir).absolute() / "checkpoints",
                                     options=ocp.CheckpointManagerOptions(max_to_keep=2, create=create))
    finally:
        absl_logging.set_verbosity(level)


def save(mngr: ocp.CheckpointManager, step: int, state: dict[str, Any], meta: dict,
         best: Any | None = None) -> None:
    """Write step `step`: `state` ({"params", "opt_state", "rest"} trees), `best` params (optional), `meta` (JSON).

    Orbax writes in the background; `meta` is deep-copied so the caller may keep appending to it."""
    flat = named(state)
    meta = copy.deepcopy({**meta, "names": _signature(flat)})
    items = {"state": ocp.args.StandardSave(_nest(flat)), "meta": ocp.args.JsonSave(meta)}
    if best is not None:
        items["best"] = ocp.args.StandardSave(_nest(named({"params": best})))
    mngr.save(step, args=ocp.args.Composite(**items))


def read_meta(mngr: ocp.CheckpointManager, step: int, where: str) -> dict:
    """The JSON record of step `step` (one-line error for a checkpoint this version cannot read; `Damaged`
    when a file of the step differs from its seal)."""
    verify(mngr, step, where)
    _quiet_orbax_leftovers()
    try:
        meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        if not isinstance(meta, dict) or not isinstance(meta.get("names"), dict):
            raise ValueError("no record of the parameter names")
        return meta
    except Exception as e:  # Orbax raises several kinds for a missing or foreign item
        shown = Path(where) / "checkpoints" / str(step)
        raise Damaged(shown / "meta", step, f"no readable record of its parameters (written by an older plural, "
                                            f"or damaged: {type(e).__name__})")


def check_names(expected: dict[str, Any], saved: dict[str, list], where: str) -> None:
    """One-line error if the parameters a model expects differ from a checkpoint's (by name, then shape)."""
    want = _signature(expected)
    missing = [k for k in want if k not in saved]
    extra = [k for k in saved if k not in want]
    if missing:
        raise PluralError(f"{where}: the model has parameter {missing[0]} (shape {tuple(want[missing[0]][0])}) that the "
                          f"checkpoint lacks{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}: "
                          "the family changed since this run was written; fit it again")
    if extra:
        raise PluralError(f"{where}: the checkpoint has parameter {extra[0]} that the model lacks"
                          f"{f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''}: "
                          "the family changed since this run was written; fit it again")
    for k, (shape, dtype) in want.items():
        if saved[k] != [shape, dtype]:
            raise PluralError(f"{where}: parameter {k} is {tuple(saved[k][0])} {saved[k][1]} in the checkpoint but "
                              f"{tuple(shape)} {dtype} in the model (different data or hyper-parameters)")


def restore(mngr: ocp.CheckpointManager, step: int, state: dict[str, Any], best: Any | None, where: str):
    """(state, best, meta) of step `step`, shaped like the given `state` trees and `best` params.

    The leaves of `state` / `best` may be arrays (their shardings are kept) or `jax.ShapeDtypeStruct`s.
    `best=None` skips the best params (a checkpoint without them must be restored with None)."""
    meta = read_meta(mngr, step, where)
    flat = named(state)
    check_names(flat, {k: v for k, v in meta["names"].items()}, where)
    if (meta.get("early") is None) != (best is None):
        raise PluralError(f"{where}: checkpoint at step {step} was written {'without' if best is not None else 'with'} "
                          "validation; resume with the same validation data and train.eval_every")
    items = {"state": ocp.args.StandardRestore(_nest(flat))}
    if best is not None:
        items["best"] = ocp.args.StandardRestore(_nest(named({"params": best})))
    _quiet_orbax_leftovers()
    try:
        got = mngr.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # a file damaged after sealing is caught by verify; here: unsealed steps
        raise _orbax_error(e, mngr, step, where) from None
    state = _refill(state, _unnest(got["state"]))
    if best is not None:
        best = _refill({"params": best}, _unnest(got["best"]))["params"]
    return state, best, meta
