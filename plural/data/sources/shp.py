"""Stanford Human Preferences (SHP; Ethayarajh, Choi & Swayamdipta, "Understanding Dataset Difficulty with
V-Usable Information", ICML 2022): Reddit comments compared by their communities -> preference table.

Files: stanfordnlp/SHP (https://huggingface.co/datasets/stanfordnlp/SHP), one folder per subreddit (18:
askacademia ... legaladvice) holding JSON Lines `train.json`, `validation.json`, `test.json`. Pass the
root, one subreddit's folder, or one file (Parquet conversions with the same fields are read too).

Fields, as the dataset card declares them: `post_id`, `domain` (the subreddit and its split, e.g.
"askculinary_train"), `upvote_ratio`, `history` (the post: title and body), `c_root_id_A` / `_B`,
`created_at_utc_A` / `_B`, `score_A` / `score_B`, `human_ref_A` / `human_ref_B` (the two top-level
comments), `labels` (1 if A is preferred, 0 if B), `seconds_difference`, `score_ratio` (the preferred
comment's score over the other's; >= 2 in the release).

Each record is one comparison: prompt = history, chosen / rejected = the preferred / other comment. The
preferences are collective (a subreddit's votes), so each subreddit is one user and its own group:
user_id = group = `domain` without its `_train` / `_validation` / `_test` suffix (a domain without one is
taken whole). Options, as the card recommends for training: `min_score_ratio` (default 2) drops pairs
whose preferred comment is less than that many times as popular; `max_pairs_per_post` (default 5; 0 keeps
all) keeps, for each post, the pairs with the largest score ratios (ties in file order), so that posts with
many comments do not dominate. Both are counted in the summary. Pass-through columns: post_id, split,
score_ratio, upvote_ratio, chosen_score / rejected_score.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from plural.data.sources._io import Conversion, finish, list_inputs, read_rows
from plural.errors import PluralError

NAME = "shp"
GROUP_NOTE = "the group is the subreddit, one collective user each"
SPLITS = ("_train", "_validation", "_test")


@dataclasses.dataclass(frozen=True)
class Options:
    min_score_ratio: float = 2.0  # keep pairs whose score_ratio is at least this
    max_pairs_per_post: int = 5  # at most this many pairs of one post, the largest score ratios (0: all)

    def __post_init__(self):
        if not self.min_score_ratio >= 0:
            raise PluralError(f"--set min_score_ratio={self.min_score_ratio}: must be >= 0")
        if self.max_pairs_per_post < 0:
            raise PluralError(f"--set max_pairs_per_post={self.max_pairs_per_post}: must be >= 0 (0 keeps all)")


def subreddit(domain: str) -> tuple[str, str | None]:
    """("askculinary", "train") from "askculinary_train"; a domain without a split suffix is taken whole."""
    for suffix in SPLITS:
        if domain.endswith(suffix) and len(domain) > len(suffix):
            return domain[: -len(suffix)], suffix[1:]
    return domain, None


def convert(path: Path, opts: Options) -> Conversion:
    stats = {"below_min_score_ratio": 0, "over_max_pairs_per_post": 0, "identical": 0}
    kept = []  # (post key, -score_ratio, order, row, source)
    for f in list_inputs(path, ("jsonl", "parquet"), recursive=True):
        rows = read_rows(f, ("jsonl", "parquet"))
        for i, rec in enumerate(rows.records):
            get = lambda k, kind="str", req=True: rows.get(i, rec, k, kind, required=req)  # noqa: E731
            sub, split = subreddit(get("domain"))
            post, history = get("post_id", "scalar"), get("history")
            a, b = get("human_ref_A"), get("human_ref_B")
            label = get("labels", "int")
            if label not in (0, 1):
                rows.fail(i, "labels", f"preference label {label} is not 0 or 1 (1: A is preferred)")
            ratio = get("score_ratio", "number")
            if ratio <= 0:
                rows.fail(i, "score_ratio", f"score ratio {ratio} is not positive")
            scores = (get("score_A", "int", False), get("score_B", "int", False))
            if ratio < opts.min_score_ratio:
                stats["below_min_score_ratio"] += 1
                continue
            if a == b:
                stats["identical"] += 1
                continue
            win = 0 if label == 1 else 1
            texts = (a, b)
            row = {"user_id": sub, "group": sub, "prompt": history, "chosen": texts[win], "rejected": texts[1 - win],
                   "post_id": post, "split": split, "score_ratio": ratio,
                   "upvote_ratio": get("upvote_ratio", "number", False),
                   "chosen_score": scores[win], "rejected_score": scores[1 - win]}
            kept.append(((sub, post), -ratio, len(kept), row, (rows, i)))
    if opts.max_pairs_per_post:
        by_post: dict = {}
        for item in sorted(kept, key=lambda k: (k[0], k[1], k[2])):
            by_post.setdefault(item[0], []).append(item)
        chosen = [it for items in by_post.values() for it in items[: opts.max_pairs_per_post]]
        stats["over_max_pairs_per_post"] = len(kept) - len(chosen)
        kept = sorted(chosen, key=lambda k: k[2])  # back in file order
    return finish([k[3] for k in kept], [k[4] for k in kept], None, NAME, stats)
