"""Orbax checkpoints of a stage: the train state plus a JSON record.

A checkpoint is written to a temporary directory and renamed when complete
(orbax's atomic commit), so an interruption during a save leaves the previous
checkpoint as the latest. A checkpoint that is there but unreadable (truncated
or corrupted files) is reported and skipped in favour of the one before it; the
resumed run replaces it when it reaches its step again. A checkpoint that reads
but does not fit the model (another config or code version) is refused, not
skipped: every older one would not fit either.
"""

import hashlib
from typing import Any, Optional

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from jacdistill import paths


class CheckpointError(RuntimeError):
  """No checkpoint of a stage can be used; the message names the directory."""


def _path(keys) -> str:
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx',
                                                                    k))))
                  for k in keys)


def _differences(stored: Any, like: Any) -> list[str]:
  """How the arrays on disk (orbax tree metadata) differ from `like`'s."""
  disk = {'/'.join(map(str, k)): tuple(v.shape)
          for k, v in ocp.tree.to_flat_dict(stored).items()}
  model = {_path(k): tuple(np.shape(v))
           for k, v in jax.tree_util.tree_flatten_with_path(like)[0]}
  order = lambda k: (not k.startswith('params/'), k)  # Parameters first.
  out = [f'{k} is {disk[k]} on disk but {model[k]} in the model'
         for k in sorted(disk.keys() & model.keys(), key=order)
         if disk[k] != model[k]]
  out += [f'{k} is on disk but not in the model'
          for k in sorted(disk.keys() - model.keys(), key=order)]
  out += [f'{k} is in the model but not on disk'
          for k in sorted(model.keys() - disk.keys(), key=order)]
  return out


class Checkpoints:
  """The checkpoints of one stage directory."""

  def __init__(self, directory: str, max_to_keep: int = 2,
               async_save: bool = True):
    # Orbax reads and writes absolute paths only (a relative one fails every
    # read with a ValueError that looks like a corrupt checkpoint).
    self.directory = paths.absolute(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True,
            enable_async_checkpointing=async_save),
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'record': ocp.JsonCheckpointHandler()})

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, record: dict) -> None:
    """Saves `state` (a pytree of arrays) and `record` (JSON) at `step`."""
    if step in self._manager.all_steps():
      # Only a run that fell back past an unreadable checkpoint comes to a
      # saved step again; what it trained since replaces what could not be read.
      logging.warning('replacing the unreadable checkpoint %s/%d',
                      self.directory, step)
      self._manager.wait_until_finished()
      self._manager.delete(step)
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record)),
                       force=True)

  def restore_latest(self, like: Any) -> Optional[tuple[Any, dict, int]]:
    """Restores the newest readable checkpoint into the structure of `like`.

    Returns `(state, record, step)`, or None when there is no checkpoint.
    Unreadable checkpoints are logged and passed over for older ones.

    Raises:
      CheckpointError: a checkpoint whose arrays differ in shape or structure
        from `like`'s (the message says which), or none can be read (starting
        over silently would throw away the user's run).
    """
    steps = self.steps()
    if not steps:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    errors, unopened = [], False
    for step in reversed(steps):
      try:
        differences = _differences(
            self._manager.item_metadata(step)['state'].tree, like)
        if not differences:
          out = self._manager.restore(step, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract),
              record=ocp.args.JsonRestore()))
      except Exception as e:  # pylint: disable=broad-except
        # Any failure to read (missing, truncated or corrupted files) means
        # this checkpoint is unusable; an older one may still be good.
        logging.warning('checkpoint %s/%d is unreadable (%s: %s); trying an '
                        'older one', self.directory, step, type(e).__name__,
                        (str(e).splitlines() or [''])[0][:300])
        errors.append(f'step {step}: {type(e).__name__}')
        # Only a checkpoint that was read and found bad may be thrown away;
        # one the filesystem would not open (permissions, a vanished mount)
        # may be intact.
        unopened |= isinstance(e, OSError)
        continue
      if differences:
        more = (f' (and {len(differences) - 3} more)' if len(differences) > 3
                else '')
        raise CheckpointError(
            f'checkpoint {self.directory}/{step} does not fit the model: '
            f'{"; ".join(differences[:3])}{more}. It was written by another '
            'model config or code version; resume with that one, or use a '
            'new --workdir.')
      return out['state'], dict(out['record']), step
    if unopened:
      advice = ('Some could not be opened: check that the directory is '
                'readable, then run the same command again.')
    else:
      advice = ('They were read and found corrupt: move the directory away '
                'to retrain this stage from scratch.')
    raise CheckpointError(
        f'no readable checkpoint in {self.directory} ({"; ".join(errors)}). '
        f'{advice}')

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
