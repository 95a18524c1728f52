"""Fuzzing the table reader, `plural split` and `plural fit` (hypothesis): random valid tables with random
corruption (types, nulls, ragged, empty and non-finite embeddings, booleans, huge integers, contradictory
groups, unpaired attribute columns, duplicate rows, huge and empty strings, invalid UTF-8, truncated
files, directories of disagreeing files). Every input is either accepted with all of its rows, or refused
with one `PluralError` line naming the file; nothing else (no other exception, no silently dropped row)."""

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from plural.cli import main
from plural.data import read_table
from plural.errors import PluralError

EMB = ("chosen_embedding", "rejected_embedding", "prompt_embedding")
BAD_NUMBERS = [math.nan, math.inf, -math.inf, True, "0.5", None, 10 ** 400, 1e39, {"x": 1}]


def _base(n_users: int, per_user: int, dim: int, prompt: bool, group: bool, attrs: bool, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_users * per_user):
        u = i % n_users
        r = {"user_id": f"u{u}", "chosen_embedding": rng.normal(size=dim).round(3).tolist(),
             "rejected_embedding": rng.normal(size=dim).round(3).tolist(), "note": f"row {i}"}
        if prompt:
            r["prompt_embedding"] = rng.normal(size=dim).round(3).tolist()
            r["prompt"] = f"prompt {i % 3}"
        if group:
            r["group"] = f"g{u % 2}"
        if attrs:
            r["chosen_attr_length"], r["rejected_attr_length"] = float(rng.normal()), float(rng.normal())
        rows.append(r)
    return rows


@st.composite
def corrupted(draw):
    """(rows, corruptions applied, file kind, split into a directory of two files)."""
    rows = _base(draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.booleans()),
                 draw(st.booleans()), draw(st.booleans()), draw(st.integers(0, 3)))
    applied = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["number", "null_cell", "ragged", "empty", "user_type", "group_flip",
                                     "drop_column", "unpaired_attr", "duplicate", "big_string", "empty_string"]))
        i = draw(st.integers(0, len(rows) - 1))
        r = rows[i]
        numeric = [c for c in r if c in EMB or c.startswith(("chosen_attr", "rejected_attr"))]
        if kind in ("number", "empty") and not numeric:
            continue
        if kind == "number":
            col = draw(st.sampled_from(numeric))
            bad = draw(st.sampled_from(BAD_NUMBERS))
            if isinstance(r[col], list) and r[col]:
                r[col][draw(st.integers(0, len(r[col]) - 1))] = bad
            else:
                r[col] = bad
        elif kind == "null_cell":
            r[draw(st.sampled_from(sorted(r)))] = None
        elif kind == "ragged" and isinstance(r.get("chosen_embedding"), list) and r["chosen_embedding"]:
            r["chosen_embedding"] = r["chosen_embedding"][:-1] if len(r["chosen_embedding"]) > 1 else r["chosen_embedding"] * 2
        elif kind == "empty":
            r[draw(st.sampled_from(numeric))] = []
        elif kind == "user_type":
            r["user_id"] = draw(st.sampled_from([7, 1.5, ["u"], True]))
        elif kind == "group_flip" and "group" in r:
            r["group"] = "g9"
        elif kind == "drop_column":
            col = draw(st.sampled_from(sorted(r)))
            for row in rows:
                row.pop(col, None)
        elif kind == "unpaired_attr":
            for row in rows:
                row["rejected_attr_only"] = 1.0
        elif kind == "duplicate":
            rows.append(json.loads(json.dumps(r)))
        elif kind == "big_string":
            r["note"] = "x" * 200_000
        elif kind == "empty_string":
            r["user_id"] = ""
        applied.append(kind)
    return rows, applied, draw(st.sampled_from(["jsonl", "parquet"])), draw(st.booleans()), \
        draw(st.sampled_from([None, "truncate", "utf8"]))


def _write(folder, rows, kind, as_dir, damage, draw_cut=0.5):
    """Write the rows as one file or a directory of two files; returns (path, files written)."""
    parts = [rows[: len(rows) // 2], rows[len(rows) // 2:]] if as_dir and len(rows) > 1 else [rows]
    target = folder / "dir" if len(parts) > 1 else folder
    target.mkdir(parents=True, exist_ok=True)
    files = []
    for k, part in enumerate(parts):
        f = target / f"part{k}.{kind}"
        if kind == "jsonl":
            f.write_text("".join(json.dumps(r) + "\n" for r in part))
        else:
            try:
                pd.DataFrame(part).to_parquet(f, index=False)
            except Exception:  # pandas cannot write what it was given: write it as JSON Lines instead
                f = f.with_suffix(".jsonl")
                f.write_text("".join(json.dumps(r) + "\n" for r in part))
        files.append(f)
    if damage == "truncate":
        data = files[-1].read_bytes()
        files[-1].write_bytes(data[: int(len(data) * draw_cut)])
    elif damage == "utf8" and files[-1].suffix == ".jsonl":
        files[-1].write_bytes(b"\xff\xfe" + files[-1].read_bytes())
    return (target if len(parts) > 1 else files[0]), files


def _stored_rows(files, rows) -> int:
    """Rows the files hold: a JSON Lines file truncated at a line end holds fewer rows, still all valid."""
    n = 0
    for f in files:
        n += (sum(1 for line in f.read_bytes().splitlines() if line.strip()) if f.suffix == ".jsonl"
              else len(pd.read_parquet(f)))
    return n


def _check_refusal(message: str, path) -> None:
    assert "\n" not in message.strip(), message
    assert path.name in message, message  # the file (or the directory) is named


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
                derandomize=True)


@FUZZ
@given(corrupted())
def test_reader_accepts_every_row_or_refuses_in_one_line(tmp_path_factory, case):
    rows, applied, kind, as_dir, damage = case
    path, files = _write(tmp_path_factory.mktemp("fuzz"), rows, kind, as_dir, damage)
    try:
        data = read_table(path)
    except PluralError as e:
        _check_refusal(str(e), path)
        return
    assert len(data.user) == _stored_rows(files, rows)  # accepted: every row, none dropped
    assert np.isfinite(data.chosen).all() and np.isfinite(data.rejected).all()


@FUZZ
@given(corrupted())
def test_split_accepts_or_refuses_in_one_line(tmp_path_factory, capsys, case):
    rows, applied, kind, as_dir, damage = case
    folder = tmp_path_factory.mktemp("fuzz")
    path, files = _write(folder, rows, kind, as_dir, damage)
    code = main(["split", str(path), str(folder / "out"), "--set", "unseen_fraction=0", "--set", "val_fraction=0.2",
                 "--set", "test_fraction=0.2"])
    err = capsys.readouterr().err.strip()
    assert code in (0, 2), err
    if code == 2:
        assert err.startswith("plural: error: ") and len(err.splitlines()) == 1, err
        return
    written = sum(len(read_table(f).user) for f in sorted((folder / "out").iterdir()))
    assert written == _stored_rows(files, rows)  # every row in exactly one split


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          derandomize=True)
@given(corrupted())
def test_fit_accepts_or_refuses_in_one_line(tmp_path_factory, capsys, case):
    rows, applied, kind, as_dir, damage = case
    folder = tmp_path_factory.mktemp("fuzz")
    path, _ = _write(folder, rows, kind, as_dir, damage)
    code = main(["fit", "--model", "bt", "--data", str(path), "--out", str(folder / "run"), "--set", "train.steps=5",
                 "--set", "train.log_every=5", "--set", "data.val_fraction=0", "--set", "train.eval_every=0",
                 "--set", "model.hidden=(4,)", "--set", "batch.batch_size=4"])
    err = capsys.readouterr().err.strip()
    assert code in (0, 2), err
    if code == 2:
        assert err.startswith("plural: error: ") and len(err.splitlines()) == 1, err
    else:
        assert json.loads((folder / "run" / "metrics.json").read_text())["steps"] == 5


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_the_fuzzer_reaches_acceptance_and_refusal(tmp_path, kind):
    """The generator's valid base tables are accepted (so the fuzz tests above exercise both outcomes)."""
    rows = _base(3, 2, 3, True, True, True, 0)
    path, _ = _write(tmp_path, rows, kind, False, None)
    assert len(read_table(path).user) == 6
    rows[1]["chosen_embedding"][0] = math.nan
    path, _ = _write(tmp_path / "b", rows, kind, False, None)
    with pytest.raises(PluralError, match="chosen_embedding"):
        read_table(path)


# -- converters ------------------------------------------------------------------------------------------------

FIXTURES = Path(__file__).parent / "fixtures"
SOURCES = [("prism", FIXTURES / "prism"), ("community-alignment", FIXTURES / "community_alignment"),
           ("summarize-feedback", FIXTURES / "summarize_feedback"), ("shp", FIXTURES / "shp"),
           ("attribute-scores", FIXTURES / "attribute_scores")]


@st.composite
def damaged_source(draw):
    """(source, folder with one of its files damaged: a line dropped, cut or mangled, bytes cut or replaced)."""
    source, folder = draw(st.sampled_from(SOURCES))
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    victim = draw(st.sampled_from(files))
    data = victim.read_bytes()
    lines = data.split(b"\n")
    how = draw(st.sampled_from(["drop_line", "cut_line", "mangle", "truncate", "bytes", "type"]))
    i = draw(st.integers(0, len(lines) - 1))
    if how == "drop_line":
        del lines[i]
    elif how == "cut_line":
        lines[i] = lines[i][: draw(st.integers(0, max(len(lines[i]) - 1, 0)))]
    elif how == "mangle":
        lines[i] = lines[i].replace(b'"', b"", 1).replace(b",", b";", 1)
    elif how == "type":  # a string value becomes a number, a number becomes null
        lines[i] = lines[i].replace(b': "', b": 12345, \"", 1).replace(b": 1", b": null, \"x\": 1", 1)
    new = b"\n".join(lines)
    if how == "truncate":
        new = data[: draw(st.integers(0, len(data)))]
    elif how == "bytes":
        k = draw(st.integers(0, max(len(data) - 4, 0)))
        new = data[:k] + draw(st.sampled_from([b"\xff\xfe", b"\x00\x00", b"NaN", b"{", b"\"\""])) + data[k + 2:]
    return source, folder, victim, new


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          derandomize=True)
@given(damaged_source())
def test_converters_accept_or_refuse_in_one_line(tmp_path_factory, capsys, case):
    source, folder, victim, new = case
    work = tmp_path_factory.mktemp("src") / folder.name
    shutil.copytree(folder, work)
    (work / victim.relative_to(folder)).write_bytes(new)
    out = work.parent / "out.parquet"
    code = main(["convert", source, str(work), str(out)])
    err = capsys.readouterr().err.strip()
    assert code in (0, 2), err
    if code == 2:
        assert err.startswith("plural: error: ") and len(err.splitlines()) == 1, err
        assert not out.exists()
    else:
        assert len(read_table(out).user) > 0  # what was written is a valid table


# -- plural embed ----------------------------------------------------------------------------------------------

WORDS = ["tea", "coffee", "a short answer", "a longer answer with more words in it", "Grüße, ça va ?", "数据", "🙂"]
BAD_TEXTS = [None, 7, 1.5, True, ["a list"], {"k": "v"}, "", " ", "x" * 100_000, "\x00zero", "é" * 3000]


@st.composite
def corrupted_texts(draw):
    """(rows of a text-only table, corruptions applied, file kind, split into a directory, file damage)."""
    n_users, per_user = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    prompt, group = draw(st.booleans()), draw(st.booleans())
    rows = []
    for i in range(n_users * per_user):
        r = {"user_id": f"u{i % n_users}", "chosen": draw(st.sampled_from(WORDS)), "rejected": draw(st.sampled_from(WORDS))}
        if prompt:
            r["prompt"] = draw(st.sampled_from(WORDS + [None]))
        if group:
            r["group"] = f"g{i % n_users % 2}"
        rows.append(r)
    applied = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["text", "drop_column", "old_embedding", "ragged_embedding", "duplicate", "user_type",
                                     "prompt_in_one_file"]))
        r = rows[draw(st.integers(0, len(rows) - 1))]
        if kind == "text":
            r[draw(st.sampled_from(["chosen", "rejected", "prompt"]))] = draw(st.sampled_from(BAD_TEXTS))
        elif kind == "drop_column":
            col = draw(st.sampled_from(sorted(r)))
            for row in rows:
                row.pop(col, None)
        elif kind == "old_embedding":  # an earlier embedding, to be replaced
            for row in rows:
                row["chosen_embedding"], row["rejected_embedding"] = [0.5, 0.5], [0.1, 0.9]
        elif kind == "ragged_embedding":
            r["chosen_embedding"] = [0.5]
        elif kind == "duplicate":
            rows.append(dict(r))
        elif kind == "user_type":
            r["user_id"] = draw(st.sampled_from([7, None, ["u"], ""]))
        elif kind == "prompt_in_one_file":
            rows[-1]["prompt"] = "only here"
        applied.append(kind)
    return rows, applied, draw(st.sampled_from(["jsonl", "parquet"])), draw(st.booleans()), \
        draw(st.sampled_from([None, None, "truncate", "utf8"]))


@settings(max_examples=int(os.environ.get("PLURAL_FUZZ_EMBED", 60)), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(corrupted_texts())
def test_embed_accepts_every_row_or_refuses_in_one_line(tmp_path_factory, capsys, monkeypatch, case):
    rows, applied, kind, as_dir, damage = case
    monkeypatch.setenv("PLURAL_CACHE", str(tmp_path_factory.getbasetemp() / "embed-fuzz-cache"))  # shared: fast
    monkeypatch.setenv("PLURAL_EMBED_BLOCK", "2")  # written block by block, as a long table is
    folder = tmp_path_factory.mktemp("fuzz")
    path, files = _write(folder, rows, kind, as_dir, damage)
    out = folder / "out.parquet"
    code = main(["embed", str(path), str(out)])
    err = capsys.readouterr().err.strip()
    event(f"exit {code}: " + (err.split(": ", 3)[-1][:50] if code else ""))
    assert code in (0, 2), err
    if code == 2:
        assert err.startswith("plural: error: ") and len(err.splitlines()) == 1, err
        assert path.name in err, err
        assert not out.exists() and not list(folder.glob(".*.tmp"))
        return
    data = read_table(out)
    assert len(data.user) == _stored_rows(files, rows)  # every row, none dropped
    norms = np.linalg.norm(np.concatenate([data.chosen, data.rejected]), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-4)  # every text embedded (no zero row left unfilled)
