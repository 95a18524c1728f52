"""`plural split`: one preference table -> train / val / test tables, split by user and by pair.

Users are split into seen, validation-unseen and test-unseen users; the seen users' pairs are split into
train / val / test. A model is fitted on train, selected on val (seen users' held-out pairs and the
val-unseen users, who are adapted from their first K rows) and reported on test.

    cfg = SplitConfig(unseen_fraction=0.2, val_fraction=0.1, test_fraction=0.2, seed=0, disjoint="prompt")
    parts = split_table(frame, cfg)                 # {"train": df, "val": df, "test": df}

Rules (deterministic per seed; every input row lands in exactly one output, in input order):

- Users. A share `unseen_fraction` of the users is unseen; the unseen users are divided between val and
  test in proportion val_fraction : test_fraction. With a `group` column the split is stratified: each
  group gets its share (largest remainders, so small groups still add up to the overall share) and keeps
  at least one seen user. All rows of a val-unseen user go to val, of a test-unseen user to test.
- Pairs (`disjoint=none`). Each seen user's rows are split at random into train / val / test with shares
  val_fraction and test_fraction of that user's rows (rounded so that the totals match the shares);
  every seen user keeps at least one train row.
- Prompts (`disjoint=prompt`). No prompt is in train and in val or test. The prompt is the `prompt` text
  (a missing prompt is the empty text) or, without text, the prompt embedding. Seen users' rows on a
  prompt that a val-unseen / test-unseen user answered go to val / test (test when both did). The other
  prompts of seen users are split as units, all of a prompt's rows in one split: shares val_fraction and
  test_fraction of those prompts are held out, at random, skipping any prompt whose hold-out would leave
  one of its users without a train row. A seen user all of whose prompts were answered by unseen users
  has no train row (counted as `seen_without_train`). A prompt answered by both a val-unseen and a
  test-unseen user is in val and in test (counted as `shared_val_test_prompts`).
"""

from __future__ import annotations

import dataclasses
from typing import Literal
from pathlib import Path

import numpy as np
import pandas as pd

from plural.config import check_config
from plural.errors import PluralError

PARTS = ("train", "val", "test")  # part codes 0, 1, 2; user roles 0 seen, 1 val-unseen, 2 test-unseen


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """How `plural split` divides a table (`--set key=value`)."""

    unseen_fraction: float = 0.2  # share of users held out whole (val-unseen + test-unseen)
    val_fraction: float = 0.1  # share of each seen user's pairs (or prompts) in val; also weighs unseen users to val
    test_fraction: float = 0.2  # share of each seen user's pairs (or prompts) in test; also weighs unseen users to test
    seed: int = 0
    disjoint: Literal["none", "prompt"] = "none"  # prompt: no prompt in train and in val / test

    def check(self) -> None:
        """Refuse fractions outside [0, 1) or val + test >= 1, with one line (field types and the `disjoint`
        option are `check_config`'s)."""
        for name in ("unseen_fraction", "val_fraction", "test_fraction"):
            v = getattr(self, name)
            if not 0 <= v < 1:
                raise PluralError(f"split: {name}={v} must lie in [0, 1)")
        if self.val_fraction + self.test_fraction >= 1:
            raise PluralError(f"split: val_fraction + test_fraction = {self.val_fraction + self.test_fraction:g} must be "
                              "below 1 (seen users keep train pairs)")
        if self.unseen_fraction > 0 and self.val_fraction + self.test_fraction == 0:
            raise PluralError(f"split: unseen_fraction={self.unseen_fraction} needs val_fraction or test_fraction > 0 "
                              "(they divide the unseen users between val and test)")
        check_config(self, "split")  # types and the Literal options


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """Where every row of a table goes.

    `part` (N,) int8: 0 train, 1 val, 2 test per row; `user` (N,) int64 index into `users` (U,) ids;
    `role` (U,) int8: 0 seen, 1 val-unseen, 2 test-unseen. `shared_val_test_prompts` is the number of
    prompts in both val and test (None unless disjoint=prompt); `seen_without_train` the number of seen
    users left without a train row (only possible with disjoint=prompt).
    """

    part: np.ndarray
    user: np.ndarray
    users: np.ndarray
    role: np.ndarray
    shared_val_test_prompts: int | None
    seen_without_train: int

    def tables(self, frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """{"train", "val", "test"}: the rows of `frame` in each part, input order, all columns, fresh index."""
        return {name: frame.iloc[np.flatnonzero(self.part == i)].reset_index(drop=True) for i, name in enumerate(PARTS)}

    def summary(self) -> str:
        """One line: rows and users per part, users per role, and the prompt notes."""
        parts = []
        for i, name in enumerate(PARTS):
            rows = self.part == i
            parts.append(f"{name} {int(rows.sum())} rows / {len(np.unique(self.user[rows]))} users")
        roles = np.bincount(self.role, minlength=3)
        line = f"{', '.join(parts)} (users: {roles[0]} seen, {roles[1]} val-unseen, {roles[2]} test-unseen)"
        if self.shared_val_test_prompts is not None:
            line += f"; {self.shared_val_test_prompts} prompts in both val and test"
        if self.seen_without_train:
            line += f"; {self.seen_without_train} seen users without a train row (all their prompts answered by unseen users)"
        return line


def split_table(frame: pd.DataFrame, cfg: SplitConfig, source: str = "table") -> dict[str, pd.DataFrame]:
    """{"train", "val", "test"} DataFrames of `frame`'s rows (all columns, input order) under `cfg`."""
    return split_rows(frame, cfg, source).tables(frame)


def split_rows(frame: pd.DataFrame, cfg: SplitConfig, source: str = "table") -> Split:
    """Assign every row of `frame` (columns `user_id`, optional `group`, `prompt` / `prompt_embedding`)
    to train / val / test under `cfg` (module docstring); `source` names the table in errors."""
    cfg.check()
    if len(frame) == 0:
        raise PluralError(f"{source}: the table is empty (no rows)")
    if "user_id" not in frame.columns:
        raise PluralError(f"{source}: column 'user_id': required column is missing")
    rng = np.random.default_rng(cfg.seed)
    user, users = pd.factorize(frame["user_id"], sort=False)
    user = user.astype(np.int64)
    role = _user_roles(_user_strata(frame, user, len(users)), cfg, rng)
    part = role[user].astype(np.int8)  # unseen users' rows: their role's part; seen users' rows: train so far
    seen = role[user] == 0
    shared, without_train = None, 0
    if cfg.disjoint == "prompt":
        key = _prompt_ids(frame, source)
        part[seen] = _split_prompts(key, user, seen, role[user], len(users), cfg, rng)
        held = [set(key[part == i].tolist()) for i in (1, 2)]
        shared = len(held[0] & held[1])
        trained = np.zeros(len(users), bool)
        trained[user[part == 0]] = True
        without_train = int((~trained[role == 0]).sum())
        if not trained.any():
            raise PluralError(f"{source}: disjoint=prompt leaves no train rows: every seen user's prompts were answered by "
                              "unseen users (lower unseen_fraction or use disjoint=none)")
    else:
        part[seen] = _split_pairs(user[seen], cfg, rng)
    return Split(part, user, np.asarray(users, dtype=object), role, shared, without_train)


def _user_strata(frame: pd.DataFrame, user: np.ndarray, n_users: int) -> np.ndarray:
    """(U,) stratum of each user: its group's index, or 0 for all without a `group` column."""
    if "group" not in frame.columns:
        return np.zeros(n_users, np.int64)
    group = pd.factorize(frame["group"], sort=False)[0]
    first = np.unique(user, return_index=True)[1]  # each user's first row (groups are validated constant per user)
    return group[first].astype(np.int64)


def _user_roles(strata: np.ndarray, cfg: SplitConfig, rng: np.random.Generator) -> np.ndarray:
    """(U,) role per user: 0 seen, 1 val-unseen, 2 test-unseen; stratified, >= 1 seen user per stratum."""
    role = np.zeros(len(strata), np.int8)
    if cfg.unseen_fraction == 0:
        return role
    sizes = np.bincount(strata)
    n_unseen = _apportion(sizes, cfg.unseen_fraction, np.maximum(sizes - 1, 0), rng)
    val_share = cfg.val_fraction / (cfg.val_fraction + cfg.test_fraction)
    n_val = _apportion(n_unseen, val_share, n_unseen, rng)
    for s in range(len(sizes)):
        members = rng.permutation(np.flatnonzero(strata == s))
        role[members[:n_unseen[s] - n_val[s]]] = 2
        role[members[n_unseen[s] - n_val[s]:n_unseen[s]]] = 1
    return role


def _split_pairs(user: np.ndarray, cfg: SplitConfig, rng: np.random.Generator) -> np.ndarray:
    """Part (0/1/2) of each seen user's row, given `user` (M,) per row: shares val / test of each user's
    rows at random, at least one train row per user."""
    u = np.unique(user, return_inverse=True)[1]  # seen users numbered 0 .. S-1
    counts = np.bincount(u)
    n_test = _apportion(counts, cfg.test_fraction, counts - 1, rng)
    n_val = _apportion(counts, cfg.val_fraction, counts - 1 - n_test, rng)
    order = np.lexsort((rng.random(len(u)), u))  # each user's rows in a random order, users one after another
    rank = np.empty(len(u), np.int64)  # position of each row in its user's random order
    rank[order] = np.arange(len(u)) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.where(rank < n_test[u], 2, np.where(rank < n_test[u] + n_val[u], 1, 0)).astype(np.int8)


def _prompt_ids(frame: pd.DataFrame, source: str) -> np.ndarray:
    """(N,) int64 prompt id per row: equal ids for equal `prompt` text (missing = empty text) or, without a
    text column, equal prompt embeddings."""
    if "prompt" in frame.columns:
        values = [v if isinstance(v, str) else "" for v in frame["prompt"]]
    elif "prompt_embedding" in frame.columns:
        values = [np.asarray(v, np.float64).tobytes() for v in frame["prompt_embedding"]]
    else:
        raise PluralError(f"{source}: disjoint=prompt needs a 'prompt' or 'prompt_embedding' column, the table has neither")
    return pd.factorize(pd.Series(values, dtype=object), sort=False)[0].astype(np.int64)


def _split_prompts(key: np.ndarray, user: np.ndarray, seen: np.ndarray, row_role: np.ndarray, n_users: int,
                   cfg: SplitConfig, rng: np.random.Generator) -> np.ndarray:
    """Part (0/1/2) of each seen row (rows where `seen`), prompts kept apart (module docstring).

    `key` (N,) prompt ids, `user` (N,) user indices, `row_role` (N,) role of each row's user."""
    n_prompts = int(key.max()) + 1
    forced = np.zeros(n_prompts, np.int8)  # part a prompt must go to: 1 val / 2 test (answered by unseen users), 0 free
    forced[key[row_role == 1]] = 1
    forced[key[row_role == 2]] = 2
    k, u = key[seen], user[seen]
    part = forced.copy()
    free = forced[k] == 0
    pairs = np.unique(np.stack([k[free], u[free]], 1), axis=0)  # distinct (free prompt, seen user), sorted by prompt
    prompts, starts = np.unique(pairs[:, 0], return_index=True)
    prompt_users = np.split(pairs[:, 1], starts[1:])
    train_left = np.bincount(pairs[:, 1], minlength=n_users)  # free prompts per user still in train
    target = {2: _round(cfg.test_fraction * len(prompts)), 1: _round(cfg.val_fraction * len(prompts))}
    for j in rng.permutation(len(prompts)):
        to = 2 if target[2] else 1 if target[1] else 0
        if not to:
            break
        if (train_left[prompt_users[j]] > 1).all():
            part[prompts[j]] = to
            train_left[prompt_users[j]] -= 1
            target[to] -= 1
    return part[k]


def _round(x) -> np.ndarray | int:
    """Round half up (not to even)."""
    return np.floor(np.asarray(x) + 0.5).astype(np.int64) if np.ndim(x) else int(np.floor(x + 0.5))


def _apportion(sizes: np.ndarray, fraction: float, caps: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Integer counts c_s <= caps_s close to fraction * sizes_s that sum to round(fraction * sum(sizes))
    (or to sum(caps) if less): the floors, then +1 to the largest remainders (ties in random order),
    repeated while capped strata leave some of the total over."""
    sizes, caps = np.asarray(sizes, np.int64), np.asarray(caps, np.int64)
    quota = fraction * sizes
    counts = np.minimum(np.floor(quota).astype(np.int64), caps)
    need = min(_round(fraction * sizes.sum()), int(caps.sum())) - int(counts.sum())
    tie = rng.random(len(sizes))
    while need > 0:
        room = np.flatnonzero(counts < caps)
        pick = room[np.lexsort((tie[room], -(quota - counts)[room]))][:need]
        counts[pick] += 1
        need -= len(pick)
    return counts


def split_file(path: str | Path, outdir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> str:
    """`plural split IN OUTDIR --set ...`: validate IN (no embedding), split it, write OUTDIR/{train,val,test}.

    JSON Lines input gives `.jsonl` outputs, anything else (Parquet, a directory) `.parquet`. An empty part
    (e.g. val_fraction=0 and no val-unseen users) is not written. Returns the summary line.
    """
    from plural.config import apply_overrides
    from plural.data.sources._io import write_table
    from plural.data.table import SUFFIXES, read_frame

    cfg = apply_overrides({"split": SplitConfig()}, list(overrides))["split"]
    cfg.check()
    path, outdir = Path(path), Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise PluralError(f"{outdir}: exists and is not a directory")
    if outdir.is_dir():
        old = sorted(p.name for p in outdir.iterdir() if p.stem in PARTS and p.suffix.lower() in SUFFIXES)
        if old:
            raise PluralError(f"{outdir}: already holds split tables ({', '.join(old)}); remove them or choose another OUTDIR")
    frame = read_frame(path)
    split = split_rows(frame, cfg, str(path))
    suffix = ".jsonl" if path.is_file() and SUFFIXES.get(path.suffix.lower()) == "jsonl" else ".parquet"
    empty = []
    for name, table in split.tables(frame).items():
        if not len(table):
            empty.append(name)
            continue
        try:
            write_table(table, outdir / f"{name}{suffix}")
        except (TypeError, ValueError, OverflowError) as e:  # pyarrow's errors derive from these
            raise PluralError(f"{outdir / (name + suffix)}: cannot write ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
    note = f"; empty, not written: {', '.join(empty)}" if empty else ""
    return f"{split.summary()}{note} -> {outdir}/{{{','.join(n for n in PARTS if n not in empty)}}}{suffix}"
