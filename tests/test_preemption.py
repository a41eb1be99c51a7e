"""One caller of JAX's preemption sync point, and a stop on a checkpoint
step saves once."""

import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import fashion_grow
from jacdistill import chain
from jacdistill import checkpoint
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
