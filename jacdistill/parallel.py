"""Data parallelism on a ('data',) mesh with JAX's own runtime.

Parameters, optimiser state and the teacher are replicated; each batch is one
global array split over the mesh's devices along its first axis. `jax.jit`
then compiles the very same train step into an SPMD program for 1 device, 8
devices or many hosts; nothing in the step knows how many there are.

Start-up: `maybe_initialize_distributed` connects the processes of a
multi-host launch (a Cloud TPU VM pod, GKE, SLURM, Open MPI, or explicit
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID) and leaves an
ordinary one-machine run a single process, without waiting on any network.

Many processes, one decision: what only one process may do (train and cache
the classifier) is done by process 0 while the others wait for its word
(`publish`, `wait_for`) and then take its values (`broadcast_from_process_0`);
a preemption notice to any process stops every one at the same step
(`preemption_stop`).
"""

import itertools
import os
from typing import Any, Callable

import jax
from jax.experimental import multihost_utils
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA = 'data'


# Explicit launches (tests/test_multiprocess.py, hand-started processes).
_EXPLICIT_ENV = ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES',
                 'JAX_PROCESS_ID')


def _int_env(name: str) -> int | None:
  value = os.environ.get(name)
  return int(value) if value else None


def detected_cluster() -> str | None:
  """The cluster `jax.distributed.initialize()` would detect, by class name.

  Walks jax's own list of cluster environments in jax's order, skipping the
  opt-in ones (mpi4py) as jax does: Open MPI, SLURM, Cloud TPU VM (GCE
  metadata), GKE TPU, Kubernetes. Off a cluster every check is an environment
  lookup; the Cloud TPU checks ask the GCE metadata server only when
  `import jax` found TPU chips and libtpu, so a laptop or GPU box answers at
  once. Returns None when none is present, '' when this jax keeps no such
  list (its private `jax._src.clusters` moved): then only `initialize()`
  itself can tell.
  """
  try:
    from jax._src import clusters  # pylint: disable=g-import-not-at-top
    envs = clusters.ClusterEnv._cluster_types  # pylint: disable=protected-access
  except (ImportError, AttributeError):
    return ''
  for env in envs:
    if not getattr(env, 'opt_in_only_method', False) and env.is_env_present():
      return env.__name__
  return None


def maybe_initialize_distributed() -> bool:
  """Starts JAX's multi-controller runtime when this process is one of many.

  Call before anything that starts a JAX backend (`jax.devices()`, the first
  computation). In order:
    * already initialised (a second call): nothing to do;
    * any of JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID set:
      an explicit launch, passed through as given (jax detects the rest, or
      refuses with a ValueError naming what is missing);
    * a cluster jax detects (`detected_cluster`: a Cloud TPU VM pod through
      the metadata server, GKE, SLURM, Open MPI): a plain
      `jax.distributed.initialize()`, which finds coordinator, process count
      and id itself. A single-host TPU VM is such a cluster of one process;
    * nothing detected: one process, no runtime started, at once.
  Errors of a detected or explicit launch (an unreachable coordinator, a
  backend already started) propagate: running on alone would train a copy
  per host into the same workdir.

  Returns:
    Whether the runtime is running on return (started now or before).
  """
  if jax.distributed.is_initialized():
    return True
  if any(os.environ.get(name) for name in _EXPLICIT_ENV):
    jax.distributed.initialize(
        coordinator_address=os.environ.get('JAX_COORDINATOR_ADDRESS') or None,
        num_processes=_int_env('JAX_NUM_PROCESSES'),
        process_id=_int_env('JAX_PROCESS_ID'))
    return True
  cluster = detected_cluster()
  if cluster is None:
    return False
  if cluster:
    jax.distributed.initialize()
    return True
  # No list to check against: let initialize() detect, and read its refusal
  # to find a coordinator as "no cluster".
  try:
    jax.distributed.initialize()
  except ValueError as e:
    if 'coordinator_address' not in str(e):
      raise
    return False
  return True


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


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  """A full copy of an array on every device of `mesh`."""
  return NamedSharding(mesh, P())


def replicate(tree: Any, mesh: Mesh) -> Any:
  return jax.device_put(tree, replicated_sharding(mesh))


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


def _client():
  # The coordination service's key-value store has no public jax API; orbax
  # reaches it the same way.
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  client = distributed.global_state.client
  if client is None:
    raise RuntimeError('the JAX distributed runtime is not running')
  return client


def publish(key: str, value: str) -> None:
  """Sets `key` to `value` in the coordination service, for `wait_for`."""
  _client().key_value_set(key, value)


def wait_for(key: str, timeout_s: float = 7 * 24 * 3600) -> str:
  """Blocks until some process has `publish`ed `key`; returns its value.

  The default timeout is a week: process 0 may be training for hours what
  the others wait for, and if it dies the runtime stops them anyway.
  """
  return _client().blocking_key_value_get(key, int(timeout_s * 1000))


def broadcast_from_process_0(tree: Any) -> Any:
  """Process 0's values of `tree`, bit for bit, as numpy arrays on every
  process. Every process passes arrays of the same shapes and dtypes (the
  others' values are ignored).

  The leaves travel as their bytes: the broadcast is a sum with zeros, which
  in floating point would turn -0.0 into 0.0 (changing the fingerprint of
  what was sent), and 64-bit values would be cut to 32 bits on the way.
  """
  host = jax.tree.map(lambda x: np.asarray(jax.device_get(x), order='C'), tree)
  raw = jax.tree.map(lambda x: x.reshape(-1).view(np.uint8), host)
  out = multihost_utils.broadcast_one_to_all(raw)
  return jax.tree.map(
      lambda o, x: np.asarray(o).view(x.dtype).reshape(x.shape), out, host)


def agree(values: np.ndarray) -> np.ndarray:
  """Every process's `values` (the same shape and dtype on each), stacked
  in process order: (processes, *shape). One process: `values[None]`."""
  values = np.asarray(values)
  if jax.process_count() == 1:
    return values[None]
  return np.asarray(multihost_utils.process_allgather(values))


def shared_accelerator_env(parent: dict[str, str]) -> dict[str, str]:
  """The environment for one of several processes that share a GPU
  (`launch/sweep.py`'s chains): `parent`'s, with GPU memory allocated on
  demand instead of JAX's default 75% per process, unless the caller chose
  a policy (XLA_PYTHON_CLIENT_PREALLOCATE or XLA_PYTHON_CLIENT_MEM_FRACTION
  set). CPU runs ignore both."""
  env = dict(parent)
  if not {'XLA_PYTHON_CLIENT_PREALLOCATE',
          'XLA_PYTHON_CLIENT_MEM_FRACTION'} & set(env):
    env['XLA_PYTHON_CLIENT_PREALLOCATE'] = 'false'
  return env


def preemption_stop() -> Callable[[], bool]:
  """A `should_stop` for a run of many processes, to be called once per
  training step by every process.

  JAX's preemption service (started by `jax.distributed.initialize`) takes
  SIGTERM on any process as a notice to all and agrees on a step that no
  process has passed yet; each process counts its calls, which stay in
  step as every process runs the same loop. The answer is True from the
  agreed call on, so a notice agreed on at a stage's last step stops the
  next stage at its first, as a single process's flag does.
  """
  calls = itertools.count()
  reached = False

  def should_stop() -> bool:
    nonlocal reached
    reached = reached or multihost_utils.reached_preemption_sync_point(
        next(calls))
    return reached
  return should_stop
