"""Inputs and settings a hostile but honest user gives: each is refused in one line (exit 2, no traceback)
or handled correctly, before anything trains. One test per case of the reliability review."""

import json

import numpy as np
import pandas as pd
import pytest

from plural.cli import main

D = 8
QUICK = ["--set", "train.steps=20", "--set", "train.eval_every=0", "--set", "data.val_fraction=0",
         "--set", "model.hidden=(8,)", "--set", "batch.batch_size=16"]


def _rows(n=24, users=4, prompt=True, group=True, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        r = {"user_id": f"u{i % users}", "chosen_embedding": rng.normal(size=D).round(4).tolist(),
             "rejected_embedding": rng.normal(size=D).round(4).tolist()}
        if prompt:
            r["prompt_embedding"] = rng.normal(size=D).round(4).tolist()
        if group:
            r["group"] = f"g{i % users % 2}"
        out.append(r)
    return out


def _jsonl(path, rows, raw: dict | None = None):
    """Rows as JSON Lines; `raw` {row: text} replaces a row's line by hand-written JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((raw or {}).get(i, json.dumps(r)) + "\n" for i, r in enumerate(rows)))
    return path


def refused(capsys, argv, *needles):
    """Run the CLI; it must exit 2 with exactly one stderr line containing every needle."""
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("plural: error: "), err
    for n in needles:
        assert n in err[0], (n, err[0])
    return err[0]


def fit(path, out, *extra):
    return ["fit", "--model", "bt", "--data", str(path), "--out", str(out), *QUICK, *extra]


# -- tables ----------------------------------------------------------------------------------------------------

def test_integer_too_large_for_a_float_is_refused_with_its_row(tmp_path, capsys):
    rows = _rows()
    line = json.dumps(rows[3]).replace(str(rows[3]["chosen_embedding"][0]), "1" + "0" * 400, 1)
    f = _jsonl(tmp_path / "t.jsonl", rows, {3: line})
    refused(capsys, fit(f, tmp_path / "run"), "t.jsonl", "chosen_embedding", "row 3 (line 4)", "float32")


@pytest.mark.parametrize("value", [1e39, -1e39])
def test_values_beyond_float32_are_refused_without_numpy_warnings(tmp_path, capsys, value):
    rows = _rows()
    rows[2]["rejected_embedding"][1] = value
    f = _jsonl(tmp_path / "t.jsonl", rows)
    refused(capsys, fit(f, tmp_path / "run"), "rejected_embedding", "row 2 (line 3)", "float32")


def test_booleans_in_an_embedding_are_refused(tmp_path, capsys):
    rows = _rows()
    rows[5]["chosen_embedding"][2] = True  # arrow alone would read it as 1.0
    f = _jsonl(tmp_path / "t.jsonl", rows)
    refused(capsys, fit(f, tmp_path / "run"), "chosen_embedding", "row 5 (line 6)", "bool")


@pytest.mark.parametrize("first_has_prompts", [True, False])
def test_directory_whose_files_disagree_on_prompt_embeddings_is_refused_in_either_order(tmp_path, capsys,
                                                                                       first_has_prompts):
    d = tmp_path / "dir"
    _jsonl(d / "a.jsonl", _rows(prompt=first_has_prompts))
    _jsonl(d / "b.jsonl", _rows(prompt=not first_has_prompts, seed=1))
    has, lacks = ("a.jsonl", "b.jsonl") if first_has_prompts else ("b.jsonl", "a.jsonl")
    refused(capsys, fit(d, tmp_path / "run"), "'prompt_embedding'", f"in {has} but not in {lacks}")


def test_directory_with_a_group_column_in_one_file_only_names_the_column_and_files(tmp_path, capsys):
    d = tmp_path / "dir"
    _jsonl(d / "a.jsonl", _rows(group=True))
    _jsonl(d / "b.jsonl", _rows(group=False, seed=1))
    msg = refused(capsys, fit(d, tmp_path / "run"), "'group'", "in a.jsonl but not in b.jsonl")
    assert "nan" not in msg


def test_mixed_type_pass_through_column_is_written_as_json_text(tmp_path, capsys):
    rows = _rows()
    for i, r in enumerate(rows):
        r["meta"] = i if i % 2 else f"s{i}"
    f = _jsonl(tmp_path / "t.jsonl", rows)
    assert main(fit(f, tmp_path / "run")) == 0
    out_rows = tmp_path / "missing" / "folder" / "rows.parquet"  # --rows into a folder that does not exist yet
    assert main(["evaluate", "--run", str(tmp_path / "run"), "--data", str(f), "--out", str(tmp_path / "m.json"),
                 "--rows", str(out_rows)]) == 0
    err = capsys.readouterr().err
    assert "column 'meta' mixes value types (int, str)" in err
    written = pd.read_parquet(out_rows).sort_values("row")["meta"].tolist()
    assert written == [json.dumps(r["meta"]) for r in rows]  # every value kept, as its JSON text


def test_unterminated_csv_quote_names_the_file_and_line(tmp_path, capsys):
    f = tmp_path / "pairs.csv"
    f.write_text('attribute,higher,lower\nformal,"abc,def\n')
    refused(capsys, ["attributes", "fit", str(f), str(tmp_path / "scorers")], "pairs.csv", "line 2", "quote")


def test_huge_embedding_values_stop_fit_with_the_seed_step_and_cause(tmp_path, capsys):
    rows = _rows()
    rows[2]["chosen_embedding"][1] = 1e38  # finite in float32, but its square is not
    f = _jsonl(tmp_path / "t.jsonl", rows)
    refused(capsys, fit(f, tmp_path / "run"), "non-finite", "seed 0", "between steps 0 and 20", "1e+38",
            "No checkpoint was kept")
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert not [p for p in (tmp_path / "run" / "checkpoints").glob("*") if p.name.isdigit()]  # no NaN checkpoint


def test_a_seed_beyond_32_bits_is_refused_before_anything_is_written(tmp_path, capsys):
    """JAX's 32-bit keys would give seed 2**33 seed 0's key: refused, not aliased."""
    f = _jsonl(tmp_path / "t.jsonl", _rows())
    refused(capsys, fit(f, tmp_path / "run", "--seed", str(2**33)), "seed 8589934592", "32-bit")
    assert not (tmp_path / "run").exists()


# -- settings --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("setting, needle", [
    ("model.hidden=(0,)", "must be >= 1"), ("model.hidden=(-4,)", "must be >= 1"),
    ("model.activation=nope", "expected one of"), ("train.lr=nan", "finite"), ("train.lr=inf", "finite"),
    ("train.lr=-1", "must be > 0"), ("train.warmup_steps=-1", "must be >= 0"), ("train.grad_clip=-1", "must be >= 0"),
    ("train.weight_decay=-1", "must be >= 0"), ("train.end_lr_fraction=2", "<= 1"),
    ("train.log_every=0", "must be >= 1"), ("data.val_fraction=1.0", "< 1"), ("data.unseen_fraction=2", "unknown"),
    ("data.test_fraction=1.0", "unknown"), ("model.input_dropout=1", "< 1"),
])
def test_bad_settings_are_refused_before_the_data_is_read(tmp_path, capsys, setting, needle):
    missing = tmp_path / "no_such_table.parquet"  # the setting is refused first: the table is never opened
    refused(capsys, ["fit", "--model", "bt", "--data", str(missing), "--out", str(tmp_path / "run"), "--set", setting],
            setting.split("=")[0], needle)


@pytest.mark.parametrize("model, setting", [("pal-a", "model.n_prototypes=0"), ("vpl", "model.beta=-1"),
                                            ("dpl", "model.min_sigma=0"), ("micro", "model.tau=0"),
                                            ("palette", "model.hidden=2"), ("fewshot", "model.inner_steps=0")])
def test_family_ranges_are_declared_and_checked(tmp_path, capsys, model, setting):
    refused(capsys, ["fit", "--model", model, "--data", str(tmp_path / "none.parquet"), "--out", str(tmp_path / "r"),
                     "--set", setting], setting.split("=")[0], "must be")


@pytest.mark.parametrize("model, settings, needle", [
    ("bt", ["model.user_dim=8"], "applies to model.condition=user, not none"),
    ("bt", ["model.condition=group", "model.adapt_init=seen"], "applies to model.condition=user, not group"),
    ("dpl", ["model.n_atoms=20"], "applies to model.variant=categorical, not mean_var"),
    ("dpl", ["model.variant=categorical", "model.min_sigma=0.1"], "applies to model.variant=mean_var"),
    ("micro", ["model.router=false", "model.router_hidden=(32,)"], "applies with model.router=true"),
    ("vpl", ["model.kl_cycle=0", "model.kl_ramp=0.2"], "applies with model.kl_cycle > 0"),
    ("pal-b", ["model.hinge_margin=2"], "applies with model.loss=hinge, not bt"),
    ("pal-a", ["model.user_init=random", "model.user_init_strength=5"], "applies with model.user_init=kmeans"),
    ("pal-b", ["model.prototype_init_std=3"], "applies to pal-a"),
])
def test_a_setting_the_chosen_variant_does_not_read_is_refused(tmp_path, capsys, model, settings, needle):
    """No setting is accepted and then ignored: one the configuration does not read is refused before the data."""
    argv = ["fit", "--model", model, "--data", str(tmp_path / "none.parquet"), "--out", str(tmp_path / "r")]
    refused(capsys, argv + [a for s in settings for a in ("--set", s)], settings[-1].split("=")[0], needle)


def test_simulate_with_impossible_sizes_is_one_line(tmp_path, capsys):
    refused(capsys, ["simulate", "--out", str(tmp_path / "p"), "--set", "dim=0"], "dim")
    refused(capsys, ["simulate", "--out", str(tmp_path / "p"), "--set", "n_users=0"], "n_users")
    refused(capsys, ["simulate", "--out", str(tmp_path / "p"), "--set", "group_sizes=(0.5,-0.5,0.2)"], "> 0")


# -- outputs ---------------------------------------------------------------------------------------------------

def test_outputs_onto_or_under_a_file_or_onto_an_input_are_refused(tmp_path, capsys):
    table = _jsonl(tmp_path / "data" / "t.jsonl", _rows())
    refused(capsys, fit(table, table), "is a file")
    refused(capsys, fit(table, table / "run"), "is a file, not a folder")
    refused(capsys, fit(table.parent, table.parent), "is an input")
    refused(capsys, ["simulate", "--out", str(table)], "is a file")
    refused(capsys, ["simulate", "--out", str(table / "x")], "is a file, not a folder")
    refused(capsys, ["embed", str(table), str(table)], "is an input")
    refused(capsys, ["embed", str(table), str(table / "e.parquet")], "is a file, not a folder")
    assert main(fit(table, tmp_path / "run")) == 0
    ev = ["evaluate", "--run", str(tmp_path / "run"), "--data", str(table.parent)]
    refused(capsys, ev + ["--out", str(table.parent / "m.json")], "inside the input folder")
    refused(capsys, ev + ["--out", str(table / "m.json")], "is a file, not a folder")
    refused(capsys, ev + ["--out", str(tmp_path / "run")], "is a folder")
    refused(capsys, ev + ["--out", str(tmp_path / "m.json"), "--rows", str(table)], "inside the input folder")
    assert json.loads(table.read_text().splitlines()[0])["user_id"] == "u0"  # the input was never touched


# -- grid specs ------------------------------------------------------------------------------------------------

SIM = {"simulate": {"dim": 8, "n_users": 12, "n_unseen": 6, "train_pairs": 20, "test_pairs": 12}}


def _spec(tmp_path, body: str):
    f = tmp_path / "spec.py"
    f.write_text(f"def get_config():\n{body}\n")
    return f


@pytest.mark.parametrize("body, needle", [
    ("    raise RuntimeError('boom')", "cannot load spec (RuntimeError: boom)"),
    ("    return None", "must return a dict, not NoneType"),
    ("    return {'datasets': {'d': {'val': 'x'}}, 'methods': {'bt': {'model': 'bt'}}}", "dataset d: expected"),
    ("    return {'datasets': {'d': 5}, 'methods': {'bt': {'model': 'bt'}}}", "expected a dict, not int"),
    (f"    return {{'datasets': {{'d': {SIM!r}}}, 'methods': {{'bt': {{'model': 'bt'}}}}, 'seeds': 'abc'}}",
     "seeds='abc'"),
    (f"    return {{'datasets': {{'d': {{'simulate': {{'n_users': 0}}}}}}, 'methods': {{'bt': {{'model': 'bt'}}}}}}",
     "n_users"),
    (f"    return {{'datasets': {{'d': {SIM!r}}}, 'methods': {{'bt': {{'model': 'bt'}}}}, 'shots': [-1]}}", "shots"),
    (f"    return {{'datasets': {{'d': {SIM!r}}}, 'methods': {{'bt': {{'model': 'bt'}}}}, 'seeds': [0, 2**33]}}",
     "seed 8589934592: outside the 32-bit range"),
    (f"    return {{'datasets': {{'d': {SIM!r}}}, 'methods': {{'bt': {{'model': 'bt', 'set': {{'train.lr': -1}}}}}}}}",
     "train.lr=-1"),
])
def test_bad_grid_specs_are_refused_whole_before_any_cell_trains(tmp_path, capsys, body, needle):
    refused(capsys, ["grid", str(_spec(tmp_path, body)), "--out", str(tmp_path / "g")], needle)
    assert not (tmp_path / "g" / "cells").exists()  # nothing trained


# -- found by the fuzzer (tests/test_fuzz.py) --------------------------------------------------------------------

def test_csv_with_a_broken_header_quote_is_one_line(tmp_path, capsys):
    f = tmp_path / "ca.csv"
    f.write_text('""conversation_id,x\n1,2\n')
    refused(capsys, ["convert", "community-alignment", str(f), str(tmp_path / "out.parquet")], "ca.csv", "CSV")


def test_attribute_value_too_large_for_a_float_is_one_line(tmp_path, capsys):
    rows = _rows()
    for r in rows:
        r["chosen_attr_length"], r["rejected_attr_length"] = 1.0, 2.0
    line = json.dumps(rows[4]).replace('"chosen_attr_length": 1.0', '"chosen_attr_length": 1' + "0" * 400)
    f = _jsonl(tmp_path / "t.jsonl", rows, {4: line})
    refused(capsys, fit(f, tmp_path / "run"), "chosen_attr_length", "row 4 (line 5)")
