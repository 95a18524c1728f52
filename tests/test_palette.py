"""The attribute-weighted community family (palette): its attribute dropout schedule, the content-only
path when every attribute is dropped, the per-community sampler, Bayes over communities for a new user,
and the refusal of a table without attribute columns."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from personas import CommunityConfig, simulate_communities
from plural.cli import main
from plural.data import read_table
from plural.data.batching import GroupBatches, device_data
from plural.models.palette import Palette, PaletteHparams

SPEC = {"dim": 6 + 3, "prompt_dim": 2, "n_users": 3, "groups": ["a", "b", "c"], "attr_names": ["x", "y", "z"]}


def test_dropout_rises_linearly_to_its_cap():
    model = Palette(SPEC, PaletteHparams(attr_dropout_max=0.4, dropout_ramp_steps=100), nnx.Rngs(0))
    assert [round(float(model.dropout(s)), 6) for s in (0, 25, 100, 1000)] == [0.0, 0.1, 0.4, 0.4]


def test_every_attribute_dropped_leaves_the_content_reward():
    model = Palette(SPEC, PaletteHparams(hidden=8), nnx.Rngs(1))
    r = np.random.default_rng(0)
    model.sign[...] = jnp.asarray(r.normal(size=model.sign.shape))  # (0 at initialisation: no attribute effect yet)
    x, y = jnp.asarray(r.normal(size=(5, 2))), jnp.asarray(r.normal(size=(5, 9)))
    got, alpha = model.community_rewards(x, y, jnp.zeros((5, 3)))
    p = {k: np.asarray(v) for k, v in model._params().items()}
    h_c = jax.nn.gelu(np.concatenate([x, y[:, :6]], -1) @ p["w_content"][1] + p["b_content"][1])
    np.testing.assert_allclose(np.asarray(got[1]), np.asarray(h_c @ p["w_out"][1] + p["b_out"][1]), rtol=1e-5, atol=1e-6)
    with_attrs, alpha = model.community_rewards(x, y)
    assert float(jnp.abs(with_attrs[1] - got[1]).max()) > 1e-4  # the attributes do enter otherwise
    np.testing.assert_allclose(np.asarray(alpha.sum(-1)), 1.0, rtol=1e-5)


def test_fixed_attention_is_one_weighting_per_community_and_linear_content_is_affine():
    model = Palette(SPEC, PaletteHparams(hidden=8, attention="fixed", activation="linear"), nnx.Rngs(3))
    assert not hasattr(model, "w_q") and model.logits.shape == (3, 3)
    r = np.random.default_rng(2)
    model.logits[...] = jnp.asarray(r.normal(size=(3, 3)))
    model.sign[...] = jnp.asarray(r.normal(size=(3, 3)))
    x, y = jnp.asarray(r.normal(size=(7, 2))), jnp.asarray(r.normal(size=(7, 9)))
    _, alpha = model.community_rewards(x, y)
    np.testing.assert_allclose(np.asarray(alpha), np.broadcast_to(np.asarray(jax.nn.softmax(model.logits[...]))[:, None],
                                                                   alpha.shape), rtol=1e-6)
    # linear content layer: with the attributes dropped the reward is affine in [e(x), e(y)]
    drop = jnp.zeros((7, 3))
    (r1, _), (r2, _) = model.community_rewards(x, y, drop), model.community_rewards(-x, -y, drop)
    r0, _ = model.community_rewards(0 * x, 0 * y, drop)
    np.testing.assert_allclose(np.asarray(r1 + r2), np.asarray(2 * r0), rtol=1e-5, atol=1e-5)
    gelu = Palette(SPEC, PaletteHparams(hidden=8), nnx.Rngs(3))
    (g1, _), (g2, _), (g0, _) = (gelu.community_rewards(s * x, s * y, drop) for s in (1, -1, 0))
    assert float(jnp.abs(g1 + g2 - 2 * g0).max()) > 1e-3  # (the default layer is not)


def test_shared_content_is_one_reward_that_every_communitys_pairs_train():
    r = np.random.default_rng(5)
    x, y = jnp.asarray(r.normal(size=(4, 2))), jnp.asarray(r.normal(size=(4, 9)))
    only_a = {"prompt": jnp.asarray(r.normal(size=(8, 3, 2))), "chosen": jnp.asarray(r.normal(size=(8, 3, 9))),
              "rejected": jnp.asarray(r.normal(size=(8, 3, 9))), "mask": jnp.zeros((8, 3)).at[:, 0].set(1.0)}
    moved = {}
    for share in (False, True):
        model = Palette(SPEC, PaletteHparams(hidden=8, share_content=share), nnx.Rngs(2))
        assert model.w_content.shape == ((6 + 2, 8) if share else (3, 6 + 2, 8))
        dropped = jnp.zeros((4, 3))  # every attribute dropped: the content reward alone
        before, _ = model.community_rewards(x, y, dropped)
        if share:  # one content reward for all three communities
            np.testing.assert_allclose(np.asarray(before[0]), np.asarray(before[2]), rtol=1e-6)
        grads = nnx.jit(nnx.grad(lambda m: m.loss(only_a, jax.random.key(0), 0)[0]))(model)  # community a's pairs alone
        nnx.update(model, jax.tree.map(lambda p, g: p - 0.1 * g, nnx.state(model, nnx.Param), grads))
        after, _ = model.community_rewards(x, y, dropped)
        moved[share] = float(jnp.abs(after[1] - before[1]).max())  # community b's content reward
    assert moved[False] < 1e-7  # separate models: a's pairs leave b alone
    assert moved[True] > 1e-4  # shared: a's pairs train b's content reward too


def test_palette_options_are_checked(tmp_path, capsys):
    simulate_communities(CommunityConfig(n_communities=2, n_attributes=3, dim=8, train_pairs=20)).write(tmp_path)
    out = tmp_path / "run"
    assert main(["fit", "--model", "palette", "--data", str(tmp_path / "train.parquet"), "--out", str(out),
                 "--set", "model.attention=sideways"]) == 2
    assert "model.attention" in capsys.readouterr().err
    assert main(["fit", "--model", "palette", "--data", str(tmp_path / "train.parquet"), "--out", str(out),
                 "--set", "model.activation=affine"]) == 2
    assert "model.activation" in capsys.readouterr().err
    assert main(["fit", "--model", "palette", "--data", str(tmp_path / "train.parquet"), "--out", str(out),
                 "--set", "model.attention=fixed", "--set", "model.activation=linear", "--set", "train.steps=20",
                 "--set", "train.eval_every=0", "--set", "data.val_fraction=0"]) == 0


def test_group_batches_draw_every_community_from_its_own_rows(tmp_path):
    simulate_communities(CommunityConfig(n_communities=5, n_attributes=3, dim=8, train_pairs=20)).write(tmp_path)
    data = read_table(tmp_path / "train.parquet")
    dd = device_data(data)
    batch = GroupBatches(pairs_per_group=16).sample(jax.random.key(0), dd)
    assert batch["group"].shape == (16, 5) and batch["mask"].shape == (16, 5)
    np.testing.assert_array_equal(np.asarray(batch["group"]), np.tile(np.arange(5), (16, 1)))
    assert len(np.unique(np.asarray(batch["chosen"])[:, 2, 0])) > 8  # drawn, not one row repeated


def test_a_new_user_is_placed_in_the_community_whose_model_explains_their_pairs():
    model = Palette(SPEC, PaletteHparams(hidden=8), nnx.Rngs(2))
    r = np.random.default_rng(1)
    model.sign[...] = jnp.asarray(r.normal(size=model.sign.shape))  # communities that differ (content is shared)
    x, a, b = (jnp.asarray(r.normal(size=(40, d))) for d in (2, 9, 9))
    ra, _ = model.community_rewards(x, a)
    rb, _ = model.community_rewards(x, b)
    wins = np.asarray(ra[2] > rb[2])  # labelled by community 2's model
    ctx = {"prompt": x, "chosen": jnp.where(wins[:, None], a, b), "rejected": jnp.where(wins[:, None], b, a),
           "mask": jnp.ones(40)}
    post = np.asarray(model.adapt(ctx, None))
    assert post.argmax() == 2 and post[2] > 0.9, post
    none = np.asarray(model.adapt({**ctx, "mask": jnp.zeros(40)}, None))
    np.testing.assert_allclose(none, np.asarray(model.population_state()), rtol=1e-5)


def test_a_table_without_attribute_columns_is_refused(tiny, tmp_path, capsys):
    import pandas as pd

    _, d = tiny
    t = pd.read_parquet(d / "train.parquet")
    t.drop(columns=[c for c in t.columns if "_attr_" in c]).to_parquet(tmp_path / "plain.parquet")
    assert main(["fit", "--model", "palette", "--data", str(tmp_path / "plain.parquet"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "attribute" in err and "\n" not in err and not (tmp_path / "r").exists()


@pytest.mark.slow  # benchmark plumbing (two compiled trainers, ~25 s): run with -m slow
def test_bench_palette_times_the_communities_at_once_and_one_by_one(tmp_path, capsys):
    out = tmp_path / "palette.json"
    import json

    import jax

    cache = jax.config.jax_compilation_cache_dir
    assert main(["bench", "palette", "--communities", "3", "--pairs", "20", "--steps", "2", "--fit-steps", "20",
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["communities"] == 3 and res["at_once_s"] > 0 and res["one_by_one_s"] > 0
    assert abs(res["at_once_over_one_by_one"] - res["at_once_s"] / res["one_by_one_s"]) < 1e-9
    assert res["fit_steps"] == 20 and res["fit_at_once_s"] > 0 and res["fit_one_by_one_s"] > 0
    assert abs(res["fit_at_once_over_one_by_one"] - res["fit_at_once_s"] / res["fit_one_by_one_s"]) < 1e-9
    assert jax.config.jax_compilation_cache_dir == cache  # the process's own setting is put back
    assert "at_once_over_one_by_one" in capsys.readouterr().out
    # the fits compile into the cache folder they are given (a warm cache for both kinds of fit)
    from personas.communities import CommunityConfig, simulate_communities
    from plural.bench import _palette_fits
    from plural.data import read_table
    from plural.models import get_family

    simulate_communities(CommunityConfig(n_communities=2, n_users=2, train_pairs=20, val_pairs=5, test_pairs=1)).write(tmp_path / "pop")
    folder = tmp_path / "jit"
    res = _palette_fits(get_family("palette"), read_table(tmp_path / "pop" / "train.parquet"),
                        read_table(tmp_path / "pop" / "val.parquet"), 20, cache=str(folder))
    assert res["fit_one_by_one_s"] > 0 and folder.is_dir() and any(folder.iterdir())
    assert jax.config.jax_compilation_cache_dir == cache
