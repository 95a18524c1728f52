"""`PreferenceData`: a validated preference table as aligned numpy arrays plus user / group indices."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from plural.errors import PluralError


ALIGN = 64  # bytes: a host array aligned so is used by JAX's CPU device in place (jax.device_put, no copy)


def aligned_empty(shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an `ALIGN`-byte boundary."""
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buf = np.empty(n + ALIGN, np.uint8)
    off = (-buf.ctypes.data) % ALIGN
    return buf[off:off + n].view(dtype).reshape(shape)


def aligned(x: np.ndarray, dtype=np.float32) -> np.ndarray:
    """`x` as a C-contiguous `dtype` array aligned to `ALIGN` bytes: itself when it already is (no copy), else
    one copy. Embeddings are kept so, so that training on a CPU shares them instead of copying each table."""
    x = np.asarray(x)
    if x.dtype == dtype and x.flags.c_contiguous and x.ctypes.data % ALIGN == 0:
        return x
    out = aligned_empty(x.shape, dtype)
    out[...] = x
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class PreferenceData:
    """N comparisons, as arrays aligned row by row with the source table (file order).

    Shapes: `chosen`, `rejected` (N, D) float32; `prompt` (N, Dp) float32 with Dp = 0 when the table has
    no prompt embeddings ("one fixed context"); `user` (N,) int32 index into `users`; `group` (N,) int32
    index into `groups` (-1 without a group column); `attr_chosen`, `attr_rejected` (N, A) float32 for the
    A attributes named in `attr_names`. `frame` keeps every non-embedding column (ids, text, metadata).
    """

    chosen: np.ndarray
    rejected: np.ndarray
    prompt: np.ndarray
    user: np.ndarray
    users: np.ndarray
    group: np.ndarray
    groups: tuple[str, ...]
    attr_chosen: np.ndarray
    attr_rejected: np.ndarray
    attr_names: tuple[str, ...]
    frame: pd.DataFrame
    source: str = "<memory>"
    attributes_joined: bool = False  # chosen / rejected end with the A attribute scores (`with_attributes`)

    @classmethod
    def from_frame(cls, df: pd.DataFrame, emb: dict[str, np.ndarray], source: str = "<memory>") -> "PreferenceData":
        """Index a validated frame; users and groups are numbered in order of first appearance."""
        df = df.reset_index(drop=True)
        user, users = pd.factorize(df["user_id"], sort=False)
        if "group" in df.columns:
            group, groups = pd.factorize(df["group"], sort=False)
            groups = tuple(str(g) for g in groups)
        else:
            group, groups = np.full(len(df), -1), ()
        n = len(df)
        prompt = emb.get("prompt_embedding", np.zeros((n, 0), np.float32))
        attr_names = tuple(sorted(c[len("chosen_attr_"):] for c in df.columns if c.startswith("chosen_attr_")))
        ac = np.stack([df[f"chosen_attr_{a}"].to_numpy(np.float32) for a in attr_names], 1) if attr_names else np.zeros((n, 0), np.float32)
        ar = np.stack([df[f"rejected_attr_{a}"].to_numpy(np.float32) for a in attr_names], 1) if attr_names else np.zeros((n, 0), np.float32)
        return cls(
            chosen=aligned(emb["chosen_embedding"]),
            rejected=aligned(emb["rejected_embedding"]),
            prompt=aligned(prompt),
            user=user.astype(np.int32),
            users=np.asarray(users, dtype=object),
            group=np.asarray(group, np.int32),
            groups=groups,
            attr_chosen=ac,
            attr_rejected=ar,
            attr_names=attr_names,
            frame=df,
            source=source,
        )

    # -- sizes ---------------------------------------------------------------------------------------
    @property
    def n_pairs(self) -> int:
        return len(self.user)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def dim(self) -> int:
        return self.chosen.shape[1]

    @property
    def prompt_dim(self) -> int:
        return self.prompt.shape[1]

    @property
    def user_group(self) -> np.ndarray:
        """(U,) int32 group index of each user (-1 without groups)."""
        out = np.full(self.n_users, -1, np.int32)
        out[self.user] = self.group
        return out

    def user_rows(self) -> list[np.ndarray]:
        """Row indices of each user, in file order."""
        order = np.argsort(self.user, kind="stable")
        bounds = np.cumsum(np.bincount(self.user, minlength=self.n_users))[:-1]
        return np.split(order, bounds)

    # -- subsets -------------------------------------------------------------------------------------
    def take(self, rows: np.ndarray) -> "PreferenceData":
        """The rows `rows` (in that order) as new data, users and groups re-indexed."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            raise PluralError(f"{self.source}: selection is empty")
        emb = {"chosen_embedding": self.chosen[rows], "rejected_embedding": self.rejected[rows]}
        if self.prompt_dim:
            emb["prompt_embedding"] = self.prompt[rows]
        out = PreferenceData.from_frame(self.frame.iloc[rows], emb, self.source)
        return dataclasses.replace(out, attributes_joined=True) if self.attributes_joined else out

    def with_attributes(self) -> "PreferenceData":
        """The same rows with each response's attribute scores appended to its embedding: chosen / rejected
        (N, D + A), for families that read attributes (`RewardModel.reads_attributes`). Idempotent."""
        if self.attributes_joined:
            return self
        return dataclasses.replace(self, chosen=np.concatenate([self.chosen, self.attr_chosen], 1),
                                   rejected=np.concatenate([self.rejected, self.attr_rejected], 1),
                                   attributes_joined=True)

    def spec(self) -> dict:
        """What a model needs to know about the data it will see (JSON-ready)."""
        return {"dim": self.dim, "prompt_dim": self.prompt_dim, "n_users": self.n_users,
                "attr_names": list(self.attr_names), "groups": list(self.groups)}

    def group_index(self, groups) -> np.ndarray:
        """(N,) int32 index of each row's group in `groups` (a fitted model's group list), -1 if absent."""
        pos = {g: i for i, g in enumerate(groups)}
        table = np.asarray([pos.get(g, -1) for g in self.groups] + [-1], np.int32)
        return table[self.group]  # group -1 (no group column) reads the trailing -1


def split_users(data: PreferenceData, unseen_fraction: float, seed: int = 0) -> tuple[PreferenceData, PreferenceData | None]:
    """Hold out whole users: returns (seen-user rows, unseen-user rows or None). Deterministic per seed.

    Within each group the same fraction is held out (at least one user per group stays seen).
    """
    if unseen_fraction <= 0:
        return data, None
    rng = np.random.default_rng(seed)
    ug = data.user_group
    unseen = []
    for g in np.unique(ug):
        members = np.flatnonzero(ug == g)
        k = min(int(round(unseen_fraction * len(members))), len(members) - 1)
        unseen.extend(rng.choice(members, size=k, replace=False).tolist())
    is_unseen = np.isin(data.user, np.asarray(unseen, dtype=np.int64))
    if not is_unseen.any():
        return data, None
    return data.take(np.flatnonzero(~is_unseen)), data.take(np.flatnonzero(is_unseen))


def split_pairs(data: PreferenceData, test_fraction: float, seed: int = 0) -> tuple[PreferenceData, PreferenceData | None]:
    """Hold out a fraction of each user's pairs (at least one pair of each user stays in train)."""
    if test_fraction <= 0:
        return data, None
    rng = np.random.default_rng(seed)
    test = []
    for rows in data.user_rows():
        k = min(int(round(test_fraction * len(rows))), len(rows) - 1)
        test.extend(rng.choice(rows, size=k, replace=False).tolist())
    mask = np.zeros(data.n_pairs, bool)
    mask[test] = True
    if not mask.any():
        return data, None
    return data.take(np.flatnonzero(~mask)), data.take(np.flatnonzero(mask))


def holdout(data: PreferenceData, fraction: float, seed: int = 0) -> tuple[PreferenceData, PreferenceData | None]:
    """Validation data out of a training table given alone: (train rows, held-out rows or None).

    `fraction` of each user's pairs (`split_pairs`); where that rounds to nothing (every user has a handful
    of pairs), max(1, round(fraction * N)) pairs drawn from users who keep at least one; where no user has
    two pairs (anonymous rows), max(1, round(fraction * U)) whole users, whose rows are then scored with
    the population prediction. None only for a table of one user with one pair. Deterministic per seed.
    """
    train, val = split_pairs(data, fraction, seed)
    if val is not None:
        return train, val
    rng = np.random.default_rng(seed)
    rows = data.user_rows()
    spare = np.concatenate([r[1:] for r in rows if len(r) > 1] or [np.zeros(0, np.int64)])
    if len(spare):  # rows beyond each user's first: holding any of them out leaves every user a pair
        pick = rng.choice(spare, size=min(len(spare), max(1, int(round(fraction * data.n_pairs)))), replace=False)
    elif data.n_users > 1:
        users = rng.choice(data.n_users, size=min(data.n_users - 1, max(1, int(round(fraction * data.n_users)))),
                           replace=False)
        pick = np.flatnonzero(np.isin(data.user, users))
    else:
        return data, None
    held = np.zeros(data.n_pairs, bool)
    held[pick] = True
    return data.take(np.flatnonzero(~held)), data.take(np.flatnonzero(held))
