"""CelebA on tfds mock data: the step-addressed stream, the attribute chain,
manipulate.py on its checkpoint, and the multi-label attribute classifier.

Mock images are random, so these tests check the plumbing (shapes, resume,
records, caching), not image quality or accuracy.
"""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image
import tensorflow_datasets as tfds

import configs
from configs import celeba_attr
from jacdistill import attr_chain
from jacdistill import attr_config
from jacdistill import attributes
from jacdistill import celeba
from jacdistill import classifier
from jacdistill import classifier_cache
from jacdistill import stages

A = len(celeba.CELEB_A_ATTRIBUTES)


def _data(tmp_path, **overrides):
  config = ml_collections.ConfigDict(dict(
      name='celeb_a', tfds_data_dir=str(tmp_path), image_size=8,
      attributes=celeba.CELEB_A_ATTRIBUTES))
  config.update(overrides)
  return config


def _assert_same(a, b):
  np.testing.assert_array_equal(a['image'], b['image'])
  np.testing.assert_array_equal(a['attributes'], b['attributes'])


def test_stream_reopened_at_a_step_gives_the_consecutive_batches(tmp_path):
  data = _data(tmp_path)
  with tfds.testing.mock_data(num_examples=10):
    straight = celeba.CelebABatcher(data, 4, seed=3)
    # 6 batches of 4 from 10 examples: the stream repeats, reshuffled.
    batches = [straight.batch(s) for s in range(6)]
    assert straight.opened == 1 and straight.steps_per_epoch == 2
    resumed = celeba.CelebABatcher(data, 4, seed=3)
    for s in (4, 5, 2):  # A resume at 4, then a jump back.
      _assert_same(resumed.batch(s), batches[s])
    assert resumed.opened == 2
    # Two processes' slices make up the global batch.
    halves = [celeba.CelebABatcher(data, 4, seed=3, process_index=i,
                               process_count=2).batch(3) for i in (0, 1)]
    other = celeba.CelebABatcher(data, 4, seed=4)
    other_seed = [other.batch(s) for s in (0, 1)]
    arrays = celeba.celeb_a_arrays(data, 'test', limit=7)
    test_stream = list(celeba.celeb_a_dataset(data, 'test', batch_size=5, seed=0,
                                          train=False))
  _assert_same({k: np.concatenate([h[k] for h in halves]) for k in halves[0]},
               batches[3])
  assert batches[0]['image'].shape == (4, 8, 8, 3)
  assert batches[0]['attributes'].shape == (4, A)
  assert not all(np.array_equal(b['image'], o['image'])
                 for b, o in zip(batches, other_seed))
  assert arrays['image'].shape == (7, 8, 8, 3)
  _assert_same({k: v[:5] for k, v in arrays.items()}, test_stream[0])


def test_attribute_predictor_thresholds_named_columns_after_resize():
  seen = {}

  def logits(x01):
    seen['shape'] = x01.shape
    # Logit k of image i: +1 if k == i, -1 otherwise, and mean pixel - 0.5.
    n = x01.shape[0]
    return (2 * jnp.eye(n, 3) - 1) + jnp.mean(x01) - 0.5

  predict = attributes.attribute_predictor(logits, '-11', image_size=4,
                                           columns=[2, 0])
  out = predict(np.zeros((2, 8, 8, 3), np.float32))  # Grey: mean 0.5.
  assert seen['shape'] == (2, 4, 4, 3)
  np.testing.assert_array_equal(out, [[False, True], [False, False]])
  assert attributes.attribute_predictor(logits, '-11')(
      np.zeros((3, 8, 8, 3), np.float32)).shape == (3, 3)


def test_validation_gives_one_line_errors(tmp_path):
  def error(**changes):
    config = celeba_attr.get_config('smoke')
    for path, value in changes.items():
      *sections, field = path.split('__')
      node = config
      for section in sections:
        node = node[section]
      node[field] = value
    with pytest.raises(stages.ConfigError) as e:
      attr_config.validate(config)
    assert '\n' not in str(e.value)
    return str(e.value)

  config = celeba_attr.get_config()
  assert attr_config.validate(config)[:3] == ['teacher', 'teacher_cycle',
                                             'student1024']
  # Upstream's B (decoder only) is what C grows from and C and D learn from.
  assert config.stages.teacher_cycle.trainable == 'decoder'
  assert {config.stages[s].teacher for s in ('student1024', 'student2048')} == {
      'teacher_cycle'}
  assert config.stages.teacher.epochs == config.stages.teacher_cycle.epochs == (
      100)
  assert "stages.teacher_cycle.trainable='encoder'" in error(
      stages__teacher_cycle__trainable='encoder')
  assert 'stages.teacher.epochs=-1' in error(stages__teacher__epochs=-1)
  assert 'stages.teacher_cycle.init' in error(stages__teacher_cycle__init='')
  assert 'nuisance must be' in error(stages__teacher_cycle__nuisance=4)
  assert "'Happy'" in error(data__attributes=('Smiling', 'Happy'),
                            model__num_attributes=2)
  assert 'power of two' in error(data__image_size=48)
  assert 'num_attributes=1' in error(data__attributes=('Smiling',))
  assert 'eval.split' in error(eval__split='train')
  # A class classifier cannot score CelebA edits; refused before any data.
  clf = classifier.Classifier(num_classes=10, widths=(4,), hidden=8)
  handle = classifier.ClassifierHandle(clf, {}, 0.0)
  with pytest.raises(stages.ConfigError, match='no logits'):
    attr_chain.train_and_evaluate(celeba_attr.get_config('smoke'),
                                  str(tmp_path), stages.Hooks(
                                      classifier=handle))
  assert not os.listdir(tmp_path)


@pytest.fixture(scope='module')
def celeba_run(tmp_path_factory):
  config = celeba_attr.get_config('smoke')
  # Without the cycle stage between them (tests/test_attributes.py runs one).
  config.stage_order = ('teacher', 'student1024')
  config.stages.student1024.init = config.stages.student1024.teacher = (
      'teacher')
  config.data.tfds_data_dir = str(tmp_path_factory.mktemp('tfds'))
  # An untrained classifier of 4x4 images: the 8x8 decodes are resized.
  clf = classifier.Classifier(num_classes=A, widths=(4,), hidden=8)
  variables = clf.init(jax.random.key(0), jnp.zeros((1, 4, 4, 3)),
                       train=False)
  hooks = stages.Hooks(classifier=classifier.ClassifierHandle(
      clf, variables, 0.75, attributes=celeba.CELEB_A_ATTRIBUTES,
      attribute_accuracy=(0.75,) * A, image_size=4))
  workdir = str(tmp_path_factory.mktemp('celeba'))
  with tfds.testing.mock_data(num_examples=10):
    summary = attr_chain.train_and_evaluate(config, workdir, hooks)
  return workdir, summary


def test_chain_teacher_and_student_on_mock_celeb_a(celeba_run):
  workdir, summary = celeba_run
  with open(os.path.join(workdir, 'summary.json')) as f:
    on_disk = json.load(f)
  assert on_disk['stages'] == summary['stages']
  assert on_disk['classifier_test_accuracy'] == 0.75
  assert on_disk['classifier_attribute_accuracy']['Smiling'] == 0.75
  teacher, student = on_disk['stages']
  assert (student['init'], student['teacher']) == ('teacher', 'teacher')
  assert (teacher['code_size'], student['code_size']) == (A + 8, A + 16)
  for s in on_disk['stages']:
    scores = s[on_disk['config']['eval']['split']]
    assert s['steps'] == 3 and np.isfinite(scores['psnr'])
    assert len(scores['flip_acc_pos']) == len(scores['flip_acc_neg']) == A
    assert 0.0 <= scores['flip_acc'] <= 1.0
    assert os.path.exists(os.path.join(workdir, s['name'], 'edits.png'))
  assert 'attr' in teacher['train_losses']
  assert {'jac', 'lat'} <= set(student['train_losses'])


def test_manipulate_a_celeb_a_stage(celeba_run, tmp_path):
  from launch import manipulate  # pylint: disable=g-import-not-at-top
  workdir = celeba_run[0]
  path = str(tmp_path / 'face.png')
  rgb = np.random.default_rng(0).integers(0, 256, (30, 20, 3), np.uint8)
  Image.fromarray(rgb).save(path)
  grid = manipulate.manipulate(workdir, None, [path],
                               ['Smiling=2', 'Eyeglasses=-2'])
  # Columns: input, reconstruction, two single edits, both; 8 px tiles.
  assert grid.shape == (1 * 9 + 1, 5 * 9 + 1, 3)
  tiles = [grid[1:9, 1 + 9 * j:9 * (j + 1)].astype(int) for j in range(5)]
  assert all(np.abs(t - tiles[1]).max() > 0 for t in tiles[2:])
  with pytest.raises(manipulate.ManipulateError) as e:
    manipulate.manipulate(workdir, 'teacher', [path], ['smiling=1'])
  assert "unknown attribute 'smiling'" in str(e.value)
  assert '\n' not in str(e.value)


def test_attribute_classifier_trains_once_then_restores(tmp_path, monkeypatch):
  from launch import classifier as classifier_cli  # pylint: disable=g-import-not-at-top
  assert 'steps' in configs.classifier_config('celeb_a')
  clf = configs.classifier_config('celeb_a')
  clf.steps = 4
  clf.batch_size = 4
  clf.image_size = 8
  clf.widths = (4,)
  clf.hidden = 8
  monkeypatch.setattr(configs, 'classifier_config', lambda name: clf)
  run = celeba_attr.get_config('smoke')
  run.data.tfds_data_dir = str(tmp_path / 'tfds')
  run.eval.classifier_dir = str(tmp_path / 'clf')
  messages = []
  with tfds.testing.mock_data(num_examples=12):
    first = classifier_cli.load_or_train(run, messages.append)
    assert any('step 4/4' in m for m in messages)

    def no_training(*args, **kwargs):
      raise AssertionError('the second call retrained the classifier')

    monkeypatch.setattr(classifier, 'train_attribute_classifier', no_training)
    messages.clear()
    second = classifier_cli.load_or_train(run, messages.append)
  assert any('Restored' in m for m in messages)
  assert first.attributes == second.attributes == celeba.CELEB_A_ATTRIBUTES
  assert len(first.attribute_accuracy) == A
  assert all(0.0 <= a <= 1.0 for a in first.attribute_accuracy)
  assert first.test_accuracy == pytest.approx(np.mean(first.attribute_accuracy))
  assert second.attribute_accuracy == first.attribute_accuracy
  assert second.image_size == 8
  x = np.random.default_rng(0).random((3, 8, 8, 3), np.float32)
  assert first.logits(x).shape == (3, A)
  np.testing.assert_array_equal(first.logits(x), second.logits(x))
  with open(tmp_path / 'clf' / classifier_cache.RECORD_FILE) as f:
    record = json.load(f)
  assert record['attributes'] == list(celeba.CELEB_A_ATTRIBUTES)
  assert record['config']['image_size'] == 8
