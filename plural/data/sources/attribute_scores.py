"""Per-attribute score tables -> synthetic users who each care about one attribute (VPL's UltraFeedback-P).

Input: one row per (prompt, response) with a numeric score per attribute, as JSON Lines (.jsonl,
.jsonl.gz), CSV or Parquet; a folder of such files works too. HelpSteer2 (https://huggingface.co/
datasets/nvidia/HelpSteer2: train.jsonl.gz, validation.jsonl.gz) has exactly this layout, confirmed from
its card: `prompt`, `response`, and the 0-4 scores `helpfulness`, `correctness`, `coherence`,
`complexity`, `verbosity` (the default attributes). UltraFeedback (openbmb/UltraFeedback) nests its
completions and ratings per prompt; flatten it to one row per response with one column per aspect
first, and name those columns with `--set attributes=...`.

Construction (Poddar et al. 2024, "Personalizing RLHF with Variational Preference Learning"): responses
to the same prompt text are paired; for every pair and every attribute a, a user of attribute a prefers
the response with the higher a-score (user ids `<a>-<k>`, k = 0 .. users_per_attribute-1 in turn;
group = a). Equal a-scores are ties: skipped and counted per attribute (`ties_<a>`). With
`disagreement_only=true` a pair is kept only if the attributes do not all order it the same way (the
pairs on which the synthetic users actually disagree). Every row also carries `chosen_attr_<b>` /
`rejected_attr_<b>` for all attributes b.
"""

from __future__ import annotations

import dataclasses
import re
from itertools import combinations
from pathlib import Path

from plural.data.sources._io import Conversion, finish, list_inputs, read_rows
from plural.errors import PluralError

NAME = "attribute-scores"
GROUP_NOTE = "the group is the attribute"


@dataclasses.dataclass(frozen=True)
class Options:
    attributes: str = "helpfulness,correctness,coherence,complexity,verbosity"  # comma-separated score columns
    prompt_column: str = "prompt"
    response_column: str = "response"
    users_per_attribute: int = 1  # synthetic users per attribute; pairs go to them in turn
    disagreement_only: bool = False  # keep only pairs that the attributes order differently


def convert(path: Path, opts: Options) -> Conversion:
    attrs = [a.strip() for a in opts.attributes.split(",") if a.strip()]
    if not attrs:
        raise PluralError("--set attributes: name at least one score column")
    bad = [a for a in attrs if not re.fullmatch(r"[A-Za-z0-9_]+", a)]
    if bad:
        raise PluralError(f"--set attributes: {bad[0]!r} is not usable in a column name (letters, digits, _)")
    if opts.users_per_attribute < 1:
        raise PluralError(f"--set users_per_attribute={opts.users_per_attribute}: must be at least 1")
    by_prompt: dict[str, list[dict]] = {}
    for f in list_inputs(path, ("jsonl", "csv", "parquet")):
        rows = read_rows(f, ("jsonl", "csv", "parquet"))
        for i, rec in enumerate(rows.records):
            prompt = rows.get(i, rec, opts.prompt_column, "str")
            response = rows.get(i, rec, opts.response_column, "str")
            scores = {a: rows.get(i, rec, a, "number") for a in attrs}
            by_prompt.setdefault(prompt, []).append({"response": response, "scores": scores, "src": (rows, i)})
    stats = {"identical": 0, "agreeing_pairs": 0, **{f"ties_{a}": 0 for a in attrs}}
    count = {a: 0 for a in attrs}
    out, src = [], []
    for prompt, items in by_prompt.items():
        for x, y in combinations(items, 2):
            if x["response"] == y["response"]:
                stats["identical"] += 1
                continue
            signs = {a: (x["scores"][a] > y["scores"][a]) - (x["scores"][a] < y["scores"][a]) for a in attrs}
            if opts.disagreement_only and not ({1, -1} <= set(signs.values())):
                stats["agreeing_pairs"] += 1
                continue
            for a in attrs:
                if signs[a] == 0:
                    stats[f"ties_{a}"] += 1
                    continue
                hi, lo = (x, y) if signs[a] > 0 else (y, x)
                row = {"user_id": f"{a}-{count[a] % opts.users_per_attribute}", "group": a, "prompt": prompt,
                       "chosen": hi["response"], "rejected": lo["response"]}
                for b in attrs:
                    row[f"chosen_attr_{b}"] = hi["scores"][b]
                    row[f"rejected_attr_{b}"] = lo["scores"][b]
                count[a] += 1
                out.append(row)
                src.append(hi["src"])
    return finish(out, src, None, NAME, stats)
