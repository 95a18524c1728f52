"""Configuration: frozen dataclasses, `--set key=value` overrides, JSON round trips.

Every hyper-parameter lives in one of four dataclasses: `TrainConfig` (`train.*`), the family's own
`Hparams` (`model.*`), its sampler (`batch.*`, plural.data.batching) and `DataConfig` (`data.*`). `--set` takes dotted keys (`train.lr=3e-4`) or bare
ones when the name is unambiguous (`lr=3e-4`).
"""

from __future__ import annotations

import ast
import dataclasses
import typing
from typing import Any

from plural.errors import PluralError


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The trainer's hyper-parameters (shared by every family)."""

    steps: int = 1000  # optimiser steps (batch sizes are the family sampler's `batch.*` settings)
    lr: float = 1e-3  # peak learning rate
    schedule: str = "cosine"  # constant | cosine | linear
    warmup_steps: int = 50
    end_lr_fraction: float = 0.0  # final lr as a fraction of the peak (cosine / linear)
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # global-norm clip; 0 disables
    log_every: int = 100  # steps per compiled chunk; one running-loss entry per chunk
    ckpt_every: int = 500  # checkpoint interval in steps (0: only the final one)
    seed_batching: str = "auto"  # how S seeds train at once: vmap | map (lax.map in one program) | auto
    # (auto: map on CPU, where batched matmuls are slower than plain ones; vmap on GPU/TPU)
    mesh_data: int = 0  # devices on the 'data' mesh axis; 0 = all local devices that divide the batch
    # Validation protocol (fixed by hand, not swept; every run in results/ used these values):
    eval_every: int = 100  # steps between validation evaluations when validation data is given (0: none)
    early_stopping: int = 10  # patience: stop after this many evaluations without improvement (0: never stop)
    val_metric: str = "accuracy"  # what validation maximises: accuracy | nll (minimised)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """How a table becomes training data."""

    val_fraction: float = 0.1  # without --val: share of each user's pairs held out for validation (0: none)


def _coerce(value: str, typ: Any, key: str) -> Any:
    """Parse a `--set` string into the field's declared type."""
    if isinstance(typ, str):
        typ = eval(typ, vars(typing), {})  # annotations are strings under `from __future__`
    origin = typing.get_origin(typ)
    try:
        if typ is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if typ in (int, float, str):
            return typ(value) if typ is not int else int(float(value)) if "e" in value.lower() else int(value)
        if origin is tuple or typ is tuple:
            parsed = ast.literal_eval(value if value.strip().startswith(("(", "[")) else f"({value},)")
            args = typing.get_args(typ)
            elem = args[0] if args else (lambda v: v)
            return tuple(elem(v) for v in parsed)
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError):
        raise PluralError(f"--set {key}={value}: cannot read {value!r} as {getattr(typ, '__name__', typ)}")


def apply_overrides(configs: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key=value` strings to a dict of named frozen dataclasses; returns new instances.

    `configs` maps a section name (`train`, `model`, `data`) to a dataclass instance.
    """
    updates: dict[str, dict[str, Any]] = {name: {} for name in configs}
    for item in overrides:
        if "=" not in item:
            raise PluralError(f"--set {item}: expected key=value")
        key, value = item.split("=", 1)
        key = key.strip()
        if "." in key:
            section, name = key.split(".", 1)
            if section not in configs:
                raise PluralError(f"--set {key}: unknown section '{section}' (known: {', '.join(configs)})")
            candidates = [(section, name)]
        else:
            name = key
            candidates = [(s, key) for s, c in configs.items() if key in _field_types(c)]
            if len(candidates) > 1:
                opts = ", ".join(f"{s}.{key}" for s, _ in candidates)
                raise PluralError(f"--set {key}: ambiguous, use one of {opts}")
        section, name = candidates[0] if candidates else (None, name)
        if section is None or name not in _field_types(configs[section]):
            known = sorted(f"{s}.{f}" for s, c in configs.items() for f in _field_types(c))
            raise PluralError(f"--set {key}: unknown hyper-parameter (known: {', '.join(known)})")
        updates[section][name] = _coerce(value, _field_types(configs[section])[name], key)
    return {s: dataclasses.replace(c, **updates[s]) for s, c in configs.items()}


def _field_types(cfg) -> dict[str, Any]:
    return {f.name: f.type for f in dataclasses.fields(cfg)}


def to_dict(cfg) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return dataclasses.asdict(cfg)


def from_dict(cls, d: dict[str, Any]):
    """Rebuild a config dataclass from `to_dict` output (lists back to tuples)."""
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in types})
