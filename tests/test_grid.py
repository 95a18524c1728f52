"""`plural grid`: every cell x seed x shots x split is in the results; --resume skips finished cells."""

from pathlib import Path

import pandas as pd

from plural.cli import main

SMOKE = Path(__file__).parents[1] / "experiments" / "smoke.py"


def test_smoke_grid_and_resume(tmp_path, capsys):
    out = tmp_path / "g"
    assert main(["grid", str(SMOKE), "--out", str(out)]) == 0
    r = pd.read_parquet(out / "results.parquet")
    assert r["cell"].nunique() == 2 and sorted(r["hparams"].unique()) == ['{"train.lr": 0.001}', '{"train.lr": 0.003}']
    overall = r[(r.group == "all") & (r.split == "all")]
    assert len(overall) == 2 * 2 * 2  # cells x seeds x shots
    # seeds trained at once are different models
    a = overall[(overall.seed == 0) & (overall.shots == 0)].set_index("cell")["expected"]
    b = overall[(overall.seed == 1) & (overall.shots == 0)].set_index("cell")["expected"]
    assert (a != b).any()
    assert {"oracle", "single", "gap_closed"} <= set(r.columns)
    assert main(["grid", str(SMOKE), "--out", str(out)]) == 2  # refuses to overwrite
    assert "--resume" in capsys.readouterr().err
    cells = sorted((out / "cells").iterdir())
    stamps = [p.stat().st_mtime_ns for p in cells]
    cells[0].unlink()  # as if the run died before finishing this cell
    assert main(["grid", str(SMOKE), "--out", str(out), "--resume"]) == 0
    assert [p.stat().st_mtime_ns for p in sorted((out / "cells").iterdir())][1:] == stamps[1:]
    again = pd.read_parquet(out / "results.parquet")
    pd.testing.assert_frame_equal(again, r)  # the re-run cell reproduces its numbers exactly
