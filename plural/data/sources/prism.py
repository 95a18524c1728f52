"""PRISM (Kirk et al., 2024): HannahRoseKirk/prism-alignment -> preference table.

Files (https://huggingface.co/datasets/HannahRoseKirk/prism-alignment): `survey.jsonl` (one participant
per line) and `conversations.jsonl` (one conversation per line) or, equivalently, `utterances.jsonl`
(one rated model response per line). Pass the downloaded folder, or the conversations / utterances
file (survey.jsonl is looked up beside it, or given with `--set survey=PATH`).

Schema used, as confirmed from the dataset's codebook and release code (github.com/HannahKirk/
prism-alignment: notebooks/pre-release processing/04_codebooks.ipynb, src/data_processing/prepare_survey.py):
- survey: `user_id`; `age`, `gender`, `education`, `employment_status`, `marital_status`,
  `english_proficiency` (strings); `religion`, `ethnicity` (objects holding a categorised label);
  `location` (object: `birth_country`, `birth_region`, `birth_subregion`, `reside_country`,
  `reside_region`, `reside_subregion`, ...; regions are UN regions, "Prefer not to say" when withheld).
- conversations: `conversation_id`, `user_id`, `conversation_type`, `conversation_history`: a list of
  turns' messages `{turn (0-based), role ("user" | "model"), content, within_turn_id, model_name, score
  (1-100 slider), if_chosen}`.
- utterances: `conversation_id`, `user_id`, `turn`, `within_turn_id`, `user_prompt`, `model_response`,
  `model_name`, `score`, `if_chosen`, `conversation_type`.
Not confirmed: the key inside `religion` / `ethnicity` (the release script writes `self_described` and
`gpt4_categorised`; third-party loaders read `simplified`), so the first present of `simplified`,
`gpt4_categorised`, `self_described` is used.

Pairs: in the opening turn up to four models answer and the participant rates each; later turns have
two answers (A and B) from the highest-rated model, also rated. Every pair of responses of one turn
with different scores becomes a row, the higher-rated one `chosen`; equal scores are ties (the
dataset's `if_chosen` breaks them at random) and are skipped and counted, as are pairs within
`min_score_gap` and identical texts. `turns=first` keeps the opening turn only. `prompt` is the
participant's message of that turn. Demographics become pass-through columns; `group` is one of them
(default `birth_region`).
"""

from __future__ import annotations

import dataclasses
from typing import Literal
from itertools import combinations
from pathlib import Path

from plural.data.sources._io import Conversion, Rows, finish, read_rows, text
from plural.config import check_config
from plural.errors import PluralError

NAME = "prism"
GROUP_NOTE = "any survey column"
PLAIN = ("age", "gender", "education", "employment_status", "marital_status", "english_proficiency")
CATEGORISED = ("religion", "ethnicity")
LOCATION = ("birth_country", "birth_region", "birth_subregion", "reside_country", "reside_region", "reside_subregion",
            "special_region")
CATEGORY_KEYS = ("simplified", "gpt4_categorised", "self_described")


@dataclasses.dataclass(frozen=True)
class Options:
    group: str = "birth_region"  # survey column that becomes `group`
    survey: str = ""  # survey.jsonl (default: beside the input)
    turns: Literal["all", "first"] = "all"  # first: (the opening turn's four-way ratings only)
    min_score_gap: float = 0.0  # keep a pair only if the scores differ by more than this


def convert(path: Path, opts: Options) -> Conversion:
    check_config(opts)
    convo_file, survey_file = _locate(path, opts)
    survey = _read_survey(read_rows(survey_file, ("jsonl", "parquet")))
    rows = read_rows(convo_file, ("jsonl", "parquet"))
    stats = {"ties": 0, "small_gap": 0, "identical": 0}
    if "conversation_history" in rows.records[0]:
        turns = _turns_from_conversations(rows)
    elif "model_response" in rows.records[0]:
        turns = _turns_from_utterances(rows)
    else:
        rows.fail(0, "conversation_history", "missing field (expected conversations.jsonl with conversation_history, "
                                             "or utterances.jsonl with model_response)")
    out, src = [], []
    for t in turns:
        if opts.turns == "first" and t["turn"] != 0:
            continue
        demo = survey.get(t["user_id"])
        if demo is None:
            rows.fail(t["row"], "user_id", f"participant {t['user_id']!r} is not in {survey_file.name}")
        for a, b in combinations(t["responses"], 2):
            if a["score"] == b["score"]:
                stats["ties"] += 1
                continue
            if abs(a["score"] - b["score"]) <= opts.min_score_gap:
                stats["small_gap"] += 1
                continue
            if a["content"] == b["content"]:
                stats["identical"] += 1
                continue
            hi, lo = (a, b) if a["score"] > b["score"] else (b, a)
            out.append({"user_id": t["user_id"], "prompt": t["prompt"], "chosen": hi["content"], "rejected": lo["content"],
                        "conversation_id": t["conversation_id"], "turn": t["turn"],
                        "conversation_type": t["conversation_type"],
                        "chosen_model": hi["model_name"], "rejected_model": lo["model_name"],
                        "chosen_score": hi["score"], "rejected_score": lo["score"], **demo})
            src.append((rows, hi["row"]))
    if opts.group and out and opts.group not in out[0]:
        raise PluralError(f"--group {opts.group}: not a PRISM survey column (available: {', '.join(_demo_names(out[0]))})")
    return finish(out, src, opts.group, NAME, stats)


def _demo_names(rec: dict) -> list[str]:
    return [k for k in rec if k in PLAIN + CATEGORISED + LOCATION]


def _locate(path: Path, opts: Options) -> tuple[Path, Path]:
    if not path.exists():
        raise PluralError(f"{path}: no such file or directory")
    if path.is_dir():
        convo = next((path / n for n in ("conversations.jsonl", "utterances.jsonl") if (path / n).exists()), None)
        if convo is None:
            raise PluralError(f"{path}: holds neither conversations.jsonl nor utterances.jsonl")
        survey = Path(opts.survey) if opts.survey else path / "survey.jsonl"
    else:
        convo = path
        survey = Path(opts.survey) if opts.survey else path.parent / "survey.jsonl"
    if not survey.exists():
        raise PluralError(f"{survey}: no such file (PRISM needs survey.jsonl for user demographics; pass --set survey=PATH)")
    return convo, survey


def _read_survey(rows: Rows) -> dict[str, dict]:
    out = {}
    for i, rec in enumerate(rows.records):
        uid = rows.get(i, rec, "user_id", "scalar")
        demo = {}
        for k in PLAIN:
            v = rec.get(k)
            if isinstance(v, (dict, list)):
                rows.check(i, k, v, "str")
            demo[k] = text(v)
        for k in CATEGORISED:
            v = rec.get(k)
            if isinstance(v, dict):
                demo[k] = next((text(v[c]) for c in CATEGORY_KEYS if text(v.get(c)) is not None), None)
            elif v is None or isinstance(v, str):
                demo[k] = text(v)
            else:
                rows.check(i, k, v, "dict")
        loc = rows.get(i, rec, "location", "dict", required=False) or {}
        for k in LOCATION:
            if k in loc or k != "special_region":
                v = loc.get(k)
                if isinstance(v, (dict, list)):
                    rows.check(i, f"location.{k}", v, "str")
                demo[k] = text(v)
        if uid in out:
            rows.fail(i, "user_id", f"participant {uid!r} appears twice in the survey")
        out[uid] = demo
    return out


def _response(rows: Rows, i: int, m: dict, field: str, content_key: str) -> dict:
    return {"content": rows.get(i, m, content_key, "str", field=f"{field}.{content_key}" if field else content_key),
            "score": rows.get(i, m, "score", "number", field=f"{field}.score" if field else "score"),
            "model_name": rows.get(i, m, "model_name", "str", field=f"{field}.model_name" if field else "model_name",
                                   required=False),
            "row": i}


def _turns_from_conversations(rows: Rows) -> list[dict]:
    turns = []
    for i, rec in enumerate(rows.records):
        uid = rows.get(i, rec, "user_id", "scalar")
        cid = rows.get(i, rec, "conversation_id", "scalar")
        ctype = rows.get(i, rec, "conversation_type", "str", required=False)
        history = rows.get(i, rec, "conversation_history", "list")
        by_turn: dict[int, dict] = {}
        for j, m in enumerate(history):
            f = f"conversation_history[{j}]"
            if not isinstance(m, dict):
                rows.check(i, f, m, "dict")
            turn = rows.get(i, m, "turn", "int", field=f"{f}.turn")
            role = rows.get(i, m, "role", "str", field=f"{f}.role")
            t = by_turn.setdefault(turn, {"row": i, "user_id": uid, "conversation_id": cid, "conversation_type": ctype,
                                          "turn": turn, "prompt": None, "responses": []})
            if role == "user":
                t["prompt"] = rows.get(i, m, "content", "str", field=f"{f}.content")
            elif role == "model":
                t["responses"].append(_response(rows, i, m, f, "content"))
            else:
                rows.fail(i, f"{f}.role", f"unknown role {role!r} (expected user or model)")
        for turn in sorted(by_turn):
            t = by_turn[turn]
            if t["prompt"] is None and t["responses"]:
                rows.fail(i, "conversation_history", f"turn {turn} has model responses but no user message")
            turns.append(t)
    return turns


def _turns_from_utterances(rows: Rows) -> list[dict]:
    turns: dict[tuple, dict] = {}
    for i, rec in enumerate(rows.records):
        uid = rows.get(i, rec, "user_id", "scalar")
        cid = rows.get(i, rec, "conversation_id", "scalar")
        turn = rows.get(i, rec, "turn", "int")
        prompt = rows.get(i, rec, "user_prompt", "str")
        t = turns.setdefault((cid, turn), {"row": i, "user_id": uid, "conversation_id": cid, "turn": turn, "prompt": prompt,
                                           "conversation_type": rows.get(i, rec, "conversation_type", "str", required=False),
                                           "responses": []})
        if t["user_id"] != uid:
            rows.fail(i, "user_id", f"conversation {cid!r} belongs to {t['user_id']!r} in an earlier row")
        t["responses"].append(_response(rows, i, rec, "", "model_response"))
    return list(turns.values())
