"""Converters from published preference datasets to the preference table of docs/data-format.md.

Each source is one small module with an `Options` dataclass (its `--set` options, `group` among them
where the source has demographics) and `convert(path, options) -> Conversion`. The tables they write
hold text only (prompt / chosen / rejected) plus `user_id`, `group` and pass-through columns; `plural fit`
embeds text-only tables.

    from plural.data.sources import convert
    convert("prism", "prism-alignment/", "prism.parquet", group="reside_region")

| name | dataset | module |
|---|---|---|
| `prism` | HannahRoseKirk/prism-alignment (survey.jsonl + conversations.jsonl or utterances.jsonl) | `prism.py` |
| `community-alignment` | facebook/community-alignment-dataset (CSV, or the same columns as JSON Lines / Parquet) | `community_alignment.py` |
| `summarize-feedback` | openai/summarize_from_feedback, comparisons (batch*.json JSON Lines, or its Parquet) | `summarize_feedback.py` |
| `attribute-scores` | a prompt / response / per-attribute score table (HelpSteer2 style) -> one synthetic user per attribute | `attribute_scores.py` |
| `hh-hidden-context` | HH-RLHF relabelled per objective (helpful / harmless; DPL, VPL's both.jsonl.gz) -> synthetic users per objective | `hh_hidden_context.py` |
| `shp` | stanfordnlp/SHP (18 subreddit folders of JSON Lines) -> one collective user and group per subreddit | `shp.py` |
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from plural.config import apply_overrides
from plural.data.sources import attribute_scores, community_alignment, hh_hidden_context, prism, shp, summarize_feedback
from plural.data.sources._io import Conversion, write_table
from plural.errors import PluralError

SOURCES = {
    "prism": prism,
    "community-alignment": community_alignment,
    "summarize-feedback": summarize_feedback,
    "attribute-scores": attribute_scores,
    "hh-hidden-context": hh_hidden_context,
    "shp": shp,
}
ALIASES = {
    "community_alignment": "community-alignment", "ca": "community-alignment",
    "summarize_from_feedback": "summarize-feedback", "summarize": "summarize-feedback", "tldr": "summarize-feedback",
    "attribute_scores": "attribute-scores", "helpsteer2": "attribute-scores", "helpsteer": "attribute-scores",
    "hh_hidden_context": "hh-hidden-context", "hh-rlhf-hidden-context": "hh-hidden-context",
    "stanford-human-preferences": "shp", "stanfordnlp/shp": "shp",
}


def source_module(name: str):
    key = ALIASES.get(name.lower(), name.lower())
    if key not in SOURCES:
        raise PluralError(f"unknown source '{name}' (known: {', '.join(SOURCES)})")
    return SOURCES[key]


def convert(source: str, path: str | Path, out: str | Path | None = None, *, group: str | None = None,
            overrides: list[str] | tuple[str, ...] = (), **options) -> Conversion:
    """Convert `path` (a file or directory in the source's published layout) and write it to `out` if given.

    `group` picks the column that becomes `group`; `options` (keyword arguments) and `overrides`
    (`key=value` strings, as `plural convert --set`) set the source's other options.
    """
    mod = source_module(source)
    opts = mod.Options()
    names = {f.name for f in dataclasses.fields(opts)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise PluralError(f"{source}: unknown option(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    opts = dataclasses.replace(opts, **options)
    if overrides:
        opts = apply_overrides({mod.NAME: opts}, list(overrides))[mod.NAME]
    if group is not None:
        if "group" not in names:
            raise PluralError(f"--group: the {mod.NAME} source has no group choice ({mod.GROUP_NOTE})")
        opts = dataclasses.replace(opts, group=group)
    result = mod.convert(Path(path), opts)
    if out is not None:
        result.out = write_table(result.table, out)
    return result


__all__ = ["SOURCES", "Conversion", "convert", "source_module", "write_table"]
