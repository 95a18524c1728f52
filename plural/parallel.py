"""Device meshes and multi-host start-up.

Training runs on a 2-D mesh ('replica', 'data'). Replicas (the seeds and traced hyper-parameter points a
program trains at once, plural.train) are split along 'replica': each device trains its own replicas, with
no communication between them. Batches are split along 'data' (gradients all-reduced over it); parameters
and the training table are replicated along 'data'. The same code runs on one CPU, on fake CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`), on a GPU/TPU host, or on many hosts after
`init_distributed()` (the mesh then spans every process's devices).

On a CPU the host's cores appear as devices (`plural` sets `--xla_force_host_platform_device_count` to the
core count unless `XLA_FLAGS` or `PLURAL_CPU_DEVICES` says otherwise), so replicas train on all cores at
once; splitting one model's batch over them only adds communication (BT, D=24, 256 pairs per step: 3.7x
slower on 2 CPU devices than on one; D=384, 1024 pairs: 1.1x slower), so on a CPU the automatic mesh gives
'data' one device.
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
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=os.environ["PLURAL_COORDINATOR"],
            num_processes=int(os.environ["PLURAL_NUM_PROCESSES"]),
            process_id=int(os.environ["PLURAL_PROCESS_ID"]),
        )
        return True
    if os.environ.get("PLURAL_DISTRIBUTED") == "1":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize()
        return True
    return False


def _largest_divisor(n: int, *of: int) -> int:
    """The largest d <= n dividing n and every number in `of`."""
    return max(d for d in range(1, n + 1) if n % d == 0 and all(x % d == 0 for x in of))


def mesh_shape(replicas: int, batch: int, shape: tuple[int, ...] = (), n_devices: int | None = None,
               backend: str | None = None) -> tuple[int, int]:
    """(replica devices, data devices) of the training mesh.

    `shape` = (r, d) as given by `--set train.mesh=(r,d)` (r must divide `replicas`, d the batch, r * d
    at most the device count); () chooses: the replica axis takes the largest number of devices that divides
    both the device count and `replicas`; the data axis then takes, of the devices left, the largest number
    that divides `batch` (on a CPU: one, see the module docstring)."""
    total = jax.device_count() if n_devices is None else n_devices
    if shape:
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"expected (replica devices, data devices), both >= 1, not {tuple(shape)}")
        r, d = shape
        if r * d > total:
            raise ValueError(f"a {r}x{d} mesh needs {r * d} devices, {total} available")
        if replicas % r:
            raise ValueError(f"{replicas} replicas cannot be split over {r} devices")
        if batch % d:
            raise ValueError(f"a batch of {batch} cannot be split over {d} devices")
        return r, d
    r = _largest_divisor(total, replicas)
    if (backend or jax.default_backend()) == "cpu":
        return r, 1
    return r, _largest_divisor(total // r, batch)


def training_mesh(replicas: int, batch: int, shape: tuple[int, ...] = ()) -> jax.sharding.Mesh | None:
    """The ('replica', 'data') mesh of `mesh_shape` over the first r * d devices; None for a single device."""
    r, d = mesh_shape(replicas, batch, shape)
    if r * d == 1:
        return None
    return jax.make_mesh((r, d), ("replica", "data"), axis_types=(jax.sharding.AxisType.Auto,) * 2,
                         devices=jax.devices()[: r * d])


def replicated(mesh) -> NamedSharding | None:
    return None if mesh is None else NamedSharding(mesh, P())


def by_replica(mesh) -> NamedSharding | None:
    """Leading (replica) axis split over 'replica', the rest replicated."""
    return None if mesh is None else NamedSharding(mesh, P("replica"))


def shard_batch(batch, mesh):
    """Constrain every leaf of a batch to be split along its leading (batch) axis over 'data'."""
    if mesh is None or mesh.shape["data"] == 1:
        return batch
    spec = NamedSharding(mesh, P("data"))
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, spec), batch)


def to_host(tree):
    """A pytree of (possibly sharded) arrays as numpy arrays holding every element. Across several processes
    (`jax.distributed`), arrays split over other hosts' devices are gathered, so every process gets every
    replica's numbers; all processes must call it together."""
    leaves = jax.tree.leaves(tree)
    if all(getattr(x, "is_fully_addressable", True) for x in leaves):
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)
