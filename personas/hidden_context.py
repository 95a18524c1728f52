"""A hidden-context population: groups that agree on most responses and split on a contested few.

This is the synthetic setting of Siththaranjan, Laidlaw & Hadfield-Menell (ICLR 2024, "Distributional
Preference Learning"), where part of the alternatives are valued alike by every labeller and the rest
depend on a context the data does not show (there: helpful vs harmless annotators), lifted to
embeddings. Generative model (in R^D, D = `dim`):

- a response y is a uniform random unit vector; its consensus quality is q(y) = sqrt(D) w . y, the same
  for everyone (w a random unit vector);
- a direction e orthogonal to w marks the contested topic: y is contested to the degree
  c(y) = sqrt(D) max(0, e . y - theta), with theta set so that a share `contested_share` of responses
  has c(y) > 0 (so c = 0 for the rest);
- group k takes the stance t_k on that topic, evenly spaced on [-1, 1] (2 groups: -1 and +1);
- every member of group k has the reward r_k(y) = s (q(y) + `contest_strength` t_k c(y)), with s set so
  that reward differences of random pairs have standard deviation `margin_scale`; a pair (a, b) is
  labelled by Bradley-Terry noise, P(a > b) = sigma(r_k(a) - r_k(b)).

Pairs of two uncontested responses are judged alike by all groups; a pair with a contested response
splits them in proportion to how contested it is. Every row records, besides the columns every
population has (`seen`, `oracle_p`, `population_p`), `disagreement`: the between-group standard
deviation (share-weighted) of the pair's reward margin r_k(chosen) - r_k(rejected), in logits, which is
what a distributional reward model's predicted spread should rank pairs by.

Tables, user ids and splits as in `personas.ideal_point` (train / val / test, seen "s..", test-unseen
"u..", validation-unseen "v.."); with `n_prompts` > 0 each row has one of `n_prompts` random unit prompt
embeddings, which the reward ignores.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from personas.ideal_point import SPLITS, Tables, _sigmoid, _unit, check_tables, disagreement, draw_tables, label_pairs, \
    n_val_unseen, split_rngs, users_of, write_population
from plural.config import check_config


@dataclasses.dataclass(frozen=True)
class HiddenContextConfig:
    n_groups: int = 2
    group_sizes: tuple[float, ...] = (0.5, 0.5)  # shares of users; normalised
    dim: int = 32  # embedding size D
    contested_share: float = 0.3  # share of responses on the contested topic (c(y) > 0)
    contest_strength: float = 3.0  # weight of the stance term against the consensus quality
    n_users: int = 60  # seen users (train, val and test rows)
    n_unseen: int = 30  # test-unseen users: test rows only
    n_val_unseen: int = -1  # validation-unseen users: val rows only; -1 = n_unseen
    train_pairs: int = 60  # pairs per seen user in train
    val_pairs: int = 10  # pairs per seen user in val
    test_pairs: int = 40  # pairs per seen user in test, and per unseen user in their table (test or val)
    n_prompts: int = 0  # 0: no prompt column (one fixed context)
    margin_scale: float = 4.0  # std of reward differences of random pairs (sharpness of labels)
    seed: int = 0


@dataclasses.dataclass
class HiddenContextPopulation(Tables):
    config: HiddenContextConfig
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    consensus: np.ndarray  # w (D,)
    topic: np.ndarray  # e (D,)
    threshold: float  # theta
    stances: np.ndarray  # t_k (K,)
    scale: float  # s
    user_group: dict[str, str]

    def rewards(self, y: np.ndarray) -> np.ndarray:
        """(..., D) responses -> (K, ...) every group's reward r_k(y)."""
        D = y.shape[-1]
        q = np.sqrt(D) * y @ self.consensus
        c = np.sqrt(D) * np.maximum(0.0, y @ self.topic - self.threshold)
        return self.scale * (q[None] + self.config.contest_strength * np.multiply.outer(self.stances, c))

    def write(self, out_dir: str | Path) -> Path:
        """Write train / val / test .parquet and truth.json (config, accuracies, the reward's vectors)."""
        return write_population(out_dir, self, {
            "consensus": self.consensus.tolist(), "topic": self.topic.tolist(), "threshold": self.threshold,
            "stances": self.stances.tolist(), "scale": self.scale, "user_group": self.user_group})


def _check(cfg: HiddenContextConfig) -> np.ndarray:
    check_config(cfg)
    if cfg.n_groups < 2 or cfg.dim < 2:
        raise ValueError("n_groups and dim must be at least 2 (groups disagree along a direction orthogonal to the consensus)")
    if len(cfg.group_sizes) != cfg.n_groups or min(cfg.group_sizes) <= 0:
        raise ValueError(f"group_sizes has {len(cfg.group_sizes)} entries for {cfg.n_groups} groups (all must be > 0)")
    if not 0 < cfg.contested_share < 1:
        raise ValueError(f"contested_share={cfg.contested_share}: must be in (0, 1)")
    if cfg.contest_strength < 0 or cfg.margin_scale <= 0 or cfg.n_prompts < 0:
        raise ValueError("contest_strength and n_prompts must be >= 0 and margin_scale > 0")
    check_tables(cfg)
    return np.asarray(cfg.group_sizes, float) / np.sum(cfg.group_sizes)


def simulate_hidden_context(cfg: HiddenContextConfig = HiddenContextConfig()) -> HiddenContextPopulation:
    """Draw a population and its train / val / test tables (deterministic per `cfg.seed`)."""
    share = _check(cfg)
    rngs = split_rngs(cfg.seed)
    rng = rngs["train"]
    D, K = cfg.dim, cfg.n_groups
    w, e = np.linalg.qr(rng.normal(size=(D, 2)))[0].T  # orthonormal: consensus and contested topic
    prompts = _unit(rng.normal(size=(max(cfg.n_prompts, 1), D)))
    probe = _unit(rng.normal(size=(2, 8192, D)))
    threshold = float(np.quantile(probe[0] @ e, 1 - cfg.contested_share))
    stances = np.linspace(-1.0, 1.0, K)
    pop = HiddenContextPopulation(cfg, *(pd.DataFrame(),) * 3, consensus=w, topic=e, threshold=threshold,
                                  stances=stances, scale=1.0, user_group={})
    pop.scale = float(cfg.margin_scale / (pop.rewards(probe[0]) - pop.rewards(probe[1])).std())
    users = users_of(share, {"seen": cfg.n_users, "test": cfg.n_unseen, "val": n_val_unseen(cfg)})

    def pairs(uid, g, seen, n, split):
        r = rngs[split]
        x = prompts[r.integers(0, len(prompts), n)]
        ya, yb = _unit(r.normal(size=(2, n, D)))
        m = pop.rewards(ya) - pop.rewards(yb)  # (K, n) every group's margin for a over b
        return label_pairs(r, uid, g, seen, x if cfg.n_prompts > 0 else None, ya, yb, _sigmoid(m[g]),
                           {"population_p": share @ _sigmoid(m)}, {"disagreement": disagreement(m, share)})

    tables = draw_tables(users, cfg, pairs)
    pop.train, pop.val, pop.test = (tables[k] for k in SPLITS)
    pop.user_group = {uid: f"g{g}" for uid, g, _ in users}
    return pop
