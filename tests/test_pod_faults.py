"""Faults of a pod's storage and preemption: one caller of JAX's preemption
sync point, a stop on a checkpoint step saves once, and a read error that
is not a corrupt checkpoint deletes nothing."""

import os

import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import fashion_grow
from jacdistill import chain
from jacdistill import checkpoint
from jacdistill import paths
from jacdistill import stages
from test_device_loop import needs_data  # pylint: disable=g-bad-import-order


def test_orbax_never_reports_a_step_to_the_preemption_sync_point(
    tmp_path, monkeypatch):
  """Orbax's save would report the checkpoint's step to the sync point the
  stage loop counts its calls on (`parallel.preemption_stop`)."""
  def fail(step):
    raise AssertionError(f'orbax asked the sync point about step {step}')
  monkeypatch.setattr(ocp.utils, 'reached_preemption', fail)
  ckpts = checkpoint.Checkpoints(str(tmp_path / 'c'))
  ckpts.save(3, {'w': np.ones(2, np.float32)}, {'step': 3})
  ckpts.wait()
  assert ckpts.steps() == [3]
  # A step on disk is not saved again unless it was passed over as
  # unreadable: no deletion of a good checkpoint.
  with pytest.raises(ValueError, match='only a checkpoint passed over'):
    ckpts.save(3, {'w': np.zeros(2, np.float32)}, {'step': 3})
  restored, record, step = ckpts.restore_latest({'w': np.zeros(2, np.float32)})
  assert step == 3 and record['step'] == 3
  np.testing.assert_array_equal(restored['w'], [1, 1])
  ckpts.close()


@needs_data
def test_a_stop_on_a_checkpoint_step_saves_once(tmp_path, monkeypatch):
  saves = []
  original = checkpoint.Checkpoints.save

  def counted(self, step, *args, **kwargs):
    saves.append((self.directory, step))
    return original(self, step, *args, **kwargs)
  monkeypatch.setattr(checkpoint.Checkpoints, 'save', counted)
  config = fashion_grow.get_config('smoke')  # Checkpoints every 10 steps.
  calls = iter(range(1, 100))
  with pytest.raises(stages.Preempted, match='step 10 of stage 0'):
    chain.train_and_evaluate(config, str(tmp_path), stages.Hooks(
        should_stop=lambda: next(calls) == 10))
  assert [step for _, step in saves] == [10]
  resumed = chain.train_and_evaluate(config, str(tmp_path))
  assert [s['steps'] for s in resumed['stages']] == [24, 24]
  assert len(saves) == len(set(saves))  # No step of any stage twice.


def _two_checkpoints(directory):
  ckpts = checkpoint.Checkpoints(directory)
  for step in (1, 2):
    ckpts.save(step, {'w': np.full(3, step, np.float32)}, {'step': step})
  ckpts.close()


def test_a_transient_read_error_of_any_type_is_read_again(tmp_path,
                                                          monkeypatch):
  """tensorstore and TensorFlow's file layer raise errors that are not
  OSErrors; one such failure of the newest checkpoint is not corruption."""
  directory = str(tmp_path / 'c')
  _two_checkpoints(directory)
  original = ocp.CheckpointManager.restore
  failures = [RuntimeError('UNAVAILABLE: connection reset (tensorstore)')]

  def flaky(self, step, *args, **kwargs):
    if failures:
      raise failures.pop()
    return original(self, step, *args, **kwargs)
  monkeypatch.setattr(ocp.CheckpointManager, 'restore', flaky)
  ckpts = checkpoint.Checkpoints(directory)
  _, record, step = ckpts.restore_latest({'w': np.zeros(3, np.float32)})
  assert (step, record, ckpts.passed_over) == (2, {'step': 2}, set())
  ckpts.close()


def test_a_checkpoint_whose_files_cannot_be_read_is_kept(tmp_path,
                                                         monkeypatch):
  """The newest checkpoint's files fail to read (a permission, a vanished
  bucket, any exception type): it may be intact, so the run stops in one
  line instead of falling back to step 1 and later replacing step 2."""
  directory = str(tmp_path / 'c')
  _two_checkpoints(directory)

  def fail(self, step, *args, **kwargs):
    raise RuntimeError('PERMISSION_DENIED: forbidden (tensorstore)')
  monkeypatch.setattr(ocp.CheckpointManager, 'restore', fail)

  def unreadable(directory):
    raise RuntimeError(f'PERMISSION_DENIED reading {directory}')
  monkeypatch.setattr(paths, 'read_every_file', unreadable)
  ckpts = checkpoint.Checkpoints(directory)
  with pytest.raises(checkpoint.CheckpointError) as e:
    ckpts.restore_latest({'w': np.zeros(3, np.float32)})
  ckpts.close()
  message = str(e.value)
  assert message.startswith(f'checkpoint {directory}/2 could not be read '
                            '(RuntimeError: PERMISSION_DENIED')
  assert 'it is kept' in message and '\n' not in message
  assert sorted(os.listdir(directory)) == ['1', '2']


def test_files_that_read_but_do_not_restore_twice_are_corrupt(tmp_path,
                                                              monkeypatch):
  directory = str(tmp_path / 'c')
  _two_checkpoints(directory)
  original = ocp.CheckpointManager.restore

  def bad_step_2(self, step, *args, **kwargs):
    if step == 2:
      raise ValueError('DATA_LOSS: bad chunk')
    return original(self, step, *args, **kwargs)
  monkeypatch.setattr(ocp.CheckpointManager, 'restore', bad_step_2)
  ckpts = checkpoint.Checkpoints(directory)
  _, record, step = ckpts.restore_latest({'w': np.zeros(3, np.float32)})
  assert (step, ckpts.passed_over) == (1, {2})
  # Only that step may be replaced.
  ckpts.save(2, {'w': np.zeros(3, np.float32)}, {'step': 2},
             replace_unreadable=2 in ckpts.passed_over)
  ckpts.close()
