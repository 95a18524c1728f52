"""Configuration: types resolved with typing.get_type_hints, Literal options checked in one place,
Python values as well as `key=value` text, and every shipped experiment spec valid before it trains."""

import dataclasses
from pathlib import Path
from typing import Literal, Optional

import pytest

from plural.config import TrainConfig, apply_overrides, check_config, from_dict, to_dict
from plural.errors import PluralError
from plural.grid import cells, load_spec
from plural.run import configs_for

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Odd:
    where: Path = Path(".")
    limit: Optional[int] = None
    mode: Literal["a", "b"] = "a"
    sizes: tuple[int, ...] = (1,)


def test_annotations_are_resolved_for_paths_optionals_and_literals():
    got = apply_overrides({"o": Odd()}, ["where=/tmp/x", "limit=3", "mode=b", "sizes=(4,5)"])["o"]
    assert got == Odd(Path("/tmp/x"), 3, "b", (4, 5))
    assert apply_overrides({"o": Odd(limit=2)}, ["limit=None"])["o"].limit is None


@pytest.mark.parametrize("override, message", [
    (["train.schedule=step"], "--set train.schedule=step: expected one of constant, cosine, linear"),
    (["model.condition=groups"], "--set model.condition=groups: expected one of none, group, user"),
    (["train.steps=abc"], "--set train.steps=abc: cannot read 'abc' as int"),
    ({"train.steps": True}, "--set train.steps=True: expected int"),
    ({"train.steps": 2.5}, "--set train.steps=2.5: expected int"),
    ({"train.lr": "fast"}, "--set train.lr=fast: cannot read 'fast' as float"),
    ({"model.hidden": (8, "x")}, "--set model.hidden=(8, 'x'): expected int"),
    ({"model.condition": 1}, "--set model.condition=1: expected one of none, group, user"),
])
def test_bad_values_are_refused_in_one_line_naming_the_key(override, message):
    with pytest.raises(PluralError) as e:
        configs_for("bt", override)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_python_values_and_text_give_the_same_configs():
    text = configs_for("bt", ["model.hidden=(32,16)", "train.lr=0.003", "train.steps=2e3", "model.condition=user"])
    values = configs_for("bt", {"model.hidden": (32, 16), "train.lr": 3e-3, "train.steps": 2000,
                                "model.condition": "user"})
    assert text == values
    assert values["train"].lr == 3e-3 and isinstance(values["train"].steps, int) and values["model"].hidden == (32, 16)
    assert configs_for("bt", {"train.lr": 1})["train"].lr == 1.0  # an int for a float is a number


def test_configs_read_back_from_json_are_checked():
    assert from_dict(TrainConfig, to_dict(TrainConfig(schedule="linear"))) == TrainConfig(schedule="linear")
    with pytest.raises(PluralError, match="train.schedule|schedule=step"):
        from_dict(TrainConfig, {**to_dict(TrainConfig()), "schedule": "step"})
    with pytest.raises(PluralError, match="expected one of accuracy, nll"):
        check_config(TrainConfig(val_metric="f1"), "train")


@pytest.mark.parametrize("spec", sorted(p.name for p in (ROOT / "experiments").glob("*.py") if p.name != "common.py"))
def test_every_shipped_spec_loads_and_every_cell_is_valid(spec):
    """Cheap (nothing trains): each spec's cells resolve to valid configs, its datasets to valid populations."""
    from personas import POPULATIONS
    from plural.data.split import SplitConfig

    s = load_spec(ROOT / "experiments" / spec)
    todo = list(cells(s))
    assert todo
    for _, _, _, model, sets, _ in todo:
        configs_for(model, sets)
    for name, entry in s["datasets"].items():
        if "simulate" in entry:
            opts = dict(entry["simulate"])
            cls = POPULATIONS[opts.pop("population", "ideal-point")][0]
            apply_overrides({"p": cls()}, opts)
        if "split" in entry:
            apply_overrides({"s": SplitConfig()}, dict(entry["split"]))


def test_a_spec_imports_its_own_folders_common_module(tmp_path):
    (tmp_path / "common.py").write_text("LR = [0.5]\n")
    (tmp_path / "spec.py").write_text("from common import LR\n\ndef get_config():\n"
                                      "    return {'datasets': {'d': {}}, 'methods': {'bt': {'model': 'bt', 'grid': {'train.lr': LR}}}}\n")
    assert load_spec(tmp_path / "spec.py")["methods"]["bt"]["grid"]["train.lr"] == [0.5]
    assert load_spec(ROOT / "experiments" / "suite.py")["datasets"]["sphere3"]["simulate"]["group_sizes"] == (0.6, 0.3, 0.1)
