"""Crash safety: damaged run files are one-line errors naming the file, `fit --resume` falls back to the
previous good checkpoint, every run / output file is written atomically, `plural embed` killed with
SIGKILL keeps the chunks it finished (a rerun computes only the rest and writes the same bytes), and
`plural convert` killed while writing leaves the earlier table whole (the rerun writes the same bytes)."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from plural import checkpoint, files
from plural.cli import main
from plural.embed import minilm

# two checkpoints are kept: steps 80 and 100 (train.ckpt_every=40, the last step always)
FAST = ["--set", "model.hidden=(16,)", "--set", "train.steps=100", "--set", "batch_size=64", "--set", "train.ckpt_every=40"]


def _fit(data, out, *extra):
    return main(["fit", "--model", "bt", "--data", str(data), "--out", str(out)] + FAST + list(extra))


@pytest.fixture(scope="module")
def fitted(tiny, tmp_path_factory):
    """A finished run, its evaluation output, and the tiny population's folder."""
    _, d = tiny
    run = tmp_path_factory.mktemp("crash") / "run"
    assert _fit(d / "train.parquet", run) == 0
    ev = run.parent / "evaluate.json"
    assert main(["evaluate", "--run", str(run), "--data", str(d / "test.parquet"), "--out", str(ev)]) == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["100", "80"]
    return run, ev, d


def _copy(run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def _truncate(path: Path) -> None:
    size = path.stat().st_size
    assert size > 1, path
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def _data_file(step_dir: Path, item: str = "state") -> Path:
    """The largest data file of an item (parameter / optimiser arrays, OCDBT), one that restoring reads: under
    ITEM/d/ (Orbax merges the per-process files of ITEM/ocdbt.process_0/d/ into those)."""
    return max((step_dir / item / "d").iterdir(), key=lambda p: p.stat().st_size)


CHECKPOINT_FILES = {
    "data": _data_file,
    "manifest": lambda s: s / "state" / "manifest.ocdbt",
    "metadata": lambda s: s / "state" / "_METADATA",
}


def _evaluate(run, d, out):
    return main(["evaluate", "--run", str(run), "--data", str(d / "test.parquet"), "--out", str(out)])


def _resume(run, d):
    return _fit(d / "train.parquet", run, "--resume")


def _one_line(capsys, *needles) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


def _relative(path: Path, run: Path) -> str:
    return str(path.relative_to(run.parent))


@pytest.mark.parametrize("which", sorted(CHECKPOINT_FILES))
def test_damaged_checkpoint_file_is_one_line_naming_it(fitted, tmp_path, capsys, which, monkeypatch):
    run0, _, d = fitted
    run = _copy(run0, tmp_path)
    monkeypatch.chdir(tmp_path)  # the run named relatively, as a user would: messages name it the same way
    rel = Path("run")
    damaged = [CHECKPOINT_FILES[which](run / "checkpoints" / s) for s in ("100", "80")]
    for f in damaged:
        _truncate(f)
    named = str(rel / damaged[0].relative_to(run))
    assert _evaluate(rel, d, tmp_path / "m.json") == 2
    _one_line(capsys, f"plural: error: {named}: damaged checkpoint (step 100)", "truncated")
    assert not (tmp_path / "m.json").exists()
    # both checkpoints damaged: nothing to fall back to
    assert _resume(rel, d) == 2
    _one_line(capsys, f"plural: error: {named}: damaged checkpoint (step 100)", "no earlier good checkpoint")


@pytest.mark.parametrize("which", ["data", "manifest"])
def test_damaged_checkpoint_without_checksums_is_still_one_line(fitted, tmp_path, capsys, which):
    """A checkpoint without its checksum record (an older plural's): Orbax's own error, caught, in one line."""
    run0, _, d = fitted
    run = _copy(run0, tmp_path)
    for s in ("100", "80"):
        (run / "checkpoints" / s / checkpoint.SEAL).unlink()
        _truncate(CHECKPOINT_FILES[which](run / "checkpoints" / s))
    assert _evaluate(run, d, tmp_path / "m.json") == 2
    _one_line(capsys, f"{run}/checkpoints/100", "damaged checkpoint (step 100): Orbax cannot read it")
    assert _resume(run, d) == 2
    _one_line(capsys, f"{run}/checkpoints/100", "no earlier good checkpoint")


def test_resume_falls_back_to_the_previous_good_checkpoint(fitted, tmp_path, capsys):
    run0, ev0, d = fitted
    run = _copy(run0, tmp_path)
    (run / "metrics.json").unlink()
    damaged = run / "checkpoints" / "100" / "state" / "_METADATA"
    _truncate(damaged)
    assert _resume(run, d) == 0
    err = _one_line(capsys, f"plural: warning: {damaged}: damaged checkpoint (step 100)", "resuming from step 80")
    assert err.startswith("plural: warning:")
    # trained 80 -> 100 again: the same metrics (bytes) as the uninterrupted run, and the same evaluation
    assert (run / "metrics.json").read_bytes() == (run0 / "metrics.json").read_bytes()
    assert (run / "checkpoints-damaged" / "100" / "state" / "_METADATA").is_file()  # set aside, not deleted
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["100", "80"]
    assert _evaluate(run, d, tmp_path / "m.json") == 0
    assert (tmp_path / "m.json").read_bytes() == ev0.read_bytes()
    # the rewritten step 100 is sealed again, and a damaged older one alone does not matter for evaluate
    assert (run / "checkpoints" / "100" / checkpoint.SEAL).is_file()
    _truncate(_data_file(run / "checkpoints" / "80"))
    assert _evaluate(run, d, tmp_path / "m2.json") == 0


def test_resume_falls_back_from_a_damaged_data_file_of_the_best_parameters(fitted, tmp_path, capsys):
    run0, _, d = fitted
    run = _copy(run0, tmp_path)
    best = _data_file(run / "checkpoints" / "100", "best")
    best.write_bytes(b"\0" * best.stat().st_size)  # same size, other bytes: only the checksum sees it
    assert _evaluate(run, d, tmp_path / "m.json") == 2
    _one_line(capsys, str(best), "SHA-256 mismatch")
    assert _resume(run, d) == 0
    _one_line(capsys, "resuming from step 80")
    assert (run / "metrics.json").read_bytes() == (run0 / "metrics.json").read_bytes()


def test_damaged_seen_states_is_one_line_and_resume_writes_it_again(fitted, tmp_path, capsys):
    run0, ev0, d = fitted
    run = _copy(run0, tmp_path)
    _truncate(run / "seen_states.npz")
    assert _evaluate(run, d, tmp_path / "m.json") == 2
    _one_line(capsys, f"plural: error: {run}/seen_states.npz: damaged", "plural fit --resume")
    assert _resume(run, d) == 0  # the checkpoints are intact: resuming recomputes the derived file
    capsys.readouterr()
    assert _evaluate(run, d, tmp_path / "m.json") == 0
    assert (tmp_path / "m.json").read_bytes() == ev0.read_bytes()


def test_damaged_config_is_one_line(fitted, tmp_path, capsys):
    run0, _, d = fitted
    run = _copy(run0, tmp_path)
    _truncate(run / "config.json")
    assert _evaluate(run, d, tmp_path / "m.json") == 2
    _one_line(capsys, f"plural: error: {run}/config.json")
    assert _resume(run, d) == 2
    _one_line(capsys, f"plural: error: {run}/config.json: damaged (JSONDecodeError")


def test_run_files_are_written_atomically(fitted, tmp_path):
    run0, _, _ = fitted
    assert not [p for p in run0.rglob("*.tmp")]  # no temporary left behind
    target = tmp_path / "f.json"
    files.write_atomic(target, "old\n")
    with pytest.raises(RuntimeError):
        with files.atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("killed while writing")
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["f.json"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- plural embed, killed ----------------------------------------------------------------------------------

CHUNK = 8


def _texts_table(path: Path, n: int = 300) -> Path:
    rng = np.random.default_rng(0)
    words = "the a of preference model user reward chosen rejected data text sentence long short quick brown fox".split()
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"user_id": f"u{i % 7}",
                                "chosen": f"{i} " + " ".join(rng.choice(words, int(rng.integers(1, 30)))),
                                "rejected": f"r{i} " + " ".join(rng.choice(words, int(rng.integers(1, 30))))}) + "\n")
    return path


def _rows(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(db, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM emb").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:  # the table is not created yet
        return 0


@pytest.mark.slow  # a subprocess killed part way (~18 s); run with pytest -m slow
def test_embed_killed_keeps_finished_chunks_and_rerun_gives_the_same_output(tmp_path, monkeypatch):
    from plural.embed.tables import embed_table

    table = _texts_table(tmp_path / "texts.jsonl")
    distinct = 600
    killed_cache, fresh_cache = tmp_path / "cache-killed", tmp_path / "cache-fresh"
    db = killed_cache / "embeddings" / f"{minilm.NAME}.sqlite"
    out = tmp_path / "out.parquet"
    env = dict(os.environ, PLURAL_CACHE=str(killed_cache), PLURAL_EMBED_CHUNK=str(CHUNK))
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from plural.cli import main; sys.exit(main(sys.argv[1:]))",
                             "embed", str(table), str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while _rows(db) < 2 * CHUNK and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)  # part way: after the first chunks are in the cache (a no-op if it ended)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    kept = _rows(db)
    assert 2 * CHUNK <= kept < distinct and kept % CHUNK == 0  # whole chunks only
    assert not out.exists()

    monkeypatch.setenv("PLURAL_CACHE", str(killed_cache))
    again = embed_table(table, out, chunk=CHUNK)
    assert again["cached"] == kept and again["computed"] == distinct - kept  # only the unfinished texts
    assert _rows(db) == distinct

    monkeypatch.setenv("PLURAL_CACHE", str(fresh_cache))
    ref = embed_table(table, tmp_path / "uninterrupted.parquet", chunk=CHUNK)
    assert ref["cached"] == 0 and ref["computed"] == distinct
    assert pq.read_table(out).equals(pq.read_table(tmp_path / "uninterrupted.parquet"))
    assert out.read_bytes() == (tmp_path / "uninterrupted.parquet").read_bytes()  # bitwise
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_embed_chunks_do_not_depend_on_what_the_cache_holds(tmp_path, monkeypatch):
    """In process: the second run after an interrupted first one encodes exactly the chunks an uninterrupted
    run encodes (the chunks are fixed by the texts), so the embeddings are bitwise equal."""
    import plural.embed as embed
    from plural.errors import PluralError

    texts = [f"text number {i} " + "word " * (i % 13) for i in range(40)]
    texts.append(texts[3])  # one repeated text
    enc = embed.get_encoder()
    calls, real = [], enc.encode

    def stop_after_two(batch, **kw):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(list(batch))
        return real(batch, **kw)

    monkeypatch.setattr(enc, "encode", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        embed.embed_texts(texts, cache_dir=tmp_path / "a", chunk=6)
    monkeypatch.setattr(enc, "encode", real)
    stats: dict = {}
    resumed = embed.embed_texts(texts, cache_dir=tmp_path / "a", chunk=6, stats=stats)
    assert stats == {"texts": 41, "distinct": 40, "cached": 12, "computed": 28}
    fresh = embed.embed_texts(texts, cache_dir=tmp_path / "b", chunk=6)
    assert resumed.tobytes() == fresh.tobytes()
    assert resumed[40].tobytes() == resumed[3].tobytes()
    monkeypatch.setenv("PLURAL_EMBED_CHUNK", "0")
    with pytest.raises(PluralError, match="chunk size"):
        embed.embed_texts(["x"], cache_dir=False)


# -- plural convert, killed --------------------------------------------------------------------------------

def _shp_dump(folder: Path, posts: int = 4000) -> Path:
    """SHP's published layout (one folder per subreddit, JSON Lines per split) with `posts` x 5 rows."""
    rng = np.random.default_rng(0)
    for sub in ("askculinary", "legaladvice"):
        (folder / sub).mkdir(parents=True)
        with open(folder / sub / "train.json", "w") as f:
            for p in range(posts // 2):
                for c in range(5):
                    a, b = (int(x) for x in rng.integers(1, 200, 2))
                    f.write(json.dumps({"post_id": f"{sub}{p}", "domain": f"{sub}_train", "history": f"question {p} " * 8,
                                        "human_ref_A": f"answer A {p}.{c} " * 10, "human_ref_B": f"answer B {p}.{c} " * 10,
                                        "labels": int(a > b), "score_A": a, "score_B": b,
                                        "score_ratio": max(a, b) / min(a, b)}) + "\n")
    return folder


@pytest.mark.slow  # a 40k-row conversion in a subprocess, killed while it writes (~15 s); run with pytest -m slow
def test_convert_killed_while_writing_keeps_the_old_output_and_a_rerun_gives_the_uninterrupted_bytes(tmp_path):
    from plural.data.sources import convert

    dump = _shp_dump(tmp_path / "shp")
    out = tmp_path / "shp.jsonl"
    out.write_text("an earlier conversion\n")
    cmd = [sys.executable, "-c", "import sys; from plural.cli import main; sys.exit(main(sys.argv[1:]))",
           "convert", "shp", str(dump), str(out), "--set", "min_score_ratio=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".shp.jsonl.*.tmp")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)  # while the table is being written
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert list(tmp_path.glob(".shp.jsonl.*.tmp"))  # it was killed mid-write ...
    assert out.read_text() == "an earlier conversion\n"  # ... and the earlier table is whole

    again = convert("shp", dump, out, min_score_ratio=1.0)
    assert len(again.table) > 10_000
    ref = convert("shp", dump, tmp_path / "uninterrupted.jsonl", min_score_ratio=1.0)
    assert out.read_bytes() == ref.out.read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))  # the killed run's temporary file went with the rerun
