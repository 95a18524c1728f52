"""Numerical safety: every family trains to a finite loss on tables built to break arithmetic: duplicated
pairs, identical chosen and rejected, a user with one pair, embeddings of tiny (1e-20) and huge (norm ~4e4)
norms, and half-precision Parquet columns (with one attribute column pair, for `palette`). (A loss that does turn non-finite stops `fit` in one line:
tests/test_hostile_inputs.py.)"""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plural.cli import main
from plural.models import FAMILIES

D = 16


def _rows(scale: float, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(200):
        c, r, p = (rng.normal(size=D) * scale for _ in range(3))
        if i % 17 == 0:
            r = c.copy()  # identical chosen and rejected
        rows.append({"user_id": f"u{i % 10}", "group": f"g{i % 10 % 2}", "chosen_embedding": c,
                     "rejected_embedding": r, "prompt_embedding": p, "chosen_attr_a": float(c[0]),
                     "rejected_attr_a": float(r[0])})
    rows += [dict(rows[0]) for _ in range(20)]  # one pair twenty times more
    rows.append({"user_id": "solo", "group": "g0", "chosen_attr_a": 0.0, "rejected_attr_a": 0.0,
                 **{k: rng.normal(size=D) * scale for k in ("chosen_embedding", "rejected_embedding", "prompt_embedding")}})
    return rows


def _write(path, rows, dtype):
    cols = {k: pa.array([r[k] for r in rows]) for k in ("user_id", "group", "chosen_attr_a", "rejected_attr_a")}
    for k in ("chosen_embedding", "rejected_embedding", "prompt_embedding"):
        cols[k] = pa.array([np.asarray(r[k], dtype) for r in rows], type=pa.list_(pa.from_numpy_dtype(dtype)))
    pq.write_table(pa.table(cols), path)
    return path


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    d = tmp_path_factory.mktemp("numerics")
    return {"tiny": _write(d / "tiny.parquet", _rows(1e-20), np.float32),
            "huge": _write(d / "huge.parquet", _rows(1e4), np.float32),
            "half": _write(d / "half.parquet", _rows(1.0), np.float16)}


@pytest.mark.slow
@pytest.mark.parametrize("table", ["tiny", "huge", "half"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_trains_to_a_finite_loss(tables, tmp_path, capsys, family, table):
    out = tmp_path / "run"
    code = main(["fit", "--model", family, "--data", str(tables[table]), "--out", str(out), "--set", "train.steps=200",
                 "--set", "train.log_every=50"])
    assert code == 0, capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    assert all(np.isfinite(h["loss"]).all() for h in m["history"]), m["history"]
