"""Persona-statement populations (personas/statements.py): stances, train / val / test statements without
leakage, recorded ground truth.

Embeddings come from cheap deterministic stand-ins (hashed bag of words), so these tests do not depend
on the offline embedder; the slow test checks the shipped data with the real one.
"""

import itertools
import json
import re
import warnings
import zlib

import numpy as np
import pandas as pd
import pytest

import personas.statements
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


def exact_bow_embed(texts):
    """Bag of words over the texts' own vocabulary (no hash collisions): cosine = shared words / sqrt(n_a n_b)."""
    vocab = {w: i for i, w in enumerate(sorted({w for t in texts for w in t.split()}))}
    out = np.zeros((len(texts), len(vocab)), np.float32)
    for i, t in enumerate(texts):
        out[i, [vocab[w] for w in t.split()]] = 1.0
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def review_key(s):
    """The leakage review's normalisation: lower-cased, punctuation removed, whitespace collapsed."""
    return " ".join(re.sub(r"[^\w\s]", "", s.lower()).split())


def statements_of(df):
    """{statement: its embedding (float64)} of a table's chosen and rejected columns (text only: None)."""
    out = {}
    for col in ("chosen", "rejected"):
        embs = df[f"{col}_embedding"] if f"{col}_embedding" in df else [None] * len(df)
        out.update(zip(df[col], (None if e is None else np.asarray(e, np.float64) for e in embs)))
    return out


def max_cross_split_cosine(tables):
    used = {split: statements_of(df) for split, df in tables.items()}
    worst = -1.0
    for a, b in itertools.combinations(used, 2):
        x, y = (np.stack(list(used[s].values())) for s in (a, b))
        x, y = x / np.linalg.norm(x, axis=1, keepdims=True), y / np.linalg.norm(y, axis=1, keepdims=True)
        worst = max(worst, float((x @ y.T).max()))
    return worst


def assert_splits_disjoint_after_normalising(tables):
    keys = {split: {review_key(s) for s in statements_of(df)} for split, df in tables.items()}
    for a, b in itertools.combinations(keys, 2):
        assert keys[a].isdisjoint(keys[b]), (a, b, sorted(keys[a] & keys[b])[:3])


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
    rows = pd.concat([pop.train, pop.val, pop.test])
    by = rows.groupby(["dimension", "group"])["chosen_stance"].mean().unstack()
    assert ((by > 0).any(axis=1) & (by < 0).any(axis=1)).all()
    assert sorted(rows.group.unique()) == ["g0", "g1", "g2", "g3"]
    assert rows.groupby("user_id").group.nunique().max() == 1


def test_pairs_are_opposite_stances_of_one_dimension_and_splits_disjoint(pop, sides):
    tables = {"train": pop.train, "val": pop.val, "test": pop.test}
    for split, df in tables.items():
        c = [sides[s] for s in df.chosen]
        r = [sides[s] for s in df.rejected]
        assert all(a[0] == b[0] == d for a, b, d in zip(c, r, df.dimension))  # one dimension per pair
        assert all(a[1] == -b[1] == s for a, b, s in zip(c, r, df.chosen_stance))  # opposite stances
        pool = {s for per_dim in pop.statements[split] for side in per_dim for s in side}
        assert set(df.chosen) | set(df.rejected) <= pool  # each table shows its own split's statements
        assert set(df.prompt) == {"Which statement do you agree with more?"}
    assert_splits_disjoint_after_normalising(tables)
    assert max_cross_split_cosine(tables) <= 0.9  # near-duplicates under the stand-in embedding stay in one split
    # a user prefers the statement matching their group's stance (no label noise)
    g = pop.train.group.str[1:].astype(int).to_numpy()
    d = np.array([pop.dims.index(x) for x in pop.train.dimension])
    assert (pop.train.chosen_stance.to_numpy() == pop.stances[g, d]).all()
    assert len(pop.train) == 24 * 20 and len(pop.test) == 32 * 30 and len(pop.val) == 24 * 10 + 8 * 30
    assert set(pop.test.seen) == {True, False} and pop.train.seen.all()
    # val: the seen users' held-out pairs and validation-unseen users "v...", in no other table
    val_unseen = set(pop.val.user_id[~pop.val.seen])
    assert len(val_unseen) == 8 and all(u.startswith("v") for u in val_unseen)
    assert val_unseen.isdisjoint(set(pop.test.user_id) | set(pop.train.user_id))
    assert set(pop.val.user_id[pop.val.seen]) == set(pop.train.user_id)
    assert sorted(pop.val[~pop.val.seen].drop_duplicates("user_id").group) == ["g0", "g0", "g1", "g1", "g2", "g2",
                                                                                 "g3", "g3"]  # equal shares


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
    val = pd.read_parquet(tmp_path / "val.parquet")
    assert len(val) == len(pop.val) and truth["val_accuracy"]["all"]["oracle_accuracy"] == 1.0
    q = val.population_p.to_numpy()
    assert truth["val_accuracy"]["all"]["single_accuracy"] == pytest.approx(np.mean(np.where(q > 0.5, 1.0, 0.0)))
    counts = truth["statements"][pop.dims[0]]
    assert set(counts) == {"train", "val", "test"} and counts["val"]["pro"] == len(pop.statements["val"][0][0]) > 0
    assert truth["near_duplicate_cosine"] == 0.9
    data = read_table(tmp_path / "train.parquet")
    assert data.chosen.shape == (len(pop.train), 32) and len(data.groups) == 4
    np.testing.assert_allclose(data.chosen[0], fake_embed([pop.train.chosen[0]])[0], atol=1e-6)
    again = simulate_statements(StatementsConfig(**SMALL, seed=3), embed_fn=fake_embed)
    for split in ("train", "val", "test"):
        pd.testing.assert_frame_equal(getattr(again, split), getattr(pop, split))


def test_cli_simulate_statements(tmp_path, capsys, monkeypatch):
    # embed=false still embeds the statements to group near-duplicates: the stand-in keeps this test fast
    monkeypatch.setattr(personas.statements, "_default_embed", lambda cfg: fake_embed)
    out = tmp_path / "pop"
    args = ["simulate", "--population", "statements", "--out", str(out), "--set", "n_dims=6", "--set", "n_groups=4",
            "--set", "embed=false", "--set", "n_users=8", "--set", "n_unseen=4"]
    assert main(args) == 0
    assert "oracle 1.000" in capsys.readouterr().out
    test = pd.read_parquet(out / "test.parquet")
    assert {"prompt", "chosen", "rejected", "oracle_p", "population_p"} <= set(test.columns)
    assert "chosen_embedding" not in test.columns and test.user_id.nunique() == 12
    assert pd.read_parquet(out / "val.parquet").user_id.nunique() == 12  # 8 seen + 4 validation-unseen
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


def write_personas(directory, cells):
    """One persona file per dimension: cells = {dimension: {"pro": [...], "con": [...]}}, confidence 0.95."""
    directory.mkdir(exist_ok=True)
    for name, sides in cells.items():
        lines = [{"statement": s, "label_confidence": 0.95, "answer_matching_behavior": " Yes" if side == "pro" else " No"}
                 for side in ("pro", "con") for s in sides[side]]
        (directory / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def filler(tag, n):
    """n statements of two words of their own: far from every other statement under a bag of words."""
    return [f"{tag}{k}a {tag}{k}b" for k in range(n)]


BASE = [f"w{i}" for i in range(10)]
CHAIN = [" ".join(BASE), " ".join(BASE + ["x1"]), " ".join(BASE[1:] + ["x1", "x2"])]  # cosines .95, .91; ends .86
PAIR = [" ".join(f"v{i}" for i in range(10)), " ".join([f"v{i}" for i in range(10)] + ["y1"])]  # cosine .95


@pytest.fixture
def planted(tmp_path, monkeypatch):
    d = tmp_path / "personas"
    write_personas(d, {
        "likes-tea": {"pro": filler("tp", 8) + CHAIN, "con": filler("tc", 8) + [PAIR[0]]},
        "likes-rain": {"pro": filler("rp", 8), "con": filler("rc", 8) + [PAIR[1]]},
    })
    monkeypatch.setenv("PLURAL_PERSONA_DIR", str(d))
    return d


def split_of(pop, statement):
    return [split for split, per_dim in pop.statements.items() if any(statement in side for s in per_dim for side in s)]


@pytest.mark.parametrize("embed", [True, False])
def test_near_duplicates_land_in_one_split(planted, embed):
    """A chain of near-duplicates (cosine > 0.9 link by link, not end to end) and a pair across two dimensions and
    stances each go to one split whole, whatever the seed; with embed=False embed_fn still groups them."""
    cfg = dict(n_dims=2, n_groups=3, n_users=6, n_unseen=3, train_pairs=10, test_pairs=10, embed=embed)
    where = set()
    for seed in range(6):
        pop = simulate_statements(StatementsConfig(**cfg, seed=seed), embed_fn=exact_bow_embed)
        chain, pair = [split_of(pop, s) for s in CHAIN], [split_of(pop, s) for s in PAIR]
        assert all(len(x) == 1 for x in chain + pair)  # each statement in exactly one split
        assert len({x[0] for x in chain}) == 1 and len({x[0] for x in pair}) == 1, (seed, chain, pair)
        where |= {chain[0][0]}
        assert ("chosen_embedding" in pop.train) == embed and pop.near_duplicate_cosine == 0.9
        for k in range(2):  # every split keeps statements of both stances of both dimensions
            assert all(len(pop.statements[split][k][side]) for split in ("train", "val", "test") for side in (0, 1))
    assert where == {"train"}  # the largest component goes where the target is largest
    with pytest.raises(PluralError, match=r"likes-\w+.jsonl: val gets 0 'Yes' and 0 'No' statements.*val_fraction=0.01"):
        simulate_statements(StatementsConfig(**cfg, val_fraction=0.01), embed_fn=exact_bow_embed)


def test_normalised_duplicates_are_kept_once_or_dropped(tmp_path, monkeypatch):
    d = tmp_path / "personas"
    write_personas(d, {
        "likes-tea": {"pro": filler("tp", 6) + ["I like tea.", "i like  TEA", "I-like tea!"],
                      "con": filler("tc", 6) + ["Rain is nice"]},
        "likes-rain": {"pro": filler("rp", 6) + ["rain is NICE!"], "con": filler("rc", 6)},
    })
    monkeypatch.setenv("PLURAL_PERSONA_DIR", str(d))
    pop = simulate_statements(StatementsConfig(n_dims=2, n_groups=3, n_users=6, n_unseen=3, train_pairs=5, test_pairs=5),
                              embed_fn=fake_embed)
    kept = [s for per_dim in pop.statements.values() for cell in per_dim for side in cell for s in side]
    assert len(kept) == len(set(kept)) == 4 * 6 + 1
    assert [s for s in kept if review_key(s) == "i like tea"] == ["I like tea."]  # the first of the duplicates
    assert not [s for s in kept if "rain is" in s.lower()]  # under two dimensions: not used at all


def test_without_the_embedder_only_normalised_duplicates_are_separated(planted, monkeypatch, tmp_path):
    from plural.embed import minilm

    def missing():
        raise PluralError("the 'minilm' embedder needs the all-MiniLM-L6-v2 weights package, which is not installed")

    monkeypatch.setattr(minilm, "model_dir", missing)
    with pytest.warns(UserWarning, match="only normalised duplicates.*not installed"):
        pop = simulate_statements(StatementsConfig(n_dims=2, n_groups=3, n_users=6, n_unseen=3, train_pairs=5,
                                                   test_pairs=5, embed=False))
    assert pop.near_duplicate_cosine is None and "chosen_embedding" not in pop.test
    assert json.loads((pop.write(tmp_path / "p") / "truth.json").read_text())["near_duplicate_cosine"] is None
    with pytest.raises(PluralError, match="not installed"):  # embed=True cannot do without it
        simulate_statements(StatementsConfig(n_dims=2, n_groups=3))


@pytest.mark.slow
def test_shipped_statements_do_not_leak_across_splits(tmp_path):
    """The default population on ../shared/data/anthropic-persona with MiniLM: no statement in two of train / val /
    test after normalising, and no cross-split pair of statements with cosine > 0.9, recomputed from the
    embeddings in the written tables (~6000 statements embedded: about 30 s on 2 CPU cores, cached after)."""
    assert persona_dir().is_dir(), f"no persona statements at {persona_dir()} (set PLURAL_PERSONA_DIR)"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the real embedder, not the fallback
        pop = simulate_statements(StatementsConfig(seed=0))
    d = pop.write(tmp_path / "pop")
    tables = {split: pd.read_parquet(d / f"{split}.parquet") for split in ("train", "val", "test")}
    assert all(len(statements_of(t)) > 500 for t in tables.values())
    assert_splits_disjoint_after_normalising(tables)
    assert max_cross_split_cosine(tables) <= 0.9


def test_statement_communities_each_hold_one_dimension(tmp_path):
    """structure=communities: every pair of community k shows dimension k mod n_dims, and community k + n_dims
    holds the opposite stance of community k on it (the two disagree on every pair)."""
    pop = simulate_statements(StatementsConfig(n_dims=3, n_groups=6, n_users=6, n_unseen=0, structure="communities",
                                               train_pairs=20, seed=1), embed_fn=fake_embed)
    for k in range(6):
        rows = pop.train[pop.train.group == f"g{k}"]
        assert set(rows.dimension) == {pop.dims[k % 3]}
        stance = pop.stances[k, k % 3]
        assert stance != 0 and (pop.stances[k] != 0).sum() == 1
        assert (rows.chosen_stance == stance).all()  # noiseless: they pick their stance every time
    np.testing.assert_array_equal(pop.stances[3:], -pop.stances[:3])
    assert pop.truth("train")["all"]["single_accuracy"] == pytest.approx(0.5)  # every pair is contested
    with pytest.raises(ValueError, match="n_dims >= 4"):
        simulate_statements(StatementsConfig(n_dims=3, n_groups=7, structure="communities"), embed_fn=fake_embed)
