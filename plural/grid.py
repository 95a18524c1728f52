"""Experiment grids: methods x datasets x hyper-parameters x seeds, with model selection on validation data.

Cells that differ only in traced settings (`plural.train.traced_keys`: learning rate, weight decay, a
family's loss weights and rates) form one *program*: every (cell, seed) is a replica of one compiled
training program, the replicas split over the devices (`programs`). `--shard I/N` runs every N-th program
(a job array), `--merge` joins the shards' cells; under `jax.distributed` every process trains each program
and process 0 scores and writes. A cell whose loss turns non-finite, or whose dataset is refused, is written
as a failed cell (its error and step) and the grid goes on.

A spec is a plain Python file with `get_config()` returning a dict. Its values are Python values (tuples,
numbers, strings, booleans: `"group_sizes": (0.6, 0.3, 0.1)`, `"model.hidden": (64,)`, `"train.lr": 1e-3`),
type-checked against the config fields they set (`plural.config.apply_overrides`); text such as
`"(0.6,0.3,0.1)"` or `"model.hidden=(64,)"` is parsed by the field's type, as `--set` is.

Shared pieces: `load_spec` loads a spec by path with the spec's own folder first on `sys.path`, so a spec
imports its siblings by plain name; the shipped specs take their populations, suite and BT baselines from
experiments/common.py with `from common import ...`. Modules imported that way are dropped again after
the load (and a same-named module imported earlier from elsewhere is set aside meanwhile), so every load
reads the spec folder's current files and leaves `sys.modules` as it found it.

    datasets: {name: {"simulate": {IdealPointConfig fields}}
                     | {"simulate": {"population": "statements", StatementsConfig fields}}
                     | {"train": path, "val": path, "test": path}
                     | {"table": path, "convert": SOURCE (optional), "convert_set": [...] or {...}, "split": {SplitConfig fields}}}
              (a real table is converted if asked, then split by `plural split`'s rules into train / val / test)
    methods:  {label: {"model": family name, "set": [key=value, ...] or {key: value}, "grid": {...} or "points": [{...}, ...] (optional)}}
    grid:     {key: [values, ...]}   cartesian sweep applied to every method without its own "grid" (optional)
    select:   "per_dataset" (default) | "across_datasets" (one point per method for every dataset: the one
              with the best validation score averaged over the datasets; how family defaults are chosen)
    select_metric: "accuracy" (default) | "log_loss" (what the validation score averages; log-loss of
              sigma(margin) is minimised, e.g. to choose a mixture's number of components by likelihood)
    seeds:    [0, 1, ...]            trained at once (replicas of the cell's program)
    shots:    [0, 10, ...]           evaluation shot counts for unseen users
    active:   {"budget": 8, "pool_size": 40, "n_answers": 16, "random_repeats": 3}   (optional)
              active vs random query selection on the unseen users, for families with a posterior
              (`state_from_context`, e.g. VPL); rows go to DIR/active.parquet

    baseline: "bt"                   method label(s) the others are compared with (paired differences; optional;
                                     a list compares with each: ["bt", "bt-linear"])

Each (dataset, method, hyper-parameter point) is one cell. It trains on the train table with early
stopping on the val table (its seen users' held-out pairs), then is scored on the val and the test
tables: seen users, and unseen users at every shot count, always on the same rows (positions >= the
largest shot count: `--score-from`). Its summary is written to DIR/cells/<cell>.parquet as soon as it
finishes (atomically), so `--resume` skips finished cells; its scored rows go to <cell>.rows.parquet. A
finished cell whose settings now resolve differently (a changed default, other seeds or shots: its stored
`config_hash`) is trained again by `--resume`.

Outputs:
- results.parquet: one row per (cell, table, seed, shots, split, group) with accuracy and its user-bootstrap
  CI, log-loss / Brier / ECE, with ground truth the noise-free accuracy, oracle, single, gap_closed and
  agree_oracle / agree_single (shares of pairs on which the model prefers what the user's oracle / the best
  user-blind predictor prefers); `selected` marks the selected cell of each (dataset, method).
- selected.parquet: for each dataset and method, the hyper-parameter point with the best validation score
  (`selection_score`: mean accuracy over seeds of the seen users' val pairs and of the val-unseen users,
  averaged over the spec's shot counts; minus the mean log-loss with `select_metric: "log_loss"`), with its
  test rows.
- summary.parquet: the selected cells' test numbers, mean and 95% CI across training seeds.
- paired.parquet: each selected method minus each baseline (`baseline` column) on the same test rows, per seed, with a
  user-bootstrap CI.
Every line also carries one `hp.<key>` column per swept key and its program's `program`, `program_cells`,
`program_replicas`, `compile_s`, `train_s`, and the cell's `pairs_per_s` and `config_hash` (`fingerprint`); failed
cells `error` and `failed_step`.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import importlib.util
import itertools
import json
import shutil
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from analysis import accuracy_table
from personas import POPULATIONS, check_population
from plural.config import apply_overrides
from plural.data import PreferenceData, read_table
from plural.errors import PluralError
from plural.evaluate import predict
from plural.files import atomic_path
from plural.models import get_family
from plural.run import configs_for
from plural.train import check_seeds, traced_keys, train


def load_spec(path: str | Path) -> dict:
    """The dict of a spec file's `get_config()`.

    The spec is loaded by path. While it loads (and while `get_config()` runs), its folder is first on
    `sys.path`, and a module that one of the folder's .py files names, imported before from elsewhere, is
    set aside, so `from common import ...` finds the spec's own `common.py` (experiments/common.py for the
    shipped specs). Afterwards the modules imported from those files are dropped and the set-aside ones
    restored: a spec in another folder, or an edited `common.py`, is never served a stale copy, and the
    process is left as it was (standard-library names are never set aside)."""
    path = Path(path)
    if not path.exists():
        raise PluralError(f"{path}: no such spec file")
    folder = path.resolve().parent
    mod_spec = importlib.util.spec_from_file_location(f"plural_spec_{path.stem}", path)
    module = importlib.util.module_from_spec(mod_spec)
    std = set(sys.stdlib_module_names) | set(sys.builtin_module_names)
    own = {p.stem for p in folder.glob("*.py")} - std
    before = set(sys.modules)
    set_aside = {name: sys.modules.pop(name) for name in own if name in sys.modules}
    sys.path.insert(0, str(folder))
    try:
        mod_spec.loader.exec_module(module)
        if not hasattr(module, "get_config"):
            raise PluralError(f"{path}: a spec defines get_config()")
        spec = module.get_config()
    except PluralError:
        raise
    except Exception as e:  # a user's spec file: report it in one line
        raise PluralError(f"{path}: cannot load spec ({type(e).__name__}: {e})")
    finally:
        sys.path.remove(str(folder))
        for name in [n for n in sys.modules if n.split(".")[0] in own and n not in before]:
            del sys.modules[name]
        sys.modules.update(set_aside)
    if not isinstance(spec, dict):
        raise PluralError(f"{path}: get_config() must return a dict, not {type(spec).__name__}")
    for key in ("datasets", "methods"):
        if not spec.get(key):
            raise PluralError(f"{path}: get_config() needs a non-empty '{key}'")
    return spec


def _population(name: str, entry: dict):
    """(checked config, simulator) of a dataset's {"simulate": {...}} entry."""
    opts = dict(entry["simulate"])
    population = opts.pop("population", "ideal-point")
    if population not in POPULATIONS:
        raise PluralError(f"dataset {name}: unknown population {population!r} (expected {' or '.join(POPULATIONS)})")
    config_cls, simulate = POPULATIONS[population]
    try:
        cfg = apply_overrides({"simulate": config_cls()}, opts)["simulate"]
        check_population(population, cfg)
    except (PluralError, ValueError) as e:
        raise PluralError(f"dataset {name}: {e}") from None
    return cfg, simulate


def _split_config(entry: dict):
    """The checked SplitConfig of a real table's {"split": {...}} entry."""
    from plural.data.split import SplitConfig

    cfg = apply_overrides({"split": SplitConfig()}, dict(entry.get("split", {})))["split"]
    cfg.check()
    return cfg


def _convert_set(entry: dict) -> list[str]:
    """A real table's "convert_set" (["key=value", ...] or {key: value}) as `--set` strings."""
    given = entry.get("convert_set", [])
    return [f"{k}={_text(v)}" for k, v in given.items()] if isinstance(given, dict) else list(given)


def data_key(name: str, entry: dict) -> str:
    """A dataset entry as resolved (a population's full config, defaults included; a real table's entry with its
    split config): what the tables under DIR/data/<name> were made from."""
    if "simulate" in entry:
        cfg, _ = _population(name, entry)
        return f"{entry['simulate'].get('population', 'ideal-point')} {cfg!r}"
    if "table" in entry:  # the table by name and size, so that a moved checkout resumes its grids
        table = Path(entry["table"])
        size = table.stat().st_size if table.exists() else None
        return json.dumps({**entry, "table": [table.name, size], "split": repr(_split_config(entry))}, sort_keys=True,
                          default=str)
    return json.dumps({k: str(Path(v).resolve()) if k in SPLITS else v for k, v in entry.items()}, sort_keys=True,
                      default=str)


def _dataset(name: str, entry: dict, out: Path) -> dict[str, PreferenceData]:
    """{"train", "val", "test"} tables of a spec's dataset entry (simulated or converted/split once under out/data;
    made again when the entry resolves differently from what they were made from, `data_key` in source.txt)."""
    d = out / "data" / name
    if "simulate" in entry or "table" in entry:
        key, source = data_key(name, entry), d / "source.txt"
        if (d / "test.parquet").exists() and source.exists() and source.read_text() != key:
            shutil.rmtree(d)
        if not (d / "test.parquet").exists():
            d.mkdir(parents=True, exist_ok=True)
            source.write_text(key)
    if "simulate" in entry:
        cfg, simulate = _population(name, entry)
        if not (d / "test.parquet").exists():
            simulate(cfg).write(d)
        paths = {k: d / f"{k}.parquet" for k in SPLITS}
    elif "table" in entry:
        if not (d / "test.parquet").exists():
            _split_real(name, entry, d)
        paths = {k: d / f"{k}.parquet" for k in SPLITS}
    elif all(k in entry for k in SPLITS):
        paths = {k: entry[k] for k in SPLITS}
    else:
        raise PluralError(f"dataset {name}: expected 'simulate', 'table' or 'train' / 'val' / 'test' paths")
    return {k: read_table(p) for k, p in paths.items()}


def _split_real(name: str, entry: dict, d: Path) -> None:
    """Convert (optionally) and split a real table into d/{train,val,test}.parquet."""
    from plural.data.split import split_table
    from plural.data.table import read_frame

    d.mkdir(parents=True, exist_ok=True)
    table = entry["table"]
    if entry.get("convert"):
        from plural.data.sources import convert

        convert(entry["convert"], table, d / "table.parquet", overrides=_convert_set(entry))
        table = d / "table.parquet"
    parts = split_table(read_frame(table), _split_config(entry))
    for k in SPLITS:
        parts[k].to_parquet(d / f"{k}.parquet.tmp", index=False)
    for k in SPLITS:
        (d / f"{k}.parquet.tmp").rename(d / f"{k}.parquet")


def _text(value) -> str:
    """A spec value as `--set` text: tuples (and lists) compact, `(256,256)`, `(64,)`, as specs wrote them when
    they took text only; so a cell's id and its `hparams` do not change when a spec gives the Python value."""
    if isinstance(value, (tuple, list)):
        inner = ",".join(repr(v) if isinstance(v, str) else _text(v) for v in value)
        return f"({inner}{',' if len(value) == 1 else ''})"
    return str(value)


def _method_set(label: str, given) -> dict:
    """A method's "set" (["key=value", ...] or {key: value}) as {key: value} (text values stay text)."""
    if isinstance(given, dict):
        return dict(given)
    if isinstance(given, str) or not all(isinstance(item, str) for item in given):
        raise PluralError(f"method {label}: 'set' is a list of 'key=value' strings or a dict {{key: value}}, not {given!r}")
    out = {}
    for item in given:
        if "=" not in item:
            raise PluralError(f"method {label}: set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        out.pop(key.strip(), None)  # given twice: the last one wins (applied last, as on the command line)
        out[key.strip()] = value
    return out


def _points(label: str, grid: dict) -> list[dict]:
    for key, values in grid.items():
        if not isinstance(values, (list, tuple)):
            raise PluralError(f"method {label}: grid {key}={values!r}: expected a list of values to sweep")
    return [dict(zip(grid, vals)) for vals in itertools.product(*grid.values())] or [{}]


def cells(spec: dict):
    """(cell id, dataset, method label, model, overrides, point) of every cell, in spec order.

    `overrides` ({key: value}, for `configs_for`) is the method's "set" then the point, Python values as
    given (text is parsed by the field's type). The id hashes the `--set` text of the same settings."""
    for ds in spec["datasets"]:
        for label, m in spec["methods"].items():
            points = [dict(p) for p in m["points"]] if "points" in m else _points(label, m.get("grid", spec.get("grid", {})))
            given = m.get("set", [])
            fixed = _method_set(label, given)
            for point in points:
                overrides = {**fixed}
                for k, v in point.items():
                    overrides.pop(k, None)
                    overrides[k] = v
                text = [f"{k}={_text(v)}" for k, v in given.items()] if isinstance(given, dict) else list(given)
                text += [f"{k}={_text(v)}" for k, v in point.items()]
                key = json.dumps([ds, label, m["model"], text])
                cid = f"{ds}__{label}__{hashlib.sha1(key.encode()).hexdigest()[:10]}"
                yield cid, ds, label, m["model"], overrides, point


def _hparams(point: dict) -> str:
    """The `hparams` column: a cell's point as JSON (tuples as their compact `--set` text)."""
    return json.dumps({k: _text(v) if isinstance(v, (tuple, list)) else v for k, v in point.items()}, sort_keys=True,
                      default=str)


SPEC_KEYS = {"datasets", "methods", "grid", "select", "select_metric", "seeds", "shots", "active", "baseline"}
SELECT = ("per_dataset", "across_datasets")
SELECT_METRICS = ("accuracy", "log_loss")


def _int_list(spec: dict, key: str, default: list[int], least: int) -> None:
    values = spec.get(key, default)
    if isinstance(values, (str, bytes, dict)) or not isinstance(values, (list, tuple)) or not values:
        raise PluralError(f"spec {key}={values!r}: expected a non-empty list of integers")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < least:
            raise PluralError(f"spec {key}: {v!r} is not an integer >= {least}")


def _check_shape(spec: dict) -> None:
    """The spec's structure: datasets and methods are dicts of dicts, seeds and shots lists of integers."""
    for key in ("datasets", "methods"):
        if not isinstance(spec[key], dict):
            raise PluralError(f"spec {key}: expected a dict {{name: entry}}, not {type(spec[key]).__name__}")
        for name, entry in spec[key].items():
            if not isinstance(entry, dict):
                raise PluralError(f"spec {key} {name!r}: expected a dict, not {type(entry).__name__} {entry!r:.40}")
    for label, m in spec["methods"].items():
        if not isinstance(m.get("model"), str):
            raise PluralError(f"method {label}: needs 'model' (a family name)")
    if not isinstance(spec.get("grid", {}), dict):
        raise PluralError(f"spec grid: expected a dict {{key: [values]}}, not {type(spec['grid']).__name__}")
    _int_list(spec, "seeds", [0], 0)
    check_seeds(spec.get("seeds", [0]))
    _int_list(spec, "shots", [0], 0)


def check_spec(spec: dict) -> list[tuple]:
    """Every cell of `spec`, after checking (nothing trains) that each resolves to valid configs and each
    dataset entry to a valid population or split; a bad value is a one-line PluralError naming it."""
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise PluralError(f"spec key {sorted(unknown)[0]!r}: unknown (expected one of {', '.join(sorted(SPEC_KEYS))})")
    for key, options in (("select", SELECT), ("select_metric", SELECT_METRICS)):
        if spec.get(key, options[0]) not in options:
            raise PluralError(f"spec {key}={spec[key]!r}: expected {' or '.join(options)}")
    _check_shape(spec)
    baselines(spec)
    todo = list(cells(spec))
    for _, ds, label, model, overrides, _ in todo:
        try:
            configs_for(model, overrides)
        except PluralError as e:
            raise PluralError(f"method {label} on {ds}: {e}") from None
    for name, entry in spec["datasets"].items():
        if "simulate" in entry:
            _population(name, entry)
        elif "table" in entry:
            try:
                _split_config(entry)
            except PluralError as e:
                raise PluralError(f"dataset {name}: {e}") from None
        elif not all(k in entry for k in SPLITS):
            raise PluralError(f"dataset {name}: expected 'simulate', 'table' or 'train' / 'val' / 'test' paths")
    return todo


@dataclasses.dataclass
class Cell:
    """One (dataset, method, hyper-parameter point) of a spec, with its resolved configs."""

    cid: str
    dataset: str
    label: str
    model: str
    overrides: dict
    point: dict
    configs: dict  # configs_for(model, overrides): {"model", "train", "batch", "data"}
    fingerprint: str = ""  # `fingerprint(...)`: what the cell's stored results were computed from


def fingerprint(c: Cell, spec: dict) -> str:
    """A hash of what a cell's results depend on besides the code: its resolved configs (defaults included), its
    dataset's resolved entry (`data_key`), the spec's seeds and shot counts. Stored with the cell
    (`config_hash`), so that `--resume` trains again a cell whose settings resolve differently now (a changed
    default) instead of keeping its old results."""
    text = repr([[repr(c.configs[k]) for k in sorted(c.configs)], data_key(c.dataset, spec["datasets"][c.dataset]),
                 list(spec.get("seeds", [0])), sorted(spec.get("shots", [0]))])
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _finished(out: Path, c: Cell) -> bool:
    """Whether cell `c` has a stored summary computed from its current settings. A summary without a
    `config_hash` column (written before the column existed) counts as finished."""
    path = out / "cells" / f"{c.cid}.parquet"
    if not path.exists():
        return False
    stored = pd.read_parquet(path)
    return "config_hash" not in stored or bool((stored["config_hash"] == c.fingerprint).all())


def programs(todo: list[tuple], spec: dict) -> list[list[Cell]]:
    """The spec's cells grouped into compiled programs: cells of one dataset and family whose settings differ
    only in traced ones (`plural.train.traced_keys`: learning rate, weight decay, the family's loss weights
    and rates) train as replicas of one program; any other difference (a width, K, a sampler setting) is
    another program. Programs are listed in the spec order of their first cell; each cell carries its `fingerprint`."""
    groups: dict[tuple, list[Cell]] = {}
    for cid, ds, label, model, overrides, point in todo:
        c = configs_for(model, overrides)
        keys = traced_keys(get_family(model))
        blank = {sec: dataclasses.replace(c[sec], **{k.split(".", 1)[1]: None for k in keys if k.startswith(sec + ".")})
                 for sec in ("model", "train")}
        key = (ds, model, repr(blank["model"]), repr(blank["train"]), repr(c["batch"]), repr(c["data"]))
        cell = Cell(cid, ds, label, model, overrides, point, c)
        cell.fingerprint = fingerprint(cell, spec)
        groups.setdefault(key, []).append(cell)
    return list(groups.values())


def _value(configs: dict, key: str):
    section, name = key.split(".", 1)
    return getattr(configs[section], name)


def _parse_shard(shard: str | None) -> tuple[int, int] | None:
    if shard is None:
        return None
    try:
        i, n = (int(x) for x in shard.split("/"))
    except ValueError:
        raise PluralError(f"--shard {shard}: expected I/N, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise PluralError(f"--shard {shard}: expected 0 <= I < N")
    return i, n


def run_grid(spec_path: str | Path, out: str | Path, resume: bool = False, progress: bool = True,
             datasets: list[str] | None = None, shard: str | None = None, merge: bool = False) -> pd.DataFrame | None:
    """Run (or with `resume` finish) the grid of a spec file into `out`; `datasets` (names of the spec's
    datasets) keeps only those, the spec's order kept: the cells and result tables are theirs alone, and
    their cells are the same files a whole run writes, so a later run of more datasets resumes them.

    `shard="I/N"` trains only every N-th program (programs I, I + N, ...: one job of a cluster array; a
    program's cells stay together) and writes their cells, not the tables; `merge=True` trains nothing and
    writes the tables once every cell is there (from all shards). Returns the results table (None for a shard).
    """
    spec = load_spec(spec_path)
    if datasets:
        unknown = [d for d in datasets if d not in spec["datasets"]]
        if unknown:
            raise PluralError(f"--datasets {unknown[0]}: not a dataset of {spec_path} "
                              f"(it has {', '.join(spec['datasets'])})")
        spec = {**spec, "datasets": {k: v for k, v in spec["datasets"].items() if k in datasets}}
    part = _parse_shard(shard)
    if merge and part is not None:
        raise PluralError("--merge joins the shards' cells: run it without --shard")
    out = Path(out)
    todo = check_spec(spec)  # every cell's hyper-parameters and every dataset's settings, before training anything
    if merge:
        every = [c for p in programs(todo, spec) for c in p]
        missing = [c.cid for c in every if not _finished(out, c)]
        if missing:
            raise PluralError(f"{out}: {len(missing)} of {len(todo)} cells are not finished or ran with other "
                              f"resolved settings (first: {missing[0]}); run the shards that hold them "
                              "(--shard I/N), then --merge")
        return _write_tables(out, todo, spec)
    progs = programs(todo, spec)
    mine = [(j, p) for j, p in enumerate(progs) if part is None or j % part[1] == part[0]]
    seeds = tuple(spec.get("seeds", [0]))
    shots_list = sorted(spec.get("shots", [0]))
    there = [c for _, p in mine for c in p if (out / "cells" / f"{c.cid}.parquet").exists()]
    if there and not resume:
        raise PluralError(f"{out}: already holds grid results; pass --resume to continue, or use a new --out")
    stale = [c for c in there if not _finished(out, c)]
    if stale and progress and jax.process_index() == 0:
        print(f"{out}: {len(stale)} finished cell(s) ran with other resolved settings (a default, the seeds or the "
              f"shots changed since; first: {stale[0].cid}); training them again")
    (out / "cells").mkdir(parents=True, exist_ok=True)
    tables: dict[str, dict | PluralError] = {}
    lead = jax.process_index() == 0  # with jax.distributed, every process trains; process 0 scores and writes
    bar = tqdm(total=sum(len(p) for _, p in mine), desc="grid", unit="cell", disable=not (progress and lead) or None,
               dynamic_ncols=True)
    try:
        for n_prog, (j, prog) in enumerate(mine):
            pending = [c for c in prog if not _finished(out, c)]
            bar.update(len(prog) - len(pending))
            if not pending:
                continue
            bar.set_postfix_str(f"program {n_prog + 1}/{len(mine)}: {pending[0].dataset} {pending[0].model} "
                                f"({len(pending)} cells x {len(seeds)} seeds)")
            status = _run_program(j, pending, spec, out, seeds, shots_list, tables, progress and lead)
            bar.update(len(pending))
            if progress and lead:
                tqdm.write(f"program {n_prog + 1}/{len(mine)} {pending[0].dataset} {pending[0].label}: {status}")
            jax.clear_caches()  # a long grid compiles hundreds of programs; keep the JIT's memory maps bounded
    finally:
        bar.close()
    if part is not None or not lead:
        return None
    return _write_tables(out, todo, spec)


def _tables(name: str, spec: dict, out: Path, cache: dict) -> dict:
    """A dataset's train / val / test tables, read once per grid; a refusal is kept and raised for each program."""
    if name not in cache:
        # other processes of a jax.distributed grid make the same tables in a folder of their own (process 0
        # writes DIR/data)
        base = out
        if jax.process_index() != 0:
            base = Path(tempfile.mkdtemp(prefix="plural-grid-data-"))
            atexit.register(shutil.rmtree, base, True)
        try:
            cache[name] = _dataset(name, spec["datasets"][name], base)
        except PluralError as e:
            cache[name] = e
    if isinstance(cache[name], PluralError):
        raise cache[name]
    return cache[name]


def _run_program(j: int, cells: list[Cell], spec: dict, out: Path, seeds: tuple, shots_list: list[int],
                 tables: dict, progress: bool) -> str:
    """Train the cells of one program as replicas (cells x seeds) of one compiled program, then score and write
    each cell. A refused dataset, or a cell whose loss turns non-finite, is written as a failed cell (its error
    and step) and the rest go on. Returns a one-line status."""
    family = get_family(cells[0].model)
    S = len(seeds)
    pad = padding(len(cells) * S, cells[0].configs["train"].mesh)  # copies of the last replica, dropped after training
    try:
        data = _tables(cells[0].dataset, spec, out, tables)
        # the defaults that depend on the training table (input_dropout=None), before the traced values are read
        cells = [dataclasses.replace(c, configs={**c.configs, "model": family.resolve_data(c.configs["model"], data["train"])})
                 for c in cells]
        first = cells[0]
        varying = [k for k in traced_keys(family) if len({_value(c.configs, k) for c in cells}) > 1]
        traced = {k: [_value(c.configs, k) for c in cells for _ in seeds] + [_value(cells[-1].configs, k)] * pad
                  for k in varying}
        result = train(family, first.configs["model"], first.configs["train"], data["train"],
                       seeds=seeds * len(cells) + seeds[-1:] * pad, progress=progress, val=data["val"],
                       batches=first.configs["batch"], traced=traced or None)
    except PluralError as e:
        for c in cells if jax.process_index() == 0 else []:
            _write_failed(out, c, seeds, str(e), None)
        return f"{len(cells)} cells failed: {e}"
    if jax.process_index() != 0:  # process 0 scores and writes the cells
        return "trained"
    n_failed = 0
    steps = result.history[-1]["step"] if result.history else 0
    rate = len(cells) * S * steps * result.pairs_per_step / max(result.train_s, 1e-9)  # the program's pairs/s
    timing = {"program": j, "program_cells": len(cells), "program_replicas": len(cells) * S,
              "compile_s": result.compile_s, "train_s": result.train_s, "pairs_per_s": rate / len(cells)}
    for i, c in enumerate(cells):
        sub = result.subset(range(i * S, (i + 1) * S), hp=c.configs["model"], cfg=c.configs["train"])
        failed = [(s, f) for s, f in zip(seeds, sub.failed) if f is not None]
        if failed:
            _write_failed(out, c, seeds, f"non-finite training loss (seed {failed[0][0]}, by step {failed[0][1]})",
                          failed[0][1])
            n_failed += 1
            continue
        try:
            cell, rows = _score_cell(sub, seeds, data, shots_list)
        except PluralError as e:
            _write_failed(out, c, seeds, str(e), None)
            n_failed += 1
            continue
        if spec.get("active") and hasattr(family, "state_from_context"):
            _active_table(sub, seeds, set(data["train"].users), data["test"], spec["active"]).assign(
                cell=c.cid, dataset=c.dataset, method=c.label, model=c.model, hparams=_hparams(c.point)
            ).to_parquet(out / "cells" / f"{c.cid}.active.parquet", index=False)
        stopped = {s: sub.seed_metrics(k).get("best_step") for k, s in enumerate(seeds)}
        for k, (name, v) in enumerate(_meta(c).items()):
            cell.insert(k, name, v)
        cell["best_step"] = cell["seed"].map(stopped)
        cell = cell.assign(**timing)
        _atomic_parquet(rows.assign(cell=c.cid), out / "cells" / f"{c.cid}.rows.parquet")
        _atomic_parquet(cell, out / "cells" / f"{c.cid}.parquet")  # last: a cell counts as finished only when its summary exists
    return (f"{len(cells)} cells x {S} seeds, compile {result.compile_s:.1f} s, train {result.train_s:.1f} s, "
            f"{rate:,.0f} pairs/s" + (f", {n_failed} failed" if n_failed else ""))


def padding(replicas: int, mesh: tuple = ()) -> int:
    """Replicas to add so that a program's replicas split evenly over the devices (automatic mesh only): with
    3 seeds on 2 devices, 4 replicas train in the time of 2 rather than 3 on one device."""
    if mesh:
        return 0
    n = jax.device_count()
    share = max(d for d in range(1, min(n, replicas) + 1) if n % d == 0)
    return -replicas % share


def _meta(c: Cell) -> dict:
    """The identifying columns of a cell's lines: cell, dataset, method, model, hparams, and one `hp.<key>` column
    per swept key (tuples as their `--set` text)."""
    swept = {f"hp.{k}": _text(v) if isinstance(v, (tuple, list)) else v for k, v in c.point.items()}
    return {"cell": c.cid, "dataset": c.dataset, "method": c.label, "model": c.model, "hparams": _hparams(c.point),
            **swept, "config_hash": c.fingerprint}


def _write_failed(out: Path, c: Cell, seeds: tuple, error: str, step) -> None:
    """A failed cell's record (one line per seed: its error and the step it failed at), so --resume skips it."""
    lines = pd.DataFrame([{**_meta(c), "seed": s, "error": error, "failed_step": step} for s in seeds])
    _atomic_parquet(lines, out / "cells" / f"{c.cid}.parquet")


def _write_tables(out: Path, todo: list[tuple], spec: dict) -> pd.DataFrame:
    """results / selected / summary / reliability / paired / active tables from the finished cells."""
    results = pd.concat([pd.read_parquet(out / "cells" / f"{cid}.parquet") for cid, *_ in todo], ignore_index=True)
    if "error" not in results:
        results["error"] = None
    failed = results[results["error"].notna()].drop_duplicates("cell")
    if len(failed):
        print(f"{len(failed)} failed cell(s), left out of selection:")
        for _, r in failed.iterrows():
            print(f"  {r['cell']}: {r['error']}")
    ok = results[results["error"].isna()]
    if ok.empty:
        raise PluralError(f"{out}: every cell failed (first: {failed.iloc[0]['error']})")
    results = pd.concat([select(ok, spec), failed.assign(selected=False)], ignore_index=True)
    results.to_parquet(out / "results.parquet", index=False)
    chosen = results[results["selected"] & (results["table"] == "test")]
    chosen.to_parquet(out / "selected.parquet", index=False)
    summarise(chosen).to_parquet(out / "summary.parquet", index=False)
    rows = pd.concat([pd.read_parquet(out / "cells" / f"{c}.rows.parquet") for c in chosen["cell"].unique()], ignore_index=True)
    reliability(rows, chosen).to_parquet(out / "reliability.parquet", index=False)
    bases = baselines(spec)
    if bases:
        pd.concat([paired(rows, chosen, b) for b in bases], ignore_index=True).to_parquet(out / "paired.parquet",
                                                                                          index=False)
    active = [out / "cells" / f"{cid}.active.parquet" for cid, *_ in todo]
    if any(p.exists() for p in active):
        pd.concat([pd.read_parquet(p) for p in active if p.exists()], ignore_index=True).to_parquet(out / "active.parquet", index=False)
    return results


SPLITS = ("train", "val", "test")
MIN_GAP = 0.02  # oracle - single below which a (per-group) gap closed is not reported
ROW_COLUMNS = ["row", "user_id", "group", "seen", "margin", "correct", "oracle_p", "population_p"]


def _atomic_parquet(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:  # a crash never leaves half a file
        df.to_parquet(tmp, index=False)


def _score_cell(result, seeds, data: dict, shots_list: list[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Summary lines (table x seed x shots x split x group) and the scored rows of one trained cell.

    Unseen users are scored on rows at positions >= max(shots) for every shot count (one fixed set of rows
    per curve); seen users' rows do not depend on shots and are scored once per seed (listed at every shot
    count so that each line of the summary is complete)."""
    from analysis.calibration import calibration_metrics, uncertainty_error_correlation

    users = list(data["train"].users)
    score_from = max(shots_list)
    tables, kept = [], []
    for table in ("val", "test"):
        for i, seed in enumerate(seeds):
            for shots in shots_list:
                rows = predict(result, users, data[table], shots=shots, seed_index=i, score_from=score_from)
                rows["split"] = rows["seen"].map({True: "seen", False: "unseen"})
                kept.append(rows[[c for c in ROW_COLUMNS + ["split"] if c in rows]].assign(table=table, seed=seed, shots=shots))
                for split, r in [("all", rows), *rows.groupby("split")]:
                    parts = [accuracy_table(r, by=None, n_boot=200).assign(group="all")]
                    if r["group"].notna().any():
                        parts.append(accuracy_table(r, by="group", n_boot=200))
                    for t in parts:
                        cal = pd.DataFrame([calibration_metrics(r if g == "all" else r[r["group"] == g])
                                            for g in t["group"]]).drop(columns=["n_pairs"])
                        t = pd.concat([t.drop(columns=["subset"], errors="ignore").reset_index(drop=True), cal], axis=1)
                        if "gap_closed" in t:  # a gap closed over a tiny gap is noise: reported only where it is >= MIN_GAP
                            t["gap_closed"] = t["gap_closed"].where(t["oracle"] - t["single"] >= MIN_GAP)
                        if "uncertainty" in r and r["uncertainty"].notna().all() and r["user_id"].nunique() >= 3:
                            u = uncertainty_error_correlation(r, n_boot=200)  # same value on every group line of r
                            t = t.assign(uncertainty_spearman=u["spearman"], uncertainty_spearman_lo=u["spearman_lo"],
                                         uncertainty_spearman_hi=u["spearman_hi"])
                        tables.append(t.assign(table=table, seed=seed, shots=shots, split=split, score_from=score_from))
    return pd.concat(tables, ignore_index=True), pd.concat(kept, ignore_index=True)


def select(results: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """Add `selection_score` (per cell) and `selected` (the best cell of each dataset x method on validation).

    selection_score = mean over seeds of: the seen users' val accuracy, and (when the val table has unseen
    users) their accuracy averaged over the spec's shot counts; the two are averaged (with `select_metric`
    log_loss: the same of minus the log-loss). Ties: the first cell in spec order. Test numbers play no part."""
    v = results[(results["table"] == "val") & (results["group"] == "all")]
    metric = spec.get("select_metric", "accuracy")
    v = v.assign(score=v["accuracy"] if metric == "accuracy" else -v["log_loss"])
    seen = v[v["split"] == "seen"].groupby(["cell", "seed"])["score"].first()
    unseen = v[v["split"] == "unseen"].groupby(["cell", "seed"])["score"].mean()
    per_seed = pd.concat([seen.rename("seen"), unseen.rename("unseen")], axis=1).mean(axis=1)
    score = per_seed.groupby(level="cell").mean()
    results = results.assign(selection_score=results["cell"].map(score))
    order = {cid: i for i, (cid, *_) in enumerate(cells(spec))}
    first = results.drop_duplicates("cell").assign(order=lambda d: d["cell"].map(order))
    mode = spec.get("select", "per_dataset")
    if mode == "across_datasets":  # one point per method: the best mean validation score over the datasets
        suite = first.groupby(["method", "hparams"], sort=False).agg(mean=("selection_score", "mean"), order=("order", "min"))
        best_points = (suite.reset_index().sort_values(["mean", "order"], ascending=[False, True])
                       .drop_duplicates("method")[["method", "hparams"]])
        best = first.merge(best_points, on=["method", "hparams"])["cell"]
        results = results.assign(suite_score=results.set_index(["method", "hparams"]).index.map(suite["mean"]))
    elif mode == "per_dataset":
        best = first.sort_values(["selection_score", "order"], ascending=[False, True]).drop_duplicates(["dataset", "method"])["cell"]
    else:
        raise PluralError(f"spec select={mode!r}: expected per_dataset or across_datasets")
    return results.assign(selected=results["cell"].isin(set(best)))


def summarise(chosen: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% CI across training seeds of the selected cells' test numbers."""
    from analysis.summary import seed_summary

    cols = [c for c in ("accuracy", "expected", "gap_closed", "agree_oracle", "agree_single", "log_loss", "brier", "ece")
            if c in chosen]
    keys = ["dataset", "method", "model", "hparams", "split", "shots", "group"]
    extra = [c for c in ("oracle", "single") if c in chosen]
    out = seed_summary(chosen, cols, keys)
    if extra:
        out = out.merge(chosen.groupby(keys, as_index=False)[extra].mean(), on=keys)
    return out


def reliability(rows: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
    """Reliability curves of the selected cells on the test table: per dataset, method, seed and split
    (seen users; unseen users at the largest shot count)."""
    from analysis.calibration import reliability_curve

    meta = chosen.drop_duplicates("cell").set_index("cell")[["dataset", "method"]]
    top = rows["shots"].max()
    r = rows[(rows["table"] == "test") & ((rows["split"] == "seen") & (rows["shots"] == rows["shots"].min())
                                         | (rows["split"] == "unseen") & (rows["shots"] == top))]
    out = []
    for (cid, seed, split), g in r.groupby(["cell", "seed", "split"], sort=True):
        out.append(reliability_curve(g).assign(dataset=meta.at[cid, "dataset"], method=meta.at[cid, "method"],
                                               seed=seed, split=split))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def baselines(spec: dict) -> list[str]:
    """The spec's `baseline` as a list of method labels (a label or a list of them; default "bt" when a method
    has that label). A label that is not one of the spec's methods is refused: its comparisons would be empty."""
    given = spec.get("baseline", "bt" if "bt" in spec["methods"] else [])
    labels = [given] if isinstance(given, str) else given
    if not isinstance(labels, (list, tuple)) or not all(isinstance(b, str) for b in labels):
        raise PluralError(f"spec baseline={given!r}: expected a method label or a list of them")
    for b in labels:
        if b not in spec["methods"]:
            raise PluralError(f"spec baseline={b!r}: not a method of the spec (it has {', '.join(spec['methods'])})")
    return list(labels)


def paired(rows: pd.DataFrame, chosen: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Each selected method minus the selected `baseline` on the same test rows: per dataset, seed, shots
    and split, the mean difference in correctness (and noise-free accuracy) with a user-bootstrap CI."""
    from analysis.summary import paired_difference

    meta = chosen.drop_duplicates("cell").set_index("cell")[["dataset", "method"]]
    rows = rows[rows["table"] == "test"].join(meta, on="cell")
    out = []
    for ds, d in rows.groupby("dataset", sort=False):
        base = d[d["method"] == baseline]
        if base.empty:
            continue
        for method, dm in d[d["method"] != baseline].groupby("method", sort=True):
            for (seed, shots), a in dm.groupby(["seed", "shots"], sort=True):
                b = base[(base["seed"] == seed) & (base["shots"] == shots)]
                if b.empty:
                    continue
                for split in ("seen", "unseen"):
                    ra, rb = a[a["split"] == split], b[b["split"] == split]
                    if len(ra):
                        out.append(paired_difference(ra, rb).assign(dataset=ds, method=method, baseline=baseline,
                                                                     seed=seed, shots=shots, split=split))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


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
