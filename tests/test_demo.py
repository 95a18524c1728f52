"""`plural demo`, the main job: every family fitted on the built-in population, the subgroup table and the
figure. Its own file (a long test), so that test distribution by file runs it beside the others rather
than after a whole file's worth of them. The default run goes through the demo's code path with three of
its models (a single reward, a pluralistic family with few-shot adaptation, and the attribute-weighted one
on the population's attribute columns) for 200 steps each; every family's own fit / evaluate / score path
is in tests/test_families.py. The slow set runs the command itself, with every model."""

import json
from pathlib import Path

import pandas as pd
import pytest

from plural.cli import main
from plural.demo import run_demo, run_name
from plural.errors import PluralError
from plural.models import FAMILIES, demo_models


def _check(out, text, models):
    assert "worst-off group" in text and "oracle" in text and "bt" in text
    table = pd.read_csv(out / "group_table.csv")
    assert set(table["group"]) == {"g0", "g1", "g2"}
    assert set(table["model"]) == set(models)
    for name in models:  # each fitted with early stopping on the population's validation table
        assert "best_step" in json.loads((out / "runs" / run_name(name) / "metrics.json").read_text())
    for ext in ("png", "pdf", "csv"):
        assert (out / "figures" / f"group_accuracy.{ext}").stat().st_size > 0


def test_demo_models_are_every_family_and_bts_fair_variants():
    assert set(demo_models()) >= set(FAMILIES) | {"bt (group)", "bt (user)"}
    with pytest.raises(PluralError, match="not one of"):
        run_demo(Path("unused"), models=("no-such-model",))


def test_demo_prints_the_subgroup_table_and_writes_figures(tmp_path, capsys):
    models = ("bt", "pal-a", "palette")
    run_demo(tmp_path / "demo", overrides=("train.steps=200",), models=models)
    _check(tmp_path / "demo", capsys.readouterr().out, models)


@pytest.mark.slow
def test_plural_demo_itself(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    _check(tmp_path / "demo", capsys.readouterr().out, demo_models())
