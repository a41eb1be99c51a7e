"""The path layer: relative, absolute and URL workdirs.

Every entry point is run with a workdir relative to its working directory
(the README's form); everything a run writes outside orbax's checkpoints is
written to and read back from an in-process memory filesystem, which goes
through the same fsspec calls as a `gs://` bucket.
"""

import os
import subprocess
import sys
import uuid

import numpy as np
import pytest
from PIL import Image

from jacdistill import checkpoint
from jacdistill import export
from jacdistill import explore
from jacdistill import input_pipeline
from jacdistill import paths
from jacdistill import pictures
from jacdistill import pretrained
from jacdistill import report
from jacdistill import workdir_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_DATA = os.path.exists(os.path.join(input_pipeline.DEFAULT_IDX_DIR,
                                        'train-images-idx3-ubyte.gz'))
needs_data = pytest.mark.skipif(
    not HAVE_DATA, reason='needs apt-get install dataset-fashion-mnist')
# The command of the sweep entry upstream_s0 (configs/fashion_grow.py), with
# the smoke variant: launch/sweep.py finds the run finished.
SMOKE = f'--config={ROOT}/configs/fashion_grow.py:smoke'
RUN = 'runs/upstream_s0'


def _memory_root() -> str:
  return f'memory://jacdistill-tests/{uuid.uuid4().hex}'


def _launch(script, *args, cwd):
  out = subprocess.run([sys.executable, os.path.join(ROOT, 'launch', script),
                        *args], cwd=cwd, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def test_urls_and_local_paths():
  assert paths.is_url('gs://b/x') and paths.is_url('memory://x')
  assert not paths.is_url('workdirs/x') and not paths.is_url('/a/gs://b')
  # A bucket stays a bucket; a relative path becomes absolute.
  assert paths.absolute('gs://b/x') == 'gs://b/x'
  assert paths.absolute('workdirs/x') == os.path.join(os.getcwd(), 'workdirs',
                                                      'x')
  assert paths.join('gs://b/x', 'stage_00', 'a.png') == 'gs://b/x/stage_00/a.png'
  assert paths.join('w', 's') == os.path.join('w', 's')
  assert paths.basename('gs://b/run_s1/') == 'run_s1'
  assert paths.basename('workdirs/run_s2/') == 'run_s2'
  assert report.variant_of('gs://b/sweep/upstream_s2') == ('upstream', 2)
  with pytest.raises(OSError, match='nosuch://x'):
    paths.exists('nosuch://x')
  # Orbax keeps checkpoints locally or on the object stores epath knows.
  for ok in ('workdirs/x', '/abs/x', 'gs://b/x', 's3://b/x'):
    paths.check_checkpoint_dir(ok)
  with pytest.raises(ValueError, match='memory://'):
    paths.check_checkpoint_dir('memory://x')


def test_a_workdir_orbax_cannot_use_is_refused_in_one_line(tmp_path):
  url = f'file://{tmp_path}/run'
  out = subprocess.run([sys.executable, os.path.join(ROOT, 'launch/main.py'),
                        SMOKE, f'--workdir={url}'], capture_output=True,
                       text=True, timeout=300)
  assert out.returncode != 0 and 'Traceback' not in out.stderr
  assert out.stderr.strip().splitlines()[-1] == (
      f'error: {url}: orbax cannot keep checkpoints under file:// URLs; use '
      'a local path or a gs://, s3://, az:// URL')
  assert os.listdir(tmp_path) == []


def test_a_missing_bucket_is_an_error_not_created(monkeypatch):
  made = []

  class FakeGcs:
    protocol = ('gs', 'gcs')

    def exists(self, p):
      return p == 'real-bucket'

    def makedirs(self, p, exist_ok):
      made.append(p)

  monkeypatch.setattr(paths, '_filesystem',
                      lambda url: (FakeGcs(), url.split('://', 1)[1]))
  with pytest.raises(FileNotFoundError,
                     match='the bucket gs://typo-bucket does not exist'):
    paths.makedirs('gs://typo-bucket/runs/a')
  assert not made
  paths.makedirs('gs://real-bucket/runs/a')
  assert made == ['real-bucket/runs/a']


def test_replace_never_leaves_a_half_written_file(tmp_path):
  path = str(tmp_path / 'a.json')
  paths.write_json(path, {'a': 1})
  with pytest.raises(TypeError):
    paths.replace(path, 123)  # Neither text nor bytes: the write fails.
  assert paths.read_json(path) == {'a': 1}
  assert os.listdir(tmp_path) == ['a.json']  # No temporary file left.
  root = _memory_root()
  paths.replace(paths.join(root, 'b.bin'), b'\x00\x01')
  paths.write_json(paths.join(root, 'a.json'), {'b': 2})
  paths.makedirs(paths.join(root, 'sub'))
  paths.replace(paths.join(root, 'sub', 'c.txt'), 'c')
  assert paths.listdir(root) == ['a.json', 'b.bin', 'sub']
  assert paths.read_json(paths.join(root, 'a.json')) == {'b': 2}
  assert paths.read_text(paths.join(root, 'sub', 'c.txt')) == 'c'
  assert paths.isdir(paths.join(root, 'sub'))
  with pytest.raises(FileNotFoundError):
    paths.listdir(paths.join(root, 'none'))
  paths.remove(paths.join(root, 'b.bin'))
  assert not paths.exists(paths.join(root, 'b.bin'))


def test_workdir_files_pictures_and_reports_on_a_memory_filesystem():
  root = _memory_root()
  # A workdir's config and summary, as main.py writes and reads them.
  summary_of = {}
  for seed in (0, 1):
    workdir = paths.join(root, f'upstream_s{seed}')
    paths.makedirs(workdir)
    config = {'seed': seed, 'growth': {'start_dim': 2}}
    workdir_files.write_json(paths.join(workdir, 'config.json'), config)
    summary_of[workdir] = {'stages': [
        {'latent_dim': k, 'stage': k - 2, 'test': {
            'mse': 0.04 / k, 'psnr': 10 * np.log10(k / 0.04),
            'swap_acc': 1.0 if k == 2 else 0.5 + seed / 10}}
        for k in (2, 3, 4)]}
    workdir_files.write_summary(workdir, summary_of[workdir])
    assert workdir_files.load_summary(workdir) == summary_of[workdir]
    assert workdir_files.load_config(workdir).to_dict() == config
  assert workdir_files.load_summary(paths.join(root, 'none')) == {'stages': []}
  # A stage picture, bit for bit.
  tile = np.random.default_rng(0).integers(0, 256, (8, 12, 3), np.uint8)
  picture = paths.join(root, 'upstream_s0', 'stage_01', 'traversals.png')
  paths.makedirs(paths.join(root, 'upstream_s0', 'stage_01'))
  pictures.save_png(picture, tile, scale=2)
  with paths.open(picture, 'rb') as f:
    back = np.asarray(Image.open(f).convert('RGB'))
  np.testing.assert_array_equal(back, tile.repeat(2, 0).repeat(2, 1))
  # The growth report from the summaries, its table, plots and strips.
  assert report.read_summaries(list(summary_of)) == summary_of
  data = report.load(list(summary_of))
  text = report.markdown(data, 'upstream')
  out = paths.join(root, 'report')
  paths.makedirs(out)
  paths.replace(paths.join(out, 'report.md'), text)
  report.plot_tradeoff(data, paths.join(out, 'tradeoff.png'))
  report.strips({'upstream': paths.join(root, 'upstream_s0')},
                'traversals.png', paths.join(out, 'traversals.png'))
  assert paths.read_text(paths.join(out, 'report.md')) == text
  for name in ('tradeoff.png', 'traversals.png'):
    with paths.open(paths.join(out, name), 'rb') as f:
      assert Image.open(f).size[0] > 10
  # A training log's first line names the command that export records.
  log = paths.join(root, 'upstream_s0', 'log.txt')
  paths.replace(log, 'python launch/main.py --config=c.py --workdir=w\nmore\n')
  assert export.command_from_log(paths.join(root, 'upstream_s0')) == (
      'python launch/main.py --config=c.py --workdir=w')


def test_shipped_models_load_from_a_memory_filesystem():
  root = _memory_root()
  paths.makedirs(root)
  name = 'fashion_grow_teacher'
  for file in (pretrained.MANIFEST, f'{name}.npz'):
    with open(os.path.join(pretrained.DEFAULT_DIR, file), 'rb') as f:
      paths.replace(paths.join(root, file), f.read())
  *_, local = pretrained.load(name)
  *_, remote = pretrained.load(name, root)
  assert local == remote
  # A changed byte is refused by its hash there too.
  with paths.open(paths.join(root, f'{name}.npz'), 'rb') as f:
    data = bytearray(f.read())
  data[-1] ^= 1
  paths.replace(paths.join(root, f'{name}.npz'), bytes(data))
  with pytest.raises(pretrained.PretrainedError, match='sha256'):
    pretrained.load(name, root)


@pytest.fixture(scope='module')
def relative_run(tmp_path_factory):
  """A smoke growth run trained by `launch/main.py` into a relative workdir;
  (the directory it is relative to, the main.py output)."""
  if not HAVE_DATA:
    pytest.skip('needs apt-get install dataset-fashion-mnist')
  cwd = str(tmp_path_factory.mktemp('relative'))
  out = _launch('main.py', SMOKE, f'--workdir={RUN}', '--config.seed=0',
                cwd=cwd)
  return cwd, out


@needs_data
def test_every_entry_point_takes_a_relative_workdir(relative_run, monkeypatch):
  cwd, out = relative_run
  summary = workdir_files.load_summary(os.path.join(cwd, RUN))
  assert [s['stage'] for s in summary['stages']] == [0, 1]
  assert os.path.join(cwd, RUN, 'summary.json') in out.stderr
  # The sweep finds the run finished (same command) and changes nothing.
  _launch('sweep.py', SMOKE, '--root=runs', '--only=upstream_s0', cwd=cwd)
  assert workdir_files.load_summary(os.path.join(cwd, RUN)) == summary
  # Its log starts with the command, which export records.
  assert export.command_from_log(os.path.join(cwd, RUN)) == (
      f'python launch/main.py {SMOKE} --workdir={RUN} --config.seed=0')
  _launch('report.py', '--out=report', RUN, cwd=cwd)
  assert os.path.getsize(os.path.join(cwd, 'report', 'tradeoff.png')) > 1000
  _launch('manipulate.py', f'--workdir={RUN}', '--stage=1', '--test_index=0',
          '--sweep=dim2', '--out=edit.png', cwd=cwd)
  assert Image.open(os.path.join(cwd, 'edit.png')).size[0] > 64
  _launch('export.py', f'--workdir={RUN}', '--stage=1', '--name=smoke_k3',
          '--directory=shipped', cwd=cwd)
  entry = pretrained.entry('smoke_k3', os.path.join(cwd, 'shipped'))
  assert entry['fingerprint'] == summary['stages'][1]['fingerprint']
  assert entry['command'] == export.command_from_log(os.path.join(cwd, RUN))
  # The classifier directory of a run config, relative: trained, then
  # restored from it.
  clf = ('--config.eval.classifier_dir=clf',)
  trained = _launch('classifier.py', SMOKE, *clf, cwd=cwd).stdout
  restored = _launch('classifier.py', SMOKE, *clf, cwd=cwd).stdout
  assert trained.splitlines()[-1] == restored.splitlines()[-1]
  assert restored.splitlines()[-1].startswith('test accuracy')
  monkeypatch.chdir(cwd)
  explorer = explore.Explorer.from_workdir(RUN)
  assert len(explorer.stages) == 2


@needs_data
def test_a_stage_exports_to_a_memory_filesystem(relative_run, monkeypatch):
  cwd, _ = relative_run
  monkeypatch.chdir(cwd)
  root = _memory_root()
  entry = export.export_stage(RUN, 'smoke_k3', 1, directory=root,
                              command='python launch/main.py', commit='x')
  assert entry['workdir'] == os.path.join(cwd, RUN)
  _, _, variables, loaded = pretrained.load('smoke_k3', root)
  assert loaded['sha256'] == entry['sha256']
  assert checkpoint.fingerprint(variables) == workdir_files.load_summary(
      RUN)['stages'][1]['fingerprint']
