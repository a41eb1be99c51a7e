"""Orbax checkpoints of a stage: the train state plus a JSON record.

A checkpoint is written to a temporary directory and renamed when complete
(orbax's atomic commit), so an interruption during a save leaves the previous
checkpoint as the latest. A checkpoint that is there but unreadable (truncated
or corrupted files) is reported and skipped in favour of the one before it.
"""

import hashlib
from typing import Any, Optional

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpoints:
  """The checkpoints of one stage directory."""

  def __init__(self, directory: str, max_to_keep: int = 2,
               async_save: bool = True):
    self.directory = directory
    self._manager = ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True,
            enable_async_checkpointing=async_save),
        item_names=('state', 'record'))

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, record: dict) -> None:
    """Saves `state` (a pytree of arrays) and `record` (JSON) at `step`."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record)),
                       force=True)

  def restore_latest(self, like: Any) -> Optional[tuple[Any, dict, int]]:
    """Restores the newest readable checkpoint into the structure of `like`.

    Returns `(state, record, step)`, or None when there is no checkpoint.
    Unreadable checkpoints are logged and passed over for older ones; if none
    can be read, raises RuntimeError naming the directory (starting over
    silently would throw away the user's run).
    """
    steps = self.steps()
    if not steps:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    errors = []
    for step in reversed(steps):
      try:
        out = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract),
            record=ocp.args.JsonRestore()))
        return out['state'], dict(out['record']), step
      except Exception as e:  # pylint: disable=broad-except
        # Any failure to read (missing, truncated or corrupted files) means
        # this checkpoint is unusable; an older one may still be good.
        logging.warning('checkpoint %s/%d is unreadable (%s: %s); trying an '
                        'older one', self.directory, step, type(e).__name__,
                        str(e).splitlines()[0] if str(e) else '')
        errors.append(f'step {step}: {type(e).__name__}')
    raise RuntimeError(
        f'no readable checkpoint in {self.directory} ({"; ".join(errors)}). '
        'Move the directory away to retrain this stage from scratch.')

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def fingerprint(tree: Any) -> str:
  """sha256 over the leaves of `tree` in sorted path order (shape, dtype and
  bytes of each), so two runs can be compared at a glance."""
  digest = hashlib.sha256()
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  for path, leaf in sorted(flat, key=lambda kv: jax.tree_util.keystr(kv[0])):
    arr = np.asarray(jax.device_get(leaf))
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(f'{arr.shape}{arr.dtype}'.encode())
    digest.update(np.ascontiguousarray(arr).tobytes())
  return digest.hexdigest()
