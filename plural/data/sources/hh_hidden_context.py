"""HH-RLHF relabelled by objective (hidden context) -> synthetic helpful-minded and harmless-minded users.

Input: the gzipped JSON Lines `both.jsonl.gz` released with VPL (Poddar et al. 2024, repository
WEIRDLabUW/vpl_llm, data/relabeled_hh_rlhf/both/test.jsonl.gz) for Distributional Preference Learning
(Siththaranjan et al., ICLR 2024): 4,043 comparisons of Anthropic's HH-RLHF test split, each relabelled
under one objective ("helpful" or "harmless"). A `.jsonl(.gz)` file or a folder of them. Each line:

    {"prompt": str, "responses": [r0, r1], "objective": str, "label": 0 | 1,
     "original_label": 0 | 1, "data_subset": str, "Index": int, "chosen": ..., "rejected": ...}

Rows: prompt = `prompt`, chosen = responses[label], rejected = responses[1 - label] (the line's own
`chosen` / `rejected` are HH-RLHF's original full transcripts and are not used), group = objective.
Users are synthetic: `users_per_objective` per objective, ids `<objective>-<k>`; the rows of one
objective go to its users in turn after a shuffle seeded by `seed` (k = position in the shuffle mod
users_per_objective), so each user holds a random share of the objective's rows. Rows stay in file order.
Pass-through: `data_subset`, `original_label` (optional) and `Index` (optional; as a string id).
A comparison of two identical responses is skipped and counted (`identical`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from plural.data.sources._io import Conversion, finish, list_inputs, read_rows
from plural.errors import PluralError

NAME = "hh-hidden-context"
GROUP_NOTE = "the group is the objective"


@dataclasses.dataclass(frozen=True)
class Options:
    users_per_objective: int = 20  # synthetic users per objective
    seed: int = 0  # the shuffle that deals an objective's rows to its users


def convert(path: Path, opts: Options) -> Conversion:
    if opts.users_per_objective < 1:
        raise PluralError(f"--set users_per_objective={opts.users_per_objective}: must be at least 1")
    out, src = [], []
    stats = {"identical": 0}
    for f in list_inputs(path, ("jsonl",)):
        rows = read_rows(f, ("jsonl",))
        for i, rec in enumerate(rows.records):
            responses = rows.get(i, rec, "responses", "list")
            if len(responses) != 2:
                rows.fail(i, "responses", f"expected a list of 2 responses, got {len(responses)}")
            r = [rows.check(i, f"responses[{j}]", v, "str") for j, v in enumerate(responses)]
            label = rows.get(i, rec, "label", "int")
            if label not in (0, 1):
                rows.fail(i, "label", f"expected 0 or 1 (the preferred response's index), got {label}")
            row = {"group": rows.get(i, rec, "objective", "str"), "prompt": rows.get(i, rec, "prompt", "str"),
                   "chosen": r[label], "rejected": r[1 - label],
                   "data_subset": rows.get(i, rec, "data_subset", "str", required=False),
                   "original_label": rows.get(i, rec, "original_label", "int", required=False),
                   "Index": rows.get(i, rec, "Index", "scalar", required=False)}
            if r[0] == r[1]:
                stats["identical"] += 1
                continue
            out.append(row)
            src.append((rows, i))
    rng = np.random.default_rng(opts.seed)
    objective = np.asarray([row["group"] for row in out], dtype=object)
    for g in sorted(set(objective)):
        members = rng.permutation(np.flatnonzero(objective == g))
        for k, m in enumerate(members):
            out[m]["user_id"] = f"{g}-{k % opts.users_per_objective}"
    return finish(out, src, None, NAME, stats)
