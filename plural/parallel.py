"""Device meshes and multi-host start-up.

One mesh axis, 'data': training batches are split along it, parameters and the training table are
replicated. Works unchanged on one CPU, 8 fake CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`), a GPU/TPU host, or many hosts after
`init_distributed()`.
"""

from __future__ import annotations

import os

import jax
from jax.sharding import NamedSharding, PartitionSpec as P


def init_distributed() -> bool:
    """Call `jax.distributed.initialize()` when the environment describes a multi-process job.

    Triggered by `PLURAL_COORDINATOR` (host:port), `PLURAL_NUM_PROCESSES`, `PLURAL_PROCESS_ID`, or by a
    cluster JAX detects itself (SLURM, Cloud TPU) when `PLURAL_DISTRIBUTED=1`. Must run before any
    device is touched. Returns whether it initialised.
    """
    if "PLURAL_COORDINATOR" in os.environ:
        jax.distributed.initialize(
            coordinator_address=os.environ["PLURAL_COORDINATOR"],
            num_processes=int(os.environ["PLURAL_NUM_PROCESSES"]),
            process_id=int(os.environ["PLURAL_PROCESS_ID"]),
        )
        return True
    if os.environ.get("PLURAL_DISTRIBUTED") == "1":
        jax.distributed.initialize()
        return True
    return False


def data_mesh(batch: int, n_devices: int = 0) -> jax.sharding.Mesh | None:
    """A 1-D ('data',) mesh over `n_devices` (0: the most devices that divide `batch`); None for one."""
    total = jax.device_count()
    if n_devices <= 0:
        n_devices = max(d for d in range(1, total + 1) if batch % d == 0 and total % d == 0)
    if n_devices > total:
        raise ValueError(f"mesh of {n_devices} devices requested, {total} available")
    if n_devices == 1:
        return None
    return jax.make_mesh((n_devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=jax.devices()[:n_devices])


def replicated(mesh) -> NamedSharding | None:
    return None if mesh is None else NamedSharding(mesh, P())


def shard_batch(batch, mesh):
    """Constrain every leaf of a batch to be split along its leading (batch) axis over 'data'."""
    if mesh is None:
        return batch
    spec = NamedSharding(mesh, P("data"))
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, spec), batch)
