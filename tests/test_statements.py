"""Persona-statement populations (personas/statements.py): stances, disjoint statements, recorded ground truth.

Embeddings come from a cheap deterministic stand-in (hashed bag of words), so these tests do not depend
on the offline embedder.
"""

import json
import zlib

import numpy as np
import pandas as pd
import pytest

from personas.statements import StatementsConfig, load_statements, persona_dir, simulate_statements
from plural.cli import main
from plural.data import read_table
from plural.errors import PluralError


def fake_embed(texts):
    out = np.zeros((len(texts), 32), np.float32)
    for i, t in enumerate(texts):
        for w in t.lower().split():
            out[i, zlib.crc32(w.encode()) % 32] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)


SMALL = dict(n_dims=6, n_groups=4, n_users=24, n_unseen=8, train_pairs=20, test_pairs=30)


@pytest.fixture(scope="module")
def pop():
    return simulate_statements(StatementsConfig(**SMALL, seed=3), embed_fn=fake_embed)


@pytest.fixture(scope="module")
def sides(pop):
    """statement -> (dimension, +1 if a holder of the persona would say it else -1), from the source files."""
    out = {}
    for d in pop.dims:
        pro, con = load_statements(persona_dir() / f"{d}.jsonl", 0.9)
        out.update({s: (d, 1) for s in pro})
        out.update({s: (d, -1) for s in con})
    return out


def expected_accuracies(pop, rows, eps):
    """Oracle and majority-model accuracies computed directly from the stance vectors."""
    g = rows.group.str[1:].astype(int).to_numpy()
    d = np.array([pop.dims.index(x) for x in rows.dimension])
    majority = np.where(pop.shares @ (pop.stances > 0) > 0.5, 1, -1)  # per dimension
    agrees = pop.stances[g, d] == majority[d]
    return 1 - eps, float(np.mean(np.where(agrees, 1 - eps, eps)))


def test_groups_hold_distinct_stances_and_disagree_on_every_dimension(pop):
    S = pop.stances
    assert S.shape == (4, 6) and set(np.unique(S)) == {-1, 1}
    assert len({tuple(r) for r in S}) == 4
    assert ((S > 0).any(0) & (S < 0).any(0)).all()  # every chosen dimension is contested
    assert len(set(pop.dims)) == 6
    # in the data too: per dimension, some group picks the "holder" statement and another the opposite one
    rows = pd.concat([pop.train, pop.test])
    by = rows.groupby(["dimension", "group"])["chosen_stance"].mean().unstack()
    assert ((by > 0).any(axis=1) & (by < 0).any(axis=1)).all()
    assert sorted(rows.group.unique()) == ["g0", "g1", "g2", "g3"]
    assert rows.groupby("user_id").group.nunique().max() == 1


def test_pairs_are_opposite_stances_of_one_dimension_and_splits_disjoint(pop, sides):
    for df in (pop.train, pop.test):
        c = [sides[s] for s in df.chosen]
        r = [sides[s] for s in df.rejected]
        assert all(a[0] == b[0] == d for a, b, d in zip(c, r, df.dimension))  # one dimension per pair
        assert all(a[1] == -b[1] == s for a, b, s in zip(c, r, df.chosen_stance))  # opposite stances
    used = lambda df: set(df.chosen) | set(df.rejected)  # noqa: E731
    assert used(pop.train).isdisjoint(used(pop.test))
    assert set(pop.test.prompt) == {"Which statement do you agree with more?"}
    # a user prefers the statement matching their group's stance (no label noise)
    g = pop.train.group.str[1:].astype(int).to_numpy()
    d = np.array([pop.dims.index(x) for x in pop.train.dimension])
    assert (pop.train.chosen_stance.to_numpy() == pop.stances[g, d]).all()
    assert len(pop.train) == 24 * 20 and len(pop.test) == 32 * 30
    assert set(pop.test.seen) == {True, False} and pop.train.seen.all()


def test_oracle_is_perfect_and_the_majority_model_is_not(pop):
    t = pop.truth()
    assert t["all"]["oracle_accuracy"] == 1.0 and (pop.test.oracle_p == 1.0).all()
    assert t["all"]["single_accuracy"] < 0.95
    assert min(v["single_accuracy"] for v in t["per_group"].values()) < 0.8  # some group is outvoted
    assert set(t) == {"all", "seen", "unseen", "per_group"}


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_recorded_accuracies_match_the_stance_vectors(eps):
    p = simulate_statements(StatementsConfig(**SMALL, label_noise=eps, group_sizes=(0.4, 0.3, 0.2, 0.1), seed=5),
                            embed_fn=fake_embed)
    t = p.truth()
    oracle, single = expected_accuracies(p, p.test, eps)
    assert t["all"]["oracle_accuracy"] == pytest.approx(oracle)
    assert t["all"]["single_accuracy"] == pytest.approx(single)
    for g, rows in p.test.groupby("group"):
        assert t["per_group"][g]["single_accuracy"] == pytest.approx(expected_accuracies(p, rows, eps)[1])
    # per row: population_p is the share-weighted probability that a member prefers chosen
    d = np.array([p.dims.index(x) for x in p.test.dimension])
    match = p.stances[:, d] == p.test.chosen_stance.to_numpy()[None]
    np.testing.assert_allclose(p.test.population_p, p.shares @ np.where(match, 1 - eps, eps))
    # labels follow the stated noise: users pick against their stance at rate eps
    g = p.test.group.str[1:].astype(int).to_numpy()
    against = (p.test.chosen_stance.to_numpy() != p.stances[g, d]).mean()
    assert abs(against - eps) < 0.04


def test_write_truth_json_and_table_contract(pop, tmp_path):
    pop.write(tmp_path)
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert truth["dims"] == list(pop.dims)
    assert truth["stances"]["g0"] == dict(zip(pop.dims, pop.stances[0].tolist()))
    assert truth["accuracy"]["all"]["single_accuracy"] == pytest.approx(pop.truth()["all"]["single_accuracy"])
    data = read_table(tmp_path / "train.parquet")
    assert data.chosen.shape == (len(pop.train), 32) and len(data.groups) == 4
    np.testing.assert_allclose(data.chosen[0], fake_embed([pop.train.chosen[0]])[0], atol=1e-6)
    again = simulate_statements(StatementsConfig(**SMALL, seed=3), embed_fn=fake_embed)
    assert again.test[["user_id", "chosen", "rejected"]].equals(pop.test[["user_id", "chosen", "rejected"]])


def test_cli_simulate_statements(tmp_path, capsys):
    out = tmp_path / "pop"
    args = ["simulate", "--population", "statements", "--out", str(out), "--set", "n_dims=6", "--set", "n_groups=4",
            "--set", "embed=false", "--set", "n_users=8", "--set", "n_unseen=4"]
    assert main(args) == 0
    assert "oracle 1.000" in capsys.readouterr().out
    test = pd.read_parquet(out / "test.parquet")
    assert {"prompt", "chosen", "rejected", "oracle_p", "population_p"} <= set(test.columns)
    assert "chosen_embedding" not in test.columns and test.user_id.nunique() == 12
    assert main(["simulate", "--population", "statements", "--out", str(out), "--set", "n_groups=2"]) == 2
    assert "50/50" in capsys.readouterr().err  # two equal groups always tie where they differ


def test_persona_dir_override_and_bad_files(tmp_path, monkeypatch):
    d = tmp_path / "personas"
    d.mkdir()
    for name in ("likes-tea", "likes-rain"):
        lines = [{"statement": f"{name} {side} {k}", "label_confidence": 0.95,
                  "answer_matching_behavior": " Yes" if side == "pro" else " No"}
                 for side in ("pro", "con") for k in range(5)]
        lines.append({"statement": f"{name} unsure", "label_confidence": 0.6, "answer_matching_behavior": " Yes"})
        (d / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    monkeypatch.setenv("PLURAL_PERSONA_DIR", str(d))
    p = simulate_statements(StatementsConfig(n_dims=2, n_groups=3, n_users=6, n_unseen=0, train_pairs=5, test_pairs=5),
                            embed_fn=fake_embed)
    assert set(p.dims) == {"likes-tea", "likes-rain"}
    assert "unsure" not in " ".join(pd.concat([p.train, p.test]).chosen)  # below the confidence threshold
    with (d / "likes-rain.jsonl").open("a") as fh:
        fh.write('{"statement": "broken\n')
    with pytest.raises(PluralError, match=r"likes-rain.jsonl: row 11 \(line 12\): not valid JSON"):
        simulate_statements(StatementsConfig(n_dims=2, n_groups=3), embed_fn=fake_embed)
    with pytest.raises(PluralError, match="persona statements folder not found"):
        simulate_statements(StatementsConfig(persona_dir=str(tmp_path / "nowhere")), embed_fn=fake_embed)
    with pytest.raises(PluralError, match="no persona file nosuch.jsonl"):
        simulate_statements(StatementsConfig(n_dims=1, n_groups=2, group_sizes=(0.7, 0.3), dims="nosuch"),
                            embed_fn=fake_embed)
