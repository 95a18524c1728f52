"""The data layer: valid tables load exactly; every kind of bad input is refused with one line naming
file, column and first offending row, before any training (API and CLI)."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from plural.cli import main
from plural.data import read_table, split_pairs, split_users
from plural.errors import PluralError


def _rows(n=6, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    return [{"user_id": f"u{i % 3}", "group": f"g{i % 3 % 2}", "prompt": "p",
             "chosen_embedding": rng.normal(size=dim).tolist(), "rejected_embedding": rng.normal(size=dim).tolist(),
             "prompt_embedding": rng.normal(size=dim).tolist()} for i in range(n)]


def _write(path, rows):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_valid_table_round_trips(tmp_path, suffix):
    rows = _rows()
    data = read_table(_write(tmp_path / f"t{suffix}", rows))
    assert data.n_pairs == 6 and data.dim == 4 and data.prompt_dim == 4
    np.testing.assert_allclose(data.chosen[4], np.float32(rows[4]["chosen_embedding"]))
    assert list(data.users) == ["u0", "u1", "u2"]
    assert [data.users[u] for u in data.user] == [r["user_id"] for r in rows]
    assert [data.groups[g] for g in data.group] == [r["group"] for r in rows]


def test_directory_of_files_concatenates_in_name_order(tmp_path):
    _write(tmp_path / "b.parquet", _rows(4, seed=1))
    _write(tmp_path / "a.jsonl", _rows(3, seed=2))
    data = read_table(tmp_path)
    assert data.n_pairs == 7
    np.testing.assert_allclose(data.chosen[0], np.float32(_rows(3, seed=2)[0]["chosen_embedding"]))


def test_missing_prompt_means_one_fixed_context(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "prompt_embedding"} for r in _rows()]
    assert read_table(_write(tmp_path / "t.jsonl", rows)).prompt.shape == (6, 0)


def _bad(tmp_path, suffix, mutate):
    rows = _rows()
    mutate(rows)
    return _write(tmp_path / f"bad{suffix}", rows)


def _drop(col):
    def f(rows):
        for r in rows:
            r.pop(col)
    return f


def _set(row, col, value):
    def f(rows):
        rows[row][col] = value
    return f


BAD = {
    "missing user_id": (_drop("user_id"), "user_id", None),
    "missing embeddings": (_drop("rejected_embedding"), "rejected_embedding", None),
    "ragged": (_set(3, "chosen_embedding", [0.1, 0.2, 0.3]), "chosen_embedding", 3),
    "nan": (_set(2, "rejected_embedding", [0.1, float("nan"), 0.3, 0.4]), "rejected_embedding", 2),
    "inf in prompt": (_set(4, "prompt_embedding", [0.1, float("inf"), 0.3, 0.4]), "prompt_embedding", 4),
    "string in embedding": (_set(1, "chosen_embedding", [0.1, "x", 0.3, 0.4]), "chosen_embedding", 1),
    "embedding not a list": (_set(5, "chosen_embedding", 0.5), "chosen_embedding", 5),
    "null embedding": (_set(2, "chosen_embedding", None), "chosen_embedding", 2),
    "numeric user id": (_set(3, "user_id", 17), "user_id", 3),
    "null user id": (_set(1, "user_id", None), "user_id", 1),
    "group contradicts itself": (_set(3, "group", "other"), "group", 3),
}


MIXED_TYPES = ("string in embedding", "embedding not a list", "numeric user id")  # parquet cannot hold these
CASES = [(s, c) for c in sorted(BAD) for s in (".jsonl", ".parquet") if not (s == ".parquet" and c in MIXED_TYPES)]


@pytest.mark.parametrize("suffix,case", CASES)
def test_bad_input_is_refused_with_location(tmp_path, suffix, case):
    mutate, column, row = BAD[case]
    path = _bad(tmp_path, suffix, mutate)
    with pytest.raises(PluralError) as e:
        read_table(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and f"'{column}'" in msg
    if row is not None:
        assert f"row {row}" in msg
        if suffix == ".jsonl":
            assert f"line {row + 1}" in msg


def test_parquet_wrong_column_types(tmp_path):
    df = pd.DataFrame(_rows())
    df["user_id"] = np.arange(6)
    df.to_parquet(tmp_path / "t.parquet")
    with pytest.raises(PluralError, match=r"column 'user_id', row 0: wrong type"):
        read_table(tmp_path / "t.parquet")
    df = pd.DataFrame(_rows())
    df["chosen_embedding"] = [["a", "b"]] * 6
    df.to_parquet(tmp_path / "s.parquet")
    with pytest.raises(PluralError, match=r"column 'chosen_embedding', row 0: wrong type"):
        read_table(tmp_path / "s.parquet")


@pytest.mark.parametrize("content,expect", [
    (b"", "empty"), (b"\n\n", "empty"), (b'{"user_id": "a"}\n{not json\n', r"row 1 \(line 2\): not valid JSON"),
    (b"PAR1garbage", "cannot read"),
])
def test_unreadable_or_empty_files(tmp_path, content, expect):
    path = tmp_path / ("t.parquet" if content.startswith(b"PAR1") else "t.jsonl")
    path.write_bytes(content)
    with pytest.raises(PluralError, match=expect) as e:
        read_table(path)
    assert str(path) in str(e.value)


def test_empty_parquet_and_missing_paths(tmp_path):
    pd.DataFrame(_rows()).iloc[:0].to_parquet(tmp_path / "e.parquet")
    with pytest.raises(PluralError, match="empty"):
        read_table(tmp_path / "e.parquet")
    with pytest.raises(PluralError, match="no such file"):
        read_table(tmp_path / "absent.parquet")
    (tmp_path / "d").mkdir()
    with pytest.raises(PluralError, match="no .parquet or .jsonl"):
        read_table(tmp_path / "d")


def test_attribute_columns_must_pair_and_be_finite(tmp_path):
    rows = _rows()
    for r in rows:
        r["chosen_attr_humor"], r["rejected_attr_humor"] = 0.5, 0.1
    data = read_table(_write(tmp_path / "ok.jsonl", rows))
    assert data.attr_names == ("humor",) and data.attr_chosen.shape == (6, 1)
    rows[2]["rejected_attr_humor"] = float("nan")
    with pytest.raises(PluralError, match=r"column 'rejected_attr_humor', row 2"):
        read_table(_write(tmp_path / "nan.jsonl", rows))
    for r in rows:
        r.pop("rejected_attr_humor")
    with pytest.raises(PluralError, match=r"rejected_attr_humor"):
        read_table(_write(tmp_path / "unpaired.jsonl", rows))


def test_table_without_responses_names_both_ways_to_give_them(tmp_path):
    """Neither embeddings nor text for the responses: the error names the columns that would do."""
    rows = [{"user_id": "a", "prompt": "q"}]
    with pytest.raises(PluralError, match="chosen_embedding") as e:
        read_table(_write(tmp_path / "t.jsonl", rows))
    assert "\n" not in str(e.value) and "t.jsonl" in str(e.value)


def test_cli_refuses_bad_input_in_one_line_without_traceback(tmp_path):
    path = _bad(tmp_path, ".jsonl", BAD["ragged"][0])
    proc = subprocess.run([sys.executable, "-m", "plural.cli", "fit", "--model", "bt", "--data", str(path),
                           "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "chosen_embedding" in lines[0] and "row 3" in lines[0] and str(path) in lines[0]
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any training


def test_cli_in_process_errors(tmp_path, capsys):
    path = _bad(tmp_path, ".parquet", BAD["nan"][0])
    assert main(["fit", "--model", "bt", "--data", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "rejected_embedding" in err and "row 2" in err
    assert main(["fit", "--model", "nope", "--data", str(path), "--out", str(tmp_path / "r")]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_user_and_pair_splits(pop3):
    pop, d = pop3
    data = read_table(d / "train.parquet")
    seen, unseen = split_users(data, 0.25, seed=0)
    assert set(seen.users).isdisjoint(unseen.users)
    assert seen.n_pairs + unseen.n_pairs == data.n_pairs
    assert set(unseen.groups) == set(data.groups)  # every group keeps seen and unseen users
    train, test = split_pairs(data, 0.2, seed=0)
    assert train.n_pairs + test.n_pairs == data.n_pairs and set(test.users) <= set(train.users)


@pytest.mark.slow  # a fresh fit process (~15 s); run with pytest -m slow
def test_bench_memory_reports_the_peak_against_the_arrays(tmp_path):
    out = tmp_path / "memory.json"
    assert main(["bench", "memory", "--pairs", "3000", "--dim", "8", "--steps", "2", "--no-prompt", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    (size,) = res["sizes"]
    assert size["arrays_gb"] == 3000 * 8 * 2 * 4 / 1e9 and not res["prompt_embeddings"]
    assert size["peak_rss_gb"] > size["arrays_gb"] and size["peak_over_arrays"] == pytest.approx(size["peak_rss_gb"] / size["arrays_gb"])
