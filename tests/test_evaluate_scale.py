"""Evaluation at scale: `plural evaluate --shots K` adapts all unseen users in batches (a few calls of a vmapped
`adapt`, contexts gathered by row index, states gathered per row by an index array) and must score exactly as
each unseen user adapted alone by the family's own `adapt` on their first K rows in file order.

How the evaluation's time grows with the table is measured by `plural bench evaluate` (benchmarks/), not here.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import plural.evaluate as ev
from plural.data import PreferenceData, read_table
from plural.data.batching import eval_rows
from plural.evaluate import predict, rewards
from plural.models import get_family
from plural.run import configs_for
from plural.train import ADAPT_STREAM, Trainer, TrainResult, seed_key

K = 4
# each of the test table's unseen users split into users of these sizes (rows): <= K rows adapt nothing
PIECES = [(12,), (3, 9), (4, 8), (5, 7), (6, 6), (2, 10)]
SMALL = {
    "vpl": ["model.width=16", "model.pair_hidden=(16,)", "model.decoder_hidden=(16,)", "batch.users_per_batch=8",
            "batch.context_max=8", "batch.targets_per_user=4"],
    "pal-a": ["model.projector_hidden=(16,)", "model.latent_dim=8", "batch.batch_size=64"],
}


@pytest.fixture(scope="module")
def table(tiny):
    """The tiny population's test table with its unseen users split into users of `PIECES` rows, rows shuffled
    (each user's rows scattered over the file, so "first K rows" means file order, not table order)."""
    _, d = tiny
    te = read_table(d / "test.parquet")
    df = te.frame.copy()
    ids = df["user_id"].to_numpy(dtype=object).copy()
    for u, sizes in zip(sorted(set(ids[~df["seen"].to_numpy()])), PIECES, strict=True):
        rows = np.flatnonzero(ids == u)
        assert len(rows) == sum(sizes)
        for i, piece in enumerate(np.split(rows, np.cumsum(sizes)[:-1])):
            ids[piece] = f"{u}_{i}"
    df["user_id"] = ids
    perm = np.random.default_rng(0).permutation(len(df))
    emb = {"prompt_embedding": te.prompt[perm], "chosen_embedding": te.chosen[perm],
           "rejected_embedding": te.rejected[perm]}
    return PreferenceData.from_frame(df.iloc[perm], emb, source="<split>")


@pytest.fixture(scope="module", params=["pal-a", "vpl"])
def fitted(request, tiny):
    """(family, result, training user ids): the family at its initial parameters (PAL-A's k-means start included)
    on the tiny training table, as a `TrainResult` like the one `load_run` builds. No training steps: compiling
    a training program would take most of this file's time, and the evaluation does not care how the parameters
    were reached."""
    name = request.param
    _, d = tiny
    data = read_table(d / "train.parquet")
    c = configs_for(name, SMALL[name] + ["train.mesh=(1,1)"])
    t = Trainer(get_family(name), c["model"], c["train"], data, batches=c["batch"])
    params, rest, _, _ = t.init()
    result = TrainResult(t.family, t.hp, t.cfg, t.spec, t.seeds, t.graphdef, params, rest, t.seen_states(params, rest),
                         history=[])
    return name, result, list(data.users)


@pytest.fixture(scope="module")
def alone(fitted, table):
    """{user index: (row indices in file order, state)} for each unseen user with more than K rows, each adapted
    alone (one jitted `adapt` per user, no vmap): the j-th such user (in order of first appearance) with the key
    fold_in(ADAPT_STREAM key of the seed, j), on its first K rows in file order."""
    _, result, users = fitted
    data = table
    model = result.model(0)
    rows = eval_rows(data, users, result.spec.get("groups", []))
    seen = jax.tree.map(lambda s: s[0], result.seen)
    adapt = jax.jit(lambda c, key: model.adapt(c, key, seen))
    base = seed_key(result.seeds[0], ADAPT_STREAM)
    out, j = {}, 0
    for u in range(data.n_users):
        r = np.flatnonzero(data.user == u)
        if data.users[u] in users or len(r) <= K:
            continue
        ctx = {k: jnp.asarray(v[r[:K]]) for k, v in rows.items()}
        ctx["mask"] = jnp.ones(K, jnp.float32)
        out[u] = (r, jax.tree.map(np.asarray, adapt(ctx, jax.random.fold_in(base, j))))
        j += 1
    return out


def _per_row(state, n):
    return jax.tree.map(lambda x: np.broadcast_to(x, (n, *x.shape)), state)


@pytest.mark.parametrize("chunk,score_from", [(3, K + 2), (None, None)], ids=["3-users-a-call", "one-call"])
def test_unseen_users_margins_equal_each_user_adapted_alone(fitted, table, alone, chunk, score_from, monkeypatch):
    """Adapted users' scored margins equal those under the state `adapt` gives the user alone (to float
    rounding: batched and single programs may round differently), with the evaluation adapting 3 users per call
    (8 adapted users: calls of 3, 3 and 2 + 1 padding) or all in one; exactly the seen rows and the unseen users'
    rows at positions >= score_from (default K) are scored."""
    name, result, users = fitted
    if chunk is not None:
        monkeypatch.setattr(ev, "ADAPT_CHUNK", chunk)
    pred = predict(result, users, table, shots=K, score_from=score_from)
    assert len(alone) == 8  # users of more than K rows among the 11 unseen ones
    states = np.stack([np.concatenate([np.ravel(x) for x in jax.tree.leaves(st)]) for _, st in alone.values()])
    assert len(np.unique(states.round(4), axis=0)) == len(alone)  # every user's own state: a mix-up would show

    frm = K if score_from is None else score_from
    seen_rows = np.flatnonzero(np.isin(table.users[table.user], users))
    unseen_scored = [r for u in range(table.n_users) if table.users[u] not in users
                     for r in np.flatnonzero(table.user == u)[frm:]]
    assert pred["row"].tolist() == sorted([*seen_rows, *unseen_scored])  # file order

    margin = pd.Series(pred["margin"].to_numpy(), index=pred["row"].to_numpy())
    model = result.model(0)
    margins = jax.jit(lambda p, c, r, s: model.margin(p, c, r, s))
    for u, (r, state) in alone.items():
        r = r[frm:]
        np.testing.assert_allclose(margin[r].to_numpy(), margins(table.prompt[r], table.chosen[r], table.rejected[r],
                                                                 _per_row(state, len(r))),
                                   rtol=1e-5, atol=1e-6, err_msg=f"{name}: user {table.users[u]}")


def test_score_gives_the_context_rows_their_users_adapted_state(fitted, table, alone, monkeypatch):
    """`plural score --shots K`: every row of an adapted user, its K context rows included, gets the rewards of the
    user's adapted state; the context rows are flagged `adapt_row`."""
    name, result, users = fitted
    monkeypatch.setattr(ev, "ADAPT_CHUNK", 3)
    out = rewards(result, users, table, shots=K)
    model = result.model(0)
    reward = jax.jit(lambda p, y, s: model.reward(p, y, s))
    for u, (r, state) in alone.items():
        assert out["adapt_row"].to_numpy()[r].tolist() == [True] * K + [False] * (len(r) - K)
        np.testing.assert_allclose(out["chosen_reward"].to_numpy()[r],
                                   reward(table.prompt[r], table.chosen[r], _per_row(state, len(r))),
                                   rtol=1e-5, atol=1e-6, err_msg=f"{name}: user {table.users[u]}")
