"""`plural split` (plural.data.split) and the hh-hidden-context converter."""

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from plural.cli import main
from plural.data import read_frame
from plural.data.sources import convert
from plural.data.split import SplitConfig, split_rows, split_table
from plural.errors import PluralError

GROUP_SIZES = {"g0": 10, "g1": 5, "g2": 1}  # 16 users
HH = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "hh-hidden-context" / "both.jsonl.gz"


def make_rows(seed=0):
    """~130 comparisons of 16 users in 3 groups, users interleaved in file order; every user answers the
    prompt "common" first, then prompts drawn from a pool of 150 (some shared across users)."""
    rng = np.random.default_rng(seed)
    rows = []
    for g, n in GROUP_SIZES.items():
        for u in range(n):
            for j in range(5 + (3 * u) % 8):
                k = 150 if j == 0 else int(rng.integers(150))
                rows.append({"user_id": f"{g}-u{u}", "group": g, "prompt": "common" if k == 150 else f"p{k}",
                             "prompt_embedding": [float(k), 1.0], "chosen_embedding": rng.normal(size=2).tolist(),
                             "rejected_embedding": rng.normal(size=2).tolist(), "tag": j})
    order = rng.permutation(len(rows))
    return [dict(rows[i], row_id=int(n)) for n, i in enumerate(order)]


@pytest.fixture
def frame():
    return pd.DataFrame(make_rows())


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def roles(parts):
    """{user: "seen" | "val" | "test"} read off the outputs: seen users have train rows, the others must lie in one part."""
    out = {}
    for name in ("train", "val", "test"):
        for u in parts[name]["user_id"].unique():
            out.setdefault(u, "seen" if name == "train" else name)
            if out[u] != "seen":
                assert out[u] == name, f"unseen user {u} in {out[u]} and {name}"
    return out


@pytest.mark.parametrize("disjoint", ["none", "prompt"])
def test_users_do_not_cross_splits_and_groups_are_stratified(frame, disjoint):
    parts = split_table(frame, SplitConfig(disjoint=disjoint))
    r = roles(parts)
    assert set(r) == set(frame["user_id"])
    group = frame.groupby("user_id")["group"].first()
    unseen = pd.Series({u: role for u, role in r.items() if role != "seen"})
    # 20% of 16 users = 3.2 -> 3: g0 2 of 10, g1 1 of 5, the one-user group keeps its user seen;
    # the 3 unseen users are divided 1 : 2 between val and test (val_fraction 0.1 : test_fraction 0.2)
    assert group[unseen.index].value_counts().to_dict() == {"g0": 2, "g1": 1}
    assert sorted(unseen) == ["test", "test", "val"]


def test_seen_users_pairs_split_by_the_fractions(frame):
    parts = split_table(frame, SplitConfig(val_fraction=0.2, test_fraction=0.3))
    r = roles(parts)
    seen = [u for u, role in r.items() if role == "seen"]
    total = frame["user_id"].isin(seen).sum()
    for name, fraction in [("val", 0.2), ("test", 0.3)]:
        held = parts[name][parts[name]["user_id"].isin(seen)]
        assert len(held) == int(np.floor(fraction * total + 0.5))  # the totals match the shares
        per_user = held["user_id"].value_counts().reindex(seen, fill_value=0)
        size = frame["user_id"].value_counts()[seen]
        assert (abs(per_user - fraction * size) < 1.5).all()  # and so does each user's share, within rounding
    assert (parts["train"]["user_id"].value_counts()[seen] >= 1).all()


@pytest.mark.parametrize("rows_per_user", [2, 10])
@pytest.mark.parametrize("disjoint", ["none", "prompt"])
def test_every_seen_user_keeps_a_train_pair(rows_per_user, disjoint):
    n = 20 * rows_per_user
    rows = pd.DataFrame({"user_id": [f"u{i // rows_per_user}" for i in range(n)], "prompt": [f"p{i}" for i in range(n)],
                         "chosen": "a", "rejected": "b"})
    parts = split_table(rows, SplitConfig(unseen_fraction=0, val_fraction=0.5, test_fraction=0.45, disjoint=disjoint))
    # 95% asked for, so all but one row of each user is held out: exactly one train row each
    assert sorted(parts["train"]["user_id"]) == sorted(rows["user_id"].unique())


@pytest.mark.parametrize("disjoint", ["none", "prompt"])
def test_every_row_lands_once_in_input_order_with_its_columns(frame, disjoint):
    parts = split_table(frame, SplitConfig(disjoint=disjoint))
    ids = np.concatenate([p["row_id"].to_numpy() for p in parts.values()])
    assert sorted(ids) == sorted(frame["row_id"]) and len(ids) == len(frame)
    for p in parts.values():
        assert len(p) and (np.diff(p["row_id"].to_numpy()) > 0).all()  # make_rows numbers rows in file order
        pd.testing.assert_frame_equal(p, frame.set_index("row_id", drop=False).loc[p["row_id"]].reset_index(drop=True))


def test_deterministic_per_seed(frame):
    def ids(seed):
        return {k: p["row_id"].tolist() for k, p in split_table(frame, SplitConfig(seed=seed)).items()}

    assert ids(0) == ids(0)
    assert ids(0) != ids(1)
    assert set(split_table(frame, SplitConfig(seed=0))["val"]["user_id"]) != \
        set(split_table(frame, SplitConfig(seed=3))["val"]["user_id"])


@pytest.mark.parametrize("column", ["prompt", "prompt_embedding"])
def test_disjoint_prompt_keeps_train_prompts_out_of_val_and_test(frame, column):
    if column == "prompt_embedding":
        frame = frame.drop(columns="prompt")
    key = frame[column].map(str)
    split = split_rows(frame, SplitConfig(disjoint="prompt", unseen_fraction=0.3))
    parts = split.tables(frame.assign(key=key))
    held = {name: set(parts[name]["key"]) for name in ("val", "test")}
    assert not set(parts["train"]["key"]) & (held["val"] | held["test"])
    assert len(parts["train"]) > 0.25 * len(frame)
    r = roles(parts)
    assert sum(role == "seen" for role in r.values()) == 11  # 30% of 16 users = 4.8 -> 5 unseen; none lost its train rows
    seen_rows = pd.concat([p[p["user_id"].map(r) == "seen"].assign(part=n) for n, p in parts.items()])
    assert (seen_rows.groupby("key")["part"].nunique() == 1).all()  # a seen user's prompt lies in one part
    # every user answered "common", among them val-unseen and test-unseen users: it is in both, and nowhere in train
    common = key[frame[column].map(str) == key[frame["tag"] == 0].iloc[0]].iloc[0]
    assert common in held["val"] and common in held["test"]
    assert split.shared_val_test_prompts == len(held["val"] & held["test"]) >= 1


def test_disjoint_none_shares_prompts(frame):
    parts = split_table(frame, SplitConfig())
    assert set(parts["train"]["prompt"]) & set(parts["test"]["prompt"])  # what disjoint=prompt prevents does happen


def test_bad_fractions_and_options_are_refused(frame):
    for cfg, msg in [(SplitConfig(unseen_fraction=-0.1), "unseen_fraction=-0.1"),
                     (SplitConfig(val_fraction=0.5, test_fraction=0.5), "val_fraction \\+ test_fraction = 1"),
                     (SplitConfig(unseen_fraction=1.0), "unseen_fraction=1.0"),
                     (SplitConfig(val_fraction=0, test_fraction=0), "needs val_fraction or test_fraction"),
                     (SplitConfig(disjoint="user"), "split.disjoint=user: expected one of none, prompt")]:
        with pytest.raises(PluralError, match=msg):
            split_table(frame, cfg)
    with pytest.raises(PluralError, match="needs a 'prompt' or 'prompt_embedding' column"):
        split_table(frame.drop(columns=["prompt", "prompt_embedding"]), SplitConfig(disjoint="prompt"))


# ---------------------------------------------------------------- command line


def test_cli_jsonl_in_jsonl_out_rows_unchanged(tmp_path, capsys, monkeypatch):
    rows = [{k: v for k, v in r.items() if not k.endswith("_embedding")} | {"chosen": "yes", "rejected": "no"}
            for r in make_rows()]  # text only: split must not embed
    monkeypatch.setattr("plural.data.table.embed_pending", lambda *a, **k: pytest.fail("split embedded the table"))
    src = write_jsonl(tmp_path / "prefs.jsonl", rows)
    assert main(["split", str(src), str(tmp_path / "out"), "--set", "seed=2", "--set", "disjoint=prompt"]) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and "prompts in both val and test" in line
    back = {n: [json.loads(x) for x in (tmp_path / "out" / f"{n}.jsonl").read_text().splitlines()] for n in ("train", "val", "test")}
    assert f"train {len(back['train'])} rows" in line
    assert sorted((r for p in back.values() for r in p), key=lambda r: r["row_id"]) == rows
    # a second run into the same OUTDIR is refused
    assert main(["split", str(src), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "already holds split tables" in err


def test_cli_parquet_and_directory_give_parquet(tmp_path, capsys):
    rows = make_rows()
    pd.DataFrame(rows[:60]).to_parquet(tmp_path / "a.parquet")
    write_jsonl(tmp_path / "b.jsonl", rows[60:])
    for src, out in [(tmp_path / "a.parquet", tmp_path / "o1"), (tmp_path, tmp_path / "o2")]:
        assert main(["split", str(src), str(out)]) == 0
        assert sorted(p.name for p in out.iterdir()) == ["test.parquet", "train.parquet", "val.parquet"]
    schema = pq.read_schema(tmp_path / "o1" / "train.parquet")
    assert schema.field("chosen_embedding").type == pq.read_schema(tmp_path / "a.parquet").field("chosen_embedding").type
    assert str(schema.field("tag").type) == "int64"
    got = pd.concat([pd.read_parquet(tmp_path / "o2" / f"{n}.parquet") for n in ("train", "val", "test")])
    assert sorted(got["row_id"]) == list(range(len(rows)))
    capsys.readouterr()


@pytest.mark.parametrize("mutate, sets, expect", [
    (lambda rs: [r.pop("user_id") for r in rs], [], "column 'user_id'"),
    (lambda rs: rs[3]["chosen_embedding"].append(0.5), [], "column 'chosen_embedding', row 3 (line 4): ragged"),
    (lambda rs: None, ["val_fraction=0.6", "test_fraction=0.4"], "val_fraction + test_fraction = 1"),
    (lambda rs: None, ["unseen_fraction=-1"], "unseen_fraction=-1"),
    (lambda rs: None, ["shots=3"], "unknown hyper-parameter"),
    (lambda rs: [r.pop(c) for r in rs for c in ("prompt", "prompt_embedding")], ["disjoint=prompt"], "needs a 'prompt'"),
])
def test_cli_refuses_bad_input_with_one_line(tmp_path, capsys, mutate, sets, expect):
    rows = make_rows()
    mutate(rows)
    src = write_jsonl(tmp_path / "bad.jsonl", rows)
    argv = ["split", str(src), str(tmp_path / "out")] + [a for s in sets for a in ("--set", s)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and expect in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_directory_files_must_agree_on_embedding_columns(tmp_path):
    rows = make_rows()
    write_jsonl(tmp_path / "a.jsonl", rows[:5])
    write_jsonl(tmp_path / "b.jsonl", [{k: v for k, v in r.items() if k != "prompt_embedding"} for r in rows[5:]])
    with pytest.raises(PluralError, match="'prompt_embedding' is in a.jsonl but not in b.jsonl"):
        read_frame(tmp_path)


# ---------------------------------------------------------------- hh-hidden-context


def hh_line(prompt, r0, r1, objective, label, index, **extra):
    return {"prompt": prompt, "responses": [r0, r1], "objective": objective, "label": label, "original_label": 1 - label,
            "data_subset": "harmless", "chosen": "orig chosen", "rejected": "orig rejected", "Index": index, **extra}


def write_gz(path, records):
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in records))
    return path


def hh_fixture(tmp_path):
    recs = [hh_line(f"q{i}", f"a{i}", f"b{i}", "helpful" if i % 3 else "harmless", i % 2, i) for i in range(12)]
    recs.insert(5, hh_line("same", "x", "x", "helpful", 0, 99))
    return write_gz(tmp_path / "both.jsonl.gz", recs)


def test_hh_converter_pairs_users_and_pass_through(tmp_path):
    r = convert("hh-hidden-context", hh_fixture(tmp_path), users_per_objective=2)
    t = r.table
    assert r.stats == {"identical": 1}
    assert t["prompt"].tolist() == [f"q{i}" for i in range(12)]  # file order, identical pair skipped
    assert t["chosen"].tolist() == [f"b{i}" if i % 2 else f"a{i}" for i in range(12)]  # responses[label]
    assert t["rejected"].tolist() == [f"a{i}" if i % 2 else f"b{i}" for i in range(12)]
    assert t["group"].tolist() == ["helpful" if i % 3 else "harmless" for i in range(12)]
    assert t["original_label"].tolist() == [1 - i % 2 for i in range(12)] and t["Index"].tolist() == [str(i) for i in range(12)]
    assert (t["data_subset"] == "harmless").all()
    assert t["user_id"].value_counts().to_dict() == {"helpful-0": 4, "helpful-1": 4, "harmless-0": 2, "harmless-1": 2}
    assert (t["user_id"].str.rsplit("-", n=1).str[0] == t["group"]).all()
    assert convert("hh-hidden-context", tmp_path / "both.jsonl.gz", users_per_objective=2).table.equals(t)
    others = [convert("hh-hidden-context", tmp_path, users_per_objective=2, seed=s).table["user_id"].tolist() for s in (1, 2, 3)]
    assert any(o != t["user_id"].tolist() for o in others)


def test_hh_converter_cli_and_split_by_prompt(tmp_path, capsys):
    src = hh_fixture(tmp_path)
    assert main(["convert", "hh-hidden-context", str(src), str(tmp_path / "hh.jsonl"), "--set", "users_per_objective=3"]) == 0
    assert "12 comparisons, 6 users, 2 groups (skipped: identical 1)" in capsys.readouterr().out
    assert main(["split", str(tmp_path / "hh.jsonl"), str(tmp_path / "s"), "--set", "disjoint=prompt"]) == 0
    assert sum(len((tmp_path / "s" / f"{n}.jsonl").read_text().splitlines()) for n in ("train", "val", "test")) == 12
    assert main(["convert", "hh-hidden-context", str(src), str(tmp_path / "x.jsonl"), "--group", "data_subset"]) == 2
    assert "no group choice" in capsys.readouterr().err


@pytest.mark.parametrize("edit, expect", [
    (lambda r: r.update(label=2), "column 'label', row 4 (line 5): expected 0 or 1"),
    (lambda r: r.update(responses=["only one"]), "column 'responses', row 4 (line 5): expected a list of 2"),
    (lambda r: r["responses"].__setitem__(1, 7), "column 'responses[1]', row 4 (line 5): wrong type"),
    (lambda r: r.pop("objective"), "column 'objective', row 4 (line 5): missing field"),
    (lambda r: r.update(prompt=None), "column 'prompt', row 4 (line 5): missing field"),
])
def test_hh_converter_refuses_malformed_lines(tmp_path, edit, expect):
    recs = [hh_line(f"q{i}", f"a{i}", f"b{i}", "helpful", 0, i) for i in range(6)]
    edit(recs[4])
    src = write_gz(tmp_path / "bad.jsonl.gz", recs)
    with pytest.raises(PluralError, match="bad.jsonl.gz") as e:
        convert("hh-hidden-context", src)
    assert expect in str(e.value)
    with pytest.raises(PluralError, match="users_per_objective=0"):
        convert("hh-hidden-context", src, users_per_objective=0)


def test_hh_converter_on_the_real_file():
    with gzip.open(HH, "rt", encoding="utf-8") as fh:
        raw = [json.loads(line) for line in fh]
    assert len(raw) == 4043
    t = convert("hh-hidden-context", HH).table
    # 2,157 helpful and 1,886 harmless lines; two helpful lines compare a response with itself and are skipped
    assert t["group"].value_counts().to_dict() == {"helpful": 2155, "harmless": 1886}
    assert t["user_id"].nunique() == 40
    counts = t.groupby("group")["user_id"].value_counts()
    assert set(counts["helpful"]) == {107, 108} and set(counts["harmless"]) == {94, 95}
    kept = [r for r in raw if r["responses"][0] != r["responses"][1]]
    assert t["chosen"].tolist() == [r["responses"][r["label"]] for r in kept]
    assert t["Index"].tolist() == [str(r["Index"]) for r in kept]
