"""Two processes on localhost (JAX's multi-controller runtime, CPU
collectives) train the smoke chain, checkpoint, and resume from it: from a
finished stage, from the middle of one, and after SIGTERM to one process;
and score with the external classifier that process 0 alone trains."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

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


# A stage long enough for a SIGTERM to land inside it (about 10 steps/s
# with two processes on two busy cores), saved every 100 steps.
LONG = ('--config.growth.end_dim=2', '--config.train.steps_per_stage=300',
        '--config.checkpoint.every_steps=100',
        '--config.log.progress_seconds=1')


def _launch_two(workdir, err_dir, *args):
  """Starts both processes of a run; their stderr goes to err_dir/stderrP."""
  port = _free_port()
  procs, errs = [], []
  for pid in range(2):
    env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}',
               JAX_NUM_PROCESSES='2', JAX_PROCESS_ID=str(pid),
               JAX_PLATFORMS='cpu')
    errs.append(os.path.join(err_dir, f'stderr{pid}'))
    with open(errs[-1], 'w') as err:
      procs.append(subprocess.Popen(
          [sys.executable, 'launch/main.py',
           '--config=configs/fashion_grow.py:smoke', f'--workdir={workdir}',
           *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err))
  return procs, errs


def _finish_two(procs, errs, ok=True):
  """Waits for both; returns their stderr (and checks they exited 0)."""
  try:
    for p in procs:
      p.wait(timeout=400)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  texts = []
  for p, path in zip(procs, errs):
    with open(path) as f:
      texts.append(f.read())
    assert not ok or p.returncode == 0, texts[-1][-3000:]
  return texts


def _summary(workdir):
  with open(os.path.join(workdir, 'summary.json')) as f:
    return json.load(f)


def _steps(workdir):
  return sorted(int(n) for n in os.listdir(
      os.path.join(workdir, 'stage_00', 'checkpoints')) if n.isdigit())


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """An uninterrupted two-process run of LONG: (workdir, summary)."""
  root = tmp_path_factory.mktemp('reference')
  workdir = str(root / 'w')
  _finish_two(*_launch_two(workdir, str(root), *LONG))
  return workdir, _summary(workdir)


def test_two_processes_resume_in_the_middle_of_a_stage(reference, tmp_path):
  ref_dir, ref = reference
  workdir = str(tmp_path / 'w')
  shutil.copytree(ref_dir, workdir)
  assert _steps(workdir) == [200, 300]
  shutil.rmtree(os.path.join(workdir, 'stage_00', 'checkpoints', '300'))
  errs = _finish_two(*_launch_two(workdir, str(tmp_path), *LONG))
  for err in errs:
    # Both restore step 200 into the mesh and train on to the same
    # parameters: the recorded fingerprint matches, so it is not re-scored.
    assert 'stage 0 (k=2): resuming at step 200/300' in err
    assert 'stage 0 (k=2) already complete; not retrained' in err
  assert _summary(workdir)['stages'] == ref['stages']
  assert _steps(workdir) == [200, 300]


def test_sigterm_to_one_process_stops_both_at_one_step_then_both_resume(
    reference, tmp_path):
  _, ref = reference
  workdir = str(tmp_path / 'w')
  procs, errs = _launch_two(workdir, str(tmp_path), *LONG)
  try:
    deadline = time.time() + 300
    while True:
      with open(errs[1]) as f:
        if re.search(r'stage 0 \(k=2\) step \d+/300', f.read()):
          break
      assert all(p.poll() is None for p in procs), 'a process ended early'
      assert time.time() < deadline, 'training never started'
      time.sleep(0.2)
    procs[1].send_signal(signal.SIGTERM)
    sent = time.time()
    outs = _finish_two(procs, errs, ok=False)
    took = time.time() - sent
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  assert took < 120
  stopped = set()
  for p, err in zip(procs, outs):
    assert p.returncode != 0 and 'Traceback' not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    m = re.fullmatch(r'preempted: stopped at step (\d+) of stage 0 \(k=2\); '
                     r'the checkpoint is in \S+; re-run the same command to '
                     r'resume', last)
    assert m, last
    stopped.add(int(m[1]))
  assert len(stopped) == 1, f'the processes stopped at steps {stopped}'
  stopped = stopped.pop()
  assert 0 < stopped < 300
  assert stopped in _steps(workdir)

  errs = _finish_two(*_launch_two(workdir, str(tmp_path), *LONG))
  for err in errs:
    assert f'stage 0 (k=2): resuming at step {stopped}/300' in err
  assert [s['fingerprint'] for s in _summary(workdir)['stages']] == [
      s['fingerprint'] for s in ref['stages']]


def test_two_processes_score_with_a_classifier_that_process_0_trains(
    tmp_path):
  workdir, clf_dir = str(tmp_path / 'w'), str(tmp_path / 'classifier')
  args = ('--config.growth.end_dim=2', '--config.train.steps_per_stage=8',
          '--config.checkpoint.every_steps=4', '--config.eval.classifier=True',
          f'--config.eval.classifier_dir={clf_dir}')
  errs = _finish_two(*_launch_two(workdir, str(tmp_path), *args))
  assert 'No finished classifier in' in errs[0]
  assert 'Waiting for process 0' in errs[1]
  assert 'No finished classifier in' not in errs[1]
  # One writer: the cache holds one classifier and no leftover.
  assert sorted(os.listdir(clf_dir)) == ['classifier.json', 'variables']
  first = _summary(workdir)
  assert 'swap_acc' in first['stages'][0]['test']
  assert first['stages'][0]['eval']['classifier']

  # The rerun restores it on process 0 and hands it to process 1 bit for
  # bit: the stage's evaluation settings (the classifier's fingerprint
  # among them) match, so it is not scored again.
  errs = _finish_two(*_launch_two(workdir, str(tmp_path), *args))
  assert 'Restored the fashion_mnist classifier' in errs[0]
  for err in errs:
    assert 'stage 0 (k=2) already complete; not retrained' in err
  assert _summary(workdir)['stages'] == first['stages']


def test_a_classifier_process_0_refuses_is_one_error_line_on_both(tmp_path):
  workdir, clf_dir = str(tmp_path / 'w'), tmp_path / 'classifier'
  clf_dir.mkdir()
  (clf_dir / 'classifier.json').write_text(json.dumps(
      {'dataset': {'name': 'mnist', 'limit': 0}, 'config': {},
       'test_accuracy': 0.5}))
  procs, errs = _launch_two(
      workdir, str(tmp_path), '--config.growth.end_dim=2',
      '--config.eval.classifier=True',
      f'--config.eval.classifier_dir={clf_dir}')
  outs = _finish_two(procs, errs, ok=False)
  lasts = [err.strip().splitlines()[-1] for err in outs]
  for p, last in zip(procs, lasts):
    assert p.returncode != 0 and last.startswith('error: '), last
  assert lasts[0].startswith(f'error: {clf_dir} holds a classifier of dataset')
  # Process 1 is told why instead of waiting for a classifier never coming.
  assert lasts[1] == (f'error: process 0 could not restore or train the '
                      f'classifier in {clf_dir}: {lasts[0][len("error: "):]}')
