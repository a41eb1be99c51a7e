"""The device loop (jacdistill/device_loop.py): the per-step loop's batches,
fingerprints and resume, many steps per dispatch."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from configs import fashion_grow
from jacdistill import attr_chain
from jacdistill import chain
from jacdistill import device_loop
from jacdistill import input_pipeline
from jacdistill import stages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_DATA = os.path.exists(os.path.join(input_pipeline.DEFAULT_IDX_DIR,
                                        'train-images-idx3-ubyte.gz'))
needs_data = pytest.mark.skipif(
    not HAVE_DATA, reason='needs apt-get install dataset-fashion-mnist')


def test_chunks_end_at_every_log_and_checkpoint_boundary():
  assert device_loop.chunk_ends(0, 24, (8, 10)) == [8, 10, 16, 20, 24]
  # A resumed stage (from step 16) cuts the same chunks as a whole one.
  assert device_loop.chunk_ends(16, 24, (8, 10)) == [20, 24]
  assert device_loop.chunk_ends(13, 15, (100,)) == [15]


def test_per_step_reads_both_histories():
  scalars = [{'a': np.float32(1), 'b': np.float32(2)},
             {'a': np.float32(3), 'b': np.float32(4)}]
  stacked = [{'a': np.array([5, 6], np.float32), 'b': np.array([7, 8.])}]
  got = device_loop.per_step(scalars + stacked)
  assert [(float(m['a']), float(m['b'])) for m in got] == [
      (1, 2), (3, 4), (5, 7), (6, 8)]
  assert got[2]['a'].dtype == np.float32  # Means are taken as before.


def test_batcher_indices_are_its_batches():
  split = input_pipeline.Split(
      images=np.arange(20, dtype=np.uint8).reshape(20, 1, 1, 1),
      labels=np.arange(20, dtype=np.int32))
  for process in (0, 1):
    batcher = input_pipeline.Batcher(split, 4, seed=3, process_index=process,
                                     process_count=2)
    data = batcher.device_data()
    for step in (0, 4, 9):
      rows = data.indices(step)
      np.testing.assert_array_equal(data.arrays['label'][rows],
                                    batcher.batch(step)['label'])


def _fingerprints(summary):
  return [s['fingerprint'] for s in summary['stages']]


# Both chains' smoke runs, per-step and device loop, in a process with
# XLA's default flags (conftest.py compiles the tests at -O0 with other
# emitters, under which the scan body rounds differently).
EQUALITY = textwrap.dedent("""
    import json, sys, tempfile
    from configs import fashion_attr, fashion_grow
    from jacdistill import attr_chain, chain
    out = {}
    for name, mod, run in (('grow', fashion_grow, chain.train_and_evaluate),
                           ('attr', fashion_attr,
                            attr_chain.train_and_evaluate)):
      for device in (False, True):
        config = mod.get_config('smoke')
        config.train.device_loop = device
        if name == 'attr':
          config.stage_order = ('teacher', 'fader32')
          config.eval.classifier = False
        summary = run(config, tempfile.mkdtemp())
        out[f'{name} {device}'] = [s['fingerprint'] for s in summary['stages']]
    print(json.dumps(out))
    """)


@needs_data
def test_device_loop_ends_at_the_per_step_fingerprints():
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  done = subprocess.run([sys.executable, '-c', EQUALITY], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]
  got = json.loads(done.stdout.strip().splitlines()[-1])
  assert got['grow True'] == got['grow False'] and len(got['grow True']) == 2
  # The Fader stage's attributes are made on the device from the labels.
  assert got['attr True'] == got['attr False'] and len(got['attr True']) == 2


@needs_data
def test_device_loop_resumes_exactly(tmp_path):
  config = fashion_grow.get_config('smoke')
  config.train.device_loop = True
  straight = chain.train_and_evaluate(config, str(tmp_path / 'straight'))
  # Stopped at a chunk's end in stage 1 (chunks end at 8, 10, 16, 20, 24 of
  # each 24-step stage: the 8th request is stage 1's third), then resumed.
  calls = iter(range(1, 100))
  workdir = str(tmp_path / 'interrupted')
  with pytest.raises(stages.Preempted, match='step 16 of stage 1'):
    chain.train_and_evaluate(config, workdir, stages.Hooks(
        should_stop=lambda: next(calls) == 8))
  resumed = chain.train_and_evaluate(config, workdir)
  assert _fingerprints(resumed) == _fingerprints(straight)


def test_a_streamed_dataset_refuses_the_device_loop(tmp_path):
  from configs import celeba_attr  # pylint: disable=g-import-not-at-top
  config = celeba_attr.get_config('smoke')
  config.train.device_loop = True
  with pytest.raises(stages.ConfigError, match='celeb_a is streamed'):
    attr_chain.train_and_evaluate(config, str(tmp_path / 'c'))
