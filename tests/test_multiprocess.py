"""Two processes on localhost (JAX's multi-controller runtime, CPU
collectives) train the smoke chain, checkpoint, and resume from it."""

import json
import os
import socket
import subprocess
import sys

import pytest

from jacdistill import input_pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(
    not os.path.exists(os.path.join(input_pipeline.DEFAULT_IDX_DIR,
                                    'train-images-idx3-ubyte.gz')),
    reason='needs apt-get install dataset-fashion-mnist')


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _run_two(workdir, *overrides):
  port = _free_port()
  procs = []
  for pid in range(2):
    env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}',
               JAX_NUM_PROCESSES='2', JAX_PROCESS_ID=str(pid),
               JAX_PLATFORMS='cpu')
    procs.append(subprocess.Popen(
        [sys.executable, 'launch/main.py',
         '--config=configs/fashion_grow.py:smoke', f'--workdir={workdir}',
         '--config.train.steps_per_stage=8', '--config.checkpoint.every_steps=4',
         *overrides], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True))
  outs = [p.communicate(timeout=400) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return [err for _, err in outs]


def test_two_processes_train_checkpoint_and_resume(tmp_path):
  workdir = str(tmp_path / 'w')
  _run_two(workdir, '--config.growth.end_dim=2')
  with open(os.path.join(workdir, 'summary.json')) as f:
    first = json.load(f)
  assert [s['latent_dim'] for s in first['stages']] == [2]
  assert sorted(os.listdir(os.path.join(workdir, 'stage_00', 'checkpoints'))
                ) == ['4', '8']
  # Extending the chain resumes: stage 0 is restored, not retrained.
  errs = _run_two(workdir, '--config.growth.end_dim=3')
  assert 'stage 0 (k=2) already complete' in errs[0]
  with open(os.path.join(workdir, 'summary.json')) as f:
    second = json.load(f)
  assert [s['latent_dim'] for s in second['stages']] == [2, 3]
  assert second['stages'][0]['fingerprint'] == first['stages'][0]['fingerprint']
