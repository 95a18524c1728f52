"""Community Alignment (Meta, 2025): facebook/community-alignment-dataset -> preference table.

Files (https://huggingface.co/datasets/facebook/community-alignment-dataset): one CSV per release,
`data/full_community_alignment.csv` or `data/filtered_community_alignment.csv` (later revisions:
`community_alignment.csv`); one row per conversation. The same columns as JSON Lines or Parquet (e.g.
the Hub's Parquet conversion) are accepted too.

Columns used, as read by several public loaders of the dataset (no field-level schema is on the card;
the card points to Appendix I of arXiv:2507.09650 for the codebook, which could not be read here):
`conversation_id`, `annotator_id`, `assigned_lang`, and for each turn T in first, second, third,
fourth: `T_turn_prompt`, `T_turn_response_a` .. `T_turn_response_d` (four candidates),
`T_turn_preferred_response` (`response_a` .. `response_d`), `T_turn_feedback` (optional free text);
annotator demographics `annotator_age`, `annotator_gender`, `annotator_education_level`,
`annotator_political`, `annotator_ethnicity`, `annotator_country`; `is_pregenerated_first_prompt`.

Pairs: per turn, the preferred candidate over each of the three others (3 pairs); a turn without a
prompt is absent (conversations have 1-4 turns), a turn with a prompt but no preference is skipped and
counted, a candidate identical to the preferred text is skipped and counted; a preference naming
anything but response_a..d, or a candidate with no text, is refused. `prompt` is that turn's message.
user_id = annotator_id; `group` = one demographic column (default annotator_country).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from plural.data.sources._io import Conversion, finish, list_inputs, read_rows, text

NAME = "community-alignment"
GROUP_NOTE = "an annotator column"
TURNS = ("first", "second", "third", "fourth")
LETTERS = ("a", "b", "c", "d")
DEMOGRAPHICS = ("annotator_age", "annotator_gender", "annotator_education_level", "annotator_political",
                "annotator_ethnicity", "annotator_country", "assigned_lang")
PREFERRED = re.compile(r"^response_([a-d])$")


@dataclasses.dataclass(frozen=True)
class Options:
    group: str = "annotator_country"  # annotator column that becomes `group`


def convert(path: Path, opts: Options) -> Conversion:
    stats = {"unlabelled_turns": 0, "identical": 0}
    out, src = [], []
    for f in list_inputs(path, ("csv", "jsonl", "parquet")):
        rows = read_rows(f, ("csv", "jsonl", "parquet"))
        for i, rec in enumerate(rows.records):
            uid = rows.get(i, rec, "annotator_id", "scalar")
            cid = rows.get(i, rec, "conversation_id", "scalar", required=False)
            demo = {}
            for k in DEMOGRAPHICS:
                v = rec.get(k)
                if isinstance(v, (dict, list)):
                    rows.check(i, k, v, "str")
                demo[k] = text(v)
            pregen = rows.get(i, rec, "is_pregenerated_first_prompt", "bool", required=False)
            for ti, t in enumerate(TURNS):
                prompt = rows.get(i, rec, f"{t}_turn_prompt", "str", required=False)
                if prompt is None:
                    continue
                pref = rows.get(i, rec, f"{t}_turn_preferred_response", "str", required=False)
                if pref is None:
                    stats["unlabelled_turns"] += 1
                    continue
                m = PREFERRED.match(pref.strip())
                if not m:
                    rows.fail(i, f"{t}_turn_preferred_response",
                              f"preferred response {pref!r} is out of range (expected one of response_a .. response_d)")
                best = m.group(1)
                cands = {c: rows.get(i, rec, f"{t}_turn_response_{c}", "str", required=False) for c in LETTERS}
                if cands[best] is None:
                    rows.fail(i, f"{t}_turn_response_{best}", f"the preferred response_{best} has no text")
                feedback = rows.get(i, rec, f"{t}_turn_feedback", "str", required=False)
                for c in LETTERS:
                    if c == best or cands[c] is None:
                        continue
                    if cands[c] == cands[best]:
                        stats["identical"] += 1
                        continue
                    out.append({"user_id": uid, "prompt": prompt, "chosen": cands[best], "rejected": cands[c],
                                "conversation_id": cid, "turn": ti, "chosen_label": f"response_{best}",
                                "rejected_label": f"response_{c}", "feedback": feedback,
                                "is_pregenerated_first_prompt": pregen, **demo})
                    src.append((rows, i))
    return finish(out, src, opts.group, NAME, stats)
