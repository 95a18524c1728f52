"""Configuration: types resolved with typing.get_type_hints, Literal options checked in one place,
Python values as well as `key=value` text, and every shipped experiment spec valid before it trains."""

from __future__ import annotations  # annotations are strings here: they must be resolved, not eval'd

import dataclasses
import enum
import sys
from pathlib import Path
from typing import Literal, Optional

import pandas as pd
import pytest

from plural.config import TrainConfig, _field_types, apply_overrides, check_config, from_dict, to_dict
from plural.errors import PluralError
from plural.grid import _hparams, cells, check_spec, load_spec
from plural.run import configs_for

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted(p.name for p in (ROOT / "experiments").glob("*.py") if p.name != "common.py")


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass(frozen=True)
class Inner:
    scale: float = 1.0
    name: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Odd:
    where: Path = Path(".")
    limit: Optional[int] = None
    mode: Literal["a", "b"] = "a"
    sizes: tuple[int, ...] = (1,)
    shares: Optional[tuple[float, ...]] = None
    cache: Optional[Path] = None
    colour: Colour = Colour.RED
    inner: Inner = Inner()


def one_line_error(fn, *args) -> str:
    with pytest.raises(PluralError) as e:
        fn(*args)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_get_type_hints_resolves_paths_nested_optionals_enums_and_dataclasses():
    types = _field_types(Odd)
    assert types["where"] is Path and types["colour"] is Colour and types["inner"] is Inner
    assert types["shares"] == Optional[tuple[float, ...]] and types["cache"] == Optional[Path]
    assert types["mode"] == Literal["a", "b"]
    assert _field_types(Odd()) == types  # an instance or its class
    assert _field_types(TrainConfig)["schedule"] == Literal["constant", "cosine", "linear"]


def test_annotations_are_resolved_for_paths_optionals_and_literals():
    got = apply_overrides({"o": Odd()}, ["where=/tmp/x", "limit=3", "mode=b", "sizes=(4,5)", "shares=(0.5,1)",
                                         "cache=/tmp/c", "colour=BLUE"])["o"]
    assert got == Odd(Path("/tmp/x"), 3, "b", (4, 5), (0.5, 1.0), Path("/tmp/c"), Colour.BLUE)
    assert isinstance(got.shares[1], float) and isinstance(got.where, Path)
    assert apply_overrides({"o": Odd(limit=2, shares=(1.0,))}, ["limit=None", "shares=none"])["o"] == Odd()
    assert apply_overrides({"o": Odd()}, {"sizes": "7", "cache": None})["o"].sizes == (7,)  # text still parsed


def test_python_values_are_coerced_to_the_field_type():
    got = apply_overrides({"o": Odd()}, {"where": "/tmp/y", "sizes": [2, 3], "shares": (1, 2), "colour": "blue",
                                         "inner": {"scale": 2}})["o"]
    assert got.where == Path("/tmp/y") and got.sizes == (2, 3) and got.shares == (1.0, 2.0)
    assert got.colour is Colour.BLUE and got.inner == Inner(scale=2.0) and isinstance(got.inner.scale, float)
    assert apply_overrides({"o": Odd()}, {"inner": Inner(name="x")})["o"].inner.name == "x"


@pytest.mark.parametrize("override, message", [
    ({"mode": "c"}, "--set o.mode=c: expected one of a, b"),
    ({"sizes": (1, 2.5)}, "--set o.sizes=(1, 2.5): expected int"),
    ({"sizes": 3}, "--set o.sizes=3: expected tuple"),
    ({"shares": "x"}, "--set o.shares=x: cannot read 'x' as tuple"),
    ({"colour": "green"}, "--set o.colour=green: expected one of RED, BLUE"),
    ({"inner": {"size": 1}}, "--set o.inner={'size': 1}: unknown field(s) size of Inner"),
    ({"inner": {"scale": "big"}}, "--set o.inner.scale='big': expected float"),
    ({"limit": True}, "--set o.limit=True: expected int"),
    ({"nothing": 1}, "--set nothing: unknown hyper-parameter"),
])
def test_python_values_of_the_wrong_type_are_refused_in_one_line(override, message):
    assert one_line_error(apply_overrides, {"o": Odd()}, override).startswith(message)


@pytest.mark.parametrize("override, message", [
    (["train.schedule=step"], "--set train.schedule=step: expected one of constant, cosine, linear"),
    (["train.seed_batching=pmap"], "--set train.seed_batching=pmap: expected one of auto, vmap, map"),
    (["train.val_metric=f1"], "--set train.val_metric=f1: expected one of accuracy, nll"),
    (["model.condition=groups"], "--set model.condition=groups: expected one of none, group, user"),
    (["model.activation=swish"], "--set model.activation=swish: expected one of gelu, relu, tanh, silu, linear"),
    (["train.steps=abc"], "--set train.steps=abc: cannot read 'abc' as int"),
    ({"train.steps": "abc"}, "--set train.steps=abc: cannot read 'abc' as int"),
    ({"train.steps": True}, "--set train.steps=True: expected int"),
    ({"train.steps": 2.5}, "--set train.steps=2.5: expected int"),
    ({"train.lr": "fast"}, "--set train.lr=fast: cannot read 'fast' as float"),
    ({"train.lr": False}, "--set train.lr=False: expected float"),
    ({"model.hidden": (8, "x")}, "--set model.hidden=(8, 'x'): expected int"),
    ({"model.condition": 1}, "--set model.condition=1: expected one of none, group, user"),
])
def test_bad_values_are_refused_in_one_line_naming_the_key(override, message):
    assert one_line_error(configs_for, "bt", override).startswith(message)


@pytest.mark.parametrize("family, key, values", [
    ("pal-a", "model.loss", "bt, hinge"), ("pal-a", "model.user_init", "kmeans, random"),
    ("pal-b", "model.adapt_init", "seen, population"), ("vpl", "model.activation", "gelu, relu, tanh, silu, linear"),
])
def test_every_family_string_option_is_a_checked_literal(family, key, values):
    assert one_line_error(configs_for, family, [f"{key}=nope"]) == f"--set {key}=nope: expected one of {values}"


def test_literal_activations_are_the_mlp_activations():
    from typing import get_args

    from plural.models import FAMILIES, get_family
    from plural.models.base import ACTIVATIONS

    for name in FAMILIES:
        hp = get_family(name).Hparams
        if "activation" in _field_types(hp):
            assert set(get_args(_field_types(hp)["activation"])) == set(ACTIVATIONS), name


def test_python_values_and_text_give_the_same_configs():
    text = configs_for("bt", ["model.hidden=(32,16)", "train.lr=0.003", "train.steps=2e3", "model.condition=user"])
    values = configs_for("bt", {"model.hidden": (32, 16), "train.lr": 3e-3, "train.steps": 2000,
                                "model.condition": "user"})
    assert text == values
    assert values["train"].lr == 3e-3 and isinstance(values["train"].steps, int) and values["model"].hidden == (32, 16)
    assert configs_for("bt", {"train.lr": 1})["train"].lr == 1.0  # an int for a float is a number
    assert configs_for("bt", {"model.hidden": [8]})["model"].hidden == (8,)  # a list for a tuple
    assert configs_for("bt", {"model.hidden": ()})["model"].hidden == ()


def test_configs_read_back_from_json_are_checked():
    assert from_dict(TrainConfig, to_dict(TrainConfig(schedule="linear"))) == TrainConfig(schedule="linear")
    assert one_line_error(from_dict, TrainConfig, {**to_dict(TrainConfig()), "schedule": "step"}) == \
        "--set schedule=step: expected one of constant, cosine, linear"
    assert one_line_error(check_config, TrainConfig(val_metric="f1"), "train") == \
        "--set train.val_metric=f1: expected one of accuracy, nll"
    assert check_config(TrainConfig(lr=1), "train").lr == 1.0  # a default or a hand-built config is coerced
    assert one_line_error(check_config, TrainConfig(steps="10"), "train") == "--set train.steps='10': expected int"


def test_populations_and_splits_check_their_literal_options():
    from personas import IdealPointConfig, simulate_ideal_point
    from plural.data.split import SplitConfig

    assert one_line_error(simulate_ideal_point, IdealPointConfig(item_dist="cube")) == \
        "--set item_dist=cube: expected one of sphere, gaussian, clustered"
    assert one_line_error(SplitConfig(disjoint="user").check) == "--set split.disjoint=user: expected one of none, prompt"
    assert apply_overrides({"s": SplitConfig()}, {"disjoint": "prompt", "seed": 3})["s"] == SplitConfig(seed=3, disjoint="prompt")


@pytest.mark.parametrize("spec", SPECS)
def test_every_shipped_spec_loads_and_every_cell_is_valid(spec):
    """Cheap (nothing trains): each spec's cells resolve to valid configs, its datasets to valid populations."""
    s = load_spec(ROOT / "experiments" / spec)
    todo = check_spec(s)
    assert todo and len({cid for cid, *_ in todo}) == len(todo)  # ids are unique
    for _, _, _, model, overrides, _ in todo:
        c = configs_for(model, overrides)
        assert set(c) == {"model", "train", "batch", "data"}
    assert "common" not in sys.modules  # the spec's shared module does not outlive the load


def test_the_shipped_specs_give_python_values_and_keep_their_cells():
    suite = load_spec(ROOT / "experiments" / "suite.py")
    assert suite["datasets"]["sphere3"]["simulate"]["group_sizes"] == (0.6, 0.3, 0.1)
    assert suite["datasets"]["hh"]["split"] == {"disjoint": "prompt", "seed": 0}
    pal = load_spec(ROOT / "experiments" / "pal.py")
    todo = list(cells(pal))
    assert [o for _, ds, label, _, o, _ in todo if label == "bt"] == [{"model.hidden": (64,), "train.steps": 1000}]
    stored = pd.read_parquet(ROOT / "results" / "pal" / "results.parquet", columns=["cell", "hparams"]).drop_duplicates()
    # the cells of results/pal, written when the spec gave text: same ids and hparams from Python values
    assert sorted(zip(stored["cell"], stored["hparams"])) == sorted((cid, _hparams(pt)) for cid, *_, pt in todo)
    assert '{"model.n_prototypes": 8}' in set(stored["hparams"])
    defaults = [(cid, _hparams(pt)) for cid, _, label, *_, pt in cells(load_spec(ROOT / "experiments" / "defaults.py"))
                if label == "bt"]  # a swept tuple: (256, 256) is the text "(256,256)" the spec once gave
    stored = pd.read_parquet(ROOT / "results" / "defaults" / "results.parquet", columns=["cell", "method", "hparams"])
    stored = stored[stored["method"] == "bt"].drop_duplicates()
    assert sorted(zip(stored["cell"], stored["hparams"])) == sorted(defaults) and len(defaults) == 7 * 4
    assert '{"model.hidden": "(256,256)", "train.lr": 0.01}' in set(stored["hparams"])


def test_a_point_given_as_text_or_as_a_value_is_the_same_cell():
    def spec(sets, grid):
        return {"datasets": {"d": {}}, "methods": {"bt": {"model": "bt", "set": sets, "grid": grid}}}

    text = list(cells(spec(["model.hidden=(256,256)", "train.steps=100"], {"train.lr": [1e-3]})))
    values = list(cells(spec({"model.hidden": (256, 256), "train.steps": 100}, {"train.lr": [0.001]})))
    assert [c[0] for c in text] == [c[0] for c in values]
    assert configs_for("bt", text[0][4]) == configs_for("bt", values[0][4])
    swept = list(cells(spec([], {"model.hidden": [(64,), (256, 256)]})))
    assert [c[4] for c in swept] == [{"model.hidden": (64,)}, {"model.hidden": (256, 256)}]


@pytest.mark.parametrize("method, datasets, message", [
    ({"model": "bt", "grid": {"train.steps": ["abc"]}}, {"d": {}},
     "method bt on d: --set train.steps=abc: cannot read 'abc' as int"),
    ({"model": "bt", "set": {"train.schedule": "step"}}, {"d": {}},
     "method bt on d: --set train.schedule=step: expected one of constant, cosine, linear"),
    ({"model": "bt", "grid": {"train.lr": 1e-3}}, {"d": {}}, "method bt: grid train.lr=0.001: expected a list"),
    ({"model": "bt", "set": "train.lr=1"}, {"d": {}}, "method bt: 'set' is a list of 'key=value' strings or a dict"),
    ({"model": "bt"}, {"d": {"simulate": {"group_sizes": "(0.5,x)"}}},
     "dataset d: --set simulate.group_sizes=(0.5,x): cannot read"),
    ({"model": "bt"}, {"d": {"simulate": {"item_dist": "cube"}}},
     "dataset d: --set simulate.item_dist=cube: expected one of sphere, gaussian, clustered"),
    ({"model": "bt"}, {"d": {"table": "t.parquet", "split": {"disjoint": "user"}}},
     "dataset d: --set split.disjoint=user: expected one of none, prompt"),
])
def test_a_bad_spec_is_refused_before_anything_trains(method, datasets, message):
    spec = {"datasets": datasets, "methods": {"bt": method}}
    assert one_line_error(check_spec, spec).startswith(message)


@pytest.mark.parametrize("baseline, message", [
    ("bt-linear", "spec baseline='bt-linear': not a method of the spec (it has bt)"),
    (["bt", "nope"], "spec baseline='nope': not a method of the spec"),
    (3, "spec baseline=3: expected a method label or a list of them"),
])
def test_a_baseline_that_is_not_a_method_is_refused(baseline, message):
    """A baseline naming no method would give empty comparisons: refused, not ignored."""
    spec = {"datasets": {"d": {}}, "methods": {"bt": {"model": "bt"}}, "baseline": baseline}
    assert one_line_error(check_spec, spec).startswith(message)


def test_a_spec_imports_its_own_folders_common_module(tmp_path):
    spec_text = ("from common import LR\n\ndef get_config():\n"
                 "    return {'datasets': {'d': {}}, 'methods': {'bt': {'model': 'bt', 'grid': {'train.lr': LR}}}}\n")
    for name, lr in (("a", 0.5), ("b", 0.25)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "common.py").write_text(f"LR = [{lr}]\n")
        (tmp_path / name / "spec.py").write_text(spec_text)
    elsewhere = type(sys)("common")  # a module of the same name imported before, from elsewhere
    sys.modules["common"] = elsewhere
    try:
        assert load_spec(tmp_path / "a" / "spec.py")["methods"]["bt"]["grid"]["train.lr"] == [0.5]
        assert load_spec(tmp_path / "b" / "spec.py")["methods"]["bt"]["grid"]["train.lr"] == [0.25]  # not a's
        (tmp_path / "a" / "common.py").write_text("LR = [0.125]\n")
        assert load_spec(tmp_path / "a" / "spec.py")["methods"]["bt"]["grid"]["train.lr"] == [0.125]  # re-read
        assert sys.modules["common"] is elsewhere and str(tmp_path / "a") not in sys.path
    finally:
        sys.modules.pop("common", None)
    (tmp_path / "a" / "common.py").write_text("LR = [0.5\n")
    message = one_line_error(load_spec, tmp_path / "a" / "spec.py")  # a broken common.py: one line, naming the spec
    assert message.startswith(f"{tmp_path / 'a' / 'spec.py'}: cannot load spec (SyntaxError: ") and "common.py" in message


def test_bt_width_defaults_to_its_conditions_and_a_given_width_wins(tmp_path):
    """`bt`'s width depends on its condition (none (64,), group and user (256, 256): results/bt_width); the
    value used is resolved before training, so config.json records it; `--set model.hidden=...` wins."""
    import json

    from plural.cli import main

    widths = {c: configs_for("bt", [f"model.condition={c}"])["model"].hidden for c in ("none", "group", "user")}
    assert widths == {"none": (64,), "group": (256, 256), "user": (256, 256)}
    assert configs_for("bt", ["model.condition=group", "model.hidden=(32,)"])["model"].hidden == (32,)
    assert configs_for("bt", ["model.condition=user", "model.hidden=()"])["model"].hidden == ()
    assert main(["simulate", "--out", str(tmp_path / "d"), "--set", "dim=8", "--set", "n_users=8", "--set", "n_unseen=4",
                 "--set", "train_pairs=10", "--set", "test_pairs=4"]) == 0
    run = tmp_path / "run"
    assert main(["fit", "--model", "bt", "--data", str(tmp_path / "d" / "train.parquet"), "--out", str(run),
                 "--set", "model.condition=group", "--set", "train.steps=5"]) == 0
    assert json.loads((run / "config.json").read_text())["model_hparams"]["hidden"] == [256, 256]
