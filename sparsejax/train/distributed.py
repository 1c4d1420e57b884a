"""Scale-out through JAX's own SPMD: one mesh with ``data`` and ``fsdp`` axes, one sharding rule.

* Batches are split over both axes (``data`` × ``fsdp`` devices each see their own rows).
* Every parameter and optimizer-state leaf with 2+ dims is sharded over ``fsdp`` along its largest
  dimension divisible by the ``fsdp`` size (FSDP / ZeRO-3 style); everything else is replicated.
  The top-k projection needs no change: its bisection counts are sums, which XLA turns into scalar
  all-reduces over the sharded matrix.
* Multi-host: :func:`maybe_initialize_distributed` calls ``jax.distributed.initialize()`` when the
  process was launched as part of a multi-process job; each process feeds its own rows with
  ``jax.make_array_from_process_local_data``. Cross-process collectives on CPU go through gloo
  (jax's default ``jax_cpu_collectives_implementation``), so the same code runs as several
  processes on one machine (``tests/multiprocess_test.py``).
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sparsejax.model.gpt import BATCH_AXES
from sparsejax.utils.errors import ConfigError

DATA, FSDP = BATCH_AXES  # the model constrains its activations to these axes
# Environment variables that mark a multi-process launch (explicit coordinator, SLURM, TPU pods,
# Open MPI).
_MULTIPROCESS_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "TPU_WORKER_HOSTNAMES",
                     "MEGASCALE_COORDINATOR_ADDRESS", "OMPI_COMM_WORLD_SIZE")


def maybe_initialize_distributed(force: bool = False) -> bool:
  """Initialises multi-process JAX when launched as such (or when ``force``). Returns whether it
  did. Must run before any other JAX call.

  Besides the cluster environments JAX detects itself (SLURM, Open MPI, TPU pods), an explicit
  launch sets ``JAX_COORDINATOR_ADDRESS`` (host:port of process 0), ``JAX_NUM_PROCESSES`` and
  ``JAX_PROCESS_ID`` on every process.
  """
  if not force and not any(os.environ.get(v) for v in _MULTIPROCESS_ENV):
    return False
  env = {name: int(os.environ[var]) for name, var in (("num_processes", "JAX_NUM_PROCESSES"),
                                                      ("process_id", "JAX_PROCESS_ID"))
         if os.environ.get(var)}
  jax.distributed.initialize(**env)
  return True


def make_mesh(fsdp: int = 1, devices=None) -> Mesh:
  """A (data, fsdp) mesh over ``devices`` (default: all); data = n_devices / fsdp."""
  devices = list(jax.devices() if devices is None else devices)
  if fsdp < 1 or len(devices) % fsdp:
    raise ConfigError(f"train.fsdp: {fsdp} does not divide the {len(devices)} devices")
  grid = np.asarray(devices, dtype=object).reshape(len(devices) // fsdp, fsdp)
  return Mesh(grid, (DATA, FSDP))


def leaf_spec(shape: tuple[int, ...], fsdp: int) -> P:
  """The sharding rule: the largest dim divisible by ``fsdp`` goes over the fsdp axis."""
  if fsdp == 1 or len(shape) < 2:
    return P()
  candidates = [i for i in range(len(shape)) if shape[i] % fsdp == 0]
  if not candidates:
    return P()
  axis = max(candidates, key=lambda i: (shape[i], -i))
  return P(*[FSDP if i == axis else None for i in range(len(shape))])


def tree_shardings(tree, mesh: Mesh):
  """NamedShardings for every leaf of ``tree`` (arrays or ShapeDtypeStructs) by the rule."""
  fsdp = mesh.shape[FSDP]
  return jax.tree.map(lambda x: NamedSharding(mesh, leaf_spec(tuple(x.shape), fsdp)), tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Rows over every device (data × fsdp), the sequence axis whole."""
  return NamedSharding(mesh, P((DATA, FSDP), None))


def global_batch(local_rows: np.ndarray, mesh: Mesh) -> jax.Array:
  """The global batch array from this process's rows."""
  return jax.make_array_from_process_local_data(batch_sharding(mesh), local_rows)
