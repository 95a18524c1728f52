"""`plural demo`, the main job: every family fitted on the built-in population, the subgroup table and the
figure. Its own file (a long test), so that test distribution by file runs it beside the others rather
than after a whole file's worth of them. The default run trains every model for 200 steps (the same code
path as `plural demo`, a fifth of the time); the slow set runs the command itself."""

import json

import pandas as pd
import pytest

from plural.cli import main
from plural.demo import run_demo
from plural.models import FAMILIES, demo_models


def _check(out, text):
    assert "worst-off group" in text and "oracle" in text and "bt" in text
    table = pd.read_csv(out / "group_table.csv")
    assert set(table["group"]) == {"g0", "g1", "g2"}
    assert set(table["model"]) == set(demo_models()) >= set(FAMILIES) | {"bt (group)", "bt (user)"}  # + BT's fair variants
    for name in FAMILIES:  # each fitted with early stopping on the population's validation table
        assert "best_step" in json.loads((out / "runs" / name / "metrics.json").read_text())
    for ext in ("png", "pdf", "csv"):
        assert (out / "figures" / f"group_accuracy.{ext}").stat().st_size > 0


def test_demo_prints_the_subgroup_table_and_writes_figures(tmp_path, capsys):
    run_demo(tmp_path / "demo", overrides=("train.steps=200",))
    _check(tmp_path / "demo", capsys.readouterr().out)


@pytest.mark.slow
def test_plural_demo_itself(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    _check(tmp_path / "demo", capsys.readouterr().out)
