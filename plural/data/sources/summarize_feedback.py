"""Learning to summarize from human feedback (Stiennon et al., 2020): comparisons -> preference table.

Files: the `comparisons` set of openai/summarize_from_feedback (https://huggingface.co/datasets/openai/
summarize_from_feedback), published as JSON Lines `batch*.json` files under
https://openaipublic.blob.core.windows.net/summarize-from-feedback/dataset/comparisons/ (the Hub also
holds a Parquet conversion with the same nested fields). Pass one file or the folder of batch files.

Fields, as declared by the dataset's own loading script and features (summarize_from_feedback.py on
the Hub): `info` {id, post, title, subreddit, site, article} (Reddit TL;DR posts have `post`, CNN/DM
items `article`), `summaries` [{text, policy, note}, {text, policy, note}], `choice` (0 or 1: the index
of the preferred summary), `worker` (labeller id), `batch`, `split`, `extra` {confidence}.

Each record is one row: chosen = summaries[choice].text, rejected = the other, user_id = worker;
prompt = "SUBREDDIT: r/<subreddit>\nTITLE: <title>\nPOST: <post>" (the paper's query format) or the
article. Workers carry no demographics, so there is no group by default; `--group` may name a
pass-through column (subreddit, split, batch, site), refused if it contradicts itself within a worker.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from plural.data.sources._io import Conversion, finish, list_inputs, read_rows

NAME = "summarize-feedback"
GROUP_NOTE = "workers have no demographics"


@dataclasses.dataclass(frozen=True)
class Options:
    group: str = ""  # optional: a pass-through column (constant per worker) to use as `group`


def convert(path: Path, opts: Options) -> Conversion:
    stats = {"identical": 0}
    out, src = [], []
    for f in list_inputs(path, ("jsonl", "parquet")):
        rows = read_rows(f, ("jsonl", "parquet"))
        for i, rec in enumerate(rows.records):
            worker = rows.get(i, rec, "worker", "scalar")
            info = rows.get(i, rec, "info", "dict")
            get = lambda k, kind="str", req=False: rows.get(i, info, k, kind, field=f"info.{k}", required=req)  # noqa: E731
            post, article, title, sub = get("post"), get("article"), get("title"), get("subreddit")
            if post is not None:
                prompt = "\n".join(p for p in (f"SUBREDDIT: r/{sub}" if sub else None, f"TITLE: {title}" if title else None,
                                               f"POST: {post}") if p)
            elif article is not None:
                prompt = article
            else:
                rows.fail(i, "info.post", "missing field (info has neither post nor article)")
            summaries = rows.get(i, rec, "summaries", "list")
            if len(summaries) != 2:
                rows.fail(i, "summaries", f"expected 2 summaries, got {len(summaries)}")
            texts, policies = [], []
            for j, s in enumerate(summaries):
                texts.append(rows.get(i, s, "text", "str", field=f"summaries[{j}].text"))
                policies.append(rows.get(i, s, "policy", "str", field=f"summaries[{j}].policy", required=False))
            choice = rows.get(i, rec, "choice", "int")
            if choice not in (0, 1):
                rows.fail(i, "choice", f"preferred index {choice} is out of range (expected 0 or 1)")
            if texts[0] == texts[1]:
                stats["identical"] += 1
                continue
            extra = rows.get(i, rec, "extra", "dict", required=False) or {}
            out.append({"user_id": worker, "prompt": prompt, "chosen": texts[choice], "rejected": texts[1 - choice],
                        "post_id": get("id", "scalar"), "subreddit": sub, "site": get("site"),
                        "split": rows.get(i, rec, "split", "str", required=False),
                        "batch": rows.get(i, rec, "batch", "str", required=False),
                        "chosen_policy": policies[choice], "rejected_policy": policies[1 - choice],
                        "confidence": rows.get(i, extra, "confidence", "int", field="extra.confidence", required=False)})
            src.append((rows, i))
    return finish(out, src, opts.group or None, NAME, stats)
