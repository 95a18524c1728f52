"""plural: pluralistic and personalized reward modelling in JAX.

Data flows in one straight line:
table -> `plural.data` -> a family in `plural.models` -> `plural.train` -> `plural.evaluate`
-> `analysis` -> `paper_figs`.
"""

import os as _os

# jaxlib 0.10's CPU backend fuses some batched elementwise-reduce graphs into its experimental YNNPACK
# fusions and computes them wrongly (seen here: jit(vmap(cosine score of (60, 50, 32) ideal points)) off
# by tens of logits). Turn those fusions off before JAX starts its backends, unless the user chose.
# tests/test_train.py::test_batched_cosine_matches_eager guards it.
if "xla_cpu_experimental_ynn_fusion_type" not in _os.environ.get("XLA_FLAGS", ""):
    _os.environ["XLA_FLAGS"] = (_os.environ.get("XLA_FLAGS", "") + " --xla_cpu_experimental_ynn_fusion_type=").strip()

# On a CPU, every core is a device (PLURAL_CPU_DEVICES=N to choose, 1 for one), so the replicas of a program
# (seeds x traced hyper-parameter points, plural.train) train on all cores at once, one share per core.
# Set before JAX starts its backends (a program that imported and used JAX first keeps what it had).
def _cpu_devices() -> int:
    given = _os.environ.get("PLURAL_CPU_DEVICES", "").strip()
    if given.isdigit() and int(given) > 0:
        return int(given)
    return len(_os.sched_getaffinity(0)) if hasattr(_os, "sched_getaffinity") else (_os.cpu_count() or 1)


if "xla_force_host_platform_device_count" not in _os.environ.get("XLA_FLAGS", ""):
    _os.environ["XLA_FLAGS"] = (_os.environ["XLA_FLAGS"] + f" --xla_force_host_platform_device_count={_cpu_devices()}").strip()

from plural.errors import PluralError  # noqa: E402


def load_run(run):
    """A fitted run directory: `plural.load_run(RUN).reward(prompts, responses, user=...)` (see `plural.run.Run`)."""
    from plural.run import load_run as _load

    return _load(run)


__all__ = ["PluralError", "load_run"]
__version__ = "0.1.0"
