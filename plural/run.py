"""A run directory: what `plural fit` writes and `plural evaluate` reads.

    RUN/config.json       every hyper-parameter, the data spec and the training users
    RUN/checkpoints/<N>/  Orbax checkpoints of parameters + optimiser state (the trainer's)
    RUN/seen_states.npz   what the model learned of each training user (S, U, ...), derived data
    RUN/metrics.json      training metrics (deterministic per seed: byte-identical across reruns)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from plural.config import DataConfig, TrainConfig, apply_overrides, from_dict, to_dict
from plural.data import PreferenceData, read_table
from plural.errors import PluralError
from plural.models import get_family
from plural.train import TrainResult, restore_params, train


def dumps(obj) -> str:
    """Deterministic JSON text (sorted keys, fixed float repr)."""
    return json.dumps(obj, indent=1, sort_keys=True, allow_nan=True) + "\n"


def configs_for(model: str, overrides: list[str] = ()) -> dict:
    """{'model': Hparams, 'train': TrainConfig, 'data': DataConfig} with `--set` overrides applied."""
    family = get_family(model)
    base = {"model": family.Hparams(), "train": TrainConfig(**family.train_defaults), "data": DataConfig()}
    return apply_overrides(base, list(overrides))


def save_states(path: Path, states) -> None:
    """Write a user-state pytree (an array, or a flat dict of arrays) to an .npz file."""
    arrays = dict(states) if isinstance(states, dict) else {"__array__": states}
    with open(path, "wb") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})


def load_states(path: Path):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays["__array__"] if list(arrays) == ["__array__"] else arrays


def fit(model: str, data_path: str | Path, out: str | Path, seed: int = 0, resume: bool = False,
        overrides: list[str] = (), progress: bool = True, data: PreferenceData | None = None,
        on_chunk=None) -> TrainResult:
    """`plural fit`: train one seed of `model` on the table at `data_path`, writing the run directory."""
    family = get_family(model)
    cfgs = configs_for(model, overrides)
    data = data if data is not None else read_table(data_path)
    out = Path(out)
    config = {
        "model": model,
        "seed": int(seed),
        "data_path": str(data_path),
        "model_hparams": to_dict(cfgs["model"]),
        "train": to_dict(cfgs["train"]),
        "data": to_dict(cfgs["data"]),
        "spec": data.spec(),
        "users": [str(u) for u in data.users],
        "user_group": {str(u): (data.groups[g] if g >= 0 else None) for u, g in zip(data.users, data.user_group)},
    }
    if (out / "config.json").exists():
        if not resume:
            raise PluralError(f"{out}: already holds a run; pass --resume to continue it, or choose a new --out")
        old = json.loads((out / "config.json").read_text())
        if {k: v for k, v in old.items() if k != "data_path"} != json.loads(dumps({k: v for k, v in config.items() if k != "data_path"})):
            raise PluralError(f"{out}/config.json: --resume with a different model, data, seed or hyper-parameters")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(dumps(config))
    result = train(family, cfgs["model"], cfgs["train"], data, seeds=(seed,), workdir=out, resume=resume,
                   progress=progress, on_chunk=on_chunk)
    save_states(out / "seen_states.npz", result.seen)
    (out / "metrics.json").write_text(dumps(result.seed_metrics(0)))
    return result


def load_run(run: str | Path) -> tuple[TrainResult, list[str]]:
    """The fitted model of a run directory and its training users (in model index order)."""
    run = Path(run)
    path = run / "config.json"
    if not path.exists():
        raise PluralError(f"{run}: not a run directory (no config.json); create one with plural fit")
    try:
        config = json.loads(path.read_text())
        family = get_family(config["model"])
        hp = from_dict(family.Hparams, config["model_hparams"])
        cfg = from_dict(TrainConfig, config["train"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise PluralError(f"{path}: unreadable run configuration ({e})")
    seeds = (int(config["seed"]),)
    graphdef, params, rest, _ = restore_params(family, hp, config["spec"], cfg, seeds, run)

    seen_path = run / "seen_states.npz"
    if not seen_path.exists():
        raise PluralError(f"{run}: the run has not finished (no seen_states.npz); continue it with plural fit --resume")
    seen = load_states(seen_path)
    result = TrainResult(family, hp, cfg, config["spec"], seeds, graphdef, params, rest, seen, history=[])
    return result, config["users"]
