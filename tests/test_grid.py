"""`plural grid`: every cell x seed x shots x split is in the results; --resume skips finished cells."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plural.cli import main

SMOKE = Path(__file__).parents[1] / "experiments" / "smoke.py"


def test_smoke_grid_and_resume(tmp_path, capsys):
    out = tmp_path / "g"
    assert main(["grid", str(SMOKE), "--out", str(out)]) == 0
    r = pd.read_parquet(out / "results.parquet")
    assert r["cell"].nunique() == 2 and sorted(r["hparams"].unique()) == ['{"train.lr": 0.001}', '{"train.lr": 0.003}']
    overall = r[(r.group == "all") & (r.split == "all") & (r.table == "test")]
    assert len(overall) == 2 * 2 * 2  # cells x seeds x shots
    assert set(r["table"]) == {"val", "test"}
    # exactly one cell selected, the one with the better validation score, whatever its test numbers
    by_cell = r.groupby("cell")[["selection_score", "selected"]].first()
    assert by_cell["selected"].sum() == 1 and by_cell["selection_score"].idxmax() == by_cell.index[by_cell["selected"]][0]
    val = r[(r.table == "val") & (r.group == "all") & (r.split == "seen")].groupby("cell")["accuracy"].mean()
    assert by_cell["selected"].idxmax() == val.idxmax() or np.isclose(val.max(), val.min())
    sel = pd.read_parquet(out / "selected.parquet")
    assert set(sel["cell"]) == {by_cell["selected"].idxmax()} and set(sel["table"]) == {"test"}
    summary = pd.read_parquet(out / "summary.parquet")
    line = summary[(summary.split == "all") & (summary.group == "all") & (summary.shots == 0)].iloc[0]
    seeds = overall[(overall.cell == sel.cell.iloc[0]) & (overall.shots == 0)]["expected"]
    assert np.isclose(line["expected"], seeds.mean()) and line["n_seeds"] == 2 and line["expected_lo"] < line["expected"]
    # unseen users are scored on the same rows at every shot count (--score-from = the largest)
    unseen = r[(r.table == "test") & (r.split == "unseen") & (r.group == "all")]
    assert unseen.groupby("shots")["n_pairs"].first().nunique() == 1
    # seeds trained at once are different models
    a = overall[(overall.seed == 0) & (overall.shots == 0)].set_index("cell")["expected"]
    b = overall[(overall.seed == 1) & (overall.shots == 0)].set_index("cell")["expected"]
    assert (a != b).any()
    assert {"oracle", "single", "gap_closed"} <= set(r.columns)
    # the two learning rates x two seeds trained as the 4 replicas of one program; a column per swept key
    assert set(r["program_cells"]) == {2} and set(r["program_replicas"]) == {4} and r["program"].nunique() == 1
    assert sorted(r["hp.train.lr"].unique()) == [0.001, 0.003]
    assert (r["compile_s"] > 0).all() and (r["train_s"] > 0).all() and (r["pairs_per_s"] > 0).all()
    assert main(["grid", str(SMOKE), "--out", str(out)]) == 2  # refuses to overwrite
    assert "--resume" in capsys.readouterr().err
    cells = sorted((out / "cells").glob("*__*.parquet"))  # summaries and scored rows of the 2 cells
    stamps = [p.stat().st_mtime_ns for p in cells]
    cells[0].unlink()  # as if the run died before finishing this cell
    assert main(["grid", str(SMOKE), "--out", str(out), "--resume"]) == 0
    assert [p.stat().st_mtime_ns for p in sorted((out / "cells").glob("*__*.parquet"))][2:] == stamps[2:]
    again = pd.read_parquet(out / "results.parquet")
    # the re-run cell (now a program of its own) reproduces its numbers exactly; only its timing records differ
    timing = ["program_cells", "program_replicas", "compile_s", "train_s", "pairs_per_s"]
    pd.testing.assert_frame_equal(again.drop(columns=timing), r.drop(columns=timing))
    assert sorted(again.drop_duplicates("cell")["program_cells"]) == [1, 2]


def test_figs_regenerate_from_stored_results(tmp_path):
    out = tmp_path / "g"
    assert main(["figs", "--quick", "--results", str(out), "--out", str(tmp_path / "figs")]) == 0
    r = pd.read_parquet(out / "results.parquet")
    for name in ("group_accuracy_ideal3", "accuracy_vs_shots"):
        for ext in ("png", "pdf", "csv"):
            assert (tmp_path / "figs" / f"{name}.{ext}").stat().st_size > 0
    plotted = pd.read_csv(tmp_path / "figs/accuracy_vs_shots.csv")
    # one line per method, at its hyper-parameter point selected on validation, test numbers
    sel = r[(r.group == "all") & (r.split == "unseen") & (r.shots == 5) & (r.method == "bt") & r.selected & (r.table == "test")]
    assert len(sel) == 2  # two seeds
    got = plotted[(plotted.split == "unseen") & (plotted.shots == 5)]["expected"].iloc[0]
    assert abs(got - sel["expected"].mean()) < 1e-12  # the CSV holds exactly what was plotted
    assert main(["figs", "--results", str(tmp_path / "none"), "--out", str(tmp_path / "f2")]) == 2


def test_accuracy_vs_prototypes_plots_the_sweep_means(tmp_path):
    """The K figure: one point per (method, split, K), the mean over seeds; unswept methods as references."""
    from paper_figs import accuracy_vs_prototypes

    rows = []
    for method, ks in (("pal-a", [1, 2, 4]), ("bt", [None])):
        for k in ks:
            for seed in (0, 1):
                for split, shots in (("seen", 1), ("seen", 10), ("unseen", 1), ("unseen", 10)):
                    rows.append({"dataset": "d", "method": method, "model": method, "group": "all", "split": split,
                                 "shots": shots, "seed": seed, "oracle": 0.9, "single": 0.7,
                                 "hparams": json.dumps({} if k is None else {"model.n_prototypes": k}),
                                 "expected": 0.6 + 0.01 * (k or 0) + 0.001 * seed + (0.05 if shots == 10 else 0)})
    (tmp_path / "r").mkdir()
    pd.DataFrame(rows).to_parquet(tmp_path / "r/results.parquet")
    paths = accuracy_vs_prototypes.from_results(tmp_path / "r", tmp_path / "f")
    assert paths and all(p.stat().st_size > 0 for p in paths)
    data = pd.read_csv(tmp_path / "f/accuracy_vs_prototypes.csv")
    unseen4 = data[(data.method == "pal-a") & (data.split == "unseen") & (data.K == 4)]["expected"]
    assert abs(unseen4.iloc[0] - (0.6 + 0.04 + 0.0005 + 0.05)) < 1e-12  # 10 shots, mean of the two seeds
    seen2 = data[(data.method == "pal-a") & (data.split == "seen") & (data.K == 2)]["expected"]
    assert abs(seen2.iloc[0] - (0.6 + 0.02 + 0.0005)) < 1e-12  # seen users at the first shot count
    assert set(data[data.K.isna()]["method"]) == {"bt"}


def test_selection_by_log_loss_and_unknown_spec_keys(tmp_path, capsys):
    """Two points of one method on one dataset: A has the better validation accuracy, B the better
    validation log-loss; `select_metric` decides which is selected. A misspelt spec key is refused."""
    from plural.grid import cells, select

    spec = {"datasets": {"d": {}}, "methods": {"m": {"model": "bt", "grid": {"train.lr": [1e-3, 1e-2]}}}}
    ids = [c[0] for c in cells(spec)]
    r = pd.DataFrame([{"cell": cell, "dataset": "d", "method": "m", "hparams": cell, "table": "val", "group": "all",
                       "split": split, "seed": 0, "shots": 0, "accuracy": acc, "log_loss": ll}
                      for cell, acc, ll in ((ids[0], 0.80, 0.60), (ids[1], 0.78, 0.45)) for split in ("seen", "unseen")])
    by_acc = select(r, spec).groupby("cell")["selected"].first()
    by_ll = select(r, {**spec, "select_metric": "log_loss"}).groupby("cell")["selected"].first()
    assert by_acc[ids[0]] and not by_acc[ids[1]]
    assert by_ll[ids[1]] and not by_ll[ids[0]]
    bad = tmp_path / "bad.py"
    bad.write_text(SMOKE.read_text().replace('"shots": [0, 5],', '"shots": [0, 5], "selct_metric": "log_loss",'))
    assert main(["grid", str(bad), "--out", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err.strip()
    assert "selct_metric" in err and "\n" not in err
    bad.write_text(SMOKE.read_text().replace('"shots": [0, 5],', '"shots": [0, 5], "select_metric": "ece",'))
    assert main(["grid", str(bad), "--out", str(tmp_path / "g")]) == 2
    assert "select_metric" in capsys.readouterr().err


def test_gap_vs_setting_reads_the_swept_setting_from_dataset_names(tmp_path):
    from paper_figs import gap_vs_setting

    rows = []
    for ds, v in (("signal0", 0.0), ("signal0.5", 0.5), ("signal1", 1.0)):
        for seed in (0, 1):
            for split, shots in (("seen", 0), ("unseen", 0), ("unseen", 5), ("unseen", 20)):
                rows.append({"dataset": ds, "method": "m", "model": "micro", "hparams": "{}", "group": "all",
                             "split": split, "shots": shots, "seed": seed, "table": "test", "selected": True,
                             "gap_closed": v + 0.01 * shots + 0.1 * seed})
    (tmp_path / "r").mkdir()
    r = pd.DataFrame(rows)
    r.to_parquet(tmp_path / "r/results.parquet")
    assert gap_vs_setting.from_results(tmp_path / "r", tmp_path / "f")
    data = pd.read_csv(tmp_path / "f/gap_vs_setting.csv")
    assert set(data.curve) == {"seen", "unseen, 0 shots", "unseen, 20 shots"}  # the fewest and the most shots
    got = data[(data.curve == "unseen, 20 shots") & (data.setting == 0.5)]["gap_closed"].iloc[0]
    assert abs(got - (0.5 + 0.2 + 0.05)) < 1e-12  # mean over the two seeds
    r.assign(dataset=r["dataset"].replace({"signal1": "other"})).to_parquet(tmp_path / "r/results.parquet")
    assert gap_vs_setting.from_results(tmp_path / "r", tmp_path / "g") is None  # not a sweep: no figure


def test_datasets_runs_a_subset_that_a_later_whole_run_resumes(tmp_path, capsys):
    """`--datasets` keeps only the named datasets; their cells are the whole run's, so resuming the whole
    spec afterwards trains only the other datasets' cells. An unknown name is refused in one line."""
    spec = tmp_path / "two.py"  # the smoke grid on two populations
    other = '"other": {"simulate": {"dim": 8, "n_users": 12, "n_unseen": 6, "train_pairs": 20, "test_pairs": 12, "seed": 1}},'
    spec.write_text(SMOKE.read_text().replace('"datasets": {', '"datasets": {' + other, 1))
    names = ["other", "ideal3"]
    assert main(["grid", str(spec), "--out", str(tmp_path / "g"), "--datasets", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--datasets nope" in err and "\n" not in err and not (tmp_path / "g" / "cells").exists()
    assert main(["grid", str(spec), "--out", str(tmp_path / "g"), "--datasets", names[0]]) == 0
    first = pd.read_parquet(tmp_path / "g" / "results.parquet")
    assert set(first["dataset"]) == {names[0]}
    done = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "g" / "cells").glob("*.parquet")}
    assert main(["grid", str(spec), "--out", str(tmp_path / "g"), "--resume"]) == 0
    whole = pd.read_parquet(tmp_path / "g" / "results.parquet")
    assert set(whole["dataset"]) == set(names)
    assert all((tmp_path / "g" / "cells" / n).stat().st_mtime_ns == t for n, t in done.items())  # not retrained


FAULTY = '''
def get_config():
    sim = {"dim": 8, "n_users": 12, "n_unseen": 6, "train_pairs": 20, "test_pairs": 12, "n_prompts": 8}
    return {
        "datasets": {"a": {"simulate": {**sim, "seed": 0}}, "b": {"simulate": {**sim, "seed": 1}},
                     "gone": {"train": "nowhere/train.parquet", "val": "nowhere/val.parquet", "test": "nowhere/test.parquet"}},
        "methods": {
            "bt": {"model": "bt", "set": {"model.hidden": (16,), "train.steps": 60, "train.log_every": 20,
                                          "train.eval_every": 20, "train.grad_clip": 0.0, "train.warmup_steps": 0,
                                          "batch.batch_size": 64},
                   "grid": {"train.lr": [1e-3, 1e38]}},
            "wide": {"model": "bt", "set": {"model.hidden": (24,), "train.steps": 60, "batch.batch_size": 64}},
        },
        "seeds": [0, 1],
        "shots": [0, 5],
    }
'''


@pytest.mark.slow  # ~25 s; run with pytest -m slow
def test_shards_merge_to_the_single_run_and_failed_cells_are_recorded(tmp_path, capsys):
    """Programs: per dataset, the two learning rates of `bt` train as one program and `wide` (another width)
    as another. lr = 1e38 blows its replicas up: that cell is recorded with its error and step, left out of
    selection, and the cell beside it in the same program is unaffected; a dataset whose tables are missing is
    recorded as failed cells too and the grid goes on. Two shards (`--shard 0/2`, `1/2`) then `--merge` give the
    tables of one whole run."""
    spec = tmp_path / "faulty.py"
    spec.write_text(FAULTY)
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(["grid", str(spec), "--out", str(whole)]) == 0
    assert "failed cell" in capsys.readouterr().out
    r = pd.read_parquet(whole / "results.parquet")
    cells = r.drop_duplicates("cell").set_index("cell")
    blown = cells[(cells["hparams"] == '{"train.lr": 1e+38}') & (cells["dataset"] != "gone")]
    assert len(blown) == 2 and blown["error"].str.contains("non-finite training loss").all()
    assert (blown["failed_step"] <= 60).all() and not blown["selected"].any()
    gone = cells[cells["dataset"] == "gone"]
    assert len(gone) == 3 and gone["error"].str.contains("nowhere").all()
    good = cells[cells["error"].isna()]
    assert len(good) == 4 and set(good["dataset"]) == {"a", "b"} and good["selected"].all()
    assert good.groupby("dataset")["program"].nunique().eq(2).all()  # bt's point and wide: two programs
    assert set(good[good["method"] == "bt"]["program_cells"]) == {2}  # trained beside the blown-up point
    assert main(["grid", str(spec), "--out", str(split), "--shard", "2/2"]) == 2
    assert "--shard 2/2: expected 0 <= I < N" in capsys.readouterr().err
    assert main(["grid", str(spec), "--out", str(split), "--merge"]) == 2
    assert "cells are not finished" in capsys.readouterr().err
    for i in (0, 1):
        assert main(["grid", str(spec), "--out", str(split), "--shard", f"{i}/2"]) == 0
        assert not (split / "results.parquet").exists()
    assert main(["grid", str(spec), "--out", str(split), "--merge"]) == 0
    merged = pd.read_parquet(split / "results.parquet")
    timing = ["program", "program_cells", "program_replicas", "compile_s", "train_s", "pairs_per_s"]
    pd.testing.assert_frame_equal(merged.drop(columns=timing).sort_values(["cell", "table", "seed", "shots", "split", "group"]).reset_index(drop=True),
                                  r.drop(columns=timing).sort_values(["cell", "table", "seed", "shots", "split", "group"]).reset_index(drop=True))


@pytest.mark.slow
def test_grid_killed_mid_run_resumes_to_the_uninterrupted_tables(tmp_path):
    """SIGKILL a `plural grid` process once its first program's cells are written; `--resume` trains only the
    programs not finished (the written cells keep their files) and gives the tables of an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    spec = tmp_path / "three.py"  # three programs (three widths), two learning rates each
    spec.write_text(SMOKE.read_text().replace('"grid": {"train.lr": [1e-3, 3e-3]},',
                                              '"grid": {"train.lr": [1e-3, 3e-3], "model.hidden": [(8,), (16,), (24,)]},'))
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    p = subprocess.Popen([sys.executable, "-m", "plural.cli", "grid", str(spec), "--out", str(killed)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while len(list((killed / "cells").glob("*__*[0-9a-f].parquet"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    first = {f.name: f.stat().st_mtime_ns for f in (killed / "cells").glob("*.parquet")}
    assert 2 <= len([n for n in first if not n.endswith(".rows.parquet")]) < 6, "killed before the end"
    for f in (killed / "cells").glob("*.parquet"):  # no half-written file counts as a cell
        pd.read_parquet(f)
    assert main(["grid", str(spec), "--out", str(killed), "--resume"]) == 0
    assert all((killed / "cells" / n).stat().st_mtime_ns == t for n, t in first.items())  # not retrained
    assert main(["grid", str(spec), "--out", str(whole)]) == 0
    timing = ["program", "program_cells", "program_replicas", "compile_s", "train_s", "pairs_per_s"]
    a = pd.read_parquet(killed / "results.parquet").drop(columns=timing)
    b = pd.read_parquet(whole / "results.parquet").drop(columns=timing)
    keys = ["cell", "table", "seed", "shots", "split", "group"]
    pd.testing.assert_frame_equal(a.sort_values(keys).reset_index(drop=True), b.sort_values(keys).reset_index(drop=True),
                                  rtol=1e-5)


def test_resume_trains_again_cells_whose_settings_resolve_differently(tmp_path, monkeypatch, capsys):
    """A cell's id hashes the spec's text only; what its results came from (resolved configs, defaults included,
    and its dataset's resolved entry) is stored as `config_hash`. `--resume` after a default changed, or after
    a dataset entry changed under the same name, trains those cells again (and makes the dataset again)
    instead of keeping results of other settings; cells still up to date are not retrained."""
    import dataclasses

    import plural.grid as grid

    out = tmp_path / "g"
    assert main(["grid", str(SMOKE), "--out", str(out)]) == 0
    before = pd.read_parquet(out / "results.parquet")
    cells = sorted((out / "cells").glob("*__*.parquet"))
    stamps = {p.name: p.stat().st_mtime_ns for p in cells}

    real = grid.configs_for

    def warmup_default_changed(model, overrides=()):  # as if TrainConfig's warmup_steps default became 10
        c = real(model, overrides)
        return {**c, "train": dataclasses.replace(c["train"], warmup_steps=10)}

    monkeypatch.setattr(grid, "configs_for", warmup_default_changed)
    assert main(["grid", str(SMOKE), "--out", str(out), "--resume"]) == 0
    assert "2 finished cell(s) ran with other resolved settings" in capsys.readouterr().out
    assert all(p.stat().st_mtime_ns != stamps[p.name] for p in cells)  # every cell trained again
    after = pd.read_parquet(out / "results.parquet")
    assert set(after["config_hash"]).isdisjoint(before["config_hash"])
    assert not np.allclose(after["accuracy"].to_numpy(), before["accuracy"].to_numpy())  # other training, other numbers
    stamps = {p.name: p.stat().st_mtime_ns for p in cells}
    assert main(["grid", str(SMOKE), "--out", str(out), "--resume"]) == 0  # now up to date: nothing retrained
    assert {p.name: p.stat().st_mtime_ns for p in cells} == stamps
    monkeypatch.setattr(grid, "configs_for", real)

    # the dataset's entry changes under the same name: its tables are made again and its cells trained again
    spec = tmp_path / "more_pairs.py"
    spec.write_text(SMOKE.read_text().replace('"train_pairs": 20', '"train_pairs": 30'))
    n_train = len(pd.read_parquet(out / "data" / "ideal3" / "train.parquet"))
    assert main(["grid", str(spec), "--out", str(out), "--resume"]) == 0
    assert len(pd.read_parquet(out / "data" / "ideal3" / "train.parquet")) == n_train * 30 // 20
    assert all(p.stat().st_mtime_ns != stamps[p.name] for p in cells)


def test_paired_differences_with_each_of_several_baselines(tmp_path):
    """`baseline: [A, B]` compares every method with each: the A-vs-B and B-vs-A lines are the same rows'
    differences with opposite signs, and each method's accuracy matches its own test line in results."""
    spec = tmp_path / "two_baselines.py"
    spec.write_text(SMOKE.read_text()
                    .replace('"methods": {', '"methods": {"probe": {"model": "bt", "set": {"model.hidden": (), '
                             '"train.steps": 100, "batch.batch_size": 64}}, ', 1)
                    .replace('"shots": [0, 5],', '"shots": [0, 5],\n        "baseline": ["bt", "probe"],'))
    assert main(["grid", str(spec), "--out", str(tmp_path / "g")]) == 0
    p = pd.read_parquet(tmp_path / "g" / "paired.parquet")
    assert set(zip(p["method"], p["baseline"])) == {("probe", "bt"), ("bt", "probe")}
    keys = ["dataset", "seed", "shots", "split", "group"]
    ab = p[p["method"] == "probe"].set_index(keys).sort_index()
    ba = p[p["method"] == "bt"].set_index(keys).sort_index()
    np.testing.assert_allclose(ab["accuracy_diff"], -ba["accuracy_diff"], atol=1e-12)
    np.testing.assert_allclose(ab["accuracy_a"], ba["accuracy_b"], atol=1e-12)
    sel = pd.read_parquet(tmp_path / "g" / "selected.parquet")
    line = sel[(sel.method == "probe") & (sel.group == "all") & (sel.split == "seen") & (sel.seed == 0) & (sel.shots == 0)]
    got = ab.loc[("ideal3", 0, 0, "seen", "all"), "accuracy_a"]
    assert np.isclose(got, line["accuracy"].iloc[0])


AUTO = '''
def get_config():
    sim = {"n_users": 12, "n_unseen": 6, "train_pairs": 20, "test_pairs": 12, "seed": 0}
    return {
        "datasets": {"small": {"simulate": {**sim, "dim": 64}}, "large": {"simulate": {**sim, "dim": 4}}},
        "methods": {"bt": {"model": "bt", "set": {"model.hidden": (16,), "train.steps": 40, "batch.batch_size": 64},
                           "grid": {"model.input_dropout": [None, 0.25, 0.5]}}},
        "seeds": [0],
        "shots": [0],
    }
'''


def test_grid_cells_at_the_automatic_dropout_train_at_the_tables_rate(tmp_path):
    """A cell at input_dropout's automatic default trains, in one program with cells at fixed rates, at the
    rate of its table's size: on 240 pairs of D = 64 (small) the same numbers as the cell at 0.5, on 240
    pairs of D = 4 the same as the cell at 0.25 (the plain BT's larger-table rate), and not the other's."""
    spec = tmp_path / "auto.py"
    spec.write_text(AUTO)
    assert main(["grid", str(spec), "--out", str(tmp_path / "g")]) == 0
    r = pd.read_parquet(tmp_path / "g" / "results.parquet")
    r = r[(r.group == "all") & (r.split == "all")]
    assert set(r.drop_duplicates("cell")["program_cells"]) == {3}  # the three rates train as one program
    for dataset, same, other in (("small", "0.5", "0.25"), ("large", "0.25", "0.5")):
        t = r[r.dataset == dataset]
        by = {h: t[t.hparams == f'{{"model.input_dropout": {h}}}']["log_loss"].to_numpy() for h in ("null", same, other)}
        np.testing.assert_array_equal(by["null"], by[same])
        assert not np.array_equal(by["null"], by[other])
