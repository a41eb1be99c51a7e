"""Orbax checkpoints of a stage: the train state plus a JSON record.

A checkpoint is written to a temporary directory and renamed when complete
(orbax's atomic commit), so an interruption during a save leaves the previous
checkpoint as the latest. A checkpoint that is there but unreadable (truncated
or corrupted files) is reported and skipped in favour of the one before it; the
resumed run replaces it when it reaches its step again. A checkpoint that reads
but does not fit the model (another config or code version) is refused, not
skipped: every older one would not fit either.
"""

import errno
import gc
import hashlib
import logging as std_logging
import posixpath
import sys
from typing import Any, Optional

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from jacdistill import parallel
from jacdistill import paths


# What reading one checkpoint came to on one process (`parallel.agree`s it).
_READ, _UNFIT, _CORRUPT, _UNOPENED = range(4)


class CheckpointError(RuntimeError):
  """No checkpoint of a stage can be used; the message names the directory."""


class DiskFullError(CheckpointError):
  """A write failed for want of space; what was complete before is kept.

  `str()` names the disk by the directory written to, or by the run's workdir
  once `held_by(workdir)` has been called.
  """

  def __init__(self, path: str, what: str, kept: str):
    super().__init__(path, what, kept)
    self.path, self.what, self.kept = path, what, kept
    self.holder = posixpath.dirname(path)  # A URL's too.

  def held_by(self, workdir: str) -> 'DiskFullError':
    self.holder = workdir
    return self

  def __str__(self):
    return (f'the disk holding {self.holder} is full (No space left on device '
            f'while {self.what}); {self.kept}; free space and run the same '
            'command again to resume')


_NO_SPACE = ('No space left on device', "os_error_code='28'")


def is_disk_full(e: BaseException) -> bool:
  """Whether `e` or an exception it wraps is ENOSPC. Orbax and tensorstore
  turn it into a ValueError('RESOURCE_EXHAUSTED: ... No space left on device
  [os_error_code='28']'), so the messages are read too."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
      return True
    if any(s in str(e) for s in _NO_SPACE):
      return True
    e = e.__cause__ or e.__context__
  return False


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


def _quiet_disk_full(record) -> bool:
  """A logging filter: orbax's logs of a save that ran out of space keep
  their first line but lose their traceback (the DiskFullError says it), and
  asyncio's 'exception was never retrieved' of the writes orbax abandoned
  then, logged as Python exits after the `error:` line, are dropped."""
  e = record.exc_info[1] if record.exc_info else None
  if e is None or not is_disk_full(e):
    return True
  if record.name == 'asyncio':
    return False
  record.exc_info, record.exc_text = None, None
  return True


def _quiet_closed_loop(previous):
  """An unraisable hook: when a save fails, orbax closes its event loop while
  tensorstore still has writes in flight, and each reports that the loop is
  closed. Those go; everything else goes on to `previous`."""
  def hook(unraisable):
    tb = unraisable.exc_traceback
    while tb is not None and tb.tb_next is not None:
      tb = tb.tb_next
    if (isinstance(unraisable.exc_value, RuntimeError) and
        str(unraisable.exc_value) == 'Event loop is closed' and
        tb is not None and tb.tb_frame.f_code.co_name in (
            '_check_closed', 'call_soon_threadsafe')):
      return
    previous(unraisable)
  hook.quiet_closed_loop = True
  return hook


def _quiet_save_failures() -> None:
  for name in ('absl', 'asyncio'):
    logger = std_logging.getLogger(name)
    if _quiet_disk_full not in logger.filters:
      logger.addFilter(_quiet_disk_full)
  if not getattr(sys.unraisablehook, 'quiet_closed_loop', False):
    sys.unraisablehook = _quiet_closed_loop(sys.unraisablehook)


class _Manager(ocp.CheckpointManager):
  """Orbax's manager without its own preemption check.

  `CheckpointManager.save` reports the checkpoint's step to JAX's
  preemption sync point, which the stage loop already reports its own call
  count to (`parallel.preemption_stop`). The point is agreed from the last
  value reported and fires on an exact match only, so two counters make a
  stop late or never; the loop's is the only one.
  """

  def reached_preemption(self, step: int) -> bool:
    del step
    return False


class Checkpoints:
  """The checkpoints of one stage directory."""

  def __init__(self, directory: str, max_to_keep: int = 2,
               async_save: bool = True):
    # Orbax reads and writes absolute paths only (a relative one fails every
    # read with a ValueError that looks like a corrupt checkpoint).
    self.directory = paths.absolute(directory)
    _quiet_save_failures()
    self._manager = _Manager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True,
            enable_async_checkpointing=async_save),
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'record': ocp.JsonCheckpointHandler()})
    self._pending = None  # The step of a save that may still be committing.
    self._closed = False
    # Steps restore_latest read and found corrupt, passing over them: the
    # only ones a later save of the same step may replace.
    self.passed_over: set[int] = set()

  def _complete_steps(self) -> list[int]:
    # From the directory, not orbax's cache: a failed save leaves only its
    # temporary directory (`<step>.orbax-checkpoint-tmp`).
    try:
      return sorted(int(n) for n in paths.listdir(self.directory) if n.isdigit())
    except OSError:
      return []

  def _disk_full(self, step: int, e: BaseException) -> DiskFullError:
    """Stops the manager after a save of `step` ran out of space (waiting
    for its threads, so none is left to fail at interpreter exit) and returns
    the error to raise."""
    self._abandon()
    done = [s for s in self._complete_steps() if s != step]
    kept = (f'the last complete checkpoint (step {done[-1]}) is kept' if done
            else 'no checkpoint of this stage was complete yet')
    error = DiskFullError(self.directory,
                          f'saving checkpoint {self.directory}/{step}', kept)
    error.__cause__ = e
    return error

  def _abandon(self) -> None:
    self._closed = True
    self._pending = None
    for stop in (self._manager.wait_until_finished, self._manager.close):
      try:
        stop()
      except Exception:  # pylint: disable=broad-except
        pass  # The failure being reported already.
    # The writes orbax gave up on are coroutines of its closed event loop;
    # collected now, their clean-up runs while Python can still import.
    gc.collect()

  def _wait_pending(self) -> None:
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      if self._pending is not None and is_disk_full(e):
        raise self._disk_full(self._pending, e) from e
      raise
    self._pending = None

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, record: dict,
           replace_unreadable: bool = False) -> None:
    """Saves `state` (a pytree of arrays) and `record` (JSON) at `step`.

    A step already on disk is replaced only with `replace_unreadable`: a run
    that fell back past an unreadable checkpoint reaches its step again, and
    what it trained since replaces what could not be read. Any other save
    of an existing step is a ValueError, never a deletion.
    """
    if step in self._manager.all_steps():
      if not replace_unreadable:
        raise ValueError(f'checkpoint {self.directory}/{step} exists; only a '
                         'checkpoint passed over as unreadable is replaced')
      logging.warning('replacing the unreadable checkpoint %s/%d',
                      self.directory, step)
      self._wait_pending()
      self._manager.delete(step)
    # A previous save's failure (it commits in the background) is its own.
    self._wait_pending()
    try:
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          record=ocp.args.JsonSave(record)), force=True)
    except Exception as e:  # pylint: disable=broad-except
      if is_disk_full(e):
        raise self._disk_full(step, e) from e
      raise
    self._pending = step

  def _reader(self):
    """The manager to read with: this one, or with many processes one of
    this process alone, whose reads wait at no barrier, so a process that
    fails to read does not leave the others waiting inside orbax."""
    if jax.process_count() == 1:
      return self._manager
    me = jax.process_index()
    return _Manager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            create=False, enable_async_checkpointing=False,
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                primary_host=me, active_processes={me})),
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'record': ocp.JsonCheckpointHandler()})

  def _agreed_steps(self) -> list[int]:
    """The steps on disk as process 0 lists them, on every process (a
    listing of a shared filesystem may lag on one host)."""
    steps = self.steps()
    if jax.process_count() == 1:
      return steps
    count = int(parallel.broadcast_from_process_0(np.int64(len(steps))))
    mine = steps if jax.process_index() == 0 else [0] * count
    return [int(s) for s in
            parallel.broadcast_from_process_0(np.array(mine, np.int64))]

  def restore_latest(self, like: Any, sharding: Any = None
                     ) -> Optional[tuple[Any, dict, int]]:
    """Restores the newest readable checkpoint into the structure of `like`.

    Returns `(state, record, step)`, or None when there is no checkpoint.
    Unreadable checkpoints are logged and passed over for older ones. The
    arrays are placed on `sharding` (for a train state of many processes
    the mesh's replicated one, which each process fills from its own read),
    or where `like`'s are.

    With many processes, every process tries the same steps (process 0's
    listing), newest first, and takes a step only when every process read
    it: a read that fails on one process passes that step over on all, so
    all resume from one step.

    Raises:
      CheckpointError: a checkpoint whose arrays differ in shape or structure
        from `like`'s (the message says which), or none can be read (starting
        over silently would throw away the user's run).
    """
    steps = self._agreed_steps()
    if not steps:
      return None
    if sharding is None:
      abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    else:
      abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(
          np.shape(x), x.dtype, sharding=sharding), like)
    # A process that cannot open the directory still takes part in every
    # agreement below (the others would wait for it for ever), failing each
    # step.
    reader, cannot_open = None, None
    try:
      reader = self._reader()
    except Exception as e:  # pylint: disable=broad-except
      cannot_open = e
    try:
      return self._restore_agreed(reader, cannot_open, steps, like, abstract)
    finally:
      if reader is not None and reader is not self._manager:
        reader.close()

  def _read_step(self, reader, cannot_open, step, like, abstract):
    """One process's outcome for `step`: (_READ, restored), (_UNFIT,
    differences), (_CORRUPT, error) or (_UNOPENED, error).

    A failed read is classified by what was read, whatever the exception's
    type (TensorFlow's file layer and tensorstore raise their own): every
    file of the step is then read as bytes, and a failure there (a
    permission, a vanished mount, a transient object-store error) means
    the checkpoint could not be opened and may be intact; if every byte
    reads, orbax reads it once more, and only a second failure on readable
    files is a corrupt checkpoint.
    """
    def attempt():
      if cannot_open is not None:
        raise cannot_open
      differences = _differences(
          reader.item_metadata(step)['state'].tree, like)
      if differences:
        return _UNFIT, differences
      return _READ, reader.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract),
          record=ocp.args.JsonRestore()))
    try:
      return attempt()
    except Exception as e:  # pylint: disable=broad-except
      first = e
    if cannot_open is not None:
      return _UNOPENED, first
    try:
      paths.read_every_file(posixpath.join(self.directory, str(step)))
    except Exception as e:  # pylint: disable=broad-except
      return _UNOPENED, e
    try:
      return attempt()
    except Exception as e:  # pylint: disable=broad-except
      return _CORRUPT, e

  def _restore_agreed(self, reader, cannot_open, steps, like, abstract):
    errors = []
    for step in reversed(steps):
      mine, got = self._read_step(reader, cannot_open, step, like, abstract)
      failure = got if mine in (_CORRUPT, _UNOPENED) else None
      differences = got if mine == _UNFIT else []
      out = got if mine == _READ else None
      outcomes = parallel.agree(np.int32(mine))
      if (outcomes == _READ).all():
        return out['state'], dict(out['record']), step
      if (outcomes == _UNOPENED).any():
        # It may be intact: nothing is passed over, nothing replaced.
        where = ', '.join(str(int(p)) for p in
                          np.flatnonzero(outcomes == _UNOPENED))
        cause = (f'{type(failure).__name__}: '
                 f'{(str(failure).splitlines() or [""])[0][:200]}'
                 if mine == _UNOPENED else f'on process {where}')
        raise CheckpointError(
            f'checkpoint {self.directory}/{step} could not be read ({cause}); '
            'it is kept, as is every other checkpoint. Check that the '
            'storage is readable (permissions, network), then run the same '
            'command again.')
      if (outcomes == _UNFIT).any():
        if not differences:
          differences = [f'its arrays differ on process '
                         f'{int(np.argmax(outcomes == _UNFIT))}']
        more = (f' (and {len(differences) - 3} more)' if len(differences) > 3
                else '')
        raise CheckpointError(
            f'checkpoint {self.directory}/{step} does not fit the model: '
            f'{"; ".join(differences[:3])}{more}. It was written by another '
            'model config or code version; resume with that one, or use a '
            'new --workdir.')
      self.passed_over.add(step)
      if failure is not None:
        logging.warning('checkpoint %s/%d is unreadable (%s: %s); trying an '
                        'older one', self.directory, step,
                        type(failure).__name__,
                        (str(failure).splitlines() or [''])[0][:300])
        errors.append(f'step {step}: {type(failure).__name__}')
      else:
        failed = [int(p) for p in np.flatnonzero(outcomes != _READ)]
        logging.warning('checkpoint %s/%d is unreadable on process %s; '
                        'trying an older one', self.directory, step,
                        ', '.join(map(str, failed)))
        errors.append(f'step {step}: unreadable on process '
                      f'{", ".join(map(str, failed))}')
    raise CheckpointError(
        f'no readable checkpoint in {self.directory} ({"; ".join(errors)}). '
        'They were read and found corrupt: move the directory away to '
        'retrain this stage from scratch.')

  def wait(self) -> None:
    """Waits for the last save to be committed.

    Raises:
      DiskFullError: it ran out of space (the manager is then closed).
    """
    self._wait_pending()

  def close(self) -> None:
    if self._closed:
      return
    try:
      self._wait_pending()
    finally:
      if not self._closed:  # A DiskFullError has closed it already.
        self._closed = True
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
