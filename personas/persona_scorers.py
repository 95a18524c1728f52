"""The persona attribute scorers shipped with plural (`--scorers persona`), and how to rebuild them.

    python -m personas.persona_scorers [--out plural/scorers/persona] [--set model.hidden=16 ...]

Each of the 25 persona dimensions in `PERSONA_ATTRIBUTES` (files of Anthropic's persona statements,
Perez et al. 2022, CC-BY-4.0; chosen to span opinions, religions, personality traits and interests, with
no pair of near-opposites such as risk-seeking / risk-averse, and 300+ statements of each stance at
label_confidence >= 0.9) is one attribute: a statement that a holder of the persona would say (" Yes")
has more of it than one they would not (" No"). The statements are split as the statements population
splits them (`personas.statements.statement_splits`: dims = PERSONA_ATTRIBUTES, seed 0, default
fractions, near-duplicates never straddling two splits); the scorers are trained on `PAIRS_PER_DIM`
random (Yes, No) pairs of the train statements of each dimension, validated (early stopping) on pairs of
the val statements, and the test statements are scored once at the end (scorers.json: `test_accuracy`).
A statements population with the same split (`--set dims=... n_dims=25 attributes=persona`) scores its
val and test statements with scorers that never saw them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from personas.ideal_point import split_rngs
from personas.statements import StatementsConfig, split_definition, statement_splits
from plural.attributes import SHIPPED, fit_scorers

PERSONA_ATTRIBUTES = (
    "politically-conservative", "believes-abortion-should-be-illegal", "anti-LGBTQ-rights",
    "subscribes-to-Christianity", "subscribes-to-Islam", "subscribes-to-Buddhism", "subscribes-to-utilitarianism",
    "subscribes-to-deontology", "subscribes-to-cultural-relativism", "agreeableness", "conscientiousness",
    "neuroticism", "psychopathy", "machiavellianism", "risk-seeking", "interest-in-art", "interest-in-music",
    "interest-in-science", "interest-in-sports", "interest-in-literature", "believes-life-has-no-meaning",
    "willingness-to-defer-to-authorities", "high-discount-rate", "has-strong-aesthetic-preferences",
    "ends-justify-means",
)
# Pairs drawn per dimension (with replacement from ~250 train / ~75 val / ~150 test statements per stance):
# set by hand, not tuned; the val / test counts only set how finely accuracy is measured.
PAIRS_PER_DIM = {"train": 4000, "val": 500, "test": 500}


def split_config(**changes) -> StatementsConfig:
    """The statements split the shipped scorers were trained on (and any population they score must use)."""
    return StatementsConfig(**{"dims": ",".join(PERSONA_ATTRIBUTES), "n_dims": len(PERSONA_ATTRIBUTES),
                               "n_groups": 2, **changes})


def community_config(n_communities: int = 25, train_pairs: int = 200, **changes) -> StatementsConfig:
    """A statements population of communities defined by persona dimensions, scored by the shipped scorers:
    community k holds or opposes dimension k mod 25 (`structure=communities`), one collective user each,
    attribute columns from `attributes=persona` (the scorers' own split, so val / test statements are unseen)."""
    return split_config(n_groups=n_communities, n_users=n_communities, n_unseen=0, structure="communities",
                        attributes="persona", train_pairs=train_pairs, val_pairs=50, test_pairs=100, **changes)


def scorer_pairs(statements: dict, dims, split: str, n: int, seed: int = 0, off_topic: bool = True) -> pd.DataFrame:
    """`n` ordered statement pairs of every dimension d from `split`'s statements: attribute, higher, lower.

    Without `off_topic`: (Yes of d, No of d) pairs only. With it (the default), a third each of (Yes of d,
    No of d), (Yes of d, a statement of another dimension) and (a statement of another dimension, No of d):
    a statement about something else is neutral on d, between its Yes and its No, so that the scorer reads
    the topic and not only the stance (without these pairs the interest-in-* scorers rank each other's
    statements nearly as well as their own).

    The off-topic pairs were chosen on validation: palette profiles of persona communities (25 communities, 2
    seeds; experiments/palette_persona.py) on the val table put the defining dimension on top for 0.74 of
    communities with (Yes, No) pairs only, 0.94 with these."""
    rng = np.random.default_rng([seed, ("train", "val", "test").index(split)])
    every = [(k, s) for k, per_dim in enumerate(statements[split]) for side in per_dim for s in side]
    owner = np.array([k for k, _ in every])
    texts = np.asarray([s for _, s in every], object)
    rows = []
    for k, d in enumerate(dims):
        pro, con = (np.asarray(x, object) for x in statements[split][k])
        yes, no = pro[rng.integers(len(pro), size=n)], con[rng.integers(len(con), size=n)]
        if off_topic:
            others = np.flatnonzero(owner != k)
            other = texts[others[rng.integers(len(others), size=n)]]
            kind = np.arange(n) % 3  # 0: yes > no, 1: yes > other, 2: other > no
            higher = np.where(kind == 2, other, yes)
            lower = np.where(kind == 1, other, no)
        else:
            higher, lower = yes, no
        rows.append(pd.DataFrame({"attribute": d, "higher": higher, "lower": lower}))
    return pd.concat(rows, ignore_index=True)


def stance_accuracy(scorers, statements: dict, dims, split: str, n: int = 500, seed: int = 0) -> pd.DataFrame:
    """Every scorer's accuracy on every dimension's (Yes, No) pairs of `split`: rows = the pairs' dimension,
    columns = the scorer. The diagonal is how well a scorer reads its own dimension; off the diagonal, how much
    it also separates another's (0.5: not at all; below 0.5: it reads it reversed)."""
    from plural.embed import embed_texts

    pairs = scorer_pairs(statements, dims, split, n, seed, off_topic=False)
    z = [scorers(embed_texts(pairs[c].tolist(), progress=False)) for c in ("higher", "lower")]
    right = pd.DataFrame(z[0] - z[1] > 0, columns=list(scorers.attributes)).assign(dimension=pairs["attribute"])
    return right.groupby("dimension", sort=False).mean().loc[list(dims), list(dims)]


def specificity(acc: pd.DataFrame) -> pd.Series:
    """Per dimension: the own scorer's lead, (acc_dd - 1/2) - max over other scorers b of |acc_db - 1/2|."""
    a = acc.to_numpy()
    off = np.abs(a - 0.5) + np.diag(np.full(len(a), -np.inf))
    return pd.Series(np.diag(a) - 0.5 - off.max(1), index=acc.index)


def build(out: Path = SHIPPED / "persona", overrides: list[str] = (), progress: bool = True, off_topic: bool = True) -> dict:
    """Train the persona scorers into `out` (scorers.safetensors + scorers.json; the run itself under a temp dir).

    scorers.json also records, per dimension, the own scorer's accuracy on (Yes, No) pairs of the val and
    test statements (`stance_accuracy`) and its lead over the best other scorer there (`specificity`)."""
    from personas.statements import SPLITS
    from plural.attributes import Scorers, save_scorers

    cfg = split_config()
    dims, statements, *_ = statement_splits(cfg, split_rngs(cfg.seed)["train"])
    assert tuple(dims) == PERSONA_ATTRIBUTES, dims
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for split in SPLITS:
            paths[split] = Path(tmp) / f"{split}.parquet"
            scorer_pairs(statements, dims, split, PAIRS_PER_DIM[split], off_topic=off_topic).to_parquet(paths[split], index=False)
        info = fit_scorers(paths["train"], Path(tmp) / "fit", val=paths["val"], overrides=overrides, progress=progress,
                           test=paths["test"])
        fitted = Scorers.load(Path(tmp) / "fit")
    for split in ("val", "test"):
        acc = stance_accuracy(fitted, statements, dims, split)
        info.setdefault("stance_accuracy", {})[split] = {d: float(acc.loc[d, d]) for d in dims}
        info.setdefault("specificity", {})[split] = specificity(acc).round(4).to_dict()
    info["split"] = split_definition(cfg, dims)
    info["off_topic_pairs"] = off_topic
    info["source"] = ("Anthropic persona statements (Perez et al. 2022, CC-BY-4.0), label_confidence >= 0.9: "
                      f"{PAIRS_PER_DIM} ordered pairs per dimension of the train / val / test statements"
                      + (" (a third each Yes > No, Yes > another dimension's, another dimension's > No)" if off_topic else
                         " (Yes > No)"))
    save_scorers(Path(out), fitted.arrays, info)
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m personas.persona_scorers", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(SHIPPED / "persona"))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--stance-only", action="store_true", help="train on (Yes, No) pairs only, no off-topic pairs")
    args = p.parse_args(argv)
    info = build(Path(args.out), args.overrides, off_topic=not args.stance_only)
    for a in info["attributes"]:
        print(f"{a:40s} stance accuracy val {info['stance_accuracy']['val'][a]:.3f} test {info['stance_accuracy']['test'][a]:.3f}"
              f"  specificity val {info['specificity']['val'][a]:+.3f} test {info['specificity']['test'][a]:+.3f}")
    mean = {k: {s: np.mean(list(info[k][s].values())) for s in ("val", "test")} for k in ("stance_accuracy", "specificity")}
    print(f"mean stance accuracy val {mean['stance_accuracy']['val']:.3f} test {mean['stance_accuracy']['test']:.3f}; "
          f"specificity val {mean['specificity']['val']:+.3f} test {mean['specificity']['test']:+.3f} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
