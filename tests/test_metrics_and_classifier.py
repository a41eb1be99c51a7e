"""Evaluation: golden metrics, swap scores with known answers, the cache."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import classifier as classifier_config
from jacdistill import classifier
from jacdistill import classifier_cache
from jacdistill import metrics
from jacdistill import input_pipeline

NUM_CLASSES = 10
# Class c is the constant image of value 25 c (0..225): the mean intensity
# alone tells the class.
TEMPLATES = np.arange(NUM_CLASSES, dtype=np.float32) * 25 / 255


def _class_images(labels, size=4):
  """uint8 (N, size, size, 1): image i is constant 25 * labels[i]."""
  values = (25 * np.asarray(labels)).astype(np.uint8)
  return np.broadcast_to(values[:, None, None, None],
                         (len(values), size, size, 1)).copy()


def _template_logits(images01):
  """Nearest-template 'classifier' on the mean intensity in [0, 1]."""
  mean = jnp.mean(images01.reshape(images01.shape[0], -1), axis=1)
  return -jnp.square(mean[:, None] - TEMPLATES[None, :])


def _data_config(limit):
  return ml_collections.ConfigDict(dict(
      name='fashion_mnist', source='idx',
      idx_dir=input_pipeline.DEFAULT_IDX_DIR, tfds_data_dir=None, limit=limit))


# --------------------------------------------------------------- golden values


def test_psnr_golden():
  # Image 0: errors (0.1, 0.1) -> mse 0.01 -> 10 log10(1 / 0.01) = 20 dB.
  # Image 1: errors (0, 0.2) -> mse 0.02 -> 10 log10(50) = 16.98970 dB.
  # Mean: 18.49485 dB.
  x = np.zeros((2, 1, 2, 1), np.float32)
  x_hat = np.array([[0.1, 0.1], [0.0, 0.2]], np.float32).reshape(2, 1, 2, 1)
  np.testing.assert_allclose(metrics.psnr(x, x_hat, 1.0), 18.49485,
                             rtol=1e-5)
  # Doubling the range adds 20 log10(2) = 6.02060 dB.
  np.testing.assert_allclose(metrics.psnr(x, x_hat, 2.0), 24.51545,
                             rtol=1e-5)
  np.testing.assert_allclose(jax.jit(metrics.psnr)(x, x_hat, 1.0),
                             18.49485, rtol=1e-5)
  # The per-image form the chains record: the same mean of per-image PSNRs.
  rec = metrics.reconstruction_scores(np.array([0.01, 0.02]))
  assert rec['mse'] == pytest.approx(0.015, rel=1e-12)
  assert rec['psnr'] == pytest.approx(18.49485, rel=1e-6)


def test_swap_scores_golden():
  pred_rec = np.array([0, 1, 2, 2])
  perm = np.array([1, 2, 3, 0])
  labels = np.array([0, 1, 1, 2])
  pred_swap = np.array([1, 0, 2, 2])
  # Targets pred_rec[perm] = (1, 2, 2, 0); pair 2 has equal classes (2, 2)
  # and is skipped: C = {0, 1, 3}.
  #   i=0: pred_swap 1 == target 1 -> right.
  #   i=1: pred_swap 0: neither target 2 nor own class 1.
  #   i=3: pred_swap 2 == own class 2 -> kept.
  # swap_acc = 1/3, swap_keep = 1/3.
  # Ground truth: labels[perm] = (1, 1, 2, 0); pair 1 has (1, 1), skipped:
  # G = {0, 2, 3}; right at i=0 (1 == 1) and i=2 (2 == 2), not at i=3 (2 != 0):
  # swap_acc_gt = 2/3. rec_class_acc: (0==0, 1==1, 2!=1, 2==2) = 3/4.
  expected = {'swap_acc': 1 / 3, 'swap_keep': 1 / 3, 'swap_acc_gt': 2 / 3,
              'rec_class_acc': 0.75, 'num_pairs': 3, 'num_pairs_gt': 3}
  for fn in (metrics.swap_scores, jax.jit(metrics.swap_scores)):
    scores = fn(pred_rec, pred_swap, perm, labels)
    assert set(scores) == set(expected)
    for name, value in expected.items():
      np.testing.assert_allclose(scores[name], value, rtol=1e-6, err_msg=name)


def test_swap_scores_no_counted_pair_is_nan():
  same = np.array([3, 3, 3])
  scores = metrics.swap_scores(same, same, np.array([2, 0, 1]), same)
  assert int(scores['num_pairs']) == 0 and int(scores['num_pairs_gt']) == 0
  assert np.isnan(scores['swap_acc']) and np.isnan(scores['swap_acc_gt'])
  assert float(scores['rec_class_acc']) == 1.0


# -------------------------------------------- autoencoders with known answers


def _mean_code(x):
  """(B, 4, 4, 1) -> (B, 2): the image mean, twice (factor dim, free dim)."""
  mean = jnp.mean(x.reshape(x.shape[0], -1), axis=1)
  return jnp.stack([mean, mean], axis=1)


def _constant_decoder(dim):
  """Decodes the constant image whose value is code[:, dim]."""
  return jax.jit(lambda code: jnp.broadcast_to(
      code[:, dim, None, None, None], (code.shape[0], 4, 4, 1)))


@pytest.fixture(name='split')
def _split():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, NUM_CLASSES, size=60).astype(np.int32)
  return _class_images(labels), labels


def test_decoder_ignoring_swapped_dims_scores_zero(split):
  images, labels = split
  scores = metrics.evaluate_autoencoder(
      jax.jit(_mean_code), _constant_decoder(1), images, labels,
      _template_logits, factor_dims=1, value_range='01', num_permutations=3,
      batch_size=16)
  assert scores['swap_acc'] == 0.0 and scores['swap_acc_std'] == 0.0
  assert scores['swap_keep'] == 1.0
  assert scores['swap_acc_gt'] == 0.0
  assert scores['rec_class_acc'] == 1.0
  assert scores['num_pairs'] > 40  # About 9/10 of 60 pairs differ in class.


def test_decoder_of_swapped_dims_only_scores_one(split):
  images, labels = split
  scores = metrics.evaluate_autoencoder(
      jax.jit(_mean_code), _constant_decoder(0), images, labels,
      _template_logits, factor_dims=1, value_range='01', num_permutations=3,
      batch_size=16)
  assert scores['swap_acc'] == 1.0 and scores['swap_acc_std'] == 0.0
  assert scores['swap_keep'] == 0.0
  assert scores['swap_acc_gt'] == 1.0
  assert 'mse' not in scores  # One value per metric: the chain's own.


def test_identity_like_autoencoder(split):
  """Whole code swapped -> swap_acc 1 by construction; MSE in [0, 1] units."""
  images, labels = split
  encode = jax.jit(lambda x: x.reshape(x.shape[0], -1))
  # In [-1, 1] units the error is 0.05 |x|, i.e. 0.025 |x| in [0, 1] units.
  decode = jax.jit(lambda code: 0.95 * code.reshape(code.shape[0], 4, 4, 1))
  x01 = images.astype(np.float64) / 255
  x11 = 2 * x01 - 1
  per_image = np.mean((0.025 * x11) ** 2, axis=(1, 2, 3))
  # x11 = 25 c / 127.5 - 1 is never 0, so every PSNR is finite.
  with np.errstate(divide='raise'):
    expected_psnr = np.mean(10 * np.log10(1 / per_image))

  calls = []

  def logits(images01):
    calls.append(images01.shape)
    return _template_logits(images01)

  scores = metrics.evaluate_autoencoder(
      encode, decode, images, labels, logits, factor_dims=16,
      value_range='-11', num_permutations=4, seed=3, batch_size=25)
  x_hat01 = (np.asarray(decode(encode(input_pipeline.to_float(
      images, '-11')))) + 1) / 2
  rec = metrics.reconstruction_scores(
      metrics.mse_per_image(x01, x_hat01))
  np.testing.assert_allclose(rec['mse'], per_image.mean(), rtol=1e-5)
  np.testing.assert_allclose(rec['psnr'], expected_psnr, rtol=1e-5)
  assert scores['swap_acc'] == 1.0 and scores['swap_acc_std'] == 0.0
  # The reconstruction is within 0.025 of its template in [0, 1] units, less
  # than half the spacing of the templates (25 / 255 = 0.098), so it keeps
  # its class.
  assert scores['rec_class_acc'] == 1.0
  assert scores['swap_acc_gt'] == 1.0
  # Padded batches: every classifier call has the same shape.
  assert set(calls) == {(25, 4, 4, 1)}


def test_evaluate_matches_direct_computation():
  """Batching, padding and the permutations agree with a plain numpy loop."""
  rng = np.random.default_rng(1)
  n, k0 = 37, 2
  labels = rng.integers(0, NUM_CLASSES, size=n).astype(np.int32)
  images = rng.integers(0, 256, size=(n, 4, 4, 1)).astype(np.uint8)
  weights = rng.normal(size=(16, 5)).astype(np.float32)
  templates = rng.uniform(size=(NUM_CLASSES, 16)).astype(np.float32)

  encode = jax.jit(lambda x: x.reshape(x.shape[0], -1) @ weights)
  decode = jax.jit(lambda c: jax.nn.sigmoid(c @ weights.T).reshape(
      c.shape[0], 4, 4, 1))

  def logits(x):
    return x.reshape(x.shape[0], -1) @ templates.T

  def predict(codes):
    return np.argmax(np.asarray(logits(decode(codes))), axis=1)

  x = images.astype(np.float32) / 255
  codes = np.asarray(encode(x))
  pred_rec = predict(codes)
  perm_rng = np.random.default_rng(7)
  accs, keeps = [], []
  for _ in range(3):
    perm = perm_rng.permutation(n)
    swapped = codes.copy()
    swapped[:, :k0] = codes[perm, :k0]
    pred_swap = predict(swapped)
    counted = pred_rec != pred_rec[perm]
    accs.append(np.mean(pred_swap[counted] == pred_rec[perm][counted]))
    keeps.append(np.mean(pred_swap[counted] == pred_rec[counted]))
  for batch_size in (37, 10):
    scores = metrics.evaluate_autoencoder(
        encode, decode, images, labels, logits, factor_dims=k0,
        value_range='01', num_permutations=3, seed=7, batch_size=batch_size)
    np.testing.assert_allclose(scores['swap_acc'], np.mean(accs), rtol=1e-6)
    np.testing.assert_allclose(scores['swap_acc_std'], np.std(accs),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(scores['swap_keep'], np.mean(keeps), rtol=1e-6)
    np.testing.assert_allclose(scores['rec_class_acc'],
                               np.mean(pred_rec == labels), rtol=1e-6)


def test_evaluate_rejects_bad_factor_dims(split):
  images, labels = split
  with pytest.raises(ValueError, match='factor_dims=3'):
    metrics.evaluate_autoencoder(
        jax.jit(_mean_code), _constant_decoder(0), images, labels,
        _template_logits, factor_dims=3, value_range='01')


# ------------------------------------------------------------ the classifier


def test_classifier_dropout_only_in_training():
  model = classifier.Classifier(num_classes=3, widths=(4, 8), hidden=16,
                                dropout=0.5)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(size=(2, 8, 8, 1)), jnp.float32)
  # Random weights without model.init, whose random draws take seconds to
  # compile on CPU.
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  variables = jax.tree.map(
      lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), shapes)
  first = model.apply(variables, x, train=False)
  assert first.shape == (2, 3)
  np.testing.assert_array_equal(first, model.apply(variables, x, train=False))
  a = model.apply(variables, x, train=True, rngs={'dropout': jax.random.key(1)})
  b = model.apply(variables, x, train=True, rngs={'dropout': jax.random.key(2)})
  assert not np.allclose(a, b)


def test_default_dir_uses_cache_env(monkeypatch, tmp_path):
  monkeypatch.setenv('JACDISTILL_CACHE', str(tmp_path))
  assert classifier_cache.default_classifier_dir(_data_config(0)) == str(
      tmp_path / 'classifiers' / 'fashion_mnist_full')
  assert classifier_cache.default_classifier_dir(_data_config(2000)) == str(
      tmp_path / 'classifiers' / 'fashion_mnist_2000')


def test_load_or_train_trains_once_then_restores(tmp_path, monkeypatch):
  data = _data_config(2000)
  clf = classifier_config.get_config()
  clf.epochs = 1
  clf.widths = (8, 16)
  clf.hidden = 32
  directory = str(tmp_path / 'clf')

  messages = []
  first = classifier_cache.load_or_train_classifier(data, clf, directory,
                                                    log_fn=messages.append)
  assert any('training' in m for m in messages)
  # One epoch on 2000 images is far from converged but well above chance.
  assert 0.4 < first.test_accuracy <= 1.0
  assert first.num_classes == 10

  def no_training(*args, **kwargs):
    raise AssertionError('the second call retrained the classifier')

  monkeypatch.setattr(classifier, 'train_classifier', no_training)
  messages.clear()
  second = classifier_cache.load_or_train_classifier(data, clf, directory,
                                                     log_fn=messages.append)
  assert any('Restored' in m for m in messages)
  assert second.test_accuracy == first.test_accuracy
  jax.tree.map(np.testing.assert_array_equal, first.variables,
               second.variables)

  test = input_pipeline.load_split(data, 'test')
  x = input_pipeline.to_float(test.images[:50], '01')
  np.testing.assert_array_equal(first.logits(x), second.logits(x))
  # Inference mode: the same logits on every call.
  np.testing.assert_array_equal(second.logits(x), second.logits(x))

  # The handle plugs into evaluate_autoencoder: with an exact autoencoder the
  # reconstructions are classified as the test images themselves.
  scores = metrics.evaluate_autoencoder(
      jax.jit(lambda x: x.reshape(x.shape[0], -1)),
      jax.jit(lambda c: c.reshape(c.shape[0], 28, 28, 1)),
      test.images[:300], test.labels[:300], second.logits, factor_dims=784,
      value_range='01', num_permutations=2, batch_size=128)
  np.testing.assert_allclose(
      scores['rec_class_acc'],
      np.mean(np.asarray(second.predict(input_pipeline.to_float(
          test.images[:300], '01'))) == test.labels[:300]), rtol=1e-6)
  assert scores['swap_acc'] == 1.0

  clf.hidden = 64
  with pytest.raises(classifier_cache.ClassifierError,
                     match='another directory'):
    classifier_cache.load_or_train_classifier(data, clf, directory)


@pytest.mark.parametrize('name,shape', [('mnist', (28, 28, 1)),
                                        ('svhn_cropped', (32, 32, 3))])
def test_classifier_trains_through_tfds_on_mock_data(name, shape, tmp_path):
  """The MNIST and SVHN classifiers' code path (tfds, channels, caching);
  their accuracy targets need the real data on a machine that has it."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data = ml_collections.ConfigDict(dict(
      name=name, source='tfds', idx_dir='', tfds_data_dir=None, limit=0))
  clf = classifier_config.get_config()
  clf.epochs = 1
  clf.batch_size = 16
  with tfds.testing.mock_data(num_examples=64):
    handle = classifier_cache.load_or_train_classifier(data, clf, str(tmp_path))
  assert 0.0 <= handle.test_accuracy <= 1.0
  assert handle.num_classes == 10
  logits = handle.logits(np.zeros((2, *shape), np.float32))
  assert logits.shape == (2, 10)
