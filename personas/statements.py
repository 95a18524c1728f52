"""Persona-statement populations: real-text preferences with known ground truth.

Source: Anthropic's model-written persona statements (Perez et al. 2022, CC-BY-4.0), one file per
persona dimension, in `../shared/data/anthropic-persona/` beside the repository (override with
`persona_dir` or the environment variable PLURAL_PERSONA_DIR). Each statement is labelled " Yes" (a
holder of the persona would say it) or " No" (they would not), with a labelling confidence; only
statements with `label_confidence >= min_confidence` are used.

Generative model:
- `n_dims` persona dimensions (files) are chosen (`dims`, or a fixed list of human-opinion personas);
- each of `n_groups` groups holds (+1) or opposes (-1) each dimension: its stance vector. The vectors
  are distinct, every dimension has both stances among the groups (groups disagree on every chosen
  dimension) and no dimension splits the population exactly in half (so a majority exists);
  groups' shares are `group_sizes` (default equal);
- a pair shows one "Yes" and one "No" statement of the same dimension d; a user of group g prefers the
  one matching their stance on d, except with probability `label_noise` (Bradley-Terry labels with a
  margin m = log((1 - label_noise) / label_noise); 0 = noiseless);
- each dimension's statements are split into train and test statements (disjoint); seen users have
  train and test rows, unseen users test rows only. A statement found in more than one chosen file
  (e.g. abortion statements in politically-conservative) is not used, so every statement has exactly
  one dimension and stance.

The prompt is one fixed question ("Which statement do you agree with more?"): naming the persona in the
prompt would tell a model which dimension is asked without it having to read the statements, and the
statements alone already carry the dimension; a constant prompt, like ideal_point's uninformative
prompts, leaves all the signal in the responses.

Every row carries its ground truth as in `ideal_point`: `oracle_p` = P(this user prefers chosen) and
`population_p` = the share-weighted P(chosen preferred) over the groups (the best user-blind predictor);
`truth()` gives the oracle's and the single (majority) model's expected accuracies. Embeddings come
from `embed_fn(texts) -> (n, D)` (default: `plural.embed.embed_texts`); `embed=False` writes text only.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from personas.ideal_point import truth_of, write_population
from plural.errors import PluralError

DEFAULT_DIMS = (
    "politically-conservative", "believes-abortion-should-be-illegal", "risk-seeking", "interest-in-sports",
    "agreeableness", "subscribes-to-Christianity", "interest-in-art", "willingness-to-defer-to-authorities",
    "believes-life-has-no-meaning", "interest-in-science", "high-discount-rate", "subscribes-to-utilitarianism",
)
MIN_PER_SIDE = 4  # statements per stance a dimension needs (at least one per split)


@dataclasses.dataclass(frozen=True)
class StatementsConfig:
    n_dims: int = 6  # persona dimensions
    n_groups: int = 4  # distinct stance vectors
    group_sizes: tuple[float, ...] = ()  # shares of users per group; empty = equal
    dims: str = ""  # comma-separated persona names (file stems); empty = DEFAULT_DIMS, then other files
    n_users: int = 40  # seen users (training)
    n_unseen: int = 20  # users that appear only in the test table
    train_pairs: int = 40  # pairs per seen user in train
    test_pairs: int = 20  # pairs per user in test
    min_confidence: float = 0.9  # keep statements with label_confidence >= this
    test_fraction: float = 0.3  # share of each dimension's statements (per stance) reserved for test
    label_noise: float = 0.0  # P(a user picks the statement against their stance)
    prompt: str = "Which statement do you agree with more?"
    embed: bool = True  # False: text-only tables (plural fit embeds them)
    embedder: str = "minilm"
    persona_dir: str = ""  # default: $PLURAL_PERSONA_DIR, else ../shared/data/anthropic-persona
    seed: int = 0


@dataclasses.dataclass
class StatementsPopulation:
    """Train / test tables of a statements population and the stances behind them."""

    config: StatementsConfig
    train: pd.DataFrame
    test: pd.DataFrame
    dims: tuple[str, ...]
    stances: np.ndarray  # (n_groups, n_dims) of +1 / -1
    shares: np.ndarray  # (n_groups,)
    user_group: dict[str, str]

    def truth(self) -> dict:
        """Oracle and single-model (majority) expected accuracies on the test table: all / seen / unseen / per group."""
        return truth_of(self.test)

    def write(self, out_dir: str | Path) -> Path:
        """Write train.parquet, test.parquet and truth.json (config, accuracies, dimensions, stances)."""
        return write_population(out_dir, self, {
            "dims": list(self.dims),
            "stances": {f"g{k}": dict(zip(self.dims, map(int, s))) for k, s in enumerate(self.stances)},
            "group_shares": {f"g{k}": float(s) for k, s in enumerate(self.shares)}, "user_group": self.user_group,
        })


def persona_dir(override: str | Path | None = None) -> Path:
    """The persona statements folder: argument, else $PLURAL_PERSONA_DIR, else ../shared/data/anthropic-persona."""
    if override:
        return Path(override)
    if os.environ.get("PLURAL_PERSONA_DIR"):
        return Path(os.environ["PLURAL_PERSONA_DIR"])
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "anthropic-persona"


def load_statements(path: Path, min_confidence: float) -> tuple[list[str], list[str]]:
    """(statements a holder would say, statements a holder would not say) with confidence >= min_confidence."""
    from plural.data.sources._io import read_rows

    rows = read_rows(path, ("jsonl",))
    pro, con = [], []
    for i, rec in enumerate(rows.records):
        s = rows.get(i, rec, "statement", "str")
        conf = rows.get(i, rec, "label_confidence", "number")
        ans = rows.get(i, rec, "answer_matching_behavior", "str").strip()
        if ans not in ("Yes", "No"):
            rows.fail(i, "answer_matching_behavior", f"expected ' Yes' or ' No', got {ans!r}")
        if conf >= min_confidence:
            (pro if ans == "Yes" else con).append(s)
    return pro, con


def _choose_dims(cfg: StatementsConfig, directory: Path) -> list[tuple[str, list[str], list[str]]]:
    if not directory.is_dir():
        raise PluralError(f"{directory}: persona statements folder not found (set PLURAL_PERSONA_DIR or --set persona_dir=...)")
    available = sorted(p.stem for p in directory.glob("*.jsonl"))
    if cfg.dims:
        names = [d.strip() for d in cfg.dims.split(",") if d.strip()]
        missing = [d for d in names if d not in available]
        if missing:
            raise PluralError(f"--set dims: no persona file {missing[0]}.jsonl in {directory} "
                              f"(e.g. {', '.join(available[:5])})")
        if len(names) < cfg.n_dims:
            raise PluralError(f"--set dims names {len(names)} dimensions but n_dims={cfg.n_dims}")
    else:
        names = [d for d in DEFAULT_DIMS if d in available] + [d for d in available if d not in DEFAULT_DIMS]
    chosen = []
    for d in names:
        pro, con = load_statements(directory / f"{d}.jsonl", cfg.min_confidence)
        if min(len(pro), len(con)) >= MIN_PER_SIDE:
            chosen.append((d, pro, con))
        elif cfg.dims:
            raise PluralError(f"{directory / (d + '.jsonl')}: only {len(pro)} 'Yes' and {len(con)} 'No' statements with "
                              f"label_confidence >= {cfg.min_confidence}; need {MIN_PER_SIDE} of each")
        if len(chosen) == cfg.n_dims:
            return _unique_statements(chosen, directory, cfg.min_confidence)
    raise PluralError(f"{directory}: only {len(chosen)} persona files have {MIN_PER_SIDE}+ statements of each stance "
                      f"with label_confidence >= {cfg.min_confidence}; n_dims={cfg.n_dims}")


def _unique_statements(chosen, directory: Path, min_confidence: float):
    """Drop statements that occur in more than one chosen file (or on both sides of one): each kept statement
    then has exactly one (dimension, stance), and train / test statements stay disjoint across dimensions."""
    count: dict[str, int] = {}
    for _, pro, con in chosen:
        for s in set(pro) | set(con):
            count[s] = count.get(s, 0) + 1 + (s in pro and s in con)
    out = []
    for d, pro, con in chosen:
        pro = list(dict.fromkeys(s for s in pro if count[s] == 1))
        con = list(dict.fromkeys(s for s in con if count[s] == 1))
        if min(len(pro), len(con)) < MIN_PER_SIDE:
            raise PluralError(f"{directory / (d + '.jsonl')}: only {len(pro)} 'Yes' and {len(con)} 'No' statements with "
                              f"label_confidence >= {min_confidence} are not shared with the other chosen dimensions; "
                              f"need {MIN_PER_SIDE} of each")
        out.append((d, pro, con))
    return out


def draw_stances(n_groups: int, n_dims: int, shares: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Distinct ±1 stance vectors; every dimension has both stances (n_groups >= 2) and a strict majority."""
    K, D = n_groups, n_dims
    if K > 2 ** D:
        raise ValueError(f"n_groups={K} needs more distinct stance vectors than {D} dimensions allow ({2 ** D})")

    def ok(col: np.ndarray) -> bool:
        both = K < 2 or (col.min() < 0 < col.max())
        return both and abs(float(shares @ (col > 0)) - 0.5) > 1e-9

    if K <= 12:
        columns = [np.array(c) for c in itertools.product((-1, 1), repeat=K) if ok(np.array(c))]
        if not columns:
            raise ValueError(f"no stance split of {K} groups with shares {np.round(shares, 3).tolist()} avoids an exact "
                             "50/50 tie: use unequal group_sizes")
        for _ in range(2000):
            S = np.stack([columns[j] for j in rng.integers(0, len(columns), D)], axis=1)
            if len({tuple(r) for r in S}) == K:
                return S
    else:
        for _ in range(2000):
            cols = []
            while len(cols) < D:
                c = rng.choice(np.array([-1, 1]), K)
                if ok(c):
                    cols.append(c)
            S = np.stack(cols, axis=1)
            if len({tuple(r) for r in S}) == K:
                return S
    raise ValueError(f"could not draw {K} distinct stance vectors over {D} dimensions in which every dimension is "
                     "contested: use more dimensions or fewer groups")


def _check(cfg: StatementsConfig) -> np.ndarray:
    if cfg.n_groups < 1 or cfg.n_dims < 1:
        raise ValueError("n_groups and n_dims must be at least 1")
    if not 0 <= cfg.label_noise < 0.5:
        raise ValueError(f"label_noise={cfg.label_noise}: must be in [0, 0.5)")
    if not 0 < cfg.test_fraction < 1:
        raise ValueError(f"test_fraction={cfg.test_fraction}: must be in (0, 1)")
    if min(cfg.n_users, cfg.train_pairs, cfg.test_pairs) < 1 or cfg.n_unseen < 0:
        raise ValueError("n_users, train_pairs and test_pairs must be at least 1, n_unseen at least 0")
    sizes = cfg.group_sizes or (1.0,) * cfg.n_groups
    if len(sizes) != cfg.n_groups or min(sizes) <= 0:
        raise ValueError(f"group_sizes has {len(sizes)} entries for {cfg.n_groups} groups (all must be > 0)")
    return np.asarray(sizes, float) / np.sum(sizes)


def _default_embed(cfg: StatementsConfig) -> Callable[[list[str]], np.ndarray]:
    try:
        from plural.embed import embed_texts
    except ImportError as e:
        raise PluralError(f"the statements population needs the offline embedder plural.embed ({e}); "
                          "or write text-only tables with --set embed=false")
    return lambda texts: embed_texts(texts, embedder=cfg.embedder, progress=False)


def simulate_statements(cfg: StatementsConfig = StatementsConfig(),
                        embed_fn: Callable[[list[str]], np.ndarray] | None = None) -> StatementsPopulation:
    """Draw a statements population and its train / test tables (deterministic per `cfg.seed` and embed_fn)."""
    shares = _check(cfg)
    rng = np.random.default_rng(cfg.seed)
    chosen = _choose_dims(cfg, persona_dir(cfg.persona_dir))
    dims = tuple(d for d, _, _ in chosen)
    K, D, eps = cfg.n_groups, len(dims), cfg.label_noise
    pools = {"train": [], "test": []}  # per dimension: (pro statements, con statements)
    for _, pro, con in chosen:
        parts = {}
        for side in (pro, con):
            perm = [side[j] for j in rng.permutation(len(side))]
            n_test = min(max(1, round(cfg.test_fraction * len(side))), len(side) - 1)
            parts.setdefault("test", []).append(perm[:n_test])
            parts.setdefault("train", []).append(perm[n_test:])
        for split in pools:
            pools[split].append(tuple(parts[split]))
    stances = draw_stances(K, D, shares, rng)

    def assign(n):  # group sizes as close to the shares as integers allow, each group non-empty when n >= K
        counts = np.floor(shares * n).astype(int)
        if n >= K:
            counts = np.maximum(counts, 1)
        while counts.sum() < n:
            counts[np.argmax(shares * n - counts)] += 1
        while counts.sum() > n:
            counts[np.argmax(counts)] -= 1
        return np.repeat(np.arange(K), counts)

    users = [(f"{kind[0]}{j:04d}", int(g), kind == "seen")
             for kind, n in (("seen", cfg.n_users), ("unseen", cfg.n_unseen)) for j, g in enumerate(assign(n))]

    def pairs(uid, g, seen, n, split):
        d = rng.integers(0, D, n)
        pro = [pools[split][k][0][rng.integers(len(pools[split][k][0]))] for k in d]
        con = [pools[split][k][1][rng.integers(len(pools[split][k][1]))] for k in d]
        wants_pro = stances[g, d] > 0
        flip = rng.random(n) < eps
        chose_pro = wants_pro ^ flip
        # P(member of group k prefers chosen) = 1-eps if chosen matches k's stance, else eps
        match = (stances[:, d] > 0) == chose_pro[None, :]  # (K, n)
        p_k = np.where(match, 1 - eps, eps)
        return pd.DataFrame({
            "user_id": uid, "group": f"g{g}", "seen": seen, "prompt": cfg.prompt,
            "chosen": np.where(chose_pro, pro, con), "rejected": np.where(chose_pro, con, pro),
            "dimension": np.asarray(dims, dtype=object)[d], "chosen_stance": np.where(chose_pro, 1, -1),
            "oracle_p": p_k[g], "population_p": shares @ p_k,
        })

    train = pd.concat([pairs(u, g, s, cfg.train_pairs, "train") for u, g, s in users if s], ignore_index=True)
    test = pd.concat([pairs(u, g, s, cfg.test_pairs, "test") for u, g, s in users], ignore_index=True)
    if cfg.embed:
        fn = embed_fn if embed_fn is not None else _default_embed(cfg)
        texts = sorted(set(train.chosen) | set(train.rejected) | set(test.chosen) | set(test.rejected) | {cfg.prompt})
        emb = np.asarray(fn(texts), dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(texts) or not np.isfinite(emb).all():
            raise PluralError(f"embedder returned an array of shape {emb.shape} for {len(texts)} texts (expected (n, D), finite)")
        index = {t: i for i, t in enumerate(texts)}
        for df in (train, test):
            for col in ("prompt", "chosen", "rejected"):
                df.insert(df.columns.get_loc("dimension"), f"{col}_embedding", list(emb[[index[t] for t in df[col]]]))
    return StatementsPopulation(config=cfg, train=train, test=test, dims=dims, stances=stances, shares=shares,
                                user_group={u: f"g{g}" for u, g, _ in users})
