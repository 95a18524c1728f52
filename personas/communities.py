"""Communities that weigh the same response attributes differently: the setting of attribute-weighted
community models (PrefPalette, 2025), with the true weights known.

Generative model (A attributes, embedding size D):

- a response has latent attribute values z ~ N(0, I_A) (how verbose, formal, humorous, ... it is) and a
  content part c ~ N(0, I_D); its embedding is e(y) = (M z + `content_noise` c) / sqrt(1 + content_noise^2)
  with M (D x A) orthonormal columns, so every attribute is linearly readable from the embedding;
- everyone shares a content quality q(y) = u . c (u a random unit vector);
- community k weighs the attributes by w_k = signs * v_k with importances v_k ~ Dirichlet(alpha_k 1_A):
  a share `sharp_share` of the communities is sharp (alpha = `sharp_concentration`: a few attributes
  carry the weight), the rest flat (alpha = `flat_concentration`: many attributes matter a little); each
  weight is negative with probability `negative_share` (a community that dislikes sarcasm), so that
  communities disagree rather than all wanting more of everything;
- its reward is r_k(y) = s (w_k . z + `content_weight` q(y)), with s set so that reward differences of
  random pairs have standard deviation `margin_scale`; pairs are labelled by Bradley-Terry noise.

How recoverable the profiles are. The true importances can be ranked from data only as far as they
differ by more than their estimation error. `analysis.profiles.regression_profiles` (a logistic
regression on the true attribute scores of each community's training pairs: the best a profile can do)
reaches a mean Spearman correlation with them of 0.90 at 4000 pairs per community (8 communities, seed 0,
default concentrations 0.3 / 2.0), 0.75 at 1000 pairs, 0.87 with flat communities at 5.0, and 0.77 for
another draw (16 communities, seed 1): the defaults were set so that this ceiling is well above chance.

Every row carries the observed attribute scores `chosen_attr_<name>` / `rejected_attr_<name>` = z plus
N(0, `attr_noise`^2) noise (docs/data-format.md), the attribute names being the first A of PrefPalette's
19 (`ATTRIBUTES`; beyond 19, `attr19`, `attr20`, ...). A community is a group; its members (`n_users`
seen users spread evenly over the communities, one each by default: a community is one collective user,
as in Reddit data) share its reward. truth.json holds every community's signed weights (`weights`) and
importances v_k (`importance`, on the simplex): the profile a fitted attribute-weighted model should
recover.

Tables, user ids and splits as in `personas.ideal_point` (train / val / test, seen "s..", test-unseen
"u..", validation-unseen "v..").
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from personas.ideal_point import SPLITS, Tables, _sigmoid, check_tables, disagreement, draw_tables, label_pairs, \
    n_val_unseen, split_rngs, users_of, write_population
from plural.config import check_config

# PrefPalette's attributes (Li et al., 2025): nine socio-linguistic ones and Schwartz's ten basic values
# (Schwartz, 1992); name -> a one-line definition.
ATTRIBUTES = {
    "verbosity": "how long and detailed the response is",
    "formality": "how formal, polished and impersonal its register is",
    "supportiveness": "how much it encourages and backs up the reader",
    "sarcasm": "how much it says the opposite of what it means, to mock or needle",
    "humor": "how funny or playful it is",
    "politeness": "how courteous and considerate its wording is",
    "assertiveness": "how confidently and forcefully it states its position",
    "empathy": "how much it acknowledges and shares the reader's feelings",
    "directness": "how plainly and straight to the point it answers",
    "self_direction": "values independent thought and action: choosing, creating, exploring",
    "stimulation": "values excitement, novelty and challenge",
    "hedonism": "values pleasure and enjoying life",
    "achievement": "values personal success through demonstrated competence",
    "power": "values social status, prestige and control over people and resources",
    "security": "values safety, harmony and the stability of society, relationships and self",
    "conformity": "values restraint from actions that upset others or break social norms",
    "tradition": "values respect for the customs and ideas of one's culture or religion",
    "benevolence": "values caring for the welfare of the people one is close to",
    "universalism": "values understanding, tolerance and the welfare of all people and of nature",
}


def attribute_names(n: int) -> list[str]:
    """The first n of `ATTRIBUTES`, then `attr19`, `attr20`, ... for n > 19."""
    names = list(ATTRIBUTES)
    return names[:n] + [f"attr{i}" for i in range(len(names), n)]


@dataclasses.dataclass(frozen=True)
class CommunityConfig:
    n_communities: int = 8  # C groups
    n_attributes: int = 19  # A (PrefPalette's 19 by name)
    sharp_share: float = 0.5  # share of communities whose weights are sharp
    sharp_concentration: float = 0.3  # Dirichlet alpha of a sharp community (few attributes matter)
    flat_concentration: float = 2.0  # ... of a flat one (many attributes matter, unequally)
    negative_share: float = 0.3  # chance that a community's weight on an attribute is negative
    content_weight: float = 0.5  # weight of the shared content quality against the attributes
    content_noise: float = 1.0  # size of the content part of an embedding against its attribute part
    attr_noise: float = 0.1  # std of the noise on the observed attribute columns
    dim: int = 64  # embedding size D (>= n_attributes + 1)
    n_users: int = 8  # seen users, spread evenly over the communities (one each: collective users)
    n_unseen: int = 0  # test-unseen users (new members of the communities): test rows only
    n_val_unseen: int = -1  # validation-unseen users: val rows only; -1 = n_unseen
    train_pairs: int = 200  # pairs per seen user in train
    val_pairs: int = 50  # pairs per seen user in val
    test_pairs: int = 100  # pairs per seen user in test, and per unseen user in their table (test or val)
    margin_scale: float = 4.0  # std of reward differences of random pairs (sharpness of labels)
    seed: int = 0


@dataclasses.dataclass
class CommunityPopulation(Tables):
    config: CommunityConfig
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    names: list[str]  # attribute names (A,)
    weights: np.ndarray  # w_k (C, A): signed, |w_k| on the simplex
    mixing: np.ndarray  # M (D, A)
    quality: np.ndarray  # u (D,): the content direction
    scale: float  # s
    user_group: dict[str, str]

    def rewards(self, z: np.ndarray, c: np.ndarray) -> np.ndarray:
        """Attribute values z (..., A) and content parts c (..., D) -> (C, ...) every community's reward."""
        return self.scale * (np.einsum("ka,...a->k...", self.weights, z) + self.config.content_weight * (c @ self.quality)[None])

    def embed(self, z: np.ndarray, c: np.ndarray) -> np.ndarray:
        """(..., D) embeddings of responses with attribute values z and content parts c."""
        noise = self.config.content_noise
        return (z @ self.mixing.T + noise * c) / np.sqrt(1.0 + noise ** 2)

    def profiles(self) -> pd.DataFrame:
        """The true profiles: one row per community ("g0", ...), one column per attribute importance |w_k|."""
        return pd.DataFrame(np.abs(self.weights), index=[f"g{k}" for k in range(len(self.weights))], columns=self.names)

    def write(self, out_dir: str | Path) -> Path:
        """Write train / val / test .parquet and truth.json (config, accuracies, the true weights)."""
        return write_population(out_dir, self, {
            "attributes": {a: ATTRIBUTES.get(a, "") for a in self.names},
            "weights": {g: dict(zip(self.names, map(float, w))) for g, w in zip(self.profiles().index, self.weights)},
            "importance": self.profiles().to_dict(orient="index"),
            "sharp": [f"g{k}" for k in range(n_sharp(self.config))],
            "scale": self.scale, "user_group": self.user_group})


def n_sharp(cfg: CommunityConfig) -> int:
    """How many communities (the first ones) are sharp."""
    return int(round(cfg.sharp_share * cfg.n_communities))


def _check(cfg: CommunityConfig) -> None:
    check_config(cfg)
    if cfg.n_communities < 1 or cfg.n_attributes < 1:
        raise ValueError("n_communities and n_attributes must be at least 1")
    if cfg.dim < cfg.n_attributes + 1:
        raise ValueError(f"dim={cfg.dim}: must exceed n_attributes={cfg.n_attributes} (attributes and content "
                         "take orthogonal directions)")
    for name in ("sharp_share", "negative_share"):
        if not 0 <= getattr(cfg, name) <= 1:
            raise ValueError(f"{name}={getattr(cfg, name)}: must be in [0, 1]")
    if min(cfg.sharp_concentration, cfg.flat_concentration, cfg.margin_scale) <= 0:
        raise ValueError("sharp_concentration, flat_concentration and margin_scale must be > 0")
    if min(cfg.content_weight, cfg.content_noise, cfg.attr_noise) < 0:
        raise ValueError("content_weight, content_noise and attr_noise must be >= 0")
    check_tables(cfg)


def simulate_communities(cfg: CommunityConfig = CommunityConfig()) -> CommunityPopulation:
    """Draw the communities and their train / val / test tables (deterministic per `cfg.seed`)."""
    _check(cfg)
    rngs = split_rngs(cfg.seed)
    rng = rngs["train"]
    C, A, D = cfg.n_communities, cfg.n_attributes, cfg.dim
    basis = np.linalg.qr(rng.normal(size=(D, A + 1)))[0]  # orthonormal: A attribute directions, one content
    mixing, quality_dir = basis[:, :A], basis[:, A]
    alpha = np.where(np.arange(C) < n_sharp(cfg), cfg.sharp_concentration, cfg.flat_concentration)
    importance = np.stack([rng.dirichlet(np.full(A, a)) for a in alpha])
    weights = np.where(rng.random((C, A)) < cfg.negative_share, -1.0, 1.0) * importance
    pop = CommunityPopulation(cfg, *(pd.DataFrame(),) * 3, names=attribute_names(A), weights=weights, mixing=mixing,
                              quality=quality_dir, scale=1.0, user_group={})
    probe_z, probe_c = rng.normal(size=(2, 4096, A)), rng.normal(size=(2, 4096, D))
    pop.scale = float(cfg.margin_scale / (pop.rewards(probe_z[0], probe_c[0]) - pop.rewards(probe_z[1], probe_c[1])).std())
    share = np.full(C, 1.0 / C)
    users = users_of(share, {"seen": cfg.n_users, "test": cfg.n_unseen, "val": n_val_unseen(cfg)})

    def pairs(uid, g, seen, n, split):
        r = rngs[split]
        z, c = r.normal(size=(2, n, A)), r.normal(size=(2, n, D))
        ya, yb = pop.embed(z[0], c[0]), pop.embed(z[1], c[1])
        m = pop.rewards(z[0], c[0]) - pop.rewards(z[1], c[1])  # (C, n)
        seen_a, seen_b = z + cfg.attr_noise * r.normal(size=z.shape)  # the observed attribute scores
        sided = {f"attr_{a}": (seen_a[:, i], seen_b[:, i]) for i, a in enumerate(pop.names)}
        return label_pairs(r, uid, g, seen, None, ya, yb, _sigmoid(m[g]), {"population_p": share @ _sigmoid(m)},
                           {"disagreement": disagreement(m, share)}, sided)

    tables = draw_tables(users, cfg, pairs)
    pop.train, pop.val, pop.test = (tables[k] for k in SPLITS)
    pop.user_group = {uid: f"g{g}" for uid, g, _ in users}
    return pop
