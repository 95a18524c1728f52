"""An ideal-point mixture population: K groups, each with a prototype in embedding space.

Generative model (all in R^D, D = `dim`):
- group k has a prototype p_k = `spread` * a random unit vector; the groups' shares are `group_sizes`
  (unequal, so minorities exist);
- user i of group k has an ideal point u_i = p_k + `user_noise` * N(0, I/D);
- a response embedding y is a uniform random unit vector (like L2-normalised sentence embeddings), a
  prompt embedding x one of `n_prompts` unit vectors (the reward does not depend on it: the prompt is
  context the models must learn to ignore);
- user i's reward r_i(y) = -s * ||y - u_i||^2, with s set so that reward differences of random pairs
  have standard deviation `margin_scale`;
- a pair (a, b) is labelled by Bradley-Terry noise: P(a > b) = sigma(r_i(a) - r_i(b)).

Every row carries its ground truth: `oracle_p` = P(user prefers chosen | truth) and `population_p` =
the group-share-weighted P(chosen > rejected), the best any single (user-blind) predictor can do. From
them: the oracle's expected accuracy mean(max(p, 1-p)) and the single model's mean(p if q > 1/2 else
1-p). A model with margins m has expected accuracy mean(p if m > 0 else 1-p) (`analysis.expected_accuracy`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd


@dataclasses.dataclass(frozen=True)
class IdealPointConfig:
    n_groups: int = 3
    group_sizes: tuple[float, ...] = (0.6, 0.3, 0.1)  # shares of users; normalised
    dim: int = 32  # embedding size D
    n_users: int = 60  # seen users (training)
    n_unseen: int = 30  # users that appear only in the test table
    train_pairs: int = 60  # pairs per seen user in train
    test_pairs: int = 40  # pairs per user (seen and unseen) in test
    n_prompts: int = 64  # 0: no prompt column (one fixed context)
    spread: float = 1.0  # prototype norm (between-group disagreement)
    user_noise: float = 0.1  # within-group spread of ideal points
    margin_scale: float = 4.0  # std of reward differences of random pairs (sharpness of labels)
    seed: int = 0


@dataclasses.dataclass
class Population:
    """A simulated population: train / test preference tables and the ground truth behind them."""

    config: IdealPointConfig
    train: pd.DataFrame
    test: pd.DataFrame
    prototypes: np.ndarray  # (K, D)
    ideal_points: dict[str, np.ndarray]  # user_id -> (D,)
    user_group: dict[str, str]
    scale: float

    def truth(self) -> dict:
        """Oracle and best-single-model expected accuracies on the test table, overall / seen / unseen / per group."""
        return truth_of(self.test)

    def write(self, out_dir: str | Path) -> Path:
        """Write train.parquet, test.parquet and truth.json (config, accuracies, prototypes) to out_dir."""
        return write_population(out_dir, self, {"prototypes": self.prototypes.tolist(), "user_group": self.user_group})


def truth_of(test: pd.DataFrame) -> dict:
    """Oracle and single-model expected accuracies of a test table with `oracle_p` / `population_p`:
    {"all" | "seen" | "unseen": {...}, "per_group": {group: {...}}}."""
    out = {}
    for name, rows in (("all", test), ("seen", test[test.seen]), ("unseen", test[~test.seen])):
        out[name] = {"oracle_accuracy": oracle_accuracy(rows), "single_accuracy": single_accuracy(rows)}
    out["per_group"] = {g: {"oracle_accuracy": oracle_accuracy(r), "single_accuracy": single_accuracy(r)}
                        for g, r in test.groupby("group", sort=True)}
    return out


def write_population(out_dir: str | Path, pop, extra: dict) -> Path:
    """Write pop.train / pop.test as parquet and truth.json = config + accuracies + `extra`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pop.train.to_parquet(out / "train.parquet", index=False)
    pop.test.to_parquet(out / "test.parquet", index=False)
    (out / "truth.json").write_text(json.dumps({
        "config": dataclasses.asdict(pop.config), "accuracy": pop.truth(), **extra,
    }, indent=1, sort_keys=True))
    return out


def oracle_accuracy(rows: pd.DataFrame) -> float:
    p = rows["oracle_p"].to_numpy()
    return float(np.mean(np.maximum(p, 1 - p)))


def single_accuracy(rows: pd.DataFrame) -> float:
    p, q = rows["oracle_p"].to_numpy(), rows["population_p"].to_numpy()
    return float(np.mean(np.where(q > 0.5, p, 1 - p)))


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def simulate_ideal_point(cfg: IdealPointConfig = IdealPointConfig()) -> Population:
    """Draw a population and its train / test tables (deterministic per `cfg.seed`)."""
    if len(cfg.group_sizes) != cfg.n_groups:
        raise ValueError(f"group_sizes has {len(cfg.group_sizes)} entries for {cfg.n_groups} groups")
    rng = np.random.default_rng(cfg.seed)
    D, K = cfg.dim, cfg.n_groups
    share = np.asarray(cfg.group_sizes, float) / np.sum(cfg.group_sizes)
    protos = rng.normal(size=(K, D))
    protos = cfg.spread * protos / np.linalg.norm(protos, axis=1, keepdims=True)
    prompts = _unit(rng.normal(size=(max(cfg.n_prompts, 1), D)))

    def assign(n):  # group sizes as close to the shares as integers allow, each group non-empty
        counts = np.maximum(np.floor(share * n).astype(int), 1)
        while counts.sum() < n:
            counts[np.argmax(share * n - counts)] += 1
        return np.repeat(np.arange(K), counts)[:n]

    users = []
    for kind, n in (("seen", cfg.n_users), ("unseen", cfg.n_unseen)):
        for j, g in enumerate(assign(n)):
            uid = f"{kind[0]}{j:04d}"
            users.append((uid, g, kind == "seen", protos[g] + cfg.user_noise * rng.normal(size=D) / np.sqrt(D)))

    # reward scale: std of raw reward differences of random pairs for a typical ideal point
    a, b = _unit(rng.normal(size=(2, 4096, D)))
    u = protos[rng.integers(0, K, 4096)]
    raw = -((a - u) ** 2).sum(1) + ((b - u) ** 2).sum(1)
    scale = cfg.margin_scale / raw.std()

    def reward(y, point):
        return -scale * ((y - point) ** 2).sum(-1)

    def pairs(uid, g, seen, point, n, split):
        x = prompts[rng.integers(0, len(prompts), n)]
        ya, yb = _unit(rng.normal(size=(2, n, D)))
        p_a = _sigmoid(reward(ya, point) - reward(yb, point))
        q_a = sum(share[k] * _sigmoid(reward(ya, protos[k]) - reward(yb, protos[k])) for k in range(K))
        a_wins = rng.random(n) < p_a
        chosen, rejected = np.where(a_wins[:, None], ya, yb), np.where(a_wins[:, None], yb, ya)
        cols = {"prompt_embedding": list(x.astype(np.float32))} if cfg.n_prompts > 0 else {}
        return pd.DataFrame({
            "user_id": uid, "group": f"g{g}", "seen": seen, **cols,
            "chosen_embedding": list(chosen.astype(np.float32)),
            "rejected_embedding": list(rejected.astype(np.float32)),
            "oracle_p": np.where(a_wins, p_a, 1 - p_a), "population_p": np.where(a_wins, q_a, 1 - q_a),
        })

    train = [pairs(uid, g, s, pt, cfg.train_pairs, "train") for uid, g, s, pt in users if s]
    test = [pairs(uid, g, s, pt, cfg.test_pairs, "test") for uid, g, s, pt in users]
    return Population(
        config=cfg,
        train=pd.concat(train, ignore_index=True),
        test=pd.concat(test, ignore_index=True),
        prototypes=protos,
        ideal_points={uid: pt for uid, _, _, pt in users},
        user_group={uid: f"g{g}" for uid, g, _, _ in users},
        scale=float(scale),
    )
