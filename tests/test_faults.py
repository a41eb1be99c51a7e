"""Faults of issue 6 on the real Fashion-MNIST files (smoke config): SIGTERM,
SIGKILL at a random moment, a full disk, corrupted checkpoints, NaN losses, bad configs, a
checkpoint of the wrong shape and a truncated data file.

A fault is met through launch/main.py in a subprocess where the process is the
point (signals, the one-line `error:` exit); elsewhere the chain runs in this
process, which is the same code without paying the start-up (TensorFlow's
import alone is seconds) again.
"""

import builtins
import errno
import gzip
import hashlib
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import fashion_grow
from jacdistill import chain
from jacdistill import checkpoint
from jacdistill import input_pipeline
from jacdistill import models
from jacdistill import stages
from jacdistill import train
from jacdistill import workdir_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IDX_DIR = input_pipeline.DEFAULT_IDX_DIR
HAVE_DATA = os.path.exists(os.path.join(IDX_DIR, 'train-images-idx3-ubyte.gz'))
pytestmark = pytest.mark.skipif(
    not HAVE_DATA, reason='needs apt-get install dataset-fashion-mnist')

SMOKE = 'configs/fashion_grow.py:smoke'
# Seeds the moment of the SIGKILL; set it to explore other moments.
KILL_SEED = int(os.environ.get('JACDISTILL_KILL_SEED', '0'))


def _config(overrides=None):
  """The smoke config with {dotted.name: value} overrides, as flags give."""
  config = fashion_grow.get_config('smoke')
  for name, value in (overrides or {}).items():
    *parents, leaf = name.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def _main_cmd(workdir, overrides=None):
  return [sys.executable, 'launch/main.py', f'--config={SMOKE}',
          f'--workdir={workdir}'] + [
              f'--config.{k}={v}' for k, v in (overrides or {}).items()]


def _start(cmd, stderr_path, env=None):
  with open(stderr_path, 'w') as err:
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=err, env=env)


def _last_line(text):
  return text.strip().splitlines()[-1]


def _tree_hash(root):
  """Paths, bytes and modification times of everything under `root`."""
  digest = hashlib.sha256()
  for path, dirs, files in sorted(os.walk(root)):
    dirs.sort()
    digest.update(os.path.relpath(path, root).encode())
    for name in sorted(files):
      full = os.path.join(path, name)
      digest.update(name.encode())
      digest.update(str(os.stat(full).st_mtime_ns).encode())
      with open(full, 'rb') as f:
        digest.update(f.read())
  return digest.hexdigest()


def _fingerprints(summary):
  return [s['fingerprint'] for s in summary['stages']]


def _ckpt_dir(workdir, stage):
  return os.path.join(workdir, f'stage_{stage:02d}', 'checkpoints')


def _steps(workdir, stage):
  return sorted(int(n) for n in os.listdir(_ckpt_dir(workdir, stage))
                if n.isdigit())


def _corrupt(step_dir, how):
  """Damages a saved checkpoint the way a crash or a bad disk would."""
  state_dir = os.path.join(step_dir, 'state')
  if how == 'missing state':
    shutil.rmtree(state_dir)
    return
  for path, _, files in os.walk(state_dir):
    for name in files:
      full = os.path.join(path, name)
      is_data = os.path.basename(path) == 'd'  # tensorstore's data files.
      if how == 'truncated data' and is_data:
        with open(full, 'r+b') as f:
          f.truncate(os.path.getsize(full) // 2)
      elif how == 'garbage data' and is_data:
        size = os.path.getsize(full)
        with open(full, 'wb') as f:
          f.write(np.random.default_rng(0).bytes(size))
      elif how == 'garbage metadata' and name == '_METADATA':
        with open(full, 'w') as f:
          f.write('{"tree_metadata": ')


def _train_state(hidden, dim=2):
  """A fresh train state of the smoke model with encoder widths `hidden`."""
  config = _config({'model.hidden': hidden})
  # Stage dim - 2 of the chain: only the stage-0 teacher normalises its code.
  model = chain.build_model(config.model, dim, (28, 28, 1), stage=dim - 2)
  variables = model.init(jax.random.key(0), models.example_input(model))
  t = config.train
  return train.create_train_state(variables, train.make_optimizer(
      t.learning_rate, t.weight_decay, t.b1, t.b2, t.clip_norm))


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """An uninterrupted smoke chain: (workdir, summary, seconds it took)."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  start = time.time()
  summary = chain.train_and_evaluate(_config(), workdir)
  return workdir, summary, time.time() - start


# ------------------------------------------------------------------ SIGTERM


def test_sigterm_saves_a_checkpoint_exits_and_the_rerun_resumes(tmp_path):
  overrides = {'train.steps_per_stage': 4000,
               'checkpoint.every_steps': 100000,  # Only the SIGTERM saves.
               'log.progress_seconds': 1}
  workdir = str(tmp_path / 'w')
  err_path = tmp_path / 'stderr'
  proc = _start(_main_cmd(workdir, overrides), err_path)
  try:
    deadline = time.time() + 240
    while not re.search(r'stage 0 \(k=2\) step \d+/4000', err_path.read_text()):
      assert proc.poll() is None, err_path.read_text()[-3000:]
      assert time.time() < deadline, 'training never started'
      time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    sent = time.time()
    returncode = proc.wait(timeout=30)
    took = time.time() - sent
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  err = err_path.read_text()
  assert returncode != 0 and took < 30
  assert 'Traceback' not in err
  m = re.fullmatch(r'preempted: stopped at step (\d+) of stage 0 \(k=2\); the '
                   r'checkpoint is in (\S+); re-run the same command to '
                   r'resume', _last_line(err))
  assert m, _last_line(err)
  stopped = int(m[1])
  assert 0 < stopped < 4000
  assert m[2] == _ckpt_dir(workdir, 0)
  assert _steps(workdir, 0) == [stopped]

  # The re-run (same config; the command's code path in this process) goes on
  # from the saved step: three more steps end at stopped + 3, not at 3.
  calls = iter(range(10**6))
  with pytest.raises(stages.Preempted, match=(
      f'stopped at step {stopped + 3} of stage 0 \\(k=2\\);')):
    chain.train_and_evaluate(_config(overrides), workdir, stages.Hooks(
        should_stop=lambda: next(calls) >= 2))
  assert _steps(workdir, 0) == [stopped, stopped + 3]


# ------------------------------------------------------------------ SIGKILL


def test_sigkill_at_a_random_moment_then_rerun_gives_the_same_parameters(
    reference, tmp_path):
  _, straight, seconds = reference
  workdir = str(tmp_path / 'w')
  err_path = tmp_path / 'stderr'
  # Without the session's compilation cache (tests/conftest.py) the run
  # compiles everything, so it lasts at least as long as the reference did and
  # the kill lands inside it.
  env = {k: v for k, v in os.environ.items()
         if k != 'JAX_COMPILATION_CACHE_DIR'}
  proc = _start(_main_cmd(workdir), err_path, env)
  try:
    # Past the imports, the run takes about as long as the reference did; a
    # seeded fraction of that lands in a compile, a stage, an evaluation or a
    # save, whatever this machine's speed.
    while 'workdir' not in err_path.read_text():
      assert proc.poll() is None, err_path.read_text()[-3000:]
      time.sleep(0.1)
    delay = random.Random(KILL_SEED).uniform(0.05, 0.8) * seconds
    time.sleep(delay)
    proc.kill()  # SIGKILL: no handler, no clean-up.
    proc.wait()
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  where = _last_line(err_path.read_text())
  print(f'SIGKILL {delay:.1f} s after start-up (seed {KILL_SEED}) at: {where}')
  assert proc.returncode == -signal.SIGKILL, 'the run ended before the kill'
  resumed = chain.train_and_evaluate(_config(), workdir)
  assert _fingerprints(resumed) == _fingerprints(straight), where
  with open(os.path.join(workdir, 'summary.json')) as f:
    assert _fingerprints(json.load(f)) == _fingerprints(straight)


# ---------------------------------------------------------------- full disk


@pytest.fixture
def small_disk(tmp_path):
  """A tmpfs of 8 MB (one smoke checkpoint is about 5.3 MB) and a function
  that grows it; skipped where mounting is not permitted."""
  where = tmp_path / 'disk'
  where.mkdir()
  mount = ['mount', '-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', str(where)]
  if os.geteuid() != 0 or subprocess.run(
      mount, capture_output=True).returncode != 0:
    pytest.skip('mounting a tmpfs is not permitted here (needs root)')

  def grow(size):
    subprocess.run(['mount', '-o', f'remount,size={size}', str(where)],
                   check=True)

  try:
    yield str(where), grow
  finally:
    subprocess.run(['umount', '-l', str(where)], check=False)


def test_full_disk_is_one_error_line_and_the_rerun_with_space_resumes(
    reference, small_disk, tmp_path):
  _, straight, _ = reference
  disk, grow = small_disk
  workdir = os.path.join(disk, 'w')
  err_path = tmp_path / 'stderr'
  # Stage 0's checkpoint at step 10 fits, the one at step 20 does not.
  proc = _start(_main_cmd(workdir), err_path)
  try:
    returncode = proc.wait(timeout=300)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  err = err_path.read_text()
  assert returncode != 0
  assert 'Traceback' not in err, err[-3000:]
  assert _last_line(err) == (
      f'error: the disk holding {workdir} is full (No space left on device '
      f'while saving checkpoint {_ckpt_dir(workdir, 0)}/20); the last complete '
      'checkpoint (step 10) is kept; free space and run the same command '
      'again to resume')
  assert _steps(workdir, 0) == [10]

  # With space, the same run goes on from step 10 to the parameters of the
  # uninterrupted one.
  grow('64m')
  resumed = chain.train_and_evaluate(_config(), workdir)
  assert _fingerprints(resumed) == _fingerprints(straight)
  assert _steps(workdir, 0) == [20, 24]


def test_full_disk_while_writing_the_summary_keeps_the_old_one(
    tmp_path, monkeypatch):
  path = str(tmp_path / 'summary.json')
  workdir_files.write_json(path, {'stages': []})

  real_open = builtins.open

  class FullDisk:
    """A file being written whose device fills after 6 characters."""

    def __init__(self, f):
      self.f = f

    def write(self, data):
      self.f.write(data[:6])
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      self.f.close()

  def open_on_a_full_disk(file, mode='r', *args, **kwargs):
    f = real_open(file, mode, *args, **kwargs)
    return FullDisk(f) if 'w' in mode else f

  monkeypatch.setattr(builtins, 'open', open_on_a_full_disk)
  with pytest.raises(checkpoint.DiskFullError) as e:
    workdir_files.write_json(path, {'stages': [1]})
  assert str(e.value.held_by(str(tmp_path))) == (
      f'the disk holding {tmp_path} is full (No space left on device while '
      f'writing {path}); {path} is kept as it was; free space and run the '
      'same command again to resume')
  monkeypatch.undo()
  with open(path) as f:
    assert json.load(f) == {'stages': []}
  assert os.listdir(tmp_path) == ['summary.json']


# ------------------------------------------------------ corrupted checkpoints


# Orbax reads a checkpoint's arrays concurrently; when one read fails, the
# others' futures are dropped with the closed event loop and Python reports it.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
@pytest.mark.parametrize('how', ['truncated data', 'garbage data',
                                 'garbage metadata', 'missing state'])
def test_unreadable_latest_checkpoint_falls_back_to_the_previous(
    tmp_path, caplog, how):
  directory = str(tmp_path / 'ckpts')

  def state(v):
    return {'w': np.full((2, 3), v, np.float32), 'n': np.array(v, np.int32)}

  ckpts = checkpoint.Checkpoints(directory, max_to_keep=2)
  for step in (1, 2, 3):
    ckpts.save(step, state(step), {'step': step})
  ckpts.wait()
  ckpts.close()
  _corrupt(os.path.join(directory, '3'), how)

  ckpts = checkpoint.Checkpoints(directory, max_to_keep=2)
  with caplog.at_level(logging.WARNING):
    restored, record, step = ckpts.restore_latest(state(0))
  assert step == 2 and record == {'step': 2}
  np.testing.assert_array_equal(restored['w'], np.full((2, 3), 2.0))
  assert f'checkpoint {directory}/3 is unreadable' in caplog.text
  # Training on from step 2 reaches step 3 again; its save, told that step
  # 3 was passed over (as the stage loop tells it), replaces the unreadable
  # one instead of failing on an existing step.
  ckpts.save(3, state(30), {'step': 30}, replace_unreadable=True)
  ckpts.wait()
  restored, record, step = ckpts.restore_latest(state(0))
  assert (step, record, int(restored['n'])) == (3, {'step': 30}, 30)
  ckpts.close()

  for step in (2, 3):
    _corrupt(os.path.join(directory, str(step)), how)
  ckpts = checkpoint.Checkpoints(directory, max_to_keep=2)
  with pytest.raises(checkpoint.CheckpointError) as e:
    ckpts.restore_latest(state(0))
  ckpts.close()
  message = str(e.value)
  assert '\n' not in message
  assert message.startswith(f'no readable checkpoint in {directory} (step 3: ')


# As above, orbax's dropped futures of the failed read.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_chain_resumes_past_a_corrupted_checkpoint_to_the_same_parameters(
    reference, tmp_path, caplog):
  ref_dir, straight, _ = reference
  workdir = str(tmp_path / 'w')
  shutil.copytree(ref_dir, workdir)
  assert _steps(workdir, 1) == [20, 24]
  _corrupt(os.path.join(_ckpt_dir(workdir, 1), '24'), 'truncated data')
  stage0 = _tree_hash(_ckpt_dir(workdir, 0))
  with caplog.at_level(logging.WARNING):
    resumed = chain.train_and_evaluate(_config(), workdir)
  assert f'checkpoint {_ckpt_dir(workdir, 1)}/24 is unreadable' in caplog.text
  assert f'replacing the unreadable checkpoint {_ckpt_dir(workdir, 1)}/24' in (
      caplog.text)
  # Steps 20 -> 24 retrained: bit for bit the parameters of the straight run.
  assert _fingerprints(resumed) == _fingerprints(straight)
  assert _steps(workdir, 1) == [20, 24]
  assert _tree_hash(_ckpt_dir(workdir, 0)) == stage0


# ---------------------------------------------------------------------- NaN


def test_huge_learning_rate_stops_at_the_first_nonfinite_loss(tmp_path):
  config = _config({'growth.end_dim': 2, 'train.learning_rate': 1e6,
                    'log.every_steps': 1})
  workdir = str(tmp_path / 'w')
  with pytest.raises(stages.NonFiniteLossError) as e:
    chain.train_and_evaluate(config, workdir)
  # Step 0 is taken at the initial parameters; after one update of size ~1e6
  # the reconstruction overflows. The term is named, not the gradient norm
  # that overflows with it.
  assert str(e.value) == (
      "loss term 'rec' is not finite at step 1 of stage 0 (k=2); training "
      'stopped, no checkpoint of this stage was saved yet')
  assert _steps(workdir, 0) == []  # Nothing was saved, so no NaN was.


def test_injected_nan_stops_with_step_stage_and_term_keeping_good_checkpoints(
    reference, tmp_path, monkeypatch):
  """From step 13 of stage 1 the Jacobian term is NaN and poisons the update,
  as a real blow-up would; the metrics are only checked at the save at step
  20, so no NaN state may be saved there."""
  ref_dir, _, _ = reference
  workdir = str(tmp_path / 'w')
  shutil.copytree(ref_dir, workdir, ignore=lambda d, names: (
      ['stage_01'] if d == ref_dir else []))
  stage0 = _tree_hash(_ckpt_dir(workdir, 0))
  make_train_step = train.make_train_step

  def poisoned_make_train_step(model, teacher, *args, **kwargs):
    step_fn = make_train_step(model, teacher, *args, **kwargs)

    def poisoned(state, teacher_vars, batch, rng):
      poison = teacher is not None and int(state.step) >= 13
      state, metrics = step_fn(state, teacher_vars, batch, rng)
      if poison:
        nan = jnp.float32(jnp.nan)
        metrics = dict(metrics, jac=nan, total=nan, grad_norm=nan,
                       param_norm=nan)
        state = state.replace(params=jax.tree.map(lambda p: p * nan,
                                                  state.params))
      return state, metrics

    return poisoned

  monkeypatch.setattr(train, 'make_train_step', poisoned_make_train_step)
  config = _config({'log.every_steps': 1000})
  with pytest.raises(stages.NonFiniteLossError) as e:
    chain.train_and_evaluate(config, workdir)
  assert str(e.value) == (
      "loss term 'jac' is not finite at step 13 of stage 1 (k=3); training "
      f'stopped, the last good checkpoint (step 10) in {_ckpt_dir(workdir, 1)} '
      'is kept')
  assert _steps(workdir, 1) == [10]
  ckpts = checkpoint.Checkpoints(_ckpt_dir(workdir, 1))
  restored, _, step = ckpts.restore_latest(_train_state((256, 128, 64), dim=3))
  ckpts.close()
  assert step == 10
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(restored))
  assert _tree_hash(_ckpt_dir(workdir, 0)) == stage0


# -------------------------------------------------------------- bad configs


@pytest.mark.parametrize('overrides, named', [
    ({'data.name': 'cifar'}, "data.name='cifar'"),
    ({'model.name': 'vit'}, "model.name='vit'"),
    ({'growth.end_dim': 1}, 'end_dim=1'),
    ({'loss.jac': -1.0}, 'jac=-1.0'),
    # A valid config, but not the one of the run in the workdir.
    ({'loss.jac': 1.0}, 'holds a run of a different config (loss.jac: 0.1 -> '
                        '1.0)'),
], ids=['dataset', 'model', 'latent sizes', 'weight', 'workdir of another'])
def test_bad_config_is_refused_before_data_or_compilation(
    reference, monkeypatch, overrides, named):
  workdir, _, _ = reference
  before = _tree_hash(workdir)

  def must_not_run(*args, **kwargs):
    raise AssertionError('a bad config got past validation')

  monkeypatch.setattr(jax, 'jit', must_not_run)
  monkeypatch.setattr(input_pipeline, 'load_split', must_not_run)
  with pytest.raises(stages.ConfigError) as e:
    chain.train_and_evaluate(_config(overrides), workdir)
  assert named in str(e.value) and '\n' not in str(e.value)
  assert _tree_hash(workdir) == before


@pytest.fixture(scope='module')
def cli_errors(reference, tmp_path_factory):
  """launch/main.py runs that must end in a one-line error, all started at
  once (each spends most of its time importing): {name: (returncode, stderr,
  case)}."""
  ref_dir, _, _ = reference
  tmp = tmp_path_factory.mktemp('cli')
  cases = {}
  # 60 examples cannot be split over 8 devices.
  cases['indivisible batch'] = dict(
      cmd=_main_cmd(tmp / 'batch', {'train.batch_size': 60}),
      env=dict(os.environ,
               XLA_FLAGS='--xla_force_host_platform_device_count=8'),
      workdir=str(tmp / 'batch'))
  # A teacher checkpoint written by a narrower model: stage 0 of the reference
  # in a workdir whose config.json was lost.
  shape_dir = tmp / 'shape'
  shutil.copytree(os.path.join(ref_dir, 'stage_00'), shape_dir / 'stage_00')
  cases['wrong shape'] = dict(
      cmd=_main_cmd(shape_dir, {'model.hidden': '(256,128,32)'}),
      watched=str(shape_dir / 'stage_00'), workdir=str(shape_dir))
  # A truncated training-images file next to intact ones.
  idx_dir = tmp / 'idx'
  idx_dir.mkdir()
  for name in os.listdir(IDX_DIR):
    if name.endswith('.gz') and not name.startswith('train-images'):
      os.symlink(os.path.join(IDX_DIR, name), idx_dir / name)
  with open(os.path.join(IDX_DIR, 'train-images-idx3-ubyte.gz'), 'rb') as f:
    (idx_dir / 'train-images-idx3-ubyte.gz').write_bytes(f.read()[:100_000])
  cases['truncated data'] = dict(
      cmd=_main_cmd(tmp / 'data', {'data.idx_dir': idx_dir}),
      file=str(idx_dir / 'train-images-idx3-ubyte.gz'))

  for name, case in cases.items():
    if 'watched' in case:
      case['before'] = _tree_hash(case['watched'])
    case['err'] = tmp / f'{name.replace(" ", "_")}.stderr'
    case['proc'] = _start(case['cmd'], case['err'], env=case.get('env'))
  results = {}
  try:
    for name, case in cases.items():
      returncode = case['proc'].wait(timeout=300)
      results[name] = returncode, case['err'].read_text(), case
  finally:
    for case in cases.values():
      if case['proc'].poll() is None:
        case['proc'].kill()
        case['proc'].wait()
  return results


def _one_line_error(result):
  returncode, err, _ = result
  assert returncode != 0
  assert 'Traceback' not in err
  last = _last_line(err)
  assert last.startswith('error: ')
  return last


def test_cli_refuses_a_batch_the_devices_cannot_split(cli_errors):
  last = _one_line_error(cli_errors['indivisible batch'])
  assert last == ('error: train.batch_size=60 is not divisible by the 8 '
                  'devices of the mesh; use a multiple of 8 (e.g. 56, 64)')
  # The refused config did not become the workdir's: the fixed one is taken.
  workdir = cli_errors['indivisible batch'][2]['workdir']
  assert not os.path.exists(os.path.join(workdir, 'config.json'))
  workdir_files.check_workdir(_config({'train.batch_size': 64}), workdir)


def test_cli_refuses_a_teacher_checkpoint_of_the_wrong_shape(cli_errors):
  last = _one_line_error(cli_errors['wrong shape'])
  case = cli_errors['wrong shape'][2]
  assert last.startswith(
      f'error: checkpoint {case["workdir"]}/stage_00/checkpoints/24 does not '
      'fit the model: params/dec_0/kernel is (64, 128) on disk but (32, 128) '
      'in the model;')
  assert _tree_hash(case['watched']) == case['before']


@pytest.mark.parametrize('hidden, differs', [
    ((256, 128, 32), 'params/dec_0/kernel is (64, 128) on disk but (32, 128) '
                     'in the model'),
    ((256, 128), 'params/dec_0/bias is (128,) on disk but (256,) in the '
                 'model'),
], ids=['narrower', 'shallower'])
def test_restoring_into_another_model_names_the_directory_and_difference(
    reference, hidden, differs):
  ref_dir, _, _ = reference
  before = _tree_hash(_ckpt_dir(ref_dir, 0))
  ckpts = checkpoint.Checkpoints(_ckpt_dir(ref_dir, 0))
  with pytest.raises(checkpoint.CheckpointError) as e:
    ckpts.restore_latest(_train_state(hidden))
  ckpts.close()
  message = str(e.value)
  assert '\n' not in message
  assert message.startswith(
      f'checkpoint {_ckpt_dir(ref_dir, 0)}/24 does not fit the model: '
      f'{differs};')
  assert _tree_hash(_ckpt_dir(ref_dir, 0)) == before


# --------------------------------------------------------------------- data


def test_cli_names_a_truncated_data_file(cli_errors):
  last = _one_line_error(cli_errors['truncated data'])
  path = cli_errors['truncated data'][2]['file']
  assert last.startswith(f'error: Cannot read idx file {path}: ')


def test_truncated_uncompressed_idx_file_is_named_with_what_is_wrong(tmp_path):
  with gzip.open(os.path.join(IDX_DIR, 't10k-labels-idx1-ubyte.gz')) as f:
    labels = f.read()
  for name in os.listdir(IDX_DIR):
    if name.startswith('train-') or name.startswith('t10k-images'):
      os.symlink(os.path.join(IDX_DIR, name), tmp_path / name)
  path = tmp_path / 't10k-labels-idx1-ubyte'
  path.write_bytes(labels[:-1])
  with pytest.raises(input_pipeline.DatasetUnavailableError) as e:
    input_pipeline.load_split(_config({'data.idx_dir': str(tmp_path)}).data,
                              'test')
  assert str(e.value).startswith(
      f'idx file {path} is corrupt: header says shape (10000,) of uint8 '
      '(10008 bytes in all) but the file has 10007 bytes.')
