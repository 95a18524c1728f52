"""Active query selection experiments: accuracy after k asked pairs, active vs random.

For each user, the first `pool_size` rows of their table are the candidate queries (their recorded
labels are the user's answers when asked), the remaining rows are held out. Queries are asked one at a
time: `active` picks with `plural.models.vpl.select_queries` given the answers so far, `random` in a
random order. After each answer the user's state is re-inferred (no gradient steps) and the held-out
rows are scored.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from plural.data import PreferenceData
from plural.errors import PluralError
from plural.models.vpl import select_queries

FIELDS = ("prompt", "chosen", "rejected")


def query_curve(model, data: PreferenceData, budget: int, pool_size: int, strategy: str, seed: int = 0,
                n_answers: int = 32) -> dict[str, np.ndarray]:
    """Held-out margins after 1..budget queries for every user of `data` with > pool_size rows.

    Returns {"users": (U,) ids, "rows": (U, H) held-out row indices, "margin": (budget, U, H)}.
    """
    rows_of = [r for r in data.user_rows() if len(r) > pool_size]
    if not rows_of:
        raise PluralError(f"{data.source}: active queries need users with more than pool_size={pool_size} rows "
                          f"(the most any user has is {max(len(r) for r in data.user_rows())})")
    n_hold = min(len(r) for r in rows_of) - pool_size
    pool_rows = np.stack([r[:pool_size] for r in rows_of])
    hold_rows = np.stack([r[pool_size:pool_size + n_hold] for r in rows_of])
    get = lambda rows: {f: jnp.asarray(getattr(data, f)[rows]) for f in FIELDS}  # noqa: E731
    pool, hold = get(pool_rows), get(hold_rows)
    graphdef, state = nnx.split(model)

    def one_user(pool, hold, key):
        m = nnx.merge(graphdef, state)
        ctx = {f: jnp.zeros((budget, *pool[f].shape[1:])) for f in FIELDS}
        ctx["mask"] = jnp.zeros(budget)
        order = jax.random.permutation(jax.random.fold_in(key, 1), pool_size)

        def step(carry, j):
            ctx, asked = carry
            if strategy == "active":
                i = select_queries(m, ctx, pool, 1, jax.random.fold_in(key, j), n_answers, exclude=asked)[0]
            else:
                i = order[j]
            ctx = {**{f: ctx[f].at[j].set(pool[f][i]) for f in FIELDS}, "mask": ctx["mask"].at[j].set(1.0)}
            st = m.state_from_context(ctx)
            z = jnp.broadcast_to(st["z"], (hold["chosen"].shape[0], st["z"].shape[-1]))
            margin = m.margin(hold["prompt"], hold["chosen"], hold["rejected"], {"z": z})
            return (ctx, asked.at[i].set(True)), margin

        _, margins = jax.lax.scan(step, (ctx, jnp.zeros(pool_size, bool)), jnp.arange(budget))
        return margins  # (budget, H)

    keys = jax.random.split(jax.random.PRNGKey(seed), len(rows_of))
    margins = jax.jit(jax.vmap(one_user))(pool, hold, keys)  # (U, budget, H)
    users = np.asarray([data.users[data.user[r[0]]] for r in rows_of])
    return {"users": users, "rows": hold_rows, "margin": np.asarray(margins).transpose(1, 0, 2)}
