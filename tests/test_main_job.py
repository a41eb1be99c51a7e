"""End to end: the growth chain on the real Fashion-MNIST files (smoke config),
its outputs, interruption and resume to the same fingerprints, and the CLI's
one-line errors."""

import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from configs import fashion_grow
from jacdistill import chain
from jacdistill import checkpoint
from jacdistill import input_pipeline
from jacdistill import pictures
from jacdistill import stages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_DATA = os.path.exists(os.path.join(input_pipeline.DEFAULT_IDX_DIR,
                                        'train-images-idx3-ubyte.gz'))
pytestmark = pytest.mark.skipif(
    not HAVE_DATA, reason='needs apt-get install dataset-fashion-mnist')


@pytest.fixture(scope='module')
def straight_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('straight'))
  summary = chain.train_and_evaluate(fashion_grow.get_config('smoke'), workdir)
  return workdir, summary


def _fingerprints(summary):
  return [s['fingerprint'] for s in summary['stages']]


def test_outputs_of_a_two_stage_run(straight_run):
  workdir, summary = straight_run
  with open(os.path.join(workdir, 'summary.json')) as f:
    on_disk = json.load(f)
  assert on_disk['stages'] == summary['stages']
  assert [s['latent_dim'] for s in summary['stages']] == [2, 3]
  assert [s['teacher_stage'] for s in summary['stages']] == [None, 0]
  for s in summary['stages']:
    assert s['steps'] == 24 and s['wall_time_s'] > 0
    assert len(s['fingerprint']) == 64
    # No classifier in the smoke run; the code scored against the class (one
    # factor: no DCI disentanglement or modularity).
    assert set(s['test']) == {'mse', 'psnr', 'mig', 'sap', 'dci_completeness',
                              'dci_informativeness', 'gaussian_tc'}
    for name in ('mig', 'sap', 'dci_completeness', 'dci_informativeness'):
      assert 0 <= s['test'][name] <= 1
    assert s['eval']['disentanglement']['seed'] == 0
    assert 0 < s['test']['mse'] < 0.2
    assert s['test']['psnr'] == pytest.approx(s['test']['psnr'])  # Not NaN.
    assert {'rec', 'total', 'grad_norm', 'param_norm'} <= set(s['train_losses'])
  assert {'lat', 'jac', 'xcov'} <= set(summary['stages'][1]['train_losses'])
  # More dims, better reconstruction, even after 24 steps.
  assert (summary['stages'][1]['test']['mse'] <
          summary['stages'][0]['test']['mse'])
  for index, k in ((0, 2), (1, 3)):
    stage_dir = os.path.join(workdir, f'stage_{index:02d}')
    rec = Image.open(os.path.join(stage_dir, 'reconstructions.png'))
    trav = Image.open(os.path.join(stage_dir, 'traversals.png'))
    # Two labelled rows (originals, reconstructions) of 16; k labelled rows
    # (dim j, the first two the teacher's) of 9 traversal steps, p2 to p98.
    tiles = lambda r, c: np.zeros((r, c, 28, 28, 1))
    want_rec = pictures.labelled_grid(
        tiles(2, 16), row_labels=['test image', 'reconstruction'])
    want_trav = pictures.labelled_grid(
        tiles(k, 9), column_titles=chain.traversal_titles(9),
        row_labels=[f'dim {j}' + (' (teacher)' if j < 2 else '')
                    for j in range(k)])
    assert rec.size == want_rec.shape[1::-1]
    assert trav.size == want_trav.shape[1::-1]
    assert rec.height > 2 * 28 * 2  # Tiles enlarged to a readable size.
    assert glob.glob(os.path.join(stage_dir, 'events.out.tfevents.*'))
    assert os.listdir(os.path.join(stage_dir, 'checkpoints'))
  tags = _event_tags(os.path.join(workdir, 'stage_01'))
  assert {'rec', 'lat', 'jac', 'xcov', 'total', 'grad_norm', 'learning_rate',
          'test/mse', 'reconstructions', 'traversals'} <= tags


def test_load_stage_gives_the_finished_variables(straight_run):
  workdir, summary = straight_run
  for index in (0, -1):
    config, model, variables = chain.load_stage(workdir, index)
    entry = summary['stages'][index]
    assert checkpoint.fingerprint(variables) == entry['fingerprint']
    assert model.latent_dim == entry['latent_dim']
  # 'first' code normalisation: the teacher has it, the student not.
  assert chain.load_stage(workdir, 0)[1].code_norm
  assert not chain.load_stage(workdir, 1)[1].code_norm
  with pytest.raises(stages.ConfigError, match='stage 5 is not in'):
    chain.load_stage(workdir, 5)


def _event_tags(stage_dir):
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(stage_dir, size_guidance={
      event_accumulator.IMAGES: 0, event_accumulator.TENSORS: 0})
  acc.Reload()
  tags = acc.Tags()
  return set(tags.get('tensors', [])) | set(tags.get('scalars', [])) | set(
      tags.get('images', []))


def test_interrupt_and_resume_gives_the_same_parameters(straight_run, tmp_path):
  _, straight = straight_run
  workdir = str(tmp_path / 'interrupted')
  config = fashion_grow.get_config('smoke')
  calls = {'n': 0}

  def stop_in_stage_one():
    calls['n'] += 1
    return calls['n'] == 24 + 13  # Step 13 of stage 1.

  with pytest.raises(stages.Preempted, match='step 13 of stage 1'):
    chain.train_and_evaluate(config, workdir, stages.Hooks(
        should_stop=stop_in_stage_one))
  stage0_ckpts = sorted(os.listdir(os.path.join(workdir, 'stage_00',
                                                'checkpoints')))
  stage0_mtime = os.path.getmtime(os.path.join(workdir, 'stage_00',
                                               'checkpoints', stage0_ckpts[-1]))
  resumed = chain.train_and_evaluate(config, workdir)
  assert _fingerprints(resumed) == _fingerprints(straight)
  # The finished stage was neither retrained nor re-saved.
  assert sorted(os.listdir(os.path.join(workdir, 'stage_00', 'checkpoints'))
                ) == stage0_ckpts
  assert os.path.getmtime(os.path.join(
      workdir, 'stage_00', 'checkpoints', stage0_ckpts[-1])) == stage0_mtime
  np.testing.assert_allclose(resumed['stages'][1]['test']['mse'],
                             straight['stages'][1]['test']['mse'], rtol=0)


def test_workdir_of_another_config_is_refused(straight_run):
  workdir, _ = straight_run
  config = fashion_grow.get_config('smoke')
  config.loss.jac = 1.0
  with pytest.raises(stages.ConfigError, match='loss.jac'):
    chain.train_and_evaluate(config, workdir)


def _copy(straight_run, tmp_path):
  """A copy of the straight run's workdir that a test may change."""
  workdir = str(tmp_path / 'copy')
  shutil.copytree(straight_run[0], workdir)
  return workdir


def _checkpoint_listing(workdir):
  return {index: sorted(os.listdir(os.path.join(
      workdir, f'stage_{index:02d}', 'checkpoints'))) for index in (0, 1)}


def test_lowering_end_dim_drops_the_later_entries(straight_run, tmp_path):
  _, straight = straight_run
  workdir = _copy(straight_run, tmp_path)
  listing = _checkpoint_listing(workdir)
  config = fashion_grow.get_config('smoke')
  config.growth.end_dim = 2
  lowered = chain.train_and_evaluate(config, workdir)
  assert lowered['stages'] == straight['stages'][:1]
  with open(os.path.join(workdir, 'summary.json')) as f:
    assert json.load(f)['stages'] == straight['stages'][:1]
  # Raised again, stage 1 is restored and scored, not retrained.
  config.growth.end_dim = 3
  raised = chain.train_and_evaluate(config, workdir)
  assert _fingerprints(raised) == _fingerprints(straight)
  assert raised['stages'][1]['test'] == straight['stages'][1]['test']
  assert _checkpoint_listing(workdir) == listing


def test_an_entry_scored_under_other_settings_is_scored_again(straight_run,
                                                              tmp_path):
  _, straight = straight_run
  workdir = _copy(straight_run, tmp_path)
  listing = _checkpoint_listing(workdir)
  path = os.path.join(workdir, 'summary.json')
  with open(path) as f:
    on_disk = json.load(f)
  # As if stage 1 had been scored on another test split with other results.
  on_disk['stages'][1]['eval'] = {'splits': {'test': 7}}
  on_disk['stages'][1]['test'] = {'mse': 1.0, 'psnr': 0.0}
  with open(path, 'w') as f:
    json.dump(on_disk, f)
  rescored = chain.train_and_evaluate(fashion_grow.get_config('smoke'),
                                      workdir)
  assert rescored['stages'][1]['eval'] == straight['stages'][1]['eval']
  assert rescored['stages'][1]['test'] == straight['stages'][1]['test']
  assert rescored['stages'][0] == straight['stages'][0]
  assert _checkpoint_listing(workdir) == listing


def test_a_stage_trained_under_another_teacher_is_refused(straight_run,
                                                          tmp_path):
  workdir = _copy(straight_run, tmp_path)
  # Stage 1's checkpoints say they were trained under another teacher, as
  # after stage 0 was retrained differently.
  for record in glob.glob(os.path.join(workdir, 'stage_01', 'checkpoints',
                                       '*', 'record', 'metadata')):
    with open(record) as f:
      data = json.load(f)
    data['teacher_fingerprint'] = 'f' * 64
    with open(record, 'w') as f:
      json.dump(data, f)
  with pytest.raises(stages.ConfigError) as e:
    chain.train_and_evaluate(fashion_grow.get_config('smoke'), workdir)
  message = str(e.value)
  assert '\n' not in message
  assert 'stage 1 (k=3)' in message and 'another teacher' in message
  assert 'ffffffffffff' in message


def _main(*args, cwd=ROOT):
  return subprocess.run([sys.executable, 'launch/main.py', *args], cwd=cwd,
                        capture_output=True, text=True, timeout=300)


def test_cli_reports_missing_data_in_one_line(tmp_path):
  out = _main('--config=configs/fashion_grow.py:smoke',
              f'--workdir={tmp_path}/w', f'--config.data.idx_dir={tmp_path}/none')
  assert out.returncode != 0
  assert 'Traceback' not in out.stderr
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith('error:') and f'{tmp_path}/none' in last
  assert 'dataset-fashion-mnist' in last


def test_cli_refuses_bad_overrides_and_configs(tmp_path):
  out = _main('--config=configs/fashion_grow.py:smoke',
              f'--workdir={tmp_path}/w', '--config.growth.end_dimm=4')
  assert out.returncode != 0 and 'end_dimm' in out.stderr
  out = _main('--config=configs/fashion_grow.py:smoke',
              f'--workdir={tmp_path}/w', '--config.growth.end_dim=1')
  assert out.returncode != 0 and 'Traceback' not in out.stderr
  assert 'end_dim=1' in out.stderr.strip().splitlines()[-1]
  assert not os.path.exists(f'{tmp_path}/w/stage_00')
