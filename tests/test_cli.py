"""`plural fit` / `plural evaluate` as docs/cli.md says, including the --shots semantics."""

import json

import numpy as np
import pandas as pd
import pytest

from plural.cli import main

FAST = ["--set", "model.hidden=(16,)", "--set", "train.steps=100", "--set", "batch_size=64"]


@pytest.fixture(scope="module")
def run(tiny, tmp_path_factory):
    _, d = tiny
    out = tmp_path_factory.mktemp("run") / "bt"
    assert main(["fit", "--model", "bt", "--data", str(d / "train.parquet"), "--out", str(out)] + FAST) == 0
    return out


def test_fit_writes_config_checkpoint_and_metrics(run):
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "bt" and config["seed"] == 0
    assert config["model_hparams"]["hidden"] == [16]
    assert config["train"]["steps"] == 100 and config["batch"]["batch_size"] == 64
    assert set(config["train"]) >= {"lr", "schedule", "warmup_steps", "weight_decay", "grad_clip", "seed_batching"}
    assert any(p.name == "100" for p in (run / "checkpoints").iterdir())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 100 and np.isfinite(metrics["final_loss"])


def test_evaluate_output_and_shots_semantics(run, tiny, tmp_path):
    pop, d = tiny
    test = pd.read_parquet(d / "test.parquet")
    for shots in (0, 5):
        out = tmp_path / f"m{shots}.json"
        assert main(["evaluate", "--run", str(run), "--data", str(d / "test.parquet"), "--shots", str(shots),
                     "--out", str(out), "--rows", str(tmp_path / f"rows{shots}.parquet")]) == 0
        m = json.loads(out.read_text())
        assert set(m) == {"accuracy", "n_pairs", "per_group", "per_user", "shots", "calibration",
                          "per_group_calibration"} and m["shots"] == shots
        assert {"log_loss", "brier", "ece", "kl_to_oracle"} <= set(m["calibration"]) and set(m["per_group_calibration"]) == set(m["per_group"])
        n_unseen_users = test.loc[~test.seen, "user_id"].nunique()
        assert m["n_pairs"] == len(test) - shots * n_unseen_users  # first K rows of unseen users are not scored
        rows = pd.read_parquet(tmp_path / f"rows{shots}.parquet")
        assert np.isclose(m["accuracy"], rows["correct"].mean())
        for u, acc in m["per_user"].items():
            assert np.isclose(acc, rows.loc[rows.user_id == u, "correct"].mean())
        for g, acc in m["per_group"].items():
            assert np.isclose(acc, rows.loc[rows.group == g, "correct"].mean())
        # scored rows of unseen users are exactly those after their first `shots` rows in file order
        for u in test.loc[~test.seen, "user_id"].unique()[:3]:
            file_rows = np.flatnonzero(test.user_id.to_numpy() == u)
            assert rows.loc[rows.user_id == u, "row"].tolist() == file_rows[shots:].tolist()
    a = tmp_path / "again.json"
    main(["evaluate", "--run", str(run), "--data", str(d / "test.parquet"), "--shots", "5", "--out", str(a)])
    assert a.read_bytes() == (tmp_path / "m5.json").read_bytes()


def test_set_reaches_every_hyperparameter_and_refuses_unknown(tiny, tmp_path, capsys):
    _, d = tiny
    args = ["fit", "--model", "bt", "--data", str(d / "train.parquet"), "--out", str(tmp_path / "x")]
    assert main(args + ["--set", "train.nonsense=1"]) == 2
    assert "unknown hyper-parameter" in capsys.readouterr().err
    assert main(args + ["--set", "steps=abc"]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(args + ["--set", "train.schedule=wavy", "--set", "steps=10"]) == 2
    assert "schedule" in capsys.readouterr().err


def test_evaluate_refuses_mismatched_embeddings(run, tmp_path, capsys):
    rng = np.random.default_rng(0)
    pd.DataFrame({"user_id": ["a"] * 3, "chosen_embedding": list(rng.normal(size=(3, 5))),
                  "rejected_embedding": list(rng.normal(size=(3, 5)))}).to_parquet(tmp_path / "t.parquet")
    assert main(["evaluate", "--run", str(run), "--data", str(tmp_path / "t.parquet"), "--out", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err
    assert "chosen_embedding" in err and "length 5" in err
    assert main(["evaluate", "--run", str(tmp_path), "--data", str(tmp_path / "t.parquet"), "--out", str(tmp_path / "m.json")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_simulate_writes_tables_and_truth(tmp_path):
    assert main(["simulate", "--out", str(tmp_path / "p"), "--set", "n_users=9", "--set", "n_unseen=3",
                 "--set", "dim=6", "--set", "train_pairs=5", "--set", "test_pairs=4"]) == 0
    truth = json.loads((tmp_path / "p/truth.json").read_text())
    assert truth["accuracy"]["all"]["oracle_accuracy"] > truth["accuracy"]["all"]["single_accuracy"]
    assert len(pd.read_parquet(tmp_path / "p/train.parquet")) == 45


def test_fit_records_its_tables_by_absolute_path(tiny, tmp_path, monkeypatch):
    """A run fitted from a relative path still names its tables from any other directory (plural profile reads
    the training table from config.json)."""
    _, d = tiny
    monkeypatch.chdir(d)
    assert main(["fit", "--model", "bt", "--data", "train.parquet", "--val", "val.parquet", "--out",
                 str(tmp_path / "run"), "--set", "train.steps=5"]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    monkeypatch.chdir(tmp_path)
    assert config["data_path"] == str(d / "train.parquet") and (tmp_path / config["data_path"]).exists()
    assert config["validation"]["path"] == str(d / "val.parquet")


def test_several_settings_after_one_set(tmp_path):
    """`--set a=1 b=2` (the contract's `[--set key=value ...]`) means `--set a=1 --set b=2`: the same tables,
    byte for byte, and a refused value in the second position is still refused; a positional after the
    settings stays positional."""
    one = ["--set", "n_users=9", "n_unseen=3", "dim=6", "train_pairs=5", "test_pairs=4"]
    each = ["--set", "n_users=9", "--set", "n_unseen=3", "--set", "dim=6", "--set", "train_pairs=5", "--set", "test_pairs=4"]
    assert main(["simulate", "--out", str(tmp_path / "a")] + one) == 0
    assert main(["simulate"] + each + ["--out", str(tmp_path / "b")]) == 0
    for name in ("train", "val", "test"):
        assert (tmp_path / f"a/{name}.parquet").read_bytes() == (tmp_path / f"b/{name}.parquet").read_bytes()
    assert len(pd.read_parquet(tmp_path / "a/train.parquet")) == 45
    assert main(["simulate", "--out", str(tmp_path / "c"), "--set", "n_users=9", "dim=abc"]) == 2
    out = tmp_path / "s"
    assert main(["split", "--set", "seed=1", "unseen_fraction=0.3", str(tmp_path / "a/train.parquet"), str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["test.parquet", "train.parquet", "val.parquet"]
