"""Meshes, replicas and hosts: the automatic mesh shape, replica padding, and a grid run by two processes
(`jax.distributed`, gloo collectives on the CPU) that writes the tables one process writes."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plural.cli import main
from plural.grid import padding
from plural.parallel import mesh_shape

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.py"


def test_mesh_shape_puts_replicas_first_and_batches_on_the_devices_left():
    # replicas over the devices that divide their number; batches over what is left, except on a CPU
    assert mesh_shape(16, 256, n_devices=8, backend="gpu") == (8, 1)
    assert mesh_shape(4, 256, n_devices=8, backend="gpu") == (4, 2)
    assert mesh_shape(3, 256, n_devices=8, backend="gpu") == (1, 8)
    assert mesh_shape(3, 100, n_devices=8, backend="gpu") == (1, 4)
    assert mesh_shape(4, 256, n_devices=8, backend="cpu") == (4, 1)
    assert mesh_shape(1, 256, n_devices=2, backend="cpu") == (1, 1)
    assert mesh_shape(6, 256, shape=(2, 4), n_devices=8) == (2, 4)
    for shape in ((4, 4), (4, 1, 1), (0, 1)):
        with pytest.raises(ValueError):
            mesh_shape(6, 256, shape=shape, n_devices=8)


def test_padding_makes_replicas_split_evenly_over_the_devices():
    # 8 fake devices here (conftest)
    assert [padding(r) for r in (1, 2, 3, 5, 6, 8, 12, 16)] == [0, 0, 1, 3, 2, 0, 4, 0]
    assert padding(3, (1, 1)) == 0  # a mesh given by hand is not padded for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_run_one_grid_and_write_the_single_process_tables(tmp_path):
    """The smoke grid (2 learning rates x 2 seeds: 4 replicas of one program) run by two processes of one CPU
    device each, the replicas split over the two: process 0 writes results.parquet, equal to a single-process
    run's (here: 4 fake devices of one process)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "plural.cli", "grid", str(SMOKE), "--out", str(tmp_path / "two")],
                              env={**env, "PLURAL_CPU_DEVICES": "1", "PLURAL_COORDINATOR": f"localhost:{port}",
                                   "PLURAL_NUM_PROCESSES": "2", "PLURAL_PROCESS_ID": str(i)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
             for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert "process 1 of 2: done" in outs[1][0]
    two = pd.read_parquet(tmp_path / "two" / "results.parquet")
    assert set(two["program_replicas"]) == {4}
    assert main(["grid", str(SMOKE), "--out", str(tmp_path / "one")]) == 0
    one = pd.read_parquet(tmp_path / "one" / "results.parquet")
    timing = ["compile_s", "train_s", "pairs_per_s"]
    a, b = two.drop(columns=timing), one.drop(columns=timing)
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    for col in a.columns:
        if pd.api.types.is_float_dtype(a[col]):
            np.testing.assert_allclose(a[col].to_numpy(), b[col].to_numpy(), rtol=1e-5, atol=1e-6, err_msg=col)
        else:
            assert a[col].equals(b[col]), col


@pytest.mark.slow  # ~22 s; run with pytest -m slow
def test_bench_grid_times_replicas_against_one_by_one(tmp_path, capsys):
    """`plural bench grid` at toy sizes: every timing and ratio is there, compile times apart, and the
    automatic mesh split the replicas over the devices."""
    import json

    out = tmp_path / "g.json"
    assert main(["bench", "grid", "--seeds", "2", "--dim", "8", "--pairs", "16", "--steps", "10",
                 "--set", "model.hidden=(8,)", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    for k in ("one_by_one_s", "vmap_s", "map_s", "mesh_auto_s", "one_compile_s", "mesh_auto_compile_s"):
        assert res[k] > 0, k
    assert res["vmap_over_one_by_one"] == pytest.approx(res["vmap_s"] / res["one_by_one_s"])
    assert res["pairs_per_step"] == 16  # 2 replicas x 10 steps x 16 pairs trained in mesh_auto_s seconds:
    assert res["mesh_auto_pairs_per_s"] == pytest.approx(2 * 10 * 16 / res["mesh_auto_s"])
    assert res["mesh_auto_pairs_per_s_per_replica"] == pytest.approx(10 * 16 / res["mesh_auto_s"])
    assert res["mesh"] == {"replica": 2, "data": 1} and res["overrides"] == ["model.hidden=(8,)"]
    out = tmp_path / "p.json"
    assert main(["bench", "grid", "--points", "2", "--seeds", "2", "--steps", "10", "--model", "bt",
                 "--set", "model.hidden=(8,)", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["replicas"] == 4 and res["together_s"] > res["together_compile_s"] > 0
    assert res["together_over_one_by_one"] == pytest.approx(res["together_s"] / res["one_by_one_s"])


def test_auto_batching_is_measured_once_per_shape_and_remembered(tiny, tmp_path, monkeypatch):
    """On a CPU with several replicas per device, `seed_batching=auto` times vmap against lax.map once, keeps
    the answer in the cache folder, and a later trainer of the same shapes takes it from there."""
    import json

    from plural.config import TrainConfig
    from plural.data import read_table
    from plural.models import get_family
    from plural.run import configs_for
    from plural.train import Trainer

    monkeypatch.setenv("PLURAL_CACHE", str(tmp_path))
    _, d = tiny
    c = configs_for("bt", ["model.hidden=(8,)", "batch.batch_size=32"])
    cfg = TrainConfig(**{**c["train"].__dict__, "mesh": (1, 1), "steps": 10, "log_every": 10})
    data = read_table(d / "train.parquet")
    first = Trainer(get_family("bt"), c["model"], cfg, data, seeds=(0, 1, 2), batches=c["batch"])
    mode = first.batching()
    assert mode in ("vmap", "map") and first.compile_s > 0  # the measuring counts as set-up time
    stored = json.loads((tmp_path / "batching.json").read_text())
    assert list(stored.values()) == [mode]
    monkeypatch.setattr(Trainer, "measure_batching", lambda *a, **k: pytest.fail("measured again"))
    again = Trainer(get_family("bt"), c["model"], cfg, data, seeds=(0, 1, 2), batches=c["batch"])
    assert again.batching() == mode
    one = Trainer(get_family("bt"), c["model"], cfg, data, seeds=(0,), batches=c["batch"])
    assert one.batching() == "vmap"  # one replica per device: nothing to choose


@pytest.mark.slow  # two fresh processes, ~14 s; run with pytest -m slow
def test_the_command_keeps_compiled_programs_in_the_cache_folder(tiny, tmp_path):
    """`plural fit` stores its compiled programs under $PLURAL_CACHE/jit; PLURAL_JIT_CACHE=0 stores none."""
    _, d = tiny
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    args = [sys.executable, "-m", "plural.cli", "fit", "--model", "bt", "--data", str(d / "train.parquet"),
            "--set", "train.steps=20", "--set", "model.hidden=(8,)"]
    for flag, expect in (("1", True), ("0", False)):
        cache = tmp_path / f"cache{flag}"
        done = subprocess.run(args + ["--out", str(tmp_path / f"run{flag}")], capture_output=True, text=True,
                              env={**env, "PLURAL_CACHE": str(cache), "PLURAL_JIT_CACHE": flag})
        assert done.returncode == 0, done.stderr[-2000:]
        assert any((cache / "jit").glob("*")) is expect


@pytest.mark.slow  # benchmark plumbing (four fresh processes, ~20 s): run with -m slow
def test_bench_startup_times_the_first_chunk_inside_each_fit(tmp_path):
    from plural.bench import bench_startup

    res = bench_startup(steps=20, out=str(tmp_path / "s.json"), repeats=2)
    for run in ("first", "second", "second_best"):
        assert 0 < res[f"fit_{run}_first_chunk_s"] < res[f"fit_{run}_s"]  # measured inside the process, before exit
    assert len(res["fit_second_runs_s"]) == 2 and res["fit_second_best_s"] == pytest.approx(min(res["fit_second_runs_s"]), abs=1e-3)
    assert res["cache_mb"] > 0 and json.loads((tmp_path / "s.json").read_text())["benchmark"] == "startup"
