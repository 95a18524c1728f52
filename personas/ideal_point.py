"""An ideal-point mixture population: K groups, each with a prototype in embedding space.

Generative model (all in R^D, D = `dim`):
- group k has a prototype p_k = `spread` * a random unit vector; the groups' shares are `group_sizes`
  (unequal, so minorities exist);
- user i of group k has an ideal point u_i = p_k + `user_noise` * N(0, I/D);
- a response embedding y is drawn from `item_dist`:
  "sphere" (default): a uniform random unit vector (like L2-normalised sentence embeddings);
  "gaussian": N(0, I/D), so norms vary around 1 (std about 1/sqrt(2D));
  "clustered": y = unit(c_j + `item_cluster_noise` * N(0, I/D)) around one of `n_item_clusters` random
  unit centres c_j (chosen uniformly per item), re-normalised to the unit sphere, so it differs from
  "sphere" only in where responses concentrate (topics), not in their norm;
  a prompt embedding x is one of `n_prompts` uniform unit vectors whatever `item_dist` (the reward does
  not depend on it: the prompt is context the models must learn to ignore); with `context_signal` c > 0
  the prompt instead says who is asking: x = z + c d_g with a fresh z ~ N(0, I/D) per row and d_g one of
  K orthonormal group directions, so P(group | x) = softmax_g(log share_g + D c x . d_g)
  (`group_posterior`): at c = 0 a router on the prompt learns nothing, at c = 1 it nearly reads the group;
- user i's reward r_i(y) = -s * ||y - u_i||^2, with s set so that reward differences of random pairs
  (drawn from `item_dist`, for a group's prototype) have standard deviation `margin_scale`;
- a pair (a, b) is labelled by Bradley-Terry noise: P(a > b) = sigma(r_i(a) - r_i(b)).

With `anonymous=true` every row gets its own user id ("r..", "v..", "t.." per table; `group` kept), so
no user is seen twice and every val / test row is scored as a new user.

Tables (user ids: seen "s0000".., test-unseen "u0000".., validation-unseen "v0000.."; each kind's
groups in the shares `group_sizes` as closely as integers allow):
- train: `train_pairs` pairs of each of the `n_users` seen users;
- val: `val_pairs` further pairs of each seen user, and `test_pairs` pairs of each of `n_val_unseen`
  validation-unseen users (-1 = as many as `n_unseen`), who are in no other table;
- test: `test_pairs` further pairs of each seen user and of each of the `n_unseen` test-unseen users.
Every pair's responses are fresh draws, so no pair repeats across tables.

Every row carries its ground truth: `seen`, `oracle_p` = P(this user prefers chosen | their ideal
point) and `population_p` = sum_k share_k P(a random member of group k prefers chosen), the best any
single (user-blind) predictor can do, `disagreement` = the between-group standard deviation (share-weighted)
of the pair's margin at the groups' prototypes (logits), and `context_p` = sum_k P(k | prompt) P(a member of k prefers
chosen), the best prompt-aware but user-blind predictor (= `population_p` when the prompt says nothing);
truth.json reports the oracle's, the single model's and this context model's accuracies. For a group the margin r_u(a) - r_u(b) is Gaussian in the user
noise (it is linear in u), so that probability is an exact Gauss-Hermite average over it. From them:
the oracle's expected accuracy mean(max(p, 1-p)) and the single model's mean(p if q > 1/2 else 1-p).
A model with margins m has expected accuracy mean(p if m > 0 else 1-p) (`analysis.expected_accuracy`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pandas as pd

from plural.config import check_config
from plural.files import atomic_path, write_atomic

SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class IdealPointConfig:
    n_groups: int = 3
    group_sizes: tuple[float, ...] = (0.6, 0.3, 0.1)  # shares of users; normalised
    dim: int = 32  # embedding size D
    n_users: int = 60  # seen users (train, val and test rows)
    n_unseen: int = 30  # test-unseen users: test rows only
    n_val_unseen: int = -1  # validation-unseen users: val rows only; -1 = n_unseen
    train_pairs: int = 60  # pairs per seen user in train
    val_pairs: int = 10  # pairs per seen user in val
    test_pairs: int = 40  # pairs per seen user in test, and per unseen user in their table (test or val)
    n_prompts: int = 64  # 0: no prompt column (one fixed context)
    spread: float = 1.0  # prototype norm (between-group disagreement)
    user_noise: float = 0.1  # within-group spread of ideal points
    margin_scale: float = 4.0  # std of reward differences of random pairs (sharpness of labels)
    item_dist: Literal["sphere", "gaussian", "clustered"] = "sphere"  # response embeddings
    n_item_clusters: int = 8  # item_dist=clustered: number of cluster centres
    item_cluster_noise: float = 0.3  # item_dist=clustered: within-cluster noise (norm about this) before re-normalising
    context_signal: float = 0.0  # > 0: each prompt is z + context_signal * d_g (z ~ N(0, I/D) per row, d_g the asker's group direction)
    anonymous: bool = False  # one user id per row (the group is kept for analysis): no user is seen twice
    n_attributes: int = 0  # > 0: attribute columns a0.. = each response's projection on that many random unit directions
    seed: int = 0


class Tables:
    """Mixin of the populations: `train`, `val`, `test` tables with ground-truth columns."""

    def truth(self, split: str = "test") -> dict:
        """Oracle and best-single-model expected accuracies on one table (default test), overall / seen /
        unseen / per group (see `truth_of`)."""
        if split not in SPLITS:
            raise ValueError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
        return truth_of(getattr(self, split))


@dataclasses.dataclass
class Population(Tables):
    """A simulated population: train / val / test preference tables and the ground truth behind them."""

    config: IdealPointConfig
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    prototypes: np.ndarray  # (K, D)
    ideal_points: dict[str, np.ndarray]  # user_id -> (D,)
    user_group: dict[str, str]
    scale: float  # s of the reward -s ||y - u||^2

    def write(self, out_dir: str | Path) -> Path:
        """Write train / val / test .parquet and truth.json (config, accuracies, prototypes) to out_dir."""
        return write_population(out_dir, self, {"prototypes": self.prototypes.tolist(), "user_group": self.user_group})


def truth_of(table: pd.DataFrame) -> dict:
    """Oracle and single-model expected accuracies of a table with `seen` / `group` / `oracle_p` /
    `population_p`: {"all" | "seen" | "unseen": {...}, "per_group": {group: {...}}}, each
    {"oracle_accuracy", "single_accuracy"}; subsets without rows are left out ({} for an empty table)."""
    def acc(rows):
        out = {"oracle_accuracy": oracle_accuracy(rows), "single_accuracy": single_accuracy(rows)}
        if "context_p" in rows:  # the best prompt-aware but user-blind predictor
            p, c = rows["oracle_p"].to_numpy(), rows["context_p"].to_numpy()
            out["context_accuracy"] = _blind_accuracy(p, c)
        return out

    if table.empty:
        return {}
    seen = table["seen"].to_numpy(bool)
    out = {name: acc(rows) for name, rows in (("all", table), ("seen", table[seen]), ("unseen", table[~seen]))
           if len(rows)}
    out["per_group"] = {g: acc(r) for g, r in table.groupby("group", sort=True)}
    return out


def write_population(out_dir: str | Path, pop, extra: dict) -> Path:
    """Write pop.train / pop.val / pop.test as parquet and truth.json = config + "accuracy" (test) +
    "val_accuracy" + `extra`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        with atomic_path(out / f"{split}.parquet") as tmp:
            getattr(pop, split).to_parquet(tmp, index=False)
    write_atomic(out / "truth.json", json.dumps({
        "config": dataclasses.asdict(pop.config), "accuracy": pop.truth("test"), "val_accuracy": pop.truth("val"),
        **extra,
    }, indent=1, sort_keys=True))
    return out


def oracle_accuracy(rows: pd.DataFrame) -> float:
    p = rows["oracle_p"].to_numpy()
    return float(np.mean(np.maximum(p, 1 - p)))


def single_accuracy(rows: pd.DataFrame) -> float:
    """Expected accuracy of the best user-blind predictor: it picks the side with population_p on it, and a pair
    the population is split on exactly (population_p = 1/2) is a coin flip for it (1/2)."""
    return _blind_accuracy(rows["oracle_p"].to_numpy(), rows["population_p"].to_numpy())


def _blind_accuracy(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.mean(np.where(np.isclose(q, 0.5), 0.5, np.where(q > 0.5, p, 1 - p))))


def assign_groups(shares: np.ndarray, n: int) -> np.ndarray:
    """(n,) group indices, sorted: counts as close to n * shares as integers allow, every group non-empty
    when n >= K."""
    K = len(shares)
    counts = np.floor(shares * n).astype(int)
    if n >= K:
        counts = np.maximum(counts, 1)
    while counts.sum() < n:
        counts[np.argmax(shares * n - counts)] += 1
    while counts.sum() > n:
        counts[np.argmax(counts)] -= 1
    return np.repeat(np.arange(K), counts)


def n_val_unseen(cfg) -> int:
    """The number of validation-unseen users (`n_val_unseen`, -1 = `n_unseen`)."""
    return cfg.n_unseen if cfg.n_val_unseen == -1 else cfg.n_val_unseen


def users_of(shares: np.ndarray, counts: dict[str, int]) -> list[tuple[str, int, str]]:
    """[(user_id, group, kind)] for kind in counts ("seen" -> "s0000".., "test" -> "u0000"..,
    "val" -> "v0000.."), each kind's groups in `shares` (`assign_groups`)."""
    prefix = {"seen": "s", "test": "u", "val": "v"}
    return [(f"{prefix[kind]}{j:04d}", int(g), kind) for kind, n in counts.items()
            for j, g in enumerate(assign_groups(shares, n))]


def check_tables(cfg) -> None:
    """Validate the user / pair counts shared by every population config (ValueError naming the field)."""
    if min(cfg.n_users, cfg.train_pairs, cfg.test_pairs) < 1:
        raise ValueError("n_users, train_pairs and test_pairs must be at least 1")
    if cfg.n_unseen < 0 or cfg.val_pairs < 0:
        raise ValueError("n_unseen and val_pairs must be at least 0")
    if cfg.n_val_unseen < -1:
        raise ValueError(f"n_val_unseen={cfg.n_val_unseen}: must be at least 0 (or -1 for n_unseen)")


def draw_tables(users: list[tuple[str, int, str]], cfg,
                pairs: Callable[[str, int, bool, int, str], pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """{"train", "val", "test"} tables from `pairs(user_id, group, seen, n, split)`, called in this order:
    seen users' train pairs, seen and test-unseen users' test pairs, seen users' val pairs,
    validation-unseen users' val pairs (`test_pairs` each)."""
    seen = [(u, g) for u, g, k in users if k == "seen"]
    calls = {
        "train": [(u, g, True, cfg.train_pairs) for u, g in seen],
        "test": [(u, g, k == "seen", cfg.test_pairs) for u, g, k in users if k in ("seen", "test")],
        "val": [(u, g, True, cfg.val_pairs) for u, g in seen]
               + [(u, g, False, cfg.test_pairs) for u, g, k in users if k == "val"],
    }
    return {split: pd.concat([pairs(*c, split) for c in calls[split]], ignore_index=True) for split in calls}


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _check(cfg: IdealPointConfig) -> np.ndarray:
    check_config(cfg)  # field types and the Literal options (a config built by hand as well as one from --set)
    if cfg.n_groups < 1 or cfg.dim < 1 or cfg.n_attributes < 0:
        raise ValueError("n_groups and dim must be at least 1, n_attributes at least 0")
    if len(cfg.group_sizes) != cfg.n_groups or min(cfg.group_sizes) <= 0:
        raise ValueError(f"group_sizes has {len(cfg.group_sizes)} entries for {cfg.n_groups} groups (all must be > 0)")
    check_tables(cfg)
    if cfg.context_signal < 0 or (cfg.context_signal > 0 and cfg.n_prompts < 1):
        raise ValueError(f"context_signal={cfg.context_signal}: must be >= 0, and > 0 needs prompts (n_prompts >= 1)")
    if cfg.context_signal > 0 and cfg.n_groups > cfg.dim:
        raise ValueError(f"context_signal > 0 needs n_groups <= dim (one direction per group), not {cfg.n_groups} > {cfg.dim}")
    if cfg.item_dist == "clustered" and (cfg.n_item_clusters < 1 or cfg.item_cluster_noise < 0):
        raise ValueError("item_dist=clustered needs n_item_clusters >= 1 and item_cluster_noise >= 0")
    C = IdealPointConfig
    if cfg.item_dist != "clustered" and (cfg.n_item_clusters, cfg.item_cluster_noise) != (C.n_item_clusters,
                                                                                            C.item_cluster_noise):
        raise ValueError(f"n_item_clusters / item_cluster_noise only apply to item_dist=clustered, not {cfg.item_dist}")
    return np.asarray(cfg.group_sizes, float) / np.sum(cfg.group_sizes)


def split_rngs(seed: int) -> dict[str, np.random.Generator]:
    """{"train", "test", "val"} generators: train and test share the population's stream
    (default_rng(seed)), val has its own (default_rng([seed, 1])), so drawing the val table leaves the
    population and its train / test tables exactly as they are without it."""
    main = np.random.default_rng(seed)
    return {"train": main, "test": main, "val": np.random.default_rng([seed, 1])}


def item_sampler(cfg: IdealPointConfig, rng: np.random.Generator) -> Callable:
    """`draw(shape, rng) -> shape + (D,)` response embeddings from `cfg.item_dist`; the cluster centres
    of "clustered" are drawn here once from `rng`."""
    D = cfg.dim
    if cfg.item_dist == "sphere":
        return lambda shape, r: _unit(r.normal(size=(*shape, D)))
    if cfg.item_dist == "gaussian":
        return lambda shape, r: r.normal(size=(*shape, D)) / np.sqrt(D)
    centres = _unit(rng.normal(size=(cfg.n_item_clusters, D)))
    return lambda shape, r: _unit(centres[r.integers(0, len(centres), shape)]
                                  + cfg.item_cluster_noise * r.normal(size=(*shape, D)) / np.sqrt(D))


def margin(ya: np.ndarray, yb: np.ndarray, point: np.ndarray, scale: float) -> np.ndarray:
    """r_u(ya) - r_u(yb) = scale * (||yb - u||^2 - ||ya - u||^2), over the last axis (broadcasting)."""
    return scale * (((yb - point) ** 2).sum(-1) - ((ya - point) ** 2).sum(-1))


def group_preference(ya: np.ndarray, yb: np.ndarray, protos: np.ndarray, user_noise: float, scale: float) -> np.ndarray:
    """(K, n): P(a random member of group k prefers ya over yb), for ya / yb (n, D) and protos (K, D).

    A member's ideal point is u = p_k + user_noise * N(0, I/D) and the margin is linear in u: Gaussian
    with mean margin(p_k) and standard deviation 2 scale user_noise ||ya - yb|| / sqrt(D); sigma(margin)
    is averaged over it by 40-point Gauss-Hermite quadrature.
    """
    mean = margin(ya[None], yb[None], protos[:, None], scale)  # (K, n)
    std = 2 * scale * user_noise * np.linalg.norm(ya - yb, axis=-1) / np.sqrt(ya.shape[-1])  # (n,)
    z, w = np.polynomial.hermite_e.hermegauss(40)
    return _sigmoid(mean[..., None] + std[:, None] * z) @ (w / w.sum())


def disagreement(margins: np.ndarray, share: np.ndarray) -> np.ndarray:
    """(n,) the between-group standard deviation (weighted by `share` (K,)) of the margins (K, n)."""
    return np.sqrt(share @ (margins - share @ margins) ** 2)


def label_pairs(r: np.random.Generator, uid: str, g: int, seen: bool, x: np.ndarray | None, ya: np.ndarray,
                yb: np.ndarray, p_a: np.ndarray, truth_of_a: dict[str, np.ndarray], symmetric: dict[str, np.ndarray],
                sided: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> pd.DataFrame:
    """One user's labelled rows: a wins with probability p_a (n,) (drawn from `r`), the winner is `chosen`.
    `truth_of_a`: per-row probabilities that a wins (oriented to the chosen response, like `oracle_p` =
    p_a); `symmetric`: columns that do not depend on the order; `sided`: {name: (values of a, values of b)}
    written as `chosen_<name>` / `rejected_<name>`; x (n, Dp) or None (no prompt column)."""
    a_wins = r.random(len(p_a)) < p_a
    chosen, rejected = np.where(a_wins[:, None], ya, yb), np.where(a_wins[:, None], yb, ya)
    cols = {"prompt_embedding": list(x.astype(np.float32))} if x is not None else {}
    sides = {}
    for name, (va, vb) in (sided or {}).items():
        sides[f"chosen_{name}"], sides[f"rejected_{name}"] = np.where(a_wins, va, vb), np.where(a_wins, vb, va)
    return pd.DataFrame({
        "user_id": uid, "group": f"g{g}", "seen": seen, **cols,
        "chosen_embedding": list(chosen.astype(np.float32)),
        "rejected_embedding": list(rejected.astype(np.float32)),
        "oracle_p": np.where(a_wins, p_a, 1 - p_a), **{k: np.where(a_wins, v, 1 - v) for k, v in truth_of_a.items()},
        **symmetric, **sides,
    })


def group_posterior(x: np.ndarray, directions: np.ndarray, share: np.ndarray, signal: float) -> np.ndarray:
    """P(group | prompt) (n, K) for prompts x = z + signal * d_g, z ~ N(0, I/D): softmax_g(log share_g +
    D signal x . d_g) (the |d_g| = 1 terms cancel)."""
    logits = np.log(share)[None] + x.shape[-1] * signal * x @ directions.T
    logits -= logits.max(1, keepdims=True)
    post = np.exp(logits)
    return post / post.sum(1, keepdims=True)


def anonymise(table: pd.DataFrame, split: str) -> pd.DataFrame:
    """One user id per row ("r..." train, "v..." val, "t..." test), so no user is seen twice; `group` is kept."""
    out = table.copy()
    prefix = {"train": "r", "val": "v", "test": "t"}[split]
    out["user_id"] = [f"{prefix}{i:06d}" for i in range(len(out))]
    out["seen"] = split == "train"
    return out


def simulate_ideal_point(cfg: IdealPointConfig = IdealPointConfig()) -> Population:
    """Draw a population and its train / val / test tables (deterministic per `cfg.seed`)."""
    share = _check(cfg)
    rngs = split_rngs(cfg.seed)
    rng = rngs["train"]
    D, K = cfg.dim, cfg.n_groups
    protos = rng.normal(size=(K, D))
    protos = cfg.spread * protos / np.linalg.norm(protos, axis=1, keepdims=True)
    prompts = _unit(rng.normal(size=(max(cfg.n_prompts, 1), D)))
    directions = np.linalg.qr(rng.normal(size=(D, K)))[0].T if cfg.context_signal > 0 else None  # (K, D) orthonormal
    items = item_sampler(cfg, rng)
    # attribute directions from their own stream, so that asking for attributes changes nothing else
    attr_dirs = _unit(np.random.default_rng([cfg.seed, 2]).normal(size=(cfg.n_attributes, D)))
    users = users_of(share, {"seen": cfg.n_users, "test": cfg.n_unseen, "val": n_val_unseen(cfg)})
    points = {u: protos[g] + cfg.user_noise * rngs["val" if kind == "val" else "train"].normal(size=D) / np.sqrt(D)
              for u, g, kind in users}

    # reward scale: std of reward differences of random pairs (from item_dist) at a group's prototype
    a, b = items((2, 4096), rng)
    scale = cfg.margin_scale / margin(a, b, protos[rng.integers(0, K, 4096)], 1.0).std()

    def pairs(uid, g, seen, n, split):
        r = rngs[split]
        if directions is None:
            x = prompts[r.integers(0, len(prompts), n)]
        else:  # the prompt carries the asker's group
            x = r.normal(size=(n, D)) / np.sqrt(D) + cfg.context_signal * directions[g]
        ya, yb = items((2, n), r)
        p_a = _sigmoid(margin(ya, yb, points[uid], scale))
        per_group = group_preference(ya, yb, protos, cfg.user_noise, scale)  # (K, n)
        q_a = share @ per_group
        # the best prompt-aware but user-blind predictor: the groups weighted by P(group | prompt)
        c_a = q_a if directions is None else (group_posterior(x, directions, share, cfg.context_signal) * per_group.T).sum(1)
        m = margin(ya[None], yb[None], protos[:, None], scale)  # (K, n) every prototype's margin for a over b
        return label_pairs(r, uid, g, seen, x if cfg.n_prompts > 0 else None, ya, yb, p_a,
                           {"population_p": q_a, "context_p": c_a}, {"disagreement": disagreement(m, share)},
                           {f"attr_a{i}": (ya @ d, yb @ d) for i, d in enumerate(attr_dirs)})

    tables = draw_tables(users, cfg, pairs)
    if cfg.anonymous:
        tables = {k: anonymise(t, k) for k, t in tables.items()}
    return Population(config=cfg, **tables, prototypes=protos, ideal_points=points,
                      user_group={uid: f"g{g}" for uid, g, _ in users}, scale=float(scale))
