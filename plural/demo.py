"""`plural demo`: the main job on a built-in population, end to end in a few minutes on 2 CPU cores.

Simulates a 3-group ideal-point population with a 10% minority (one fixed context), fits every registered family (and the variants it
registers for the demo, e.g. BT's group- and user-conditioned baselines) through
the same `plural fit` path with its defaults (chosen on the validation data of the defaults suite,
experiments/defaults.py) and early stopping on the population's val table, scores seen users and unseen
users (10 shots) on the test table, prints the subgroup table against the oracle and the best single
reward, and writes the per-group figure.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from analysis import accuracy_table, group_report
from paper_figs import group_accuracy
from personas import IdealPointConfig, simulate_ideal_point
from plural.data import read_table
from plural.errors import PluralError
from plural.evaluate import predict
from plural.models import demo_models
from plural.run import fit

SHOTS = 10


def run_name(label: str) -> str:
    """The run directory under DIR/runs of a demo model: "bt (group)" -> "bt_group"."""
    return label.replace(" ", "_").replace("(", "").replace(")", "")


def run_demo(out: Path, seed: int = 0, overrides: tuple[str, ...] = (), models: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Simulate the 3-group population under `out`, fit every demo model (`demo_models()`, or the labels in
    `models`) with early stopping on its validation table, print each model's subgroup summary and the table,
    write the figures; returns the table. `overrides` (`--set` strings) are added to every model's settings
    (the tests shorten training with them and fit a few models; `plural demo` fits all at their defaults)."""
    chosen = demo_models()
    if models is not None:
        unknown = [m for m in models if m not in chosen]
        if unknown:
            raise PluralError(f"demo model {unknown[0]!r}: not one of {', '.join(chosen)}")
        chosen = {m: chosen[m] for m in models}
    out.mkdir(parents=True, exist_ok=True)
    pop = simulate_ideal_point(IdealPointConfig(n_prompts=0, n_attributes=4, seed=seed))  # attributes: for palette
    pop.write(out / "population")
    truth = pop.truth()["all"]
    print(f"population: 3 groups (shares 0.6 / 0.3 / 0.1), {pop.config.n_users} seen + {pop.config.n_unseen} unseen users, "
          f"{len(pop.train)} training pairs; oracle {truth['oracle_accuracy']:.3f}, best single reward {truth['single_accuracy']:.3f}")
    train = read_table(out / "population" / "train.parquet")
    val = read_table(out / "population" / "val.parquet")
    test = read_table(out / "population" / "test.parquet")
    tables = []
    for name, (family, sets) in chosen.items():
        run_dir = out / "runs" / run_name(name)
        shutil.rmtree(run_dir, ignore_errors=True)  # the demo always trains from scratch
        result = fit(family, out / "population" / "train.parquet", run_dir, seed=seed, data=train, val=val,
                     val_path=out / "population" / "val.parquet", overrides=[*sets, *overrides])
        rows = predict(result, list(train.users), test, shots=SHOTS)
        rows["split"] = rows["seen"].map({True: "seen", False: f"unseen ({SHOTS} shots)"})
        for split, r in rows.groupby("split"):
            t = accuracy_table(r, by="group")
            t.insert(0, "split", split)
            t.insert(0, "model", name)
            tables.append(t)
        rep = group_report(rows)
        print(f"{name}: expected accuracy {rep['overall']['expected'].iat[0]:.3f}, gap closed "
              f"{rep['overall']['gap_closed'].iat[0]:+.2f}, worst-off group {rep['worst_group']} ({rep['worst_accuracy']:.3f})")
    table = pd.concat(tables, ignore_index=True)
    table.to_csv(out / "group_table.csv", index=False)
    cols = ["model", "split", "group", "n_users", "accuracy", "expected", "oracle", "single", "gap_closed"]
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 140):
        print(table[cols].to_string(index=False))
    paths = group_accuracy.plot(table, out / "figures")
    print(f"figures: {', '.join(str(p) for p in paths)}")
    return table
