"""Attribute scorers (`plural attributes fit` / `score`), the shipped persona scorers, and the statements
population's communities and attribute columns.

Ground truth: synthetic attributes are known directions v_a of the embedding (a pair is ordered by
v_a . (x - y)); the persona scorers are checked on statements of their split's test part
(tests/fixtures/persona_test_statements.jsonl: 3 "Yes" and 3 "No" statements per dimension drawn from
`statement_splits(personas.persona_scorers.split_config())`'s test statements, which the scorers never saw).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from personas.persona_scorers import PERSONA_ATTRIBUTES, split_config
from personas.statements import StatementsConfig, simulate_statements
from plural.attributes import Scorers
from plural.cli import main
from plural.errors import PluralError

D, A = 16, 3
FIXTURE = Path(__file__).parent / "fixtures" / "persona_test_statements.jsonl"


def _pairs(rng, V, n):
    rows = []
    for a in range(len(V)):
        x, y = rng.normal(size=(2, n, D))
        first = ((x - y) @ V[a] > 0)[:, None]
        rows.append(pd.DataFrame({"attribute": f"a{a}", "higher_embedding": list(np.where(first, x, y)),
                                  "lower_embedding": list(np.where(first, y, x))}))
    return pd.concat(rows, ignore_index=True)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Pairs of 3 attributes (known directions V), a scorers fit on them, and a preference table to score."""
    d = tmp_path_factory.mktemp("attributes")
    rng = np.random.default_rng(0)
    V = rng.normal(size=(A, D))
    _pairs(rng, V, 500).to_parquet(d / "pairs.parquet", index=False)
    _pairs(rng, V, 200).to_parquet(d / "test.parquet", index=False)
    x, y = rng.normal(size=(2, 80, D))
    pd.DataFrame({"user_id": "u", "chosen_embedding": list(x), "rejected_embedding": list(y)}).to_parquet(
        d / "prefs.parquet", index=False)
    assert main(["attributes", "fit", str(d / "pairs.parquet"), str(d / "scorers"), "--test", str(d / "test.parquet"),
                 "--set", "train.steps=400"]) == 0
    return d, V, x, y


def test_fit_learns_each_attribute_from_its_ordered_pairs(synthetic, tmp_path):
    d, V, *_ = synthetic
    info = json.loads((d / "scorers" / "scorers.json").read_text())
    assert info["attributes"] == ["a0", "a1", "a2"] and info["dim"] == D and info["pairs"] == {"a0": 500, "a1": 500, "a2": 500}
    assert min(info["test_accuracy"].values()) >= 0.88, info["test_accuracy"]
    # one step from the random initialisation does not order held-out pairs: the accuracy above was learned
    assert main(["attributes", "fit", str(d / "pairs.parquet"), str(tmp_path / "one"), "--test", str(d / "test.parquet"),
                 "--set", "train.steps=1", "--set", "data.val_fraction=0"]) == 0
    untrained = json.loads((tmp_path / "one" / "scorers.json").read_text())["test_accuracy"]
    assert np.mean(list(untrained.values())) < 0.75, untrained


def test_fit_is_deterministic_per_seed(synthetic, tmp_path):
    d, *_ = synthetic
    for name in ("x", "y"):
        assert main(["attributes", "fit", str(d / "pairs.parquet"), str(tmp_path / name), "--set", "train.steps=30"]) == 0
    assert (tmp_path / "x" / "scorers.safetensors").read_bytes() == (tmp_path / "y" / "scorers.safetensors").read_bytes()


def test_score_adds_standardised_attribute_columns(synthetic, tmp_path):
    d, V, x, y = synthetic
    out = tmp_path / "scored.parquet"
    assert main(["attributes", "score", "--scorers", str(d / "scorers"), str(d / "prefs.parquet"), str(out)]) == 0
    t = pd.read_parquet(out)
    assert len(t) == 80 and {"user_id", "chosen_embedding", "rejected_embedding"} <= set(t.columns)
    for a in range(A):
        diff = t[f"chosen_attr_a{a}"] - t[f"rejected_attr_a{a}"]
        assert np.mean(np.sign(diff) == np.sign((x - y) @ V[a])) >= 0.85
    # scoring a scored table again replaces its attribute columns (same values), it does not duplicate them
    again = tmp_path / "again.jsonl"
    assert main(["attributes", "score", "--scorers", str(d / "scorers"), str(out), str(again)]) == 0
    t2 = pd.read_json(again, lines=True)
    assert sorted(c for c in t2.columns if "_attr_" in c) == sorted(c for c in t.columns if "_attr_" in c)
    np.testing.assert_allclose(t2["chosen_attr_a1"], t["chosen_attr_a1"], rtol=1e-5, atol=1e-5)


def test_shipped_persona_scorers_order_held_out_statements_of_their_dimension(tmp_path):
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    prefs = []
    for d in PERSONA_ATTRIBUTES:
        yes = [r["statement"] for r in rows if r["dimension"] == d and r["answer_matching_behavior"] == "Yes"]
        no = [r["statement"] for r in rows if r["dimension"] == d and r["answer_matching_behavior"] == "No"]
        prefs += [{"user_id": d, "chosen": a, "rejected": b} for a in yes for b in no]
    pd.DataFrame(prefs).to_json(tmp_path / "in.jsonl", orient="records", lines=True)
    assert main(["attributes", "score", "--scorers", "persona", str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl")]) == 0
    t = pd.read_json(tmp_path / "out.jsonl", lines=True)
    assert "chosen_embedding" not in t.columns  # a text table stays a text table
    own = np.array([r[f"chosen_attr_{r['user_id']}"] - r[f"rejected_attr_{r['user_id']}"] for _, r in t.iterrows()])
    assert np.mean(own > 0) >= 0.9
    # the attribute is the dimension's own: another dimension's scorer orders these pairs far less often
    other = np.array([r[f"chosen_attr_{PERSONA_ATTRIBUTES[(PERSONA_ATTRIBUTES.index(r['user_id']) + 9) % 25]}"]
                      - r[f"rejected_attr_{PERSONA_ATTRIBUTES[(PERSONA_ATTRIBUTES.index(r['user_id']) + 9) % 25]}"]
                      for _, r in t.iterrows()])
    assert np.mean(other > 0) < np.mean(own > 0) - 0.2


@pytest.mark.parametrize("rows, message", [
    ([{"attribute": "a", "higher": "x"}], "column 'lower'"),
    ([{"attribute": "a b", "higher": "x", "lower": "y"}], "cannot be part of a column name"),
    ([{"attribute": "a", "higher_embedding": [1.0, 2.0], "lower_embedding": [1.0, 2.0]},
      {"attribute": "a", "higher": "x", "lower": "y"}], "give one kind for every row"),
    ([{"attribute": "a", "higher_embedding": [1.0, 2.0], "lower_embedding": [1.0, 2.0]},
      {"attribute": "a", "higher_embedding": [1.0], "lower_embedding": [1.0]}], "has 1 numbers, earlier rows 2"),
])
def test_bad_pairs_tables_fail_with_one_line_naming_the_row(tmp_path, capsys, rows, message):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["attributes", "fit", str(path), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "pairs.jsonl" in err, err
    assert not (tmp_path / "out").exists()


def test_score_refuses_unknown_scorers_and_other_embedding_sizes(synthetic, tmp_path, capsys):
    d, *_ = synthetic
    assert main(["attributes", "score", "--scorers", str(tmp_path / "none"), str(d / "prefs.parquet"),
                 str(tmp_path / "o.parquet")]) == 2
    assert "persona" in capsys.readouterr().err  # the message names the shipped scorers
    assert main(["attributes", "score", "--scorers", "persona", str(d / "prefs.parquet"), str(tmp_path / "o.parquet")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "prefs.parquet: column 'chosen_embedding' has 16 numbers" in err, err
    assert not (tmp_path / "o.parquet").exists()
    with pytest.raises(PluralError, match="embeddings of 16 dims, but the scorers read 384"):
        Scorers.load("persona")(np.zeros((2, 16)))


def test_persona_attributes_are_refused_on_another_statement_split():
    with pytest.raises(PluralError, match="another split"):
        simulate_statements(StatementsConfig(attributes="persona"))  # the default dims: not the scorers' split
    ok = split_config(n_groups=2, structure="communities")
    assert Scorers.load("persona").info["split"]["dims"] == ok.dims.split(",")
