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
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from plural.errors import PluralError


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
    """The Orbax manager of RUN/checkpoints (keeps the 2 latest steps)."""
    return ocp.CheckpointManager(Path(workdir).absolute() / "checkpoints",
                                 options=ocp.CheckpointManagerOptions(max_to_keep=2, create=create))


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
    """The JSON record of step `step` (one-line error for a checkpoint this version cannot read)."""
    try:
        return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # Orbax raises several kinds for a missing or foreign item
        raise PluralError(f"{where}: checkpoint at step {step} has no readable record of its parameters "
                          f"(written by an older plural, or damaged: {type(e).__name__}); fit the run again")


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
    got = mngr.restore(step, args=ocp.args.Composite(**items))
    state = _refill(state, _unnest(got["state"]))
    if best is not None:
        best = _refill({"params": best}, _unnest(got["best"]))["params"]
    return state, best, meta
