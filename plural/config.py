"""Configuration: frozen dataclasses, `--set key=value` overrides, JSON round trips.

Every hyper-parameter lives in one of four dataclasses: `TrainConfig` (`train.*`), the family's own
`Hparams` (`model.*`), its sampler (`batch.*`, plural.data.batching) and `DataConfig` (`data.*`). `--set`
takes dotted keys (`train.lr=3e-4`) or bare ones when the name is unambiguous (`lr=3e-4`).

Field types are the dataclass annotations, resolved with `typing.get_type_hints` (so `Path`, enums, nested
dataclasses and `Optional[...]` work under `from __future__ import annotations`). Supported: bool, int,
float, str, Path, `tuple[X, ...]`, `Optional[X]`, `Literal[...]`, Enum subclasses and nested config
dataclasses. A string option is annotated `Literal["a", "b"]` and a number's allowed range
`Annotated[float, Range(gt=0)]` (or one of the aliases `Positive`, `NonNegative`, `PositiveInt`, `Count`,
`Fraction`, `Rate`); both are checked here, once, by `check_config` (which `apply_overrides` and `from_dict`
apply to every config they build, and the trainer to the configs it is given), so no other code re-checks
them by hand. A float is always finite (NaN and infinity are refused). Overrides are `key=value` text (parsed by the field's
type) or Python values ({key: value}, as grid specs give them), type-checked alike; a bad value is a
one-line `PluralError` naming the key.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import functools
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np

from plural.errors import PluralError


@dataclasses.dataclass(frozen=True)
class Range:
    """The allowed values of a numeric field, declared in its annotation: `Annotated[float, Range(gt=0)]`."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def check(self, value, key: str, shown: str) -> None:
        bounds = [(self.ge, ">=", lambda v, b: v >= b), (self.gt, ">", lambda v, b: v > b),
                  (self.le, "<=", lambda v, b: v <= b), (self.lt, "<", lambda v, b: v < b)]
        if not all(ok(value, b) for b, _, ok in bounds if b is not None):
            want = " and ".join(f"{op} {b:g}" for b, op, _ in bounds if b is not None)
            raise PluralError(f"--set {key}={shown}: must be {want}")


Positive = Annotated[float, Range(gt=0)]
NonNegative = Annotated[float, Range(ge=0)]
Fraction = Annotated[float, Range(ge=0, le=1)]  # a share, both ends allowed
Rate = Annotated[float, Range(ge=0, lt=1)]  # a dropout (or hold-out) rate: 1 would drop everything
PositiveInt = Annotated[int, Range(ge=1)]
Count = Annotated[int, Range(ge=0)]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The trainer's hyper-parameters (shared by every family)."""

    steps: PositiveInt = 1000  # optimiser steps (batch sizes are the family sampler's `batch.*` settings)
    lr: Positive = 1e-3  # peak learning rate
    schedule: Literal["constant", "cosine", "linear"] = "cosine"
    warmup_steps: Count = 50
    end_lr_fraction: Fraction = 0.0  # final lr as a fraction of the peak (cosine / linear)
    weight_decay: NonNegative = 0.0
    grad_clip: NonNegative = 1.0  # global-norm clip; 0 disables
    log_every: PositiveInt = 100  # steps per compiled chunk; one running-loss entry per chunk
    ckpt_every: Count = 500  # checkpoint interval in steps (0: only the final one)
    seed_batching: Literal["auto", "vmap", "map"] = "auto"  # how a device's replicas (seeds x traced points)
    # train at once: vmap, or lax.map in one program; auto: the faster, measured per shape (Trainer.batching)
    mesh: tuple[PositiveInt, ...] = ()  # (replica devices, data devices) of the training mesh; () = chosen
    # (plural.parallel.mesh_shape: replicas over the devices, then batches over those left; data 1 on a CPU)
    # Validation protocol (fixed by hand, not swept; every run in results/ used these values):
    eval_every: Count = 100  # steps between validation evaluations when validation data is given (0: none)
    early_stopping: Count = 10  # patience: stop after this many evaluations without improvement (0: never stop)
    val_metric: Literal["accuracy", "nll"] = "accuracy"  # what validation maximises (nll: minimised)
    val_shots: Count = 0  # K > 0: validation also adapts each unseen user of the validation table from its first
    # K pairs (file order) and scores its later pairs; the score is then the mean of the seen users' and these
    # users' (as the grid's selection score, for a spec whose shots are [K]), so that a few-shot learner stops
    # where it adapts best (0: seen only)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """How a table becomes training data."""

    val_fraction: Rate = 0.1  # without --val: share of each user's pairs held out for validation (0: none)


def _type_name(typ) -> str:
    if typing.get_origin(typ) is Annotated:
        return _type_name(typing.get_args(typ)[0])
    if typing.get_origin(typ) is typing.Literal:
        return " | ".join(map(str, typing.get_args(typ)))
    return getattr(typ, "__name__", str(typ))


def _check_value(value: Any, typ: Any, key: str, shown: str) -> Any:
    """`value` (a Python value) as the field's type `typ`, or a one-line PluralError naming `key`.

    Literal options must be one of their values; an int is accepted for a float (not a bool for either);
    tuple elements are checked one by one; Optional[X] accepts None."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    bad = PluralError(f"--set {key}={shown}: expected {_type_name(typ)}")
    if origin is Annotated:
        value = _check_value(value, args[0], key, shown)
        for rule in args[1:]:
            if isinstance(rule, Range):
                rule.check(value, key, shown)
        return value
    if origin is typing.Literal:
        if not any(value == a and type(value) is type(a) for a in args):
            raise PluralError(f"--set {key}={shown}: expected one of {', '.join(map(str, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        return _check_value(value, rest[0], key, shown) if len(rest) == 1 else value
    if origin is tuple or typ is tuple:
        if not isinstance(value, (tuple, list)):
            raise bad
        elem = args[0] if args else Any
        return tuple(_check_value(v, elem, key, shown) for v in value)
    if typ is Any:
        return value
    if typ is bool:
        if not isinstance(value, (bool, np.bool_)):
            raise bad
        return bool(value)
    if typ is float:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise bad
        try:
            value = float(value)
        except OverflowError:  # an int beyond any float
            raise PluralError(f"--set {key}={shown}: must be a finite number")
        if not np.isfinite(value):
            raise PluralError(f"--set {key}={shown}: must be a finite number")
        return value
    if typ is int:
        if isinstance(value, (bool, np.bool_)):
            raise bad
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            return int(value)
        if not isinstance(value, (int, np.integer)):
            raise bad
        return int(value)
    if typ is str:
        if not isinstance(value, str):
            raise bad
        return value
    if isinstance(typ, type) and issubclass(typ, Path):
        if not isinstance(value, (str, Path)):
            raise bad
        return Path(value)
    if isinstance(typ, type) and issubclass(typ, enum.Enum):
        if isinstance(value, typ):
            return value
        for member in typ:
            if value == member.name or (value == member.value and type(value) is type(member.value)):
                return member
        raise PluralError(f"--set {key}={shown}: expected one of {', '.join(m.name for m in typ)}")
    if dataclasses.is_dataclass(typ) and isinstance(typ, type):
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(_field_types(typ)))
            if unknown:
                raise PluralError(f"--set {key}={shown}: unknown field(s) {', '.join(unknown)} of {typ.__name__}")
            value = typ(**value)
        if not isinstance(value, typ):
            raise bad
        return check_config(value, key)
    return value


def _parse(text: str, typ: Any, key: str) -> Any:
    """Parse a `--set` string into a Python value of the field's type `typ`."""
    if typing.get_origin(typ) is Annotated:
        typ = typing.get_args(typ)[0]
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        if text.strip().lower() == "none" and type(None) in typing.get_args(typ):
            return None
        rest = [a for a in typing.get_args(typ) if a is not type(None)]
        typ, origin = (rest[0], typing.get_origin(rest[0])) if len(rest) == 1 else (typ, origin)
    try:
        if typ is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if typ is int:
            return int(float(text)) if "e" in text.lower() and float(text).is_integer() else int(text)
        if typ is float:
            return float(text)
        if typ is str or origin is typing.Literal or (isinstance(typ, type) and issubclass(typ, Path)):
            return text
        if isinstance(typ, type) and issubclass(typ, enum.Enum):  # a member's name (or its value, as text)
            if text in typ.__members__:
                return text
            try:
                return ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return text
        if origin is tuple or typ is tuple:
            parsed = ast.literal_eval(text if text.strip().startswith(("(", "[")) else f"({text},)")
            return tuple(parsed) if isinstance(parsed, (tuple, list)) else parsed
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError):
        raise PluralError(f"--set {key}={text}: cannot read {text!r} as {_type_name(typ)}")


def _textual(typ) -> bool:
    """Whether the type is written as bare text (str, Path, an enum, a Literal of strings, or Optional of one)."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin is Annotated:
        return _textual(args[0])
    if origin in (typing.Union, types.UnionType):
        return any(_textual(a) for a in args)
    if origin is typing.Literal:
        return any(isinstance(a, str) for a in args)
    return typ is str or (isinstance(typ, type) and issubclass(typ, (Path, enum.Enum)))


def check_config(cfg, section: str = ""):
    """`cfg` with every field checked against its annotation (Literal options, types); one-line errors.

    Every config the library builds passes here (defaults, `--set`, `from_dict`), so string options are
    checked once, in this place, and nowhere else."""
    prefix = f"{section}." if section else ""
    fixed = {}
    for name, typ in _field_types(cfg).items():
        value = getattr(cfg, name)
        shown = value if isinstance(value, str) and _textual(typ) else repr(value)  # a stray string shows its quotes
        fixed[name] = _check_value(value, typ, prefix + name, shown)
    changed = {k: v for k, v in fixed.items() if v is not getattr(cfg, k)}
    return dataclasses.replace(cfg, **changed) if changed else cfg


def apply_overrides(configs: dict[str, Any], overrides: list[str] | dict[str, Any]) -> dict[str, Any]:
    """Apply overrides to a dict of named frozen dataclasses; returns new, checked instances.

    `configs` maps a section name (`train`, `model`, `batch`, `data`) to a dataclass instance.
    `overrides`: `key=value` strings (as `--set` gives them), or a dict {key: value} of Python values (as
    grid specs give them: `{"model.hidden": (64,), "train.lr": 1e-3}`); a value given as text is parsed by
    the field's type, every value is then type-checked against it. Keys are `section.name`, or `name` alone
    when only one section has it.
    """
    items = list(overrides.items()) if isinstance(overrides, dict) else []
    for item in ([] if isinstance(overrides, dict) else overrides):
        if "=" not in item:
            raise PluralError(f"--set {item}: expected key=value")
        key, value = item.split("=", 1)
        items.append((key, value))
    updates: dict[str, dict[str, Any]] = {name: {} for name in configs}
    for key, value in items:
        key = str(key).strip()
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
        typ = _field_types(configs[section])[name]
        full = f"{section}.{name}"
        shown = value if isinstance(value, str) else repr(value)
        parsed = _parse(value, typ, full) if isinstance(value, str) else value  # text: parsed by the field's type
        updates[section][name] = _check_value(parsed, typ, full, shown)
    return {s: check_config(dataclasses.replace(c, **updates[s]), s) for s, c in configs.items()}


def _field_types(cfg) -> dict[str, Any]:
    """{field: resolved type} of a config dataclass (instance or class), via typing.get_type_hints."""
    return dict(_hints(cfg if isinstance(cfg, type) else type(cfg)))


@functools.lru_cache(maxsize=None)
def _hints(cls) -> tuple:
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except Exception as e:  # an annotation naming what its module cannot see
        raise PluralError(f"{cls.__name__}: cannot resolve its field types ({type(e).__name__}: {e})")
    return tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls))


def to_dict(cfg) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return dataclasses.asdict(cfg)


def from_dict(cls, d: dict[str, Any]):
    """Rebuild a config dataclass from `to_dict` output (lists back to tuples), checked."""
    fields = _field_types(cls)
    return check_config(cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in fields}))
