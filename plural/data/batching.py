"""Batches drawn on device, as pure functions of a PRNG key (so data order = f(seed, step)).

`device_data` holds the training arrays once on the device(s); samplers gather a batch inside the
jitted training step, so no host work happens per step.

A family owns its sampler: the class attribute `batches` of a `RewardModel` is a sampler instance with
the family's defaults, and its fields are the `batch.*` settings (`--set batch.users_per_batch=16`).
A sampler is a frozen dataclass with `size` (the leading batch dimension, split over the 'data' mesh
axis) and `sample(key, dd) -> batch`; a new kind of batch is a new sampler here, not a trainer branch.

- `PairBatches`: B independent comparisons (BT, PAL, MiCRo, ...): dict(prompt (B,Dp), chosen (B,D),
  rejected (B,D), user (B,), group (B,) (index into the table's groups, -1 without a group column),
  attr_chosen / attr_rejected (B,A), mask (B,)).
- `GroupBatches`: B comparisons of every group at once (one model per community, PrefPalette): the
  `PairBatches` fields as (B, G, ...), mask (B, G).
- `UserBatches`: U users, each with a context set of C pairs and T disjoint target pairs drawn from that
  user's own rows (VPL, few-shot, ...): dict(user (U,), context=pairs (U,C,..) + mask (U,C),
  target=pairs (U,T,..) + mask (U,T)). The number of valid context pairs is drawn uniformly in
  [context_min, context_max], capped at n_u - 1 so that every user keeps at least one target.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from plural.data.arrays import PreferenceData
from plural.errors import PluralError

PAIR_FIELDS = ("prompt", "chosen", "rejected", "attr_chosen", "attr_rejected", "user", "group")


def device_data(data: PreferenceData, sharding=None) -> dict:
    """The arrays a sampler needs, as a pytree of jax arrays (replicated with `sharding` if given).

    `user_rows` (U, max_n) int32 lists each user's rows (padded with 0), `user_count` (U,) their number.
    """
    rows = data.user_rows()
    max_n = max(len(r) for r in rows)
    table = np.zeros((data.n_users, max_n), np.int32)
    for u, r in enumerate(rows):
        table[u, : len(r)] = r
    community = np.maximum(data.group, 0)  # a table without groups is one community
    n_groups = max(len(data.groups), 1)
    host = {
        "prompt": data.prompt, "chosen": data.chosen, "rejected": data.rejected,
        "attr_chosen": data.attr_chosen, "attr_rejected": data.attr_rejected, "user": data.user,
        "group": data.group,
        "user_rows": table, "user_count": np.asarray([len(r) for r in rows], np.int32),
        # rows by group: group g's rows are group_order[group_start[g] : group_start[g] + group_count[g]]
        "group_order": np.argsort(community, kind="stable").astype(np.int32),
        "group_count": np.bincount(community, minlength=n_groups).astype(np.int32),
    }
    host["group_start"] = (np.cumsum(host["group_count"]) - host["group_count"]).astype(np.int32)
    if sharding is None:  # device_put, not jnp.asarray: an aligned host array is then used in place on a CPU
        return jax.tree.map(jax.device_put, host)
    # make_array_from_callback works on one host and many: each process fills its addressable shards.
    return {k: jax.make_array_from_callback(v.shape, sharding, lambda idx, v=v: v[idx]) for k, v in host.items()}


def gather(dd: dict, rows: jax.Array) -> dict:
    """The pair fields of `rows` (any shape); adds nothing else."""
    return {k: dd[k][rows] for k in PAIR_FIELDS}


def sample_pairs(key: jax.Array, dd: dict, batch_size: int) -> dict:
    """B comparisons drawn uniformly with replacement from all rows."""
    rows = jax.random.randint(key, (batch_size,), 0, dd["user"].shape[0])
    batch = gather(dd, rows)
    batch["mask"] = jnp.ones((batch_size,), jnp.float32)
    return batch


def sample_users(key: jax.Array, dd: dict, users_per_batch: int, context_min: int, context_max: int,
                 targets: int) -> dict:
    """U users (without replacement when possible), each with context and disjoint target pairs."""
    n_users, max_n = dd["user_rows"].shape
    k_users, k_rows = jax.random.split(key)
    if users_per_batch <= n_users:
        users = jax.random.permutation(k_users, n_users)[:users_per_batch]
    else:
        users = jax.random.randint(k_users, (users_per_batch,), 0, n_users)

    def one(k, u):
        n = dd["user_count"][u]
        k_perm, k_c = jax.random.split(k)
        slot = jnp.arange(max_n)
        order = jnp.argsort(jnp.where(slot < n, jax.random.uniform(k_perm, (max_n,)), 2.0))
        c = jnp.minimum(jax.random.randint(k_c, (), context_min, context_max + 1), n - 1)
        c_slots = jnp.arange(context_max)
        t_slots = c + jnp.arange(targets)
        c_rows = dd["user_rows"][u, order[jnp.minimum(c_slots, max_n - 1)]]
        t_rows = dd["user_rows"][u, order[jnp.minimum(t_slots, max_n - 1)]]
        return c_rows, (c_slots < c), t_rows, (t_slots < n)

    c_rows, c_mask, t_rows, t_mask = jax.vmap(one)(jax.random.split(k_rows, users_per_batch), users)
    context = gather(dd, c_rows)
    context["mask"] = c_mask.astype(jnp.float32)
    target = gather(dd, t_rows)
    target["mask"] = t_mask.astype(jnp.float32)
    return {"user": users, "context": context, "target": target}


def sample_groups(key: jax.Array, dd: dict, pairs_per_group: int) -> dict:
    """For every group (community), B = `pairs_per_group` of its rows drawn uniformly with replacement: the
    pair fields as (B, G, ...) and mask (B, G) (0 for a group without rows). The batch axis leads, so that
    it is the one split over the 'data' mesh axis, as for every sampler."""
    count, start = dd["group_count"], dd["group_start"]
    u = jax.random.uniform(key, (pairs_per_group, count.shape[0]))
    pos = start[None] + jnp.minimum((u * count[None]).astype(jnp.int32), jnp.maximum(count[None] - 1, 0))
    batch = gather(dd, dd["group_order"][pos])
    batch["mask"] = jnp.broadcast_to((count > 0)[None], pos.shape).astype(jnp.float32)
    return batch


@dataclasses.dataclass(frozen=True)
class PairBatches:
    """`batch_size` comparisons per step, drawn uniformly with replacement from all rows."""

    batch_size: int = 256

    def __post_init__(self):
        if self.batch_size < 1:
            raise PluralError(f"--set batch.batch_size={self.batch_size}: must be >= 1")

    @property
    def size(self) -> int:
        return self.batch_size

    def sample(self, key: jax.Array, dd: dict) -> dict:
        return sample_pairs(key, dd, self.batch_size)


@dataclasses.dataclass(frozen=True)
class UserBatches:
    """`users_per_batch` users per step, each with context and disjoint target pairs of their own."""

    users_per_batch: int = 32
    context_min: int = 1  # context pairs per user, drawn uniformly in [context_min, context_max] (0: some users none)
    context_max: int = 8
    targets_per_user: int = 8  # target pairs per user

    def __post_init__(self):
        if self.users_per_batch < 1 or self.targets_per_user < 1:
            raise PluralError("--set batch.users_per_batch / batch.targets_per_user: must be >= 1")
        if not 0 <= self.context_min <= self.context_max or self.context_max < 1:
            raise PluralError(f"--set batch.context_min={self.context_min} / batch.context_max={self.context_max}: "
                              "need 0 <= context_min <= context_max and context_max >= 1")

    @property
    def size(self) -> int:
        return self.users_per_batch

    def sample(self, key: jax.Array, dd: dict) -> dict:
        return sample_users(key, dd, self.users_per_batch, self.context_min, self.context_max, self.targets_per_user)


def user_positions(user: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows grouped by user without a Python loop over users: `order` (N,) the row indices sorted by user
    (file order within a user), `counts` (U,) rows per user, `starts` (U,) each user's first slot in `order`,
    `pos` (N,) each row's position among its user's rows (0 = the user's first row in file order)."""
    order = np.argsort(user, kind="stable")
    counts = np.bincount(user, minlength=n_users)
    starts = np.cumsum(counts) - counts
    pos = np.empty(len(user), np.int64)
    pos[order] = np.arange(len(user)) - np.repeat(starts, counts)
    return order, counts, starts, pos


def shot_contexts(user: np.ndarray, n_users: int, is_seen: np.ndarray, shots: int):
    """The `--shots` rule shared by evaluation and validation: the users with no seen row and more than
    `shots` rows adapt from their first `shots` rows in file order. Returns `users` (n,) in user order,
    `ctx_rows` (n, shots) their context rows, `slot` (U,) each user's index in `users` (-1: not adapted)
    and `pos` (N,) each row's position among its user's rows."""
    order, counts, starts, pos = user_positions(user, n_users)
    unseen = np.ones(n_users, bool)
    unseen[user[is_seen]] = False
    users = np.flatnonzero(unseen & (counts > shots))
    slot = np.full(n_users, -1, np.int64)
    slot[users] = np.arange(len(users))
    return users, order[starts[users][:, None] + np.arange(shots)], slot, pos


def eval_rows(data: PreferenceData, train_users, train_groups) -> dict:
    """The rows of `data` as host arrays for scoring a model fitted on other data.

    `user` (N,) int32 is each row's index among `train_users` (-1: a user unseen in training), `group` (N,)
    int32 its index among `train_groups` (-1: unknown); prompt (N, Dp), chosen / rejected (N, D) float32.
    """
    index = {u: i for i, u in enumerate(train_users)}
    user = np.asarray([index.get(u, -1) for u in data.users] + [-1], np.int32)[data.user]
    return {"prompt": data.prompt, "chosen": data.chosen, "rejected": data.rejected,
            "attr_chosen": data.attr_chosen, "attr_rejected": data.attr_rejected,
            "user": user, "group": data.group_index(train_groups)}


@dataclasses.dataclass(frozen=True)
class GroupBatches:
    """`pairs_per_group` comparisons of every group (community) per step, each group's drawn uniformly with
    replacement from its own rows; a table without a group column is one group."""

    pairs_per_group: int = 64

    def __post_init__(self):
        if self.pairs_per_group < 1:
            raise PluralError(f"--set batch.pairs_per_group={self.pairs_per_group}: must be >= 1")

    @property
    def size(self) -> int:
        return self.pairs_per_group

    def sample(self, key: jax.Array, dd: dict) -> dict:
        return sample_groups(key, dd, self.pairs_per_group)
