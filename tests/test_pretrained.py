"""Shipped models: export, load with its checks, and the models in pretrained/.

Tiny smoke-config runs in a temporary directory exercise export and load;
`test_shipped_models_reproduce_their_check` reloads every model committed in
pretrained/ and reproduces the MSE (or the classifier's accuracy) its
manifest records on the first 1,000 test images.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from configs import classifier as classifier_config
from configs import fashion_attr
from configs import fashion_grow
from jacdistill import attr_chain
from jacdistill import chain
from jacdistill import checkpoint
from jacdistill import classifier_cache
from jacdistill import export
from jacdistill import input_pipeline
from jacdistill import pretrained
from jacdistill import stages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMAND = 'python launch/main.py --config=configs/fashion_grow.py:smoke'
HAVE_DATA = os.path.exists(os.path.join(input_pipeline.DEFAULT_IDX_DIR,
                                        't10k-images-idx3-ubyte.gz'))


def _attr_smoke_config():
  config = fashion_attr.get_config('smoke')
  config.stage_order = ('teacher', 'student8')  # Two stages are enough here.
  return config


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """(growth workdir, attribute workdir) of finished smoke runs."""
  root = tmp_path_factory.mktemp('runs')
  grow, attr = str(root / 'grow'), str(root / 'attr')
  chain.train_and_evaluate(fashion_grow.get_config('smoke'), grow)
  attr_chain.train_and_evaluate(_attr_smoke_config(), attr)
  return grow, attr


@pytest.fixture
def shipped(runs, tmp_path):
  """A pretrained directory with the growth run's stage 1 exported."""
  directory = str(tmp_path / 'pretrained')
  entry = export.export_stage(runs[0], 'grow_k3', 1, directory,
                              command=COMMAND, chain_name='grow')
  return directory, entry


def test_export_writes_a_flat_npz_and_a_full_entry(runs, shipped):
  directory, entry = shipped
  path = os.path.join(directory, 'grow_k3.npz')
  assert entry['file'] == 'grow_k3.npz'
  assert entry['bytes'] == os.path.getsize(path)
  assert entry['sha256'] == pretrained.file_sha256(path)
  assert (entry['kind'], entry['stage'], entry['chain'], entry['dataset'],
          entry['code_size']) == ('growth', 1, 'grow', 'fashion_mnist', 3)
  with open(os.path.join(runs[0], 'config.json')) as f:
    assert entry['config'] == json.load(f)
  with open(os.path.join(runs[0], 'summary.json')) as f:
    summary = json.load(f)['stages'][1]
  assert entry['test'] == summary['test']
  assert entry['fingerprint'] == summary['fingerprint']
  assert entry['command'] == COMMAND
  assert len(entry['commit']) == 40 or entry['commit'] == 'unknown'
  assert entry['check']['images'] == 512  # The smoke split's 512 images.
  with np.load(path, allow_pickle=False) as npz:
    keys = set(npz.files)
  assert {'params/enc_0/kernel', 'params/dec_out/bias'} <= keys
  manifest = pretrained.read_manifest(directory)
  assert manifest['format'] == pretrained.FORMAT
  assert manifest['models']['grow_k3'] == entry


def test_load_returns_the_stage_and_reproduces_its_check(runs, shipped):
  directory, entry = shipped
  config, model, variables, loaded = pretrained.load('grow_k3', directory)
  assert loaded == entry
  _, ref_model, ref_vars = chain.load_stage(runs[0], 1)
  assert model == ref_model
  assert checkpoint.fingerprint(variables) == checkpoint.fingerprint(ref_vars)
  images = pretrained.test_images('growth', config, export.CHECK_IMAGES)
  assert abs(export.test_mse(model, variables, images) -
             entry['check']['mse']) < 1e-6
  # The entry's test MSE is summary.json's, over the same (smoke) split.
  assert abs(entry['check']['mse'] - entry['test']['mse']) < 1e-6


def test_an_attribute_stage_round_trips(runs, tmp_path):
  directory = str(tmp_path)
  for stage in ('teacher', 'student8'):
    export.export_stage(runs[1], f'attr_{stage}', stage, directory,
                        command='python launch/main.py x',
                        chain_name='attr')
  assert pretrained.chain_members('attr_student8', directory) == [
      'attr_teacher', 'attr_student8']
  config, model, variables, entry = pretrained.load('attr_student8',
                                                    directory)
  assert entry['kind'] == 'attribute' and entry['stage'] == 'student8'
  assert 'batch_stats' in variables
  # Fader MSE is in [0, 1] units: [-1, 1] pixels' MSE / 4.
  images = pretrained.test_images('attribute', config)
  assert images.shape[1:] == (32, 32, 1)
  assert abs(export.test_mse(model, variables, images) -
             entry['test']['mse']) < 1e-5


def test_a_tampered_file_is_refused_by_its_hash(shipped):
  directory, _ = shipped
  path = os.path.join(directory, 'grow_k3.npz')
  data = bytearray(open(path, 'rb').read())
  data[len(data) // 2] ^= 1
  open(path, 'wb').write(bytes(data))
  with pytest.raises(pretrained.PretrainedError) as e:
    pretrained.load('grow_k3', directory)
  message = str(e.value)
  assert '\n' not in message and path in message and 'sha256' in message
  assert 'git checkout' in message


def test_a_missing_file_or_name_is_refused(shipped):
  directory, _ = shipped
  with pytest.raises(pretrained.PretrainedError, match='no model .nope.'):
    pretrained.load('nope', directory)
  os.remove(os.path.join(directory, 'grow_k3.npz'))
  with pytest.raises(pretrained.PretrainedError, match='grow_k3.npz is '
                     'missing'):
    pretrained.load('grow_k3', directory)


def test_wrong_shapes_are_refused_after_the_hash(shipped):
  directory, _ = shipped
  path = os.path.join(directory, 'grow_k3.npz')
  with np.load(path, allow_pickle=False) as npz:
    flat = {k: npz[k] for k in npz.files}
  key = sorted(k for k in flat if k.endswith('kernel'))[0]
  flat[key] = np.zeros((flat[key].shape[0] + 1, *flat[key].shape[1:]),
                       flat[key].dtype)
  np.savez(path, **flat)
  # The manifest is made to agree with the file: only the shapes are wrong.
  manifest = pretrained.read_manifest(directory)
  manifest['models']['grow_k3']['sha256'] = pretrained.file_sha256(path)
  with open(os.path.join(directory, pretrained.MANIFEST), 'w') as f:
    json.dump(manifest, f)
  with pytest.raises(pretrained.PretrainedError) as e:
    pretrained.load('grow_k3', directory)
  assert key in str(e.value) and 'does not fit' in str(e.value)
  assert '\n' not in str(e.value)


def test_export_needs_a_command_and_a_finished_stage(runs, tmp_path):
  grow = runs[0]
  with pytest.raises(pretrained.PretrainedError, match='--command'):
    export.export_stage(grow, 'x', 0, str(tmp_path))
  with pytest.raises(pretrained.PretrainedError, match='plain file name'):
    export.export_stage(grow, '../x', 0, str(tmp_path), command=COMMAND)
  with pytest.raises(stages.ConfigError):
    export.export_stage(grow, 'x', 7, str(tmp_path), command=COMMAND)


def test_the_command_is_read_from_the_log(tmp_path):
  log = tmp_path / 'log.txt'
  assert export.command_from_log(str(tmp_path)) is None
  log.write_text('I1202 03:32:45 sweep.py:65] start a: /work/x/launch/main.py '
                 '--config=configs/fashion_grow.py:quick --config.seed=0\n'
                 'later lines\n')
  assert export.command_from_log(str(tmp_path)) == (
      'python launch/main.py --config=configs/fashion_grow.py:quick '
      '--config.seed=0')
  log.write_text('I1202 main.py:75] workdir /w: summary.json ...\n')
  assert export.command_from_log(str(tmp_path)) is None


def test_export_cli_errors_are_one_line(runs, tmp_path):
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'launch', 'export.py'),
       f'--workdir={runs[0]}', '--name=x', f'--directory={tmp_path}'],
      capture_output=True, text=True, timeout=120)
  assert out.returncode != 0
  lines = out.stderr.strip().splitlines()
  assert lines[-1].startswith('error: ') and 'log.txt' in lines[-1]
  assert 'Traceback' not in out.stderr


@pytest.mark.skipif(not HAVE_DATA, reason='Fashion-MNIST is not installed '
                    '(apt-get install dataset-fashion-mnist)')
def test_shipped_models_reproduce_their_check():
  manifest = pretrained.read_manifest()
  names = sorted(manifest['models'])
  assert names, 'pretrained/MANIFEST.json lists no model'
  total = sum(e['bytes'] for e in manifest['models'].values())
  assert total <= 20e6  # Everything shipped in git stays small.
  for name in names:
    entry = manifest['models'][name]
    if entry['kind'] == 'classifier':
      handle, _ = pretrained.load_classifier(name)
      split = input_pipeline.load_split(
          pretrained.classifier_data(entry['dataset']), 'test')
      first = input_pipeline.Split(images=split.images[:1000],
                                   labels=split.labels[:1000])
      assert export.classifier_accuracy(handle, first) == pytest.approx(
          entry['check']['accuracy'], abs=1e-9), name
      continue
    config, model, variables, _ = pretrained.load(name)
    images = pretrained.test_images(entry['kind'], config, 1000)
    mse = export.test_mse(model, variables, images)
    assert abs(mse - entry['check']['mse']) < 1e-4, (name, mse)
    assert entry['check']['images'] == 1000


def test_a_shipped_classifier_installs_where_the_runs_look(tmp_path):
  name = 'fashion_classifier'
  if name not in pretrained.read_manifest()['models']:
    pytest.skip('no shipped classifier')
  target = str(tmp_path / 'clf')
  assert pretrained.install_classifier(name, target) == target
  data = pretrained.classifier_data('fashion_mnist')
  trained = []
  handle = classifier_cache.load_or_train_classifier(
      data, classifier_config.get_config(), target,
      log_fn=trained.append)
  assert trained and trained[0].startswith('Restored')
  shipped, _ = pretrained.load_classifier(name)
  assert (checkpoint.fingerprint(handle.variables) ==
          checkpoint.fingerprint(shipped.variables))
  with pytest.raises(pretrained.PretrainedError, match='already holds'):
    pretrained.install_classifier(name, target)
  shutil.rmtree(target)
