"""Validation inside training (early stopping, best parameters), `fit --val`, `evaluate --score-from`,
`plural score` and `plural.load_run(RUN).reward`."""

import json

import numpy as np
import pandas as pd
import pytest

import plural
from plural.cli import main
from plural.data import read_table
from plural.evaluate import predict
from plural.models import get_family
from plural.run import configs_for, fit
from plural.train import train

FAST = ["model.hidden=(16,)", "train.steps=400", "batch.batch_size=64", "train.eval_every=20",
        "train.early_stopping=3", "train.lr=3e-2", "train.log_every=20", "train.ckpt_every=40"]


def _sets(items):
    return [a for s in items for a in ("--set", s)]


def _val_accuracy(result, data, val, i=0):
    """Seen users' val accuracy of seed index i, computed through the public scoring path."""
    rows = predict(result, list(data.users), val, seed_index=i)
    return rows.loc[rows.seen, "correct"].mean()


def test_early_stopping_keeps_the_best_parameters(tiny):
    """A large learning rate overfits the tiny table: training stops before train.steps, and the model
    returned is the one at the best evaluation, not the last one."""
    _, d = tiny
    data, val = read_table(d / "train.parquet"), read_table(d / "val.parquet")
    c = configs_for("bt", FAST)
    result = train(get_family("bt"), c["model"], c["train"], data, seeds=(0, 1), progress=False, val=val)
    for i in range(2):
        m = result.seed_metrics(i)
        curve = [h["val_accuracy"] for h in m["history"] if "val_accuracy" in h]
        assert m["stopped_step"] is not None and m["stopped_step"] < 400
        assert m["best_val_accuracy"] == max(curve) and m["best_step"] < m["stopped_step"]
        assert curve[-1] < max(curve) or len(curve) > 3  # it stopped because it stopped improving
        assert np.isclose(_val_accuracy(result, data, val, i), m["best_val_accuracy"], atol=1e-6)


def test_a_stopped_seed_does_not_depend_on_the_seeds_beside_it(tiny):
    _, d = tiny
    data, val = read_table(d / "train.parquet"), read_table(d / "val.parquet")
    c = configs_for("bt", FAST)
    both = train(get_family("bt"), c["model"], c["train"], data, seeds=(0, 1), progress=False, val=val)
    alone = train(get_family("bt"), c["model"], c["train"], data, seeds=(1,), progress=False, val=val)
    assert both.seed_metrics(1)["best_step"] == alone.seed_metrics(0)["best_step"]
    a = np.concatenate([np.ravel(x[1]) for x in __import__("jax").tree.leaves(both.params)])
    b = np.concatenate([np.ravel(x[0]) for x in __import__("jax").tree.leaves(alone.params)])
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.slow  # about 27 s per family: run with -m slow
@pytest.mark.parametrize("family,own", [("pal-a", []), ("fewshot", ["model.adapt_params=head"])])
def test_val_shots_adds_unseen_users_adapted_from_their_shots(tiny, family, own):
    """`train.val_shots=K`: each evaluation's score is the mean of the seen users' val accuracy and the
    val-unseen users' accuracy on their rows after the first K, adapted from those K; checked at the best
    step against `predict` (the `plural evaluate` path) with PAL-A, a family whose adapted state depends on
    the shots, and MAML, whose new users start from the seen users' states (`adapt_init=seen`)."""
    _, d = tiny
    data, val = read_table(d / "train.parquet"), read_table(d / "val.parquet")
    sets = ["train.steps=120", "train.eval_every=40", "train.early_stopping=0", "train.log_every=40"] + own
    c = configs_for(family, sets + ["train.val_shots=5"])
    result = train(get_family(family), c["model"], c["train"], data, seeds=(0, 1), progress=False, val=val,
                   batches=c["batch"])
    for i in range(2):  # each replica with its own parameters
        m = result.seed_metrics(i)
        seen = predict(result, list(data.users), val, seed_index=i)
        unseen = predict(result, list(data.users), val, shots=5, seed_index=i)
        unseen = unseen[~unseen.seen]
        assert len(unseen) > 0 and unseen.user_id.nunique() >= 2
        want = (seen.loc[seen.seen, "correct"].mean() + unseen["correct"].mean()) / 2
        assert np.isclose(m["best_val_accuracy"], want, atol=1e-6)
    m = result.seed_metrics(0)
    plain = train(get_family(family), configs_for(family, sets)["model"], configs_for(family, sets)["train"], data,
                  progress=False, val=val, batches=c["batch"]).seed_metrics(0)
    assert [h["val_accuracy"] for h in plain["history"]] != [h["val_accuracy"] for h in m["history"]]


def test_val_shots_without_unseen_validation_users_is_refused(tiny, tmp_path, capsys):
    _, d = tiny
    rc = main(["fit", "--data", str(d / "train.parquet"), "--model", "bt", "--out", str(tmp_path / "run"),
               *_sets(["train.val_shots=5", "train.steps=20"])])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "train.val_shots=5" in err and "no user unseen in training" in err
    assert not (tmp_path / "run" / "metrics.json").exists()
    rc = main(["fit", "--data", str(d / "train.parquet"), "--model", "bt", "--out", str(tmp_path / "run2"),
               *_sets(["train.val_shots=5", "data.val_fraction=0", "train.steps=20"])])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "needs validation" in err


def test_fit_holds_out_validation_pairs_by_default_and_resumes_to_the_same_bytes(tiny, tmp_path):
    _, d = tiny
    fit("bt", d / "train.parquet", tmp_path / "a", overrides=FAST, progress=False)
    config = json.loads((tmp_path / "a/config.json").read_text())
    assert config["validation"] == {"held_out_fraction": 0.1}
    metrics = json.loads((tmp_path / "a/metrics.json").read_text())
    assert "best_step" in metrics and any("val_loss" in h for h in metrics["history"])

    class Crash(Exception):
        pass

    def crash(step):
        if step == 40:
            raise Crash

    with pytest.raises(Crash):
        fit("bt", d / "train.parquet", tmp_path / "b", overrides=FAST, progress=False, on_chunk=crash)
    fit("bt", d / "train.parquet", tmp_path / "b", overrides=FAST, progress=False, resume=True)
    assert (tmp_path / "b/metrics.json").read_bytes() == (tmp_path / "a/metrics.json").read_bytes()
    assert config["users"] == list(pd.read_parquet(d / "train.parquet")["user_id"].unique())  # every user still trains
    # no validation: every pair trains, the metrics carry no validation entries
    fit("bt", d / "train.parquet", tmp_path / "c", overrides=FAST + ["data.val_fraction=0"], progress=False)
    m = json.loads((tmp_path / "c/metrics.json").read_text())
    assert "best_step" not in m and m["history"][-1]["step"] == 400


def test_load_run_restores_the_best_parameters(tiny, tmp_path):
    _, d = tiny
    assert main(["fit", "--model", "bt", "--data", str(d / "train.parquet"), "--val", str(d / "val.parquet"),
                 "--out", str(tmp_path / "r")] + _sets(FAST)) == 0
    m = json.loads((tmp_path / "r/metrics.json").read_text())
    run = plural.load_run(tmp_path / "r")
    acc = _val_accuracy(run.result, read_table(d / "train.parquet"), read_table(d / "val.parquet"))
    assert np.isclose(acc, m["best_val_accuracy"], atol=1e-6) and m["best_step"] < m["history"][-1]["step"]


def test_validation_settings_that_would_be_ignored_are_refused(tiny, tmp_path, capsys):
    _, d = tiny
    base = ["fit", "--model", "bt", "--data", str(d / "train.parquet")]
    assert main(base + ["--out", str(tmp_path / "a"), "--set", "train.eval_every=0"]) == 2
    assert main(base + ["--out", str(tmp_path / "b"), "--set", "data.val_fraction=1.5"]) == 2
    assert main(base + ["--out", str(tmp_path / "c"), "--set", "train.val_metric=f1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "val_fraction" in err[0] and "val_fraction" in err[1] and "val_metric" in err[2]


@pytest.fixture(scope="module")
def user_run(tiny, tmp_path_factory):
    """A P-RLHF BT run (a family whose unseen users adapt from shots)."""
    _, d = tiny
    out = tmp_path_factory.mktemp("score") / "r"
    assert main(["fit", "--model", "bt", "--data", str(d / "train.parquet"), "--val", str(d / "val.parquet"),
                 "--out", str(out)] + _sets(["model.condition=user", "model.hidden=(16,)", "train.steps=200"])) == 0
    return out


def test_score_from_scores_the_same_rows_for_every_shot_count(user_run, tiny, tmp_path, capsys):
    _, d = tiny
    test = pd.read_parquet(d / "test.parquet")
    rows = {}
    for k in (0, 2, 5):
        assert main(["evaluate", "--run", str(user_run), "--data", str(d / "test.parquet"), "--shots", str(k),
                     "--score-from", "5", "--out", str(tmp_path / f"{k}.json"), "--rows", str(tmp_path / f"{k}.parquet")]) == 0
        rows[k] = pd.read_parquet(tmp_path / f"{k}.parquet")
        assert json.loads((tmp_path / f"{k}.json").read_text())["score_from"] == 5
    assert rows[0]["row"].tolist() == rows[2]["row"].tolist() == rows[5]["row"].tolist()
    u = test.loc[~test.seen, "user_id"].iloc[0]
    assert rows[2].loc[rows[2].user_id == u, "row"].tolist() == np.flatnonzero(test.user_id.to_numpy() == u)[5:].tolist()
    assert not np.allclose(rows[0]["margin"], rows[2]["margin"])  # the shots did change the unseen users' scores
    assert main(["evaluate", "--run", str(user_run), "--data", str(d / "test.parquet"), "--shots", "5",
                 "--score-from", "2", "--out", str(tmp_path / "bad.json")]) == 2
    assert "--score-from" in capsys.readouterr().err


def test_plural_score_writes_each_rows_rewards(user_run, tiny, tmp_path):
    _, d = tiny
    assert main(["score", "--run", str(user_run), "--data", str(d / "test.parquet"), "--shots", "5",
                 "--out", str(tmp_path / "s.parquet")]) == 0
    s = pd.read_parquet(tmp_path / "s.parquet")
    test = pd.read_parquet(d / "test.parquet")
    assert len(s) == len(test) and {"chosen_reward", "rejected_reward", "user_id", "oracle_p"} <= set(s.columns)
    assert s["adapt_row"].sum() == 5 * test.loc[~test.seen, "user_id"].nunique()
    main(["evaluate", "--run", str(user_run), "--data", str(d / "test.parquet"), "--shots", "5",
          "--out", str(tmp_path / "m.json"), "--rows", str(tmp_path / "rows.parquet")])
    rows = pd.read_parquet(tmp_path / "rows.parquet").set_index("row")
    diff = (s["chosen_reward"] - s["rejected_reward"]).to_numpy()
    np.testing.assert_allclose(diff[rows.index], rows["margin"].to_numpy(), atol=1e-5)

    # the Python API gives the same rewards for a seen user and for an adapted new user
    run = plural.load_run(user_run)
    data = read_table(d / "test.parquet")
    seen_u = test.loc[test.seen, "user_id"].iloc[0]
    idx = np.flatnonzero(test.user_id.to_numpy() == seen_u)
    got = run.reward(data.prompt[idx], data.chosen[idx], user=seen_u)
    np.testing.assert_allclose(got, s["chosen_reward"].to_numpy()[idx], atol=1e-5)
    new_u = test.loc[~test.seen, "user_id"].iloc[0]
    idx = np.flatnonzero(test.user_id.to_numpy() == new_u)
    got = run.reward(data.prompt[idx], data.rejected[idx], context=data.take(idx[:5]))
    np.testing.assert_allclose(got[5:], s["rejected_reward"].to_numpy()[idx][5:], atol=1e-5)
    with pytest.raises(plural.PluralError):
        run.reward(data.prompt[:2], data.chosen[:2], user="nobody")


def test_anonymous_rows_hold_out_whole_users_for_validation(tiny, tmp_path):
    """One user per row: no user has a second pair to hold out, so fit holds out whole (anonymous) users and
    scores them with the population prediction; nothing is silently left unvalidated."""
    _, d = tiny
    df = pd.read_parquet(d / "train.parquet")
    df["user_id"] = [f"a{i}" for i in range(len(df))]
    df.to_parquet(tmp_path / "anon.parquet")
    fit("bt", tmp_path / "anon.parquet", tmp_path / "r", overrides=FAST, progress=False)
    config = json.loads((tmp_path / "r/config.json").read_text())
    metrics = json.loads((tmp_path / "r/metrics.json").read_text())
    assert 0 < len(df) - len(config["users"]) <= 0.12 * len(df) and "best_val_accuracy" in metrics


def test_holdout_takes_something_from_small_tables_and_never_a_users_last_pair(tiny):
    from plural.data.arrays import holdout

    _, d = tiny
    data = read_table(d / "train.parquet")
    small = data.take(np.concatenate([r[:3] for r in data.user_rows()[:2]]))  # 2 users x 3 pairs: 0.1 rounds to 0
    train_part, val = holdout(small, 0.1, seed=0)
    assert val.n_pairs == 1 and train_part.n_pairs == 5 and train_part.n_users == 2  # nobody loses their last pair
    one = data.take(data.user_rows()[0][:1])
    assert holdout(one, 0.1)[1] is None
    a, b = holdout(data, 0.1, seed=3), holdout(data, 0.1, seed=3)
    assert a[1].frame.equals(b[1].frame) and not a[1].frame.equals(holdout(data, 0.1, seed=4)[1].frame) and a[1].n_pairs == sum(round(0.1 * len(r)) for r in data.user_rows())
