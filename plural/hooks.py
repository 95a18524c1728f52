"""Trainer hooks: what runs between compiled chunks, each at its own cadence.

The trainer advances all seeds by one compiled chunk, then calls every hook whose cadence the chunk's
last step meets, in the order they were added, with the `LoopState`. A hook may read and update the
state (validation keeps the best parameters and stops seeds; the checkpointer writes it); `start` runs
once before the first chunk (the checkpointer restores there) and `close` once at the end, also after
an exception.

Cadence (`every`): None = after every chunk; 0 = only after the last chunk; n > 0 = at multiples of n
and after the last chunk. The trainer puts a chunk boundary at every multiple of every hook's `every`,
so chunk boundaries depend on the configuration only, never on where a resumed run started.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from plural import checkpoint
from plural.errors import PluralError
from plural.parallel import to_host


@dataclasses.dataclass
class LoopState:
    """The training loop between chunks. Leaves of params / opt_state / rest / best carry a seed axis (S, ...)."""

    step: int
    params: Any
    opt_state: Any
    rest: Any
    train_keys: Any
    history: list[dict]  # one entry per chunk: {"step": int, "loss": [S floats], <metric>: [S floats], ...}
    best: Any = None  # validating: each seed's best params so far
    early: dict | None = None  # validating: per seed "best_score", "best_step", "bad", "stopped_step" lists
    done: bool = False  # set when every seed has stopped early or failed: the loop ends after this chunk's hooks
    failed: list | None = None  # per seed: the step at which its training loss turned non-finite (None: never)


class Hook:
    """Base class: override `__call__` (and `start` / `close` if needed); see the module docstring."""

    every: int | None = None

    def due(self, step: int, last: bool) -> bool:
        if self.every is None:
            return True
        return last or (self.every > 0 and step % self.every == 0)

    def start(self, trainer, state: LoopState) -> None:
        pass

    def __call__(self, trainer, state: LoopState) -> None:
        pass

    def close(self) -> None:
        pass


class Callback(Hook):
    """`fn(state)` at the given cadence (`Trainer.add_hook(fn, every=...)`)."""

    def __init__(self, fn: Callable[[LoopState], None], every: int | None = None):
        self.fn, self.every = fn, every

    def __call__(self, trainer, state: LoopState) -> None:
        self.fn(state)


class Validation(Hook):
    """Every `eval_every` steps: validation loss / accuracy of every seed into the history, each seed's
    best parameters kept (by `val_metric`), a seed stopped after `early_stopping` evaluations without
    improvement. A stopped seed's best parameters are frozen, so its result does not depend on the seeds
    trained beside it; the loop ends when every seed has stopped."""

    def __init__(self, every: int, patience: int, metric: str):
        self.every, self.patience, self.metric = every, patience, metric

    def start(self, trainer, state: LoopState) -> None:
        S = len(trainer.seeds)
        state.best = _keep_best(state.params, state.params, np.ones(S, bool))  # a copy, by the program used below
        state.early = {"best_score": [-math.inf] * S, "best_step": [0] * S, "bad": [0] * S, "stopped_step": [None] * S}

    def __call__(self, trainer, state: LoopState) -> None:
        loss, acc = to_host(trainer.validate(state.params, state.rest))
        state.history[-1]["val_loss"] = np.asarray(loss, np.float64).tolist()
        state.history[-1]["val_accuracy"] = np.asarray(acc, np.float64).tolist()
        improved = self._record(state.early, state.step, loss, acc, state.failed)
        state.best = _keep_best(state.best, state.params, improved)
        state.done = _all_done(state)

    def _record(self, early: dict, step: int, loss, acc, failed=None) -> np.ndarray:
        score = np.asarray(acc, np.float64) if self.metric == "accuracy" else -np.asarray(loss, np.float64)
        improved = np.zeros(len(score), bool)
        for i, sc in enumerate(score.tolist()):
            if early["stopped_step"][i] is not None or (failed and failed[i] is not None):
                continue  # frozen (a failed seed keeps its last finite best)
            if sc > early["best_score"][i]:
                improved[i] = True
                early["best_score"][i], early["best_step"][i], early["bad"][i] = sc, step, 0
            else:
                early["bad"][i] += 1
            if self.patience and early["bad"][i] >= self.patience:
                early["stopped_step"][i] = step
        return improved


def _all_done(state: LoopState) -> bool:
    """Every seed has stopped early or failed."""
    failed = state.failed or [None] * len(state.early["stopped_step"])
    return all(s is not None or f is not None for s, f in zip(state.early["stopped_step"], failed))


@jax.jit
def _keep_best(best, params, improved):
    """Per seed, `params` where `improved` (S,) else `best` (new buffers: params are donated later)."""
    def pick(b, p):
        return jnp.where(improved.reshape((-1,) + (1,) * (p.ndim - 1)), p, b)
    return jax.tree.map(pick, best, params)


class Checkpointer(Hook):
    """Every `every` steps, after the last chunk and when every seed has stopped: a named Orbax checkpoint
    (plural.checkpoint) of params, optimiser state, the best params, history and early-stopping record
    under `workdir/checkpoints`, sealed with the checksums of its files once Orbax has written it. `start`
    restores the latest one when `resume`, else refuses a workdir that already holds checkpoints. A latest
    checkpoint that is damaged (a file truncated or overwritten, `checkpoint.Damaged`) is moved aside to
    `workdir/checkpoints-damaged/` and the previous good one restored, with one line on stderr saying so;
    with none good, `start` raises the latest one's one-line error."""

    def __init__(self, workdir: str | Path, every: int, resume: bool):
        self.workdir, self.every, self.resume = Path(workdir), every, resume
        self.mngr = None
        self.unsealed: list[int] = []  # saved steps whose checksums are not recorded yet (Orbax writes in the background)

    def start(self, trainer, state: LoopState) -> None:
        self.mngr = checkpoint.manager(self.workdir, create=True)
        steps = sorted(self.mngr.all_steps(), reverse=True)
        if not steps:
            return
        if not self.resume:
            raise PluralError(f"{self.workdir}: already holds checkpoints; pass --resume to continue, or use a new --out")
        trees = {"params": state.params, "opt_state": state.opt_state, "rest": state.rest}
        damaged = []
        for latest in steps:
            try:
                trees, best, meta = checkpoint.restore(self.mngr, latest, trees, state.best, str(self.workdir))
                break
            except checkpoint.Damaged as e:
                damaged.append(e)
        else:
            e = damaged[0]
            raise checkpoint.Damaged(e.file, e.step, e.detail,
                                     "no earlier good checkpoint to resume from: fit the run again (a new --out)")
        if meta["seeds"] != list(trainer.seeds):
            raise PluralError(f"{self.workdir}: checkpoint at step {latest} was written for seeds {meta['seeds']}, "
                              f"not {list(trainer.seeds)}")
        if latest not in trainer.boundaries() or latest > trainer.cfg.steps:
            raise PluralError(f"{self.workdir}: checkpoint at step {latest} does not match this configuration")
        if damaged:
            self._set_aside([e.step for e in damaged])
            e = damaged[0]
            print(f"plural: warning: {e.file}: damaged checkpoint (step {e.step}): {e.detail}; resuming from step "
                  f"{latest}, the previous good checkpoint (the damaged one moved to "
                  f"{self.workdir / 'checkpoints-damaged'})", file=sys.stderr)
        state.params, state.opt_state, state.rest = trainer.place_replicas((trees["params"], trees["opt_state"], trees["rest"]))
        state.best = trainer.place_replicas(best) if best is not None else None
        state.history, state.step = meta["history"], latest
        state.failed = meta.get("failed") or state.failed
        if state.early is not None:
            state.early = meta["early"]
            state.done = _all_done(state)
        elif state.failed:
            state.done = all(f is not None for f in state.failed)

    def _set_aside(self, steps: list[int]) -> None:
        """Move damaged steps out of Orbax's folder (kept for inspection), so training can write them again."""
        if jax.process_index() == 0:
            aside = self.workdir / "checkpoints-damaged"
            aside.mkdir(exist_ok=True)
            for step in steps:
                target, n = aside / str(step), 1
                while target.exists():
                    target, n = aside / f"{step}.{n}", n + 1
                os.replace(checkpoint.step_dir(self.mngr, step), target)
        self.mngr.reload()

    def _seal(self) -> None:
        if self.unsealed:
            self.mngr.wait_until_finished()
            for step in self.unsealed:
                checkpoint.seal(self.mngr, step)
            self.unsealed = []

    def __call__(self, trainer, state: LoopState) -> None:
        self._seal()  # the previous save has finished by now (Orbax waits for it before the next one anyway)
        if state.failed and all(f is not None for f in state.failed):
            return  # every replica's loss is non-finite: the checkpoint before stays the last (good) one
        checkpoint.save(self.mngr, state.step, {"params": state.params, "opt_state": state.opt_state, "rest": state.rest},
                        {"history": state.history, "seeds": list(trainer.seeds), "early": state.early,
                         "failed": state.failed}, state.best)
        self.unsealed.append(state.step)

    def close(self) -> None:
        if self.mngr is not None:
            self.mngr.wait_until_finished()
            self._seal()
            self.mngr.close()


class Progress(Hook):
    """A tqdm bar over steps with the running loss (and validation accuracy when there is one)."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.total, self.desc, self.enabled = total, desc, enabled
        self.bar = None

    def start(self, trainer, state: LoopState) -> None:
        self.bar = tqdm(total=self.total, initial=state.step, disable=not self.enabled or None, desc=self.desc,
                        unit="step", dynamic_ncols=True, leave=False)

    def __call__(self, trainer, state: LoopState) -> None:
        last = state.history[-1]
        self.bar.update(state.step - self.bar.n)
        self.bar.set_postfix(loss=f"{np.mean(last['loss']):.4f}",
                             **({"val_acc": f"{np.mean(last['val_accuracy']):.3f}"} if "val_accuracy" in last else {}))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
