"""Data parallelism on a ('data',) mesh with JAX's own runtime.

Parameters, optimiser state and the teacher are replicated; each batch is one
global array split over the mesh's devices along its first axis. `jax.jit`
then compiles the very same train step into an SPMD program for 1 device, 8
devices or many hosts; nothing in the step knows how many there are.
"""

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA = 'data'


def maybe_initialize_distributed() -> bool:
  """Starts JAX's multi-controller runtime when the environment says so.

  Cloud TPU VM pods (TPU_WORKER_HOSTNAMES with several hosts) and SLURM-style
  launches are detected by `jax.distributed.initialize()` itself; explicit
  launches set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID.
  Returns whether it initialised.
  """
  explicit = os.environ.get('JAX_COORDINATOR_ADDRESS')
  if explicit:
    jax.distributed.initialize(
        coordinator_address=explicit,
        num_processes=int(os.environ['JAX_NUM_PROCESSES']),
        process_id=int(os.environ['JAX_PROCESS_ID']))
    return True
  hosts = os.environ.get('TPU_WORKER_HOSTNAMES', '')
  if len([h for h in hosts.split(',') if h]) > 1:
    jax.distributed.initialize()
    return True
  return False


def data_mesh() -> Mesh:
  """A 1-D mesh over every device of every process."""
  return jax.make_mesh((jax.device_count(),), (DATA,),
                       axis_types=(AxisType.Auto,))


def check_batch_size(global_batch: int, mesh: Mesh) -> None:
  """Refuses, before any compilation, a batch the mesh cannot split evenly."""
  n = mesh.devices.size
  if global_batch % n:
    below = global_batch // n * n
    options = ', '.join(str(b) for b in (below, below + n) if b > 0)
    raise ValueError(
        f'train.batch_size={global_batch} is not divisible by the {n} devices '
        f'of the mesh; use a multiple of {n} (e.g. {options})')


def replicate(tree: Any, mesh: Mesh) -> Any:
  return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict:
  """This process's slice of a batch -> global arrays split over 'data'."""
  sharding = NamedSharding(mesh, P(DATA))
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in local_batch.items()}


def local_copy(tree: Any) -> Any:
  """Host numpy copies of replicated arrays, readable on every process.

  A replicated global array spanning several processes is not fully
  addressable, so `np.asarray` refuses it; each process's first shard is a
  complete copy.
  """
  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      x = x.addressable_data(0)
    return np.asarray(jax.device_get(x))
  return jax.tree.map(one, tree)
