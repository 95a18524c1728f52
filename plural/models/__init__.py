"""Model families, chosen by name (CONTRACT.md section 2). A new family = one file + one entry here."""

from __future__ import annotations

from plural.errors import PluralError
from plural.models.base import RewardModel
from plural.models.bt import BT
from plural.models.pal import PALA, PALB
from plural.models.vpl import VPL

FAMILIES: dict[str, type[RewardModel]] = {"bt": BT, "vpl": VPL, "pal-a": PALA, "pal-b": PALB}

# Names reserved by the contract whose families have not landed yet.
PLANNED = ("micro", "maxmin", "fewshot", "palette")


def get_family(name: str) -> type[RewardModel]:
    """The family class registered as `name`; a one-line error for unknown or not-yet-built names."""
    if name in FAMILIES:
        return FAMILIES[name]
    if name in PLANNED:
        raise PluralError(f"--model {name}: this family is not implemented in this version (available: {', '.join(FAMILIES)})")
    raise PluralError(f"--model {name}: unknown model family (available: {', '.join(FAMILIES)})")


__all__ = ["FAMILIES", "RewardModel", "get_family"]
