"""`plural demo`, the main job: every family fitted on the built-in population, the subgroup table and the
figure. Its own file (the longest test, a few minutes), so that test distribution by file runs it beside
the others rather than after a whole file's worth of them."""

import json

import pandas as pd

from plural.cli import main
from plural.models import FAMILIES, demo_models


def test_demo_prints_the_subgroup_table_and_writes_figures(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    text = capsys.readouterr().out
    assert "worst-off group" in text and "oracle" in text and "bt" in text
    table = pd.read_csv(tmp_path / "demo/group_table.csv")
    assert set(table["group"]) == {"g0", "g1", "g2"}
    assert set(table["model"]) == set(demo_models()) >= set(FAMILIES) | {"bt (group)", "bt (user)"}  # + BT's fair variants
    for name in FAMILIES:  # each fitted with early stopping on the population's validation table
        assert "best_step" in json.loads((tmp_path / "demo/runs" / name / "metrics.json").read_text())
    for ext in ("png", "pdf", "csv"):
        assert (tmp_path / "demo/figures" / f"group_accuracy.{ext}").stat().st_size > 0
