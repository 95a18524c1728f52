"""Model families, chosen by name (`plural fit --model NAME`; docs/methods.md).

A new family is one model file plus one line in `_REGISTERED` below: `register` checks what the rest of
the library relies on (a name, a one-line summary, a reference, frozen `Hparams`, a sampler), and the
command line's `--model` help, `plural demo`, the README's family table (`family_table`, checked by a
test) and the conformance suite (tests/test_families.py, parametrised over `FAMILIES`) all read this
registry, so nothing else needs touching.
"""

from __future__ import annotations

import dataclasses

from plural.errors import PluralError
from plural.models.base import RewardModel
from plural.models.bt import BT
from plural.models.dpl import DPL
from plural.models.fewshot import FewShot
from plural.models.maxmin import MaxMin
from plural.models.micro import MiCRo
from plural.models.pal import PALA, PALB
from plural.models.palette import Palette
from plural.models.vpl import VPL

FAMILIES: dict[str, type[RewardModel]] = {}

# Names reserved for families that have not landed yet (`--model NAME` says so in one line).
PLANNED: tuple[str, ...] = ()


def register(family: type[RewardModel]) -> type[RewardModel]:
    """Add `family` to `FAMILIES` after checking its declarations; returns it (usable as a decorator)."""
    name = family.name
    problems = [
        "no name" if not name else None,
        f"name {name!r} is taken" if name in FAMILIES else None,
        "no one-line summary" if not family.summary or "\n" in family.summary else None,
        "no reference" if not family.reference else None,
        "Hparams is not a frozen dataclass" if not (dataclasses.is_dataclass(family.Hparams)
                                                    and family.Hparams.__dataclass_params__.frozen) else None,
        "no sampler (`batches` with size and sample)" if not (hasattr(family.batches, "sample")
                                                             and hasattr(family.batches, "size")) else None,
    ]
    problems = [p for p in problems if p]
    if problems:
        raise TypeError(f"cannot register {family.__name__}: {'; '.join(problems)}")
    FAMILIES[name] = family
    return family


_REGISTERED = (BT, VPL, PALA, PALB, MiCRo, DPL, MaxMin, FewShot, Palette)
for _family in _REGISTERED:
    register(_family)


def get_family(name: str) -> type[RewardModel]:
    """The family class registered as `name`; a one-line error for unknown or not-yet-built names."""
    if name in FAMILIES:
        return FAMILIES[name]
    if name in PLANNED:
        raise PluralError(f"--model {name}: this family is not implemented in this version (available: {', '.join(FAMILIES)})")
    raise PluralError(f"--model {name}: unknown model family (available: {', '.join(FAMILIES)})")


def demo_models() -> dict[str, tuple[str, list[str]]]:
    """{label: (family name, [--set ...])}: every variant `plural demo` fits, in registration order."""
    out = {}
    for name, family in FAMILIES.items():
        for label, sets in (family.demo if family.demo is not None else {name: []}).items():
            out[label] = (name, list(sets))
    return out


def family_table() -> str:
    """The README's table of families (Markdown), made from the registry."""
    lines = ["| `--model` | what it models | reference |", "|---|---|---|"]
    lines += [f"| `{n}` | {f.summary} | {f.reference} |" for n, f in FAMILIES.items()]
    return "\n".join(lines)


__all__ = ["FAMILIES", "PLANNED", "RewardModel", "demo_models", "family_table", "get_family", "register"]
