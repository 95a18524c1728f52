"""Scoring a table with a fitted model, with the `--shots` semantics of CONTRACT.md section 3.

- A user seen during fit is scored with the model's state for that user (`seen_states`).
- An unseen user with shots K > 0: the user's first K rows (file order) go to `adapt`, only the rest is
  scored; a user with K rows or fewer contributes no scored rows.
- An unseen user with K = 0: the population-level prediction (`population_state`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from flax import nnx

from plural.data import PreferenceData
from plural.data.batching import PAIR_FIELDS
from plural.errors import PluralError
from plural.train import ADAPT_STREAM, TrainResult, seed_key

CHUNK = 8192  # rows per scoring call (bounds memory for any table size)


def _take(tree, idx):
    return jax.tree.map(lambda x: x[idx], tree)


def score_rows(model, data: PreferenceData, states, chunk: int = CHUNK) -> np.ndarray:
    """Margins r(chosen) - r(rejected) of every row; `states` has leading axis N (one per row)."""
    graphdef, params = nnx.split(model)

    @jax.jit
    def margins(params, p, c, r, s):
        return nnx.merge(graphdef, params).margin(p, c, r, s)

    out = []
    for lo in range(0, data.n_pairs, chunk):
        sl = slice(lo, lo + chunk)
        out.append(np.asarray(margins(params, data.prompt[sl], data.chosen[sl], data.rejected[sl], _take(states, sl))))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def check_compatible(spec: dict, data: PreferenceData) -> None:
    if data.dim != spec["dim"] or data.prompt_dim != spec["prompt_dim"]:
        raise PluralError(
            f"{data.source}: column 'chosen_embedding', row 0: embeddings of length {data.dim} (prompt {data.prompt_dim}) "
            f"but the model was fitted on length {spec['dim']} (prompt {spec['prompt_dim']})")
    if list(data.attr_names) != list(spec.get("attr_names", [])) and spec.get("attr_names"):
        raise PluralError(f"{data.source}: attribute columns {list(data.attr_names)} differ from the fitted {spec['attr_names']}")


def predict(result: TrainResult, train_users, data: PreferenceData, shots: int = 0, seed_index: int = 0) -> pd.DataFrame:
    """Score `data` with seed `seed_index` of a fitted model.

    `train_users`: the user ids seen during fit, in the order of the model's user index.
    Returns one row per scored comparison (file order), with the source row `row`, `user_id`, `group`,
    `seen`, `margin` and `correct` (margin > 0), `uncertainty` (mean posterior variance of the user's
    latent, for families whose states carry "var"), plus the table's pass-through columns.
    """
    if shots < 0:
        raise PluralError(f"--shots {shots}: must be >= 0")
    check_compatible(result.spec, data)
    model = result.model(seed_index)
    seen_states = _take(result.seen, seed_index)
    index = {u: i for i, u in enumerate(train_users)}
    row_user = data.users[data.user]
    seen_idx = np.asarray([index.get(u, -1) for u in data.users])[data.user]
    is_seen = seen_idx >= 0
    scored = np.ones(data.n_pairs, bool)

    pop = model.population_state()
    states = jax.tree.map(lambda s: np.broadcast_to(np.asarray(s), (data.n_pairs, *np.shape(s))).copy(), pop)
    if is_seen.any():
        seen_rows = np.flatnonzero(is_seen)
        got = _take(seen_states, seen_idx[seen_rows])
        states = jax.tree.map(lambda full, g: _assign(full, seen_rows, g), states, got)
    if shots > 0 and (~is_seen).any():
        unseen_users = [u for u in range(data.n_users) if data.users[u] not in index]
        rows_of = data.user_rows()
        ctx_rows = []
        for u in unseen_users:
            rows = rows_of[u]
            scored[rows[:shots]] = False
            if len(rows) > shots:
                ctx_rows.append(rows[:shots])
        if ctx_rows:
            ctx = {k: getattr(data, k)[np.stack(ctx_rows)] for k in PAIR_FIELDS}
            ctx["mask"] = np.ones((len(ctx_rows), shots), np.float32)
            keys = jnp.stack([jax.random.fold_in(seed_key(result.seeds[seed_index], ADAPT_STREAM), i) for i in range(len(ctx_rows))])
            graphdef, params = nnx.split(model)
            adapted = jax.jit(jax.vmap(lambda c, k: nnx.merge(graphdef, params).adapt(c, k)))(ctx, keys)
            adapted = jax.tree.map(np.asarray, adapted)
            for j, rows in enumerate(r for r in (rows_of[u] for u in unseen_users) if len(r) > shots):
                rest = rows[shots:]
                states = jax.tree.map(lambda full, a: _assign(full, rest, np.broadcast_to(a[j], (len(rest), *a.shape[1:]))), states, adapted)

    margin = score_rows(model, data, states)
    df = data.frame.drop(columns=[c for c in data.frame.columns if c.startswith(("chosen_attr_", "rejected_attr_"))]).copy()
    df.insert(0, "row", np.arange(data.n_pairs))
    df["user_id"] = row_user
    if "group" not in df.columns:
        df["group"] = None
    df["seen"] = is_seen
    df["margin"] = margin
    df["correct"] = margin > 0
    if isinstance(states, dict) and "var" in states:  # posterior variance: mean over latent dimensions
        df["uncertainty"] = np.asarray(states["var"]).reshape(data.n_pairs, -1).mean(1)
    return df[scored].reset_index(drop=True)


def _assign(full: np.ndarray, rows: np.ndarray, values) -> np.ndarray:
    full = np.array(full)
    full[rows] = np.asarray(values)
    return full


def metrics(rows: pd.DataFrame, shots: int) -> dict:
    """The `metrics.json` of CONTRACT.md section 3 from `predict` output (keys sorted, deterministic)."""
    if rows.empty:
        raise PluralError("no rows left to score (every user has at most --shots rows)")
    out = {"accuracy": float(rows["correct"].mean()), "n_pairs": int(len(rows))}
    if rows["group"].notna().any():
        out["per_group"] = {str(g): float(v) for g, v in rows.groupby("group", sort=True)["correct"].mean().items()}
    else:
        out["per_group"] = {}
    out["per_user"] = {str(u): float(v) for u, v in rows.groupby("user_id", sort=True)["correct"].mean().items()}
    out["shots"] = int(shots)
    if "uncertainty" in rows.columns:  # families with a posterior over users (VPL)
        out["per_user_uncertainty"] = {str(u): float(v) for u, v in rows.groupby("user_id", sort=True)["uncertainty"].first().items()}
    return out
