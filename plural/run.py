"""A run directory: what `plural fit` writes and `plural evaluate` reads.

    RUN/config.json       every hyper-parameter, the data spec and the training users
    RUN/checkpoints/<N>/  Orbax checkpoints of parameters + optimiser state (the trainer's)
    RUN/seen_states.npz   what the model learned of each training user (S, U, ...), derived data
    RUN/metrics.json      training metrics (deterministic per seed: byte-identical across reruns), with
                          validation loss / accuracy per evaluation and the best step when validating
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from plural.checkpoint import read_json
from plural.files import atomic_path, write_atomic
from plural.config import DataConfig, TrainConfig, apply_overrides, from_dict, to_dict
from plural.data import PreferenceData, read_table
from plural.data.arrays import holdout
from plural.errors import PluralError
from plural.models import get_family
from plural.models.base import view_of
from plural.train import TrainResult, check_seeds, graphdef_of, restore_params, train


def dumps(obj) -> str:
    """Deterministic JSON text (sorted keys, fixed float repr)."""
    return json.dumps(obj, indent=1, sort_keys=True, allow_nan=True) + "\n"


def family_of(model) -> type:
    """A registered family by name, or a `RewardModel` class given directly (e.g. `plural.attributes.AttributeScorers`,
    trained by the same trainer without being a family of the registry)."""
    return model if isinstance(model, type) else get_family(model)


def configs_for(model, overrides: list[str] = ()) -> dict:
    """{'model': Hparams, 'train': TrainConfig, 'batch': the family's sampler, 'data': DataConfig},
    each from the family's defaults with `--set` overrides applied. The training defaults may depend on the
    model's settings (`train_defaults_for`, e.g. a variant's learning rate); `--set train.*` still wins. Model
    defaults that depend on other model settings are filled in by the family's `resolve`."""
    family = family_of(model)
    base = {"model": family.Hparams(), "train": TrainConfig(**family.train_defaults), "batch": family.batches,
            "data": DataConfig()}
    cfgs = apply_overrides(base, overrides)
    own = family.train_defaults_for(cfgs["model"])
    if own != family.train_defaults:
        cfgs = apply_overrides({**base, "train": TrainConfig(**own)}, overrides)
    cfgs["model"] = family.resolve(cfgs["model"])
    family.check_settings(cfgs["model"], cfgs["batch"])
    return cfgs


def save_states(path: Path, states) -> None:
    """Write a user-state pytree (an array, or a flat dict of arrays) to an .npz file (atomically)."""
    arrays = dict(states) if isinstance(states, dict) else {"__array__": states}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})


def load_states(path: Path):
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # a truncated / overwritten file: zipfile, numpy and OS errors of several kinds
        raise PluralError(f"{path}: damaged ({type(e).__name__}: {' '.join(str(e).split())[:160]}); "
                          "write it again with plural fit --resume (same arguments)")
    return arrays["__array__"] if list(arrays) == ["__array__"] else arrays


def fit(model, data_path: str | Path, out: str | Path, seed: int = 0, resume: bool = False,
        overrides: list[str] = (), progress: bool = True, data: PreferenceData | None = None,
        on_chunk=None, val_path: str | Path | None = None, val: PreferenceData | None = None) -> TrainResult:
    """`plural fit`: train one seed of `model` on the table at `data_path`, writing the run directory.

    Validation: on the table `val_path` (or `val`) when given; otherwise `data.val_fraction` of each user's
    pairs are held out of training for it (`plural.data.arrays.holdout`, seeded by `seed`: whole users when
    no user has two pairs, as in anonymous data), so that a table given alone stops early by default.
    `data.val_fraction=0` (or `train.eval_every=0` with it) trains on every pair without validation.
    """
    check_seeds([seed])
    family = family_of(model)
    cfgs = configs_for(family, overrides)
    data = view_of(family, data if data is not None else read_table(data_path))
    if val is None and val_path is not None:
        val = read_table(val_path)
    val = view_of(family, val) if val is not None else None
    frac, every = cfgs["data"].val_fraction, cfgs["train"].eval_every
    if val is not None and every == 0:
        raise PluralError("--val needs train.eval_every > 0 (validation scores every eval_every steps)")
    if val is None and frac > 0:
        if every == 0:
            raise PluralError(f"data.val_fraction={frac} holds out pairs for validation, but train.eval_every=0 "
                              "turns validation off: set data.val_fraction=0 too, or eval_every > 0")
        held, val = holdout(data, frac, seed)
        if val is None:
            raise PluralError(f"{data.source}: one pair cannot be split for validation; "
                              "pass --val PATH or --set data.val_fraction=0")
        data = held
    cfgs["model"] = family.resolve_data(cfgs["model"], data)  # e.g. input_dropout by table size: config.json holds it
    graphdef_of(family, data.spec(), cfgs["model"])  # the family's own checks, before writing
    out = Path(out)
    config = {
        "model": family.name,
        "seed": int(seed),
        "data_path": str(Path(data_path).resolve()),  # absolute: later commands (profile) find it from any directory
        "validation": {"path": str(Path(val_path).resolve())} if val_path is not None else
                      {"held_out_fraction": frac} if val is not None and frac > 0 else None,
        "model_hparams": to_dict(cfgs["model"]),
        "train": to_dict(cfgs["train"]),
        "batch": to_dict(cfgs["batch"]),
        "data": to_dict(cfgs["data"]),
        "spec": data.spec(),
        "users": [str(u) for u in data.users],
        "user_group": {str(u): (data.groups[g] if g >= 0 else None) for u, g in zip(data.users, data.user_group)},
    }
    if (out / "config.json").exists():
        if not resume:
            raise PluralError(f"{out}: already holds a run; pass --resume to continue it, or choose a new --out")
        old = read_json(out / "config.json", "--resume cannot check that the run's settings are unchanged: fit again "
                        "with a new --out (or delete the file to resume anyway, with the same arguments)")
        drop = ("data_path", "validation")
        if {k: v for k, v in old.items() if k not in drop} != json.loads(dumps({k: v for k, v in config.items() if k not in drop})):
            raise PluralError(f"{out}/config.json: --resume with a different model, data, seed or hyper-parameters")
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "config.json", dumps(config))
    result = train(family, cfgs["model"], cfgs["train"], data, seeds=(seed,), workdir=out, resume=resume,
                   progress=progress, on_chunk=on_chunk, val=val, batches=cfgs["batch"])
    if result.failed[0] is not None:
        raise PluralError(_failure(result, data, out))
    save_states(out / "seen_states.npz", result.seen)
    write_atomic(out / "metrics.json", dumps(result.seed_metrics(0)))
    return result


def _failure(result, data: PreferenceData, out: Path) -> str:
    """The one line of a run whose training loss turned non-finite: where, and the likely cause."""
    step, cfg = result.failed[0], result.cfg
    first = max(step - cfg.log_every, 0)
    big = max(float(np.abs(data.chosen).max()), float(np.abs(data.rejected).max()))
    cause = (f"the table's embeddings reach |x| = {big:.3g}, too large for float32 arithmetic; rescale them"
             if big > 1e6 else f"lower train.lr (now {cfg.lr:g}) or the family's own step sizes")
    kept = sorted(int(p.name) for p in (out / "checkpoints").glob("[0-9]*") if p.is_dir()) if out.exists() else []
    return (f"{out}: training loss became non-finite (seed {result.seeds[0]}, between steps {first} and {step}); "
            f"{cause}. " + (f"The last good checkpoint (step {kept[-1]}) is kept under {out}/checkpoints"
                            if kept else "No checkpoint was kept"))


class Run:
    """A fitted run directory, loaded: `plural.load_run(RUN)`.

    `result` (the `TrainResult`, one seed), `users` (training user ids in model index order), `config`.
    `reward(prompts, responses, user=...)` scores responses; `predict` / `rewards` (plural.evaluate) take
    `run.result, run.users`.
    """

    def __init__(self, result: TrainResult, users: list[str], config: dict):
        self.result, self.users, self.config = result, users, config

    def reward(self, prompts, responses, user: str | None = None, group: str | None = None,
               context: PreferenceData | None = None) -> np.ndarray:
        """Rewards (N,) of `responses` to `prompts` for one user.

        prompts, responses: lists of N texts (embedded with the run's embedder) or (N, D) arrays of
        embeddings (prompts may be None: one fixed context). `user`: a training user id (its learned state);
        otherwise the population prediction, or the head of `group` for group-conditioned models; with
        `context` (a table of the new user's labelled pairs) the model is adapted to them first.
        """
        from plural.data.batching import eval_rows
        from plural.evaluate import adapt_states

        spec = self.result.spec
        resp = _embedded(responses, spec["dim"], "responses")
        n = len(resp)
        if prompts is None and spec["prompt_dim"] > 0:
            raise PluralError(f"reward: the model was fitted with prompt embeddings of length {spec['prompt_dim']}; pass prompts")
        prom = np.zeros((n, 0), np.float32) if spec["prompt_dim"] == 0 else _embedded(prompts, spec["prompt_dim"], "prompts")
        if len(prom) != n:
            raise PluralError(f"reward: {len(prom)} prompts for {n} responses")
        model = self.result.model(0)
        if user is not None:
            if user not in self.users:
                raise PluralError(f"reward: user {user!r} was not seen in training; pass context= to adapt to a new user")
            state = jax.tree.map(lambda s: np.asarray(s)[0, self.users.index(user)], self.result.seen)
        elif context is not None:
            ctx = context.take(np.arange(context.n_pairs))
            if ctx.n_users != 1:
                raise PluralError(f"reward: context holds {ctx.n_users} users; give one user's pairs")
            if ctx.users[0] in self.users:
                raise PluralError(f"reward: context user {ctx.users[0]!r} was seen in training; pass user= instead")
            rows = eval_rows(ctx, self.users, spec.get("groups", []))
            state = jax.tree.map(lambda s: s[0], adapt_states(self.result, {k: v[None] for k, v in rows.items()}))
        else:
            groups = spec.get("groups", [])
            g = np.asarray(groups.index(group) if group in groups else -1, np.int32)
            state = jax.tree.map(np.asarray, model.group_state(g))
        states = jax.tree.map(lambda s: np.broadcast_to(s, (n, *np.shape(s))), state)
        return np.asarray(jax.jit(lambda p, r, s: model.reward(p, r, s))(prom, resp, states))


def _embedded(x, dim: int, what: str) -> np.ndarray:
    """(N, dim) float32 from a list of texts (embedded offline) or an array of embeddings."""
    if len(x) and isinstance(x[0], str):
        from plural.embed import embed_texts

        x = embed_texts(list(x))
    x = np.asarray(x, np.float32)
    if x.ndim != 2 or x.shape[1] != dim:
        raise PluralError(f"reward: {what} of shape {x.shape}; the model was fitted on embeddings of length {dim}")
    return x


def load_run(run: str | Path) -> Run:
    """The fitted model of a run directory (see `Run`)."""
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
    return Run(result, config["users"], config)
