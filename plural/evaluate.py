"""Scoring a table with a fitted model, with the `--shots` semantics of docs/cli.md ("Evaluation").

- A user seen during fit is scored with the model's state for that user (`seen_states`).
- An unseen user with shots K > 0: the user's first K rows (file order) go to `adapt`, only the rest is
  scored; a user with K rows or fewer contributes no scored rows.
- An unseen user with K = 0: the population-level prediction (`group_state`: the population state, or for
  group-conditioned models the head of the user's group).
- `score_from=N` (N >= K): unseen users' rows at positions < N are not scored, so that curves over K
  score the same rows.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from flax import nnx

from plural.data import PreferenceData
from plural.data.batching import eval_rows, shot_contexts, user_positions
from plural.errors import PluralError
from plural.models.base import view_of
from plural.train import ADAPT_STREAM, TrainResult, seed_keys

CHUNK = 8192  # rows per scoring call (bounds memory for any table size)


def _take(tree, idx):
    return jax.tree.map(lambda x: x[idx], tree)


# Jitted once per model structure (graphdef) and shapes, not once per call.
@partial(jax.jit, static_argnums=(0, 1))
def _scores(graphdef, fn, params, p, c, r, s):
    m = nnx.merge(graphdef, params)
    if fn == "margin":
        return m.margin(p, c, r, s)
    if fn == "spread":
        return m.pair_spread(p, c, r)
    return m.reward(p, c if fn == "chosen" else r, s)


@partial(jax.jit, static_argnums=0)
def _group_states(graphdef, params, groups):
    return nnx.merge(graphdef, params).group_state(groups)


@partial(jax.jit, static_argnums=0)
def _adapt(graphdef, params, ctx, base, first, seen):
    """Users first .. first + n - 1 adapted at once (vmap over the leading axis of `ctx`), user j with the key
    fold_in(base, j); `seen`: the seen users' states (`RewardModel.adapt`)."""
    keys = jax.vmap(lambda j: jax.random.fold_in(base, j))(first + jnp.arange(ctx["mask"].shape[0], dtype=jnp.uint32))
    return jax.vmap(lambda c, key: nnx.merge(graphdef, params).adapt(c, key, seen))(ctx, keys)


class RowStates(NamedTuple):
    """Each row's user state without copying it per row: `table` holds M distinct states (leading axis M:
    the seen users', the group / population states, the adapted users'), `index` (N,) says which is row n's."""
    table: Any
    index: np.ndarray

    def rows(self, idx=None):
        """The states of rows `idx` (default all) with leading axis len(idx) (numpy)."""
        idx = self.index if idx is None else self.index[idx]
        return jax.tree.map(lambda t: np.asarray(t)[idx], self.table)


def score_rows(model, data: PreferenceData, states: RowStates, chunk: int = CHUNK, fn: str = "margin") -> np.ndarray:
    """(N,) per row: margins r(chosen) - r(rejected) (`fn="margin"`), the reward of `chosen` / `rejected`, or
    (`fn="spread"`, families with `pair_spread`) the disagreement the model predicts about the pair.

    Rows are scored `chunk` at a time (bounded memory: a chunk's states are gathered from the table)."""
    graphdef, params = nnx.split(model)
    out = []
    for lo in range(0, data.n_pairs, chunk):
        sl = slice(lo, lo + chunk)
        out.append(np.asarray(_scores(graphdef, fn, params, data.prompt[sl], data.chosen[sl], data.rejected[sl],
                                      states.rows(sl))))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def check_compatible(spec: dict, data: PreferenceData) -> None:
    if data.dim != spec["dim"] or data.prompt_dim != spec["prompt_dim"]:
        raise PluralError(
            f"{data.source}: column 'chosen_embedding', row 0: embeddings of length {data.dim} (prompt {data.prompt_dim}) "
            f"but the model was fitted on length {spec['dim']} (prompt {spec['prompt_dim']})")
    if list(data.attr_names) != list(spec.get("attr_names", [])) and spec.get("attr_names"):
        raise PluralError(f"{data.source}: attribute columns {list(data.attr_names)} differ from the fitted {spec['attr_names']}")


def user_states(result: TrainResult, train_users, data: PreferenceData, shots: int = 0, seed_index: int = 0,
                score_from: int | None = None) -> tuple[object, np.ndarray, np.ndarray]:
    """Each row's user state under seed `seed_index` of a fitted model, with the `--shots` semantics.

    Returns (`RowStates` of the N rows, `seen` (N,) bool, `scored` (N,) bool). Seen users: the state the
    model learned (every row scored). Unseen users: their first `shots` rows (file order) adapt the model
    (`adapt`; the population / group prediction `group_state` at 0 shots) and rows at position >=
    `score_from` (default `shots`) are scored; a user with `shots` rows or fewer is not adapted.
    """
    if shots < 0:
        raise PluralError(f"--shots {shots}: must be >= 0")
    score_from = shots if score_from is None else int(score_from)
    if score_from < shots:
        raise PluralError(f"--score-from {score_from}: must be >= --shots {shots} (scored rows never adapt the model)")
    data = view_of(result.family, data)
    check_compatible(result.spec, data)
    model = result.model(seed_index)
    rows = eval_rows(data, train_users, result.spec.get("groups", []))
    is_seen = rows["user"] >= 0
    graphdef, params = nnx.split(model)
    seen_states = _take(result.seen, seed_index)
    n_seen = len(jax.tree.leaves(seen_states)[0])
    # the table: seen users' states, then the group states of unseen rows (the population's at -1), then adapted users'
    groups = np.unique(rows["group"][~is_seen]) if (~is_seen).any() else np.zeros(0, np.int32)
    group_states = _group_states(graphdef, params, jnp.asarray(groups, jnp.int32))
    index = np.where(is_seen, rows["user"], n_seen + np.searchsorted(groups, rows["group"])).astype(np.int64)
    parts = [seen_states, group_states]
    # every step below is vectorised over rows (no loop over users, no per-user pass over the N rows)
    adapt_users, ctx_rows, slot, pos = shot_contexts(data.user, data.n_users, is_seen, shots)
    scored = is_seen | (pos >= score_from)
    if shots > 0:
        if len(adapt_users):  # ctx_rows (n, K): each adapted user's first K rows
            parts.append(_adapt_rows(result, rows, ctx_rows, seed_index))
            own = ~is_seen & (pos >= shots) & (slot[data.user] >= 0)
            index[own] = n_seen + len(groups) + slot[data.user[own]]
    table = jax.tree.map(lambda *t: np.concatenate([np.asarray(x) for x in t]), *parts)
    return RowStates(table, index), is_seen, scored


ADAPT_CHUNK = 1024  # users adapted per call (set by hand: bounds the memory of contexts and of the adaptation)


def adapt_states(result: TrainResult, ctx: dict, seed_index: int = 0):
    """New users' states from their labelled pairs: `ctx` holds (n, K, ...) arrays of `eval_rows` fields
    (n users, K pairs each); user j adapts with the key fold_in(ADAPT_STREAM key of the seed, j).
    Returns states with leading axis n (numpy)."""
    n, k = ctx["chosen"].shape[:2]
    flat = {name: np.asarray(v).reshape(n * k, *np.shape(v)[2:]) for name, v in ctx.items()}
    return _adapt_rows(result, flat, np.arange(n * k).reshape(n, k), seed_index)


def _adapt_rows(result: TrainResult, rows: dict, ctx_rows: np.ndarray, seed_index: int = 0):
    """`adapt_states` of the n users whose K context pairs are the rows `ctx_rows` (n, K) of `rows` (`eval_rows`
    fields, leading axis N): at most `ADAPT_CHUNK` users per call, each call's contexts gathered just before it
    (the last call padded to the others' size, so that one program serves them all). Time and memory are
    linear in n. Returns states with leading axis n (numpy)."""
    graphdef, params = nnx.split(result.model(seed_index))
    n, k = ctx_rows.shape
    calls = -(-n // ADAPT_CHUNK)
    size = -(-n // calls)  # users per call: n itself when n <= ADAPT_CHUNK
    base = np.asarray(seed_keys([result.seeds[seed_index]], ADAPT_STREAM))[0]
    seen = _take(result.seen, seed_index)
    mask = np.ones((size, k), np.float32)
    out = []
    for lo in range(0, n, size):
        idx = ctx_rows[lo:lo + size]
        if len(idx) < size:  # pad with copies of the last user (their states are dropped)
            idx = np.concatenate([idx, np.repeat(idx[-1:], size - len(idx), 0)])
        ctx = {name: v[idx] for name, v in rows.items()}
        ctx["mask"] = mask
        out.append(_adapt(graphdef, params, ctx, base, np.uint32(lo), seen))
    return jax.tree.map(lambda *t: np.concatenate([np.asarray(x) for x in t])[:n], *out)


def predict(result: TrainResult, train_users, data: PreferenceData, shots: int = 0, seed_index: int = 0,
            score_from: int | None = None) -> pd.DataFrame:
    """Score `data` with seed `seed_index` of a fitted model (`user_states` semantics).

    `train_users`: the user ids seen during fit, in the order of the model's user index.
    Returns one row per scored comparison (file order), with the source row `row`, `user_id`, `group`,
    `seen`, `margin` and `correct` (margin > 0), `uncertainty` (mean posterior variance of the user's
    latent, for families whose states carry "var"), `spread` (the predicted disagreement about the pair,
    for families with `pair_spread`: DPL), plus the table's pass-through columns.
    """
    data = view_of(result.family, data)
    states, is_seen, scored = user_states(result, train_users, data, shots, seed_index, score_from)
    model = result.model(seed_index)
    margin = score_rows(model, data, states)
    df = _row_frame(data, is_seen)
    df["margin"] = margin
    df["correct"] = margin > 0
    if hasattr(model, "pair_spread"):
        df["spread"] = score_rows(model, data, states, fn="spread")
    if isinstance(states.table, dict) and "var" in states.table:  # posterior variance: mean over latent dimensions
        df["uncertainty"] = states.rows()["var"].reshape(data.n_pairs, -1).mean(1)
    return df[scored].reset_index(drop=True)


def rewards(result: TrainResult, train_users, data: PreferenceData, shots: int = 0, seed_index: int = 0) -> pd.DataFrame:
    """`plural score`: every row's reward of `chosen` and `rejected` under that row's user.

    Seen users: the learned state; unseen users: adapted from their first `shots` rows (those rows are
    scored too, under the adapted state of the other rows, and flagged `adapt_row`). Returns the table's
    columns (no embeddings) plus `seen`, `adapt_row`, `chosen_reward`, `rejected_reward`, in file order.
    """
    data = view_of(result.family, data)
    states, is_seen, scored = user_states(result, train_users, data, shots, seed_index)
    model = result.model(seed_index)
    if shots > 0:  # the context rows themselves get the state their user was adapted to (their row `shots`'s)
        order, counts, starts, pos = user_positions(data.user, data.n_users)
        ctx = ~is_seen & (pos < shots) & (counts[data.user] > shots)
        states.index[ctx] = states.index[order[starts[data.user[ctx]] + shots]]
    df = _row_frame(data, is_seen)
    df["adapt_row"] = ~scored
    df["chosen_reward"] = score_rows(model, data, states, fn="chosen")
    df["rejected_reward"] = score_rows(model, data, states, fn="rejected")
    return df


def _row_frame(data: PreferenceData, is_seen: np.ndarray) -> pd.DataFrame:
    """The table's non-embedding columns plus `row`, `user_id`, `group`, `seen`."""
    df = data.frame.drop(columns=[c for c in data.frame.columns if c.startswith(("chosen_attr_", "rejected_attr_"))]).copy()
    df.insert(0, "row", np.arange(data.n_pairs))
    df["user_id"] = data.users[data.user]
    if "group" not in df.columns:
        df["group"] = None
    df["seen"] = is_seen
    return df


def metrics(rows: pd.DataFrame, shots: int, score_from: int | None = None) -> dict:
    """The `metrics.json` of `plural evaluate` from `predict` output (keys sorted, deterministic).

    accuracy, n_pairs, per_group, per_user, shots (and score_from when given), as the contract has them;
    plus `calibration` (overall) and `per_group_calibration`: log-loss, Brier score and ECE of the
    predicted preference probability sigma(margin), and with ground truth their oracle values and the
    distance to the oracle probabilities (`plural.calibration`).
    """
    from plural.calibration import calibration_metrics, per_group_calibration

    if rows.empty:
        raise PluralError("no rows left to score (every user has at most --shots / --score-from rows)")
    out = {"accuracy": float(rows["correct"].mean()), "n_pairs": int(len(rows))}
    if rows["group"].notna().any():
        out["per_group"] = {str(g): float(v) for g, v in rows.groupby("group", sort=True)["correct"].mean().items()}
    else:
        out["per_group"] = {}
    out["per_user"] = {str(u): float(v) for u, v in rows.groupby("user_id", sort=True)["correct"].mean().items()}
    out["shots"] = int(shots)
    if score_from is not None:
        out["score_from"] = int(score_from)
    out["calibration"] = calibration_metrics(rows)
    out["per_group_calibration"] = per_group_calibration(rows) if rows["group"].notna().any() else {}
    if "uncertainty" in rows.columns:  # families with a posterior over users (VPL)
        out["per_user_uncertainty"] = {str(u): float(v) for u, v in rows.groupby("user_id", sort=True)["uncertainty"].first().items()}
    return out
