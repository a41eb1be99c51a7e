"""Many train steps per dispatch, the dataset kept on the devices.

The stage loop's per-step path assembles each batch on the host, shards it
and dispatches one step: on a GPU host that costs about as much as the MLP
student step itself. With `train.device_loop` an in-memory dataset is
copied to the devices once per stage, and each dispatch runs the steps up to
the next log boundary as one `lax.scan`, each step gathering its batch on the
device from the row indices the host computed for it. The indices are those
of the (seed, step)-addressed `input_pipeline.Batcher`, so the batches are
exactly the per-step loop's; the metrics come back stacked, once per chunk.

Chunks end at every multiple of `log.every_steps` and of
`checkpoint.every_steps` and at the stage's end, so checkpoints, progress
lines and a stop request fall where the per-step loop has them, and a
resumed stage (it starts at a checkpoint) cuts the same chunks as an
uninterrupted one.
"""

import dataclasses
import functools
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jacdistill import parallel
from jacdistill import rng
from jacdistill import train


@dataclasses.dataclass(frozen=True)
class DeviceData:
  """An in-memory dataset as the device loop reads it.

  Attributes:
    arrays: every field of the whole split, {name: (N, ...) array}.
    indices: step -> (b,) int rows of `arrays` forming this process's part
      of that step's batch (the batcher's own order).
    make_batch: the gathered fields (traced arrays) -> the step's batch
      dict, computing any field the host batcher derives (e.g. attributes
      from labels).
  """
  arrays: dict[str, np.ndarray]
  indices: Callable[[int], np.ndarray]
  make_batch: Callable[[dict], dict] = lambda gathered: gathered


def chunk_ends(start: int, total: int, every: tuple[int, ...]) -> list[int]:
  """The steps at which chunks from `start` to `total` end: every multiple
  of any of `every` in (start, total], and `total`."""
  ends = {total}
  for e in every:
    ends.update(range((start // e + 1) * e, total, e))
  return sorted(x for x in ends if start < x <= total)


def make_chunk(step_fn: Callable, make_batch: Callable,
               inputs: tuple[str, ...], mesh) -> Callable:
  """`chunk(state, teacher_vars, data, idx, key) -> (state, metrics)`: the
  steps of `step_fn` over `idx` (K, B) as one jitted scan, `state` donated,
  every metric stacked to (K,). `step_fn` is a `train.jit_step`, or a plain
  function."""
  batch_sharding = NamedSharding(mesh, P(parallel.DATA))
  step_fn = getattr(step_fn, 'unjitted', step_fn)

  @functools.partial(jax.jit, donate_argnums=(0,),
                     compiler_options=train.step_compiler_options())
  def chunk(state, teacher_vars, data, idx, key):
    def body(state, rows):
      batch = make_batch({k: v[rows] for k, v in data.items()})
      batch = jax.lax.with_sharding_constraint(
          {k: batch[k] for k in inputs}, batch_sharding)
      return step_fn(state, teacher_vars, batch, key)
    return jax.lax.scan(body, state, idx)

  return rng.draws(chunk)


def put_data(device_data: DeviceData, mesh) -> dict:
  """The dataset's arrays, replicated on every device of `mesh`."""
  return parallel.replicate(device_data.arrays, mesh)


def put_indices(device_data: DeviceData, steps: range, mesh) -> jax.Array:
  """The (K, B) global row indices of `steps`, each process contributing its
  part of every batch, split over 'data' like a batch."""
  local = np.stack([device_data.indices(s) for s in steps]).astype(np.int32)
  return jax.make_array_from_process_local_data(
      NamedSharding(mesh, P(None, parallel.DATA)), local)


def per_step(history: list[Any]) -> list[dict]:
  """Host copies of logged metrics as one dict of numpy scalars (their
  device dtype) per step: a history holds per-step dicts of scalars (the
  per-step loop) or per-chunk dicts of (K,) arrays (the device loop)."""
  out = []
  for entry in jax.device_get(history):
    n = np.size(next(iter(entry.values())))
    flat = {k: np.ravel(v) for k, v in entry.items()}
    out += [{k: v[i] for k, v in flat.items()} for i in range(n)]
  return out
