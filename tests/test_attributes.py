"""Flip accuracy on hand-built decoders, and a smoke run of the attribute chain.

The celeb_a pipeline under tfds mock data is tested in test_input_pipeline.py.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import fashion_attr
from jacdistill import attr_chain
from jacdistill import attr_config
from jacdistill import attributes
from jacdistill import classifier
from jacdistill import input_pipeline
from jacdistill import models
from jacdistill import stages
from jacdistill import workdir_files

A = 4


def _one_hot_codes(labels, rest=3):
  """Codes [y ; z]: y one-hot +-1 of `labels`, z arbitrary."""
  y = input_pipeline.one_hot_attributes(np.asarray(labels), A)
  z = np.arange(len(labels) * rest, dtype=np.float32).reshape(-1, rest)
  return np.concatenate([y, z], axis=1)


def _identity(codes):
  return np.asarray(codes)  # The "image" is the code itself.


def _threshold(images):
  return np.asarray(images)[:, :A] > 0  # Attribute present iff its score > 0.


def _argmax(images):
  cls = np.argmax(np.asarray(images)[:, :A], axis=1)
  return cls[:, None] == np.arange(A)


def test_edit_codes_sets_one_score_and_keeps_one_hot():
  codes = _one_hot_codes([2, 0])
  plain = attributes.edit_codes(codes, A, 1, 1.5)
  np.testing.assert_array_equal(plain[:, 1], [1.5, 1.5])
  np.testing.assert_array_equal(plain[:, [0, 2, 3, 4, 5, 6]],
                                codes[:, [0, 2, 3, 4, 5, 6]])
  hot = attributes.edit_codes(codes, A, 1, 1.5, one_hot=True)
  np.testing.assert_array_equal(hot[:, :A], [[-1, 1.5, -1.5, -1],
                                             [-1.5, 1.5, -1, -1]])
  np.testing.assert_array_equal(hot[:, A:], codes[:, A:])
  off = attributes.edit_codes(codes, A, 2, -1.0, one_hot=True)
  np.testing.assert_array_equal(off[:, :A], [[-1, -1, -1, -1], [1, -1, -1, -1]])
  with pytest.raises(ValueError, match='attribute=4'):
    attributes.edit_codes(codes, A, 4, 1.0)


def test_attribute_levels_are_medians_per_label():
  labels = np.array([[1, -1], [1, -1], [-1, 1], [-1, -1]], np.float32)
  codes = np.array([[2.0, -3.0, 9.0], [4.0, -1.0, 9.0], [-1.0, 5.0, 9.0],
                    [-2.0, -2.0, 9.0]], np.float32)
  low, high = attributes.attribute_levels(codes, labels)
  np.testing.assert_array_equal(low, [-1.5, -2.0])  # Medians of label -1.
  np.testing.assert_array_equal(high, [3.0, 5.0])  # Of label +1.
  # An attribute no image carries takes +-strength.
  low, high = attributes.attribute_levels(codes[:2], labels[:2], strength=0.5)
  np.testing.assert_array_equal(high, [3.0, 0.5])
  np.testing.assert_array_equal(low, [-0.5, -2.0])


def test_flip_accuracy_at_levels_edits_to_each_attributes_own_level():
  codes = _one_hot_codes([0, 1])
  seen = []

  def decode(c):
    seen.append(np.asarray(c)[:, :A].copy())
    return c

  low = np.array([-3.0, -2.0, -1.0, -0.5], np.float32)
  high = np.array([0.5, 1.0, 2.0, 3.0], np.float32)
  out = attributes.flip_accuracy(decode, _argmax, codes, A, one_hot=True,
                                 levels=(low, high))
  # Attribute 2 switched on: y_2 = high[2]; the active class switched off
  # to its own low level (class 0 -> -3, class 1 -> -2).
  np.testing.assert_array_equal(seen[4], [[-3, -1, 2, -1], [-1, -2, 2, -1]])
  # Attribute 1 switched off: y_1 = low[1], nothing else changes.
  np.testing.assert_array_equal(seen[3], [[1, -2, -1, -1], [-1, -2, -1, -1]])
  assert out['flip_acc_pos'] == out['flip_acc_neg'] == [1.0] * A
  with pytest.raises(ValueError, match='levels must be two'):
    attributes.flip_accuracy(decode, _argmax, codes, A, levels=(low[:2], high))


def test_flip_accuracy_is_one_when_the_decoder_obeys_the_scores():
  codes = _one_hot_codes([0, 1, 2, 3, 1])
  out = attributes.flip_accuracy(_identity, _threshold, codes, A, batch_size=2)
  assert out == {'flip_acc_pos': [1.0] * A, 'flip_acc_neg': [1.0] * A,
                 'flip_acc_pos_mean': 1.0, 'flip_acc_neg_mean': 1.0,
                 'flip_acc': 1.0}


def test_flip_accuracy_is_zero_or_one_when_the_decoder_ignores_the_scores():
  codes = _one_hot_codes([0, 1, 2, 3])
  always_2 = lambda c: np.tile(np.array([[-1, -1, 1, -1]], np.float32),
                               (len(c), 1))
  out = attributes.flip_accuracy(always_2, _argmax, codes, A, one_hot=True)
  assert out['flip_acc_pos'] == [0.0, 0.0, 1.0, 0.0]
  assert out['flip_acc_neg'] == [1.0, 1.0, 0.0, 1.0]
  assert out['flip_acc'] == 0.5


def test_one_hot_protocol_turns_the_previous_class_off():
  # Without turning the active class off, a +1 edit ties with it and argmax
  # takes the lower index: class 3 never wins against an active class 0.
  codes = _one_hot_codes([0, 0])
  hot = attributes.flip_accuracy(_identity, _argmax, codes, A, one_hot=True)
  plain = attributes.flip_accuracy(_identity, _argmax, codes, A)
  assert hot['flip_acc_pos'] == [1.0] * A
  assert plain['flip_acc_pos'] == [1.0, 0.0, 0.0, 0.0]


def test_class_predictor_crops_and_rescales():
  seen = {}

  def logits(x01):
    seen['x'] = np.asarray(x01)
    return jnp.tile(jnp.arange(3.0)[None], (x01.shape[0], 1))

  predict = attributes.class_predictor(logits, '-11', image_size=2)
  images = -np.ones((1, 4, 4, 1), np.float32)
  images[0, 1:3, 1:3] = 1.0
  np.testing.assert_array_equal(predict(images), [[False, False, True]])
  np.testing.assert_array_equal(seen['x'], np.ones((1, 2, 2, 1)))


HAVE_DATA = os.path.exists(os.path.join(input_pipeline.DEFAULT_IDX_DIR,
                                        'train-images-idx3-ubyte.gz'))


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
  if not HAVE_DATA:
    pytest.skip('needs apt-get install dataset-fashion-mnist')
  # The student grows from, and learns from, the teacher's cycle stage.
  config = fashion_attr.get_config('smoke,cycle')
  config.stage_order = ('teacher', 'teacher_cycle', 'student8')
  # An untrained classifier: the test checks the plumbing, not the scores.
  clf = classifier.Classifier(num_classes=10, widths=(4,), hidden=8)
  variables = clf.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)),
                       train=False)
  hooks = stages.Hooks(classifier=classifier.ClassifierHandle(
      clf, variables, 0.0))
  workdir = str(tmp_path_factory.mktemp('smoke'))
  summary = attr_chain.train_and_evaluate(config, workdir, hooks)
  return config, workdir, hooks, summary


def test_smoke_chain_teacher_and_one_student(smoke_run):
  config, workdir, hooks, summary = smoke_run
  with open(os.path.join(workdir, 'summary.json')) as f:
    on_disk = json.load(f)
  assert [s['name'] for s in on_disk['stages']] == ['teacher',
                                                    'teacher_cycle', 'student8']
  teacher, _, student = on_disk['stages']
  assert student['teacher'] == student['init'] == 'teacher_cycle'
  assert student['code_size'] == 10 + 4 * 4
  for s in on_disk['stages']:
    assert {'test', 'fingerprint', 'train_losses'} <= set(s)
    test = s['test']
    # One value per metric; the code scored against the 10 attributes (the
    # total correlation only where finite).
    assert set(test) - {'gaussian_tc'} == {
        'psnr', 'mse', 'flip_acc', 'flip_acc_pos', 'flip_acc_neg',
        'flip_acc_pos_mean', 'flip_acc_neg_mean', 'mig', 'sap',
        'dci_disentanglement', 'dci_completeness', 'dci_informativeness',
        'modularity', 'rel_flip_acc', 'rel_flip_acc_pos', 'rel_flip_acc_neg',
        'rel_flip_acc_pos_mean', 'rel_flip_acc_neg_mean', 'levels'}
    assert len(test['levels']['low']) == len(test['levels']['high']) == 10
    assert test['rel_flip_acc_neg_mean'] == pytest.approx(
        np.mean(test['rel_flip_acc_neg']))
    for name in ('mig', 'sap', 'dci_disentanglement', 'modularity'):
      assert 0.0 <= test[name] <= 1.0
    assert len(test['flip_acc_pos']) == len(test['flip_acc_neg']) == 10
    assert test['flip_acc_pos_mean'] == pytest.approx(
        np.mean(test['flip_acc_pos']))
    assert 0.0 <= test['flip_acc'] <= 1.0 and np.isfinite(test['psnr'])
    assert test['psnr'] == pytest.approx(
        10 * np.log10(1 / test['mse']), abs=3)  # Mean of per-image PSNRs.
    assert os.path.exists(os.path.join(workdir, s['name'], 'edits.png'))
  assert 'attr' in teacher['train_losses'] and 'jac' in student['train_losses']
  # A second run finds every stage done, retrains nothing and adds no file
  # (no empty TensorBoard events file either).
  files = sorted(os.path.relpath(os.path.join(d, f), workdir)
                 for d, _, names in os.walk(workdir) for f in names)
  again = attr_chain.train_and_evaluate(config, workdir, hooks)
  assert ([s['fingerprint'] for s in again['stages']] ==
          [s['fingerprint'] for s in summary['stages']])
  assert sorted(os.path.relpath(os.path.join(d, f), workdir)
                for d, _, names in os.walk(workdir) for f in names) == files


def test_cycle_stage_trains_only_the_decoder(smoke_run):
  _, workdir, _, summary = smoke_run
  cycle = summary['stages'][1]
  assert (cycle['init'], cycle['teacher'], cycle['trainable']) == (
      'teacher', None, 'decoder')
  assert all(np.isfinite(cycle['train_losses'][k])
             for k in ('cycle_attr', 'cycle_z'))
  _, _, before = attr_chain.load_stage(workdir, 'teacher')
  _, _, after = attr_chain.load_stage(workdir, 'teacher_cycle')
  for collection in ('params', 'batch_stats'):
    is_dec = jax.tree.leaves(models.decoder_mask(before[collection]))
    pairs = list(zip(is_dec, jax.tree.leaves(before[collection]),
                     jax.tree.leaves(after[collection])))
    assert all(np.array_equal(b, a) for d, b, a in pairs if not d)
    assert any(not np.array_equal(b, a) for d, b, a in pairs if d)


def test_a_workdir_older_than_the_stage_options_still_resumes(tmp_path):
  config = fashion_attr.get_config('smoke')
  # Configs of that age had no baseline as long as a student's lineage and
  # no Fader stage (a chain may append one: tests/test_fader.py).
  config.stages.baseline32.epochs = config.stages.baseline32.steps = 0
  old = json.loads(config.to_json())
  old['stage_order'].remove('fader32')
  del old['stages']['fader32']
  for stage in old['stages'].values():
    for field, parent in (('trainable', stage), ('epochs', stage),
                          ('steps', stage), ('kind', stage),
                          ('cycle_attr', stage['loss']),
                          ('cycle_z', stage['loss'])):
      del parent[field]
  with open(tmp_path / 'config.json', 'w') as f:
    json.dump(old, f)
  workdir_files.check_workdir(config, str(tmp_path))
  # A new field at another value than the old runs had is a change.
  config.stages.teacher.epochs = 3
  with pytest.raises(stages.ConfigError, match='stages.teacher.epochs'):
    workdir_files.check_workdir(config, str(tmp_path))


def test_config_errors_name_the_field():
  config = fashion_attr.get_config('smoke')
  config.stages.student8.init = 'student32'
  with pytest.raises(stages.ConfigError, match='stages.student8.init'):
    attr_config.validate(config)


def test_manipulate_writes_a_grid_of_distinct_edits(smoke_run, tmp_path,
                                                    monkeypatch):
  from launch import manipulate  # pylint: disable=g-import-not-at-top
  _, workdir, _, _ = smoke_run
  path = str(tmp_path / 'in.png')
  rgb = np.random.default_rng(0).integers(0, 256, (40, 60, 3), np.uint8)
  Image.fromarray(rgb).save(path)
  # Fashion-MNIST's attributes are its classes: every edit goes through
  # edit_codes' one-hot rule, as the flip accuracy's do.
  edit_codes, one_hot = attributes.edit_codes, []
  monkeypatch.setattr(attributes, 'edit_codes', lambda *a, **k: (
      one_hot.append(k['one_hot']), edit_codes(*a, **k))[1])
  grid = manipulate.manipulate(workdir, 'student8', [path],
                               ['sandal=1.5', 'bag=-1'])
  assert one_hot == [True] * 4  # Two single edits, then both together.
  # Columns: input, reconstruction, two single edits, both together.
  assert grid.shape == (1 * 33 + 1, 5 * 33 + 1, 3)
  tiles = [grid[1:33, 1 + 33 * j:33 * (j + 1)] for j in range(5)]
  for edited in tiles[2:]:
    assert np.abs(edited.astype(int) - tiles[1]).max() > 0
  # The README's form: a workdir relative to the current directory reads
  # the same checkpoints (orbax itself takes absolute paths only).
  monkeypatch.chdir(os.path.dirname(workdir))
  relative = manipulate.manipulate(os.path.basename(workdir), 'student8',
                                   [path], ['sandal=1.5', 'bag=-1'])
  np.testing.assert_array_equal(relative, grid)
  with pytest.raises(manipulate.ManipulateError, match="unknown attribute 'x'"):
    manipulate.manipulate(workdir, 'teacher', [path], ['x=1'])
  # 1e39 is a finite Python float but float32's infinity.
  with pytest.raises(manipulate.ManipulateError, match='not a finite float32'):
    manipulate.manipulate(workdir, 'teacher', [path], ['sandal=1e39'])
  with pytest.raises(manipulate.ManipulateError, match='cannot read image'):
    manipulate.manipulate(workdir, 'teacher', [workdir + '/config.json'], [])
  with pytest.raises(stages.ConfigError, match='another kind'):
    json.dump({'seed': 0}, open(tmp_path / 'config.json', 'w'))
    manipulate.manipulate(str(tmp_path), 'teacher', [path], [])
