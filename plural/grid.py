"""Experiment grids: methods x datasets x hyper-parameters x seeds, seeds trained at once.

A spec is a plain Python file with `get_config()` returning a dict:

    datasets: {name: {"simulate": {IdealPointConfig fields}} | {"train": path, "test": path}}
              ({"simulate": {"population": "statements", StatementsConfig fields}} for persona statements)
    methods:  {label: {"model": family name, "set": [key=value, ...], "grid": {...} (optional)}}
    grid:     {key: [values, ...]}   cartesian sweep applied to every method without its own "grid" (optional)
    seeds:    [0, 1, ...]            trained at once along the seed axis
    shots:    [0, 10, ...]           evaluation shot counts for unseen users
    active:   {"budget": 8, "pool_size": 40, "n_answers": 16, "random_repeats": 3}   (optional)
              active vs random query selection on the unseen users, for families with a posterior
              (`state_from_context`, e.g. VPL); rows go to DIR/active.parquet

Each (dataset, method, hyper-parameter point) is one cell; its summary table is written to
DIR/cells/<cell>.parquet as soon as it finishes, so `--resume` skips finished cells. DIR/results.parquet
concatenates them: one row per (cell, seed, shots, split, group) with accuracy, and with ground truth
the noise-free accuracy, oracle, single and gap_closed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from analysis import accuracy_table
from personas import POPULATIONS
from plural.config import apply_overrides
from plural.data import read_table
from plural.errors import PluralError
from plural.evaluate import predict
from plural.models import get_family
from plural.run import configs_for
from plural.train import train


def load_spec(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise PluralError(f"{path}: no such spec file")
    mod_spec = importlib.util.spec_from_file_location(f"plural_spec_{path.stem}", path)
    module = importlib.util.module_from_spec(mod_spec)
    try:
        mod_spec.loader.exec_module(module)
    except Exception as e:  # a user's spec file: report it in one line
        raise PluralError(f"{path}: cannot load spec ({type(e).__name__}: {e})")
    if not hasattr(module, "get_config"):
        raise PluralError(f"{path}: a spec defines get_config()")
    spec = module.get_config()
    for key in ("datasets", "methods"):
        if not spec.get(key):
            raise PluralError(f"{path}: get_config() needs a non-empty '{key}'")
    return spec


def _dataset(name: str, entry: dict, out: Path):
    if "simulate" in entry:
        opts = dict(entry["simulate"])
        population = opts.pop("population", "ideal-point")
        if population not in POPULATIONS:
            raise PluralError(f"dataset {name}: unknown population {population!r} (expected {' or '.join(POPULATIONS)})")
        config_cls, simulate = POPULATIONS[population]
        cfg = apply_overrides({"p": config_cls()}, [f"{k}={v}" for k, v in opts.items()])["p"]
        d = out / "data" / name
        if not (d / "test.parquet").exists():
            simulate(cfg).write(d)
        return read_table(d / "train.parquet"), read_table(d / "test.parquet")
    return read_table(entry["train"]), read_table(entry["test"])


def _points(grid: dict) -> list[dict]:
    return [dict(zip(grid, vals)) for vals in itertools.product(*grid.values())] or [{}]


def cells(spec: dict):
    for ds in spec["datasets"]:
        for label, m in spec["methods"].items():
            for point in _points(m.get("grid", spec.get("grid", {}))):
                sets = list(m.get("set", [])) + [f"{k}={v}" for k, v in point.items()]
                key = json.dumps([ds, label, m["model"], sets])
                cid = f"{ds}__{label}__{hashlib.sha1(key.encode()).hexdigest()[:10]}"
                yield cid, ds, label, m["model"], sets, point


def run_grid(spec_path: str | Path, out: str | Path, resume: bool = False, progress: bool = True) -> pd.DataFrame:
    spec = load_spec(spec_path)
    out = Path(out)
    if (out / "cells").exists() and any((out / "cells").iterdir()) and not resume:
        raise PluralError(f"{out}: already holds grid results; pass --resume to continue, or use a new --out")
    (out / "cells").mkdir(parents=True, exist_ok=True)
    seeds = tuple(spec.get("seeds", [0]))
    shots_list = list(spec.get("shots", [0]))
    todo = list(cells(spec))
    for _, _, _, model, sets, _ in todo:  # validate every cell's hyper-parameters before training anything
        configs_for(model, sets)
    datasets = {}
    for cid, ds, label, model, sets, point in tqdm(todo, desc="grid", disable=not progress or None, leave=False):
        path = out / "cells" / f"{cid}.parquet"
        if path.exists():
            continue
        if ds not in datasets:
            datasets[ds] = _dataset(ds, spec["datasets"][ds], out)
        train_data, test_data = datasets[ds]
        c = configs_for(model, sets)
        result = train(get_family(model), c["model"], c["train"], train_data, seeds=seeds, progress=progress)
        tables = []
        for i, seed in enumerate(seeds):
            for shots in shots_list:
                rows = predict(result, list(train_data.users), test_data, shots=shots, seed_index=i)
                rows["split"] = rows["seen"].map({True: "seen", False: "unseen"})
                for split, r in [("all", rows), *rows.groupby("split")]:
                    for t in (accuracy_table(r, by=None, n_boot=200).assign(group="all"),
                              accuracy_table(r, by="group", n_boot=200) if r["group"].notna().any() else None):
                        if t is not None:
                            tables.append(t.drop(columns=["subset"], errors="ignore").assign(
                                seed=seed, shots=shots, split=split))
        if spec.get("active") and hasattr(get_family(model), "state_from_context"):
            _active_table(result, seeds, set(train_data.users), test_data, spec["active"]).assign(
                cell=cid, dataset=ds, method=label, model=model, hparams=json.dumps(point, sort_keys=True)
            ).to_parquet(out / "cells" / f"{cid}.active.parquet", index=False)
        cell = pd.concat(tables, ignore_index=True)
        cell.insert(0, "cell", cid)
        cell.insert(1, "dataset", ds)
        cell.insert(2, "method", label)
        cell.insert(3, "model", model)
        cell.insert(4, "hparams", json.dumps(point, sort_keys=True))
        cell.to_parquet(path.with_suffix(".tmp"), index=False)
        path.with_suffix(".tmp").rename(path)  # atomic: a crash never leaves half a cell
    results = pd.concat([pd.read_parquet(out / "cells" / f"{cid}.parquet") for cid, *_ in todo], ignore_index=True)
    results.to_parquet(out / "results.parquet", index=False)
    active = [out / "cells" / f"{cid}.active.parquet" for cid, *_ in todo]
    if any(p.exists() for p in active):
        pd.concat([pd.read_parquet(p) for p in active if p.exists()], ignore_index=True).to_parquet(out / "active.parquet", index=False)
    return results


def _active_table(result, seeds, train_users: set, test_data, opts: dict) -> pd.DataFrame:
    """Expected (noise-free, when ground truth exists) and realised accuracy after 1..budget queries."""
    import numpy as np

    from analysis import expected_accuracy
    from plural.active import query_curve

    unseen = np.asarray([u not in train_users for u in test_data.users])[test_data.user]
    if not unseen.any():
        raise PluralError("active: the test table has no users unseen in training")
    data = test_data.take(np.flatnonzero(unseen))
    truth = data.frame["oracle_p"].to_numpy() if "oracle_p" in data.frame else None
    budget, pool = int(opts.get("budget", 8)), int(opts.get("pool_size", 40))
    lines = []
    for i, seed in enumerate(seeds):
        model = result.model(i)
        for strategy, repeats in (("active", 1), ("random", int(opts.get("random_repeats", 3)))):
            for rep in range(repeats):
                c = query_curve(model, data, budget, pool, strategy, seed=1000 * seed + rep,
                                n_answers=int(opts.get("n_answers", 16)))
                for k in range(budget):
                    m = c["margin"][k]
                    line = {"seed": seed, "strategy": strategy, "repeat": rep, "queries": k + 1,
                            "accuracy": float((m > 0).mean())}
                    if truth is not None:
                        line["expected"] = float(expected_accuracy(m, truth[c["rows"]]).mean())
                    lines.append(line)
    return pd.DataFrame(lines)
