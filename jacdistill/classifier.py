"""The external classifier that judges every run of a dataset: its model
and its training (its disk cache, so every run on a dataset is judged by
the same one, is `classifier_cache.py`); `metrics` and `attributes` only
read its logits. Unlike upstream, it runs in inference mode (no dropout
noise) and sees images in exactly the range it was trained on ([0, 1]).
For CelebA it is a multi-label attribute classifier
(`train_attribute_classifier`): one logit per attribute, present iff > 0,
scored per attribute on the test split.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import types
from typing import Any, Callable, Optional, Sequence

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jacdistill import celeba
from jacdistill import input_pipeline
from jacdistill import metrics
from jacdistill import rng

# Logits of each dataset's classifier: classes, or CelebA's 40 attributes.
NUM_CLASSES = {'mnist': 10, 'fashion_mnist': 10, 'svhn_cropped': 10,
               celeba.CELEB_A: len(celeba.CELEB_A_ATTRIBUTES)}
# Test images per classifier call when measuring its accuracy.
_EVAL_BATCH = 1000


# ----------------------------------------------------------------- classifier


def _max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max-pool, stride 2, (B, H, W, C) -> (B, H // 2, W // 2, C): a
  reshape and a max, as on XLA:CPU the gradient of `nn.max_pool`'s windowed
  reduce (select-and-scatter) made a training step of this CNN 1.6x slower."""
  b, h, w, c = x.shape
  x = x[:, :h - h % 2, :w - w % 2]
  return jnp.max(x.reshape(b, h // 2, 2, w // 2, 2, c), axis=(2, 4))


class Classifier(nn.Module):
  """Small CNN: [3x3 conv, ReLU, 2x2 max-pool] per width (output channels,
  from the image inwards), a dense layer of `hidden` units, dropout (only
  when `train`) and `num_classes` logits."""
  num_classes: int = 10
  widths: Sequence[int] = (16, 32)
  hidden: int = 128
  dropout: float = 0.3

  @nn.compact
  def __call__(self, x, train: bool):
    """Float images (B, H, W, C) in [0, 1] -> logits (B, num_classes). With
    `train`, dropout needs an rng named 'dropout'."""
    for i, width in enumerate(self.widths):
      x = _max_pool_2x2(nn.relu(nn.Conv(width, (3, 3), name=f'conv_{i}')(x)))
    x = nn.relu(nn.Dense(self.hidden, name='hidden')(x.reshape(x.shape[0], -1)))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, name='logits')(x)


@functools.partial(jax.jit, static_argnums=0)
def _inference_logits(model: Classifier, variables: Any,
                      images01: jax.Array) -> jax.Array:
  return model.apply(variables, images01, train=False)


@dataclasses.dataclass(frozen=True, eq=False)
class ClassifierHandle:
  """A trained classifier, ready to label images: the `Classifier` `model`,
  its linen `variables` {'params': ...}, its `test_accuracy` in [0, 1] on the
  dataset's test split (multi-label: the mean of `attribute_accuracy`), the
  `image_size` (height = width) it takes (0 = not recorded), and for a
  multi-label classifier the names of its logits (`attributes`; attribute a
  present iff logit a > 0) and, per attribute, the fraction of test images
  it labels correctly (`attribute_accuracy`); both empty for classes."""
  model: Classifier
  variables: Any
  test_accuracy: float
  attributes: tuple[str, ...] = ()
  attribute_accuracy: tuple[float, ...] = ()
  image_size: int = 0

  @property
  def num_classes(self) -> int:
    return self.model.num_classes

  def logits(self, images01: jax.Array) -> jax.Array:
    """Jitted, inference mode: float (B, H, W, C) in [0, 1] -> (B, classes)."""
    return _inference_logits(self.model, self.variables, images01)

  def predict(self, images01: jax.Array) -> jax.Array:
    """Class labels int32 (B,) of float images (B, H, W, C) in [0, 1]."""
    return jnp.argmax(self.logits(images01), axis=-1).astype(jnp.int32)


def make_classifier(data_config: Any, clf_config: Any) -> Classifier:
  """The `Classifier` that `clf_config` describes for `data_config.name`."""
  name = data_config.name
  if name not in NUM_CLASSES:
    raise ValueError(f'data.name={name!r} has no classifier; valid names: '
                     f'{", ".join(NUM_CLASSES)}.')
  return Classifier(num_classes=NUM_CLASSES[name],
                    widths=tuple(int(w) for w in clf_config.widths),
                    hidden=int(clf_config.hidden),
                    dropout=float(clf_config.dropout))


def classifier_image_shape(data_config: Any, clf_config: Any
                           ) -> tuple[int, int, int]:
  """(H, W, C) of the classifier's images: the dataset's native shape, or
  for CelebA `clf_config.image_size` square."""
  if data_config.name == celeba.CELEB_A:
    _check_clf_config(clf_config, attribute=True)
    size = int(clf_config.image_size)
    return (size, size, 3)
  return input_pipeline.IMAGE_SHAPES[data_config.name]


def _check_clf_config(clf_config: Any, attribute: bool = False) -> None:
  """Raises ValueError for a bad field; `attribute`: CelebA's config."""
  missing = [f for f in ('steps', 'image_size', 'test_examples')
             if attribute and f not in clf_config]
  if missing:
    raise ValueError(f'the CelebA classifier config lacks {missing}; start '
                     'from configs/celeba_classifier.py.')
  if attribute and (int(clf_config.test_examples) != clf_config.test_examples
                    or clf_config.test_examples < 0):
    raise ValueError(f'classifier.test_examples={clf_config.test_examples!r} '
                     'must be an integer >= 0 (0 = the whole test split).')
  # Epochs for the in-memory datasets, steps and an image size for CelebA.
  for field in ('epochs', 'steps', 'batch_size', 'image_size'):
    value = clf_config[field] if field in clf_config else 1
    if int(value) != value or value < 1:
      raise ValueError(f'classifier.{field}={value!r} must be a positive '
                       'integer.')
  if not clf_config.learning_rate > 0:
    raise ValueError(f'classifier.learning_rate={clf_config.learning_rate!r} '
                     'must be > 0.')
  if not 0 <= clf_config.dropout < 1:
    raise ValueError(f'classifier.dropout={clf_config.dropout!r} must lie in '
                     '[0, 1).')


# ------------------------------------------------------------------- training


def _class_loss(logits: jax.Array, labels: jax.Array):
  """Softmax cross-entropy of (B, K) logits against int labels (B,), and the
  number of argmax hits."""
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return jnp.mean(loss), jnp.sum(jnp.argmax(logits, axis=-1) == labels)


def _attribute_loss(logits: jax.Array, targets: jax.Array):
  """Sigmoid cross-entropy of (B, A) logits against +-1 targets (B, A),
  averaged over both axes, and the number of (image, attribute) hits."""
  loss = optax.sigmoid_binary_cross_entropy(logits, (targets > 0).astype(
      jnp.float32))
  return jnp.mean(loss), jnp.sum((logits > 0) == (targets > 0))


@rng.draws
def _fit(model: Classifier, clf_config: Any, image_shape: Sequence[int],
         loss_fn: Callable, to01: Callable, batch_fn: Callable, target: str,
         num_steps: int, every: int, label: Callable[[int], str],
         log: Callable[[str], None]) -> Any:
  """The one training loop: `num_steps` Adam steps; returns the variables.

  Adam, its rate cosine-decayed from `clf_config.learning_rate` to 0; the
  seed gives the initialisation and the dropout masks (step s's from
  `fold_in(key, s)`), so the run is a function of it. `batch_fn(s)` is a
  dict of images ('image', mapped to [0, 1] on the device by `to01`) and
  `target`s for `loss_fn(logits, targets) -> (mean loss, hits)`. Each
  `every` steps and after the last, a line starting `label(steps done)` goes
  to `log`: the sums stay on the device until then, as reading them every
  step would stall the dispatch queue.
  """
  tx = optax.adam(optax.cosine_decay_schedule(clf_config.learning_rate,
                                              num_steps))
  init_key, dropout_key = jax.random.split(jax.random.key(int(clf_config.seed)))
  params = model.init(init_key, jnp.zeros((1, *image_shape), jnp.float32),
                      train=False)['params']

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt_state, images, targets, step_index):
    x = to01(images)

    def objective(p):
      logits = model.apply({'params': p}, x, train=True, rngs={
          'dropout': jax.random.fold_in(dropout_key, step_index)})
      return loss_fn(logits, targets)

    (loss, hits), grads = jax.value_and_grad(objective, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, hits

  opt_state = tx.init(params)
  start_time = time.time()
  loss_sum, hits_sum, since = 0.0, 0, 0
  for s in range(num_steps):
    batch = batch_fn(s)
    params, opt_state, loss, hits = step(params, opt_state, batch['image'],
                                         batch[target], s)
    loss_sum, hits_sum, since = loss_sum + loss, hits_sum + hits, since + 1
    if (s + 1) % every == 0 or s + 1 == num_steps:
      seen = since * batch[target].size
      log(f'{label(s + 1)}: train loss {float(loss_sum) / since:.4f}, train '
          f'accuracy (dropout on) {int(hits_sum) / seen:.4f}, '
          f'{time.time() - start_time:.0f} s')
      loss_sum, hits_sum, since = 0.0, 0, 0
  return {'params': params}


def _test_hits(model: Classifier, variables: Any, batches: Any,
               to01: Callable, size: int, hits_fn: Callable):
  """(sum of `hits_fn(logits, batch)`, images) over test `batches`, each
  padded to `size` images (one compilation), in inference mode."""
  hits, count = 0, 0
  for batch in batches:
    m = batch['image'].shape[0]
    x = to01(metrics.pad_to(batch['image'], size))
    logits = np.asarray(_inference_logits(model, variables, x))[:m]
    hits, count = hits + hits_fn(logits, batch), count + m
  return hits, count


def train_classifier(data_config: Any, clf_config: Any,
                     log_fn: Optional[Callable[[str], None]] = None
                     ) -> tuple[Any, float]:
  """Trains a `Classifier` on the train split; measures it on the test split.

  `_fit`, softmax cross-entropy, batches of `input_pipeline.Batcher` (of
  `data_config`, as `load_split` takes), pixels in [0, 1], the fields of
  `clf_config` (`configs/classifier.py`); `log_fn` (default logging.info)
  gets a line per epoch and one at the end. Returns `(variables,
  test_accuracy)`: {'params': ...} and the fraction of test images labelled
  correctly (inference mode), a float."""
  log = log_fn or logging.info
  _check_clf_config(clf_config)
  # Every image of the train split, validation ones too: one classifier
  # judges every run of a dataset, whatever it holds out.
  train_split = input_pipeline.load_split(data_config, 'train', hold_out=False)
  test = input_pipeline.load_split(data_config, 'test')
  model = make_classifier(data_config, clf_config)
  batcher = input_pipeline.Batcher(train_split, int(clf_config.batch_size),
                                   int(clf_config.seed))
  per_epoch = batcher.steps_per_epoch
  to01 = functools.partial(input_pipeline.to_float, value_range='01')
  variables = _fit(
      model, clf_config, train_split.images.shape[1:], _class_loss, to01,
      batcher.batch, 'label', int(clf_config.epochs) * per_epoch, per_epoch,
      lambda done: f'classifier epoch {done // per_epoch}/{clf_config.epochs}',
      log)
  b = min(_EVAL_BATCH, len(test))
  hits, n = _test_hits(
      model, variables, ({'image': test.images[i:j], 'label': test.labels[i:j]}
                         for i, j in metrics.batch_bounds(len(test), b)),
      to01, b, lambda logits, batch: int(np.sum(
          np.argmax(logits, axis=-1) == batch['label'])))
  test_accuracy = hits / n
  log(f'classifier test accuracy {test_accuracy:.4f} on {n} '
      f'{data_config.name} test images')
  return variables, test_accuracy


def train_attribute_classifier(data_config: Any, clf_config: Any,
                               log_fn: Optional[Callable[[str], None]] = None
                               ) -> tuple[Any, np.ndarray]:
  """Trains a multi-label `Classifier` on CelebA; scores it per attribute.

  One logit per attribute of CELEB_A_ATTRIBUTES (all 40, whatever
  `data_config.attributes`), attribute a present iff logit a > 0. `_fit`
  runs `clf_config.steps` steps of the sigmoid cross-entropy (mean over
  images and attributes) on the stream of `celeba.CelebABatcher` (of
  `data_config.tfds_data_dir`; shuffled, flipped, a function of the seed)
  at `clf_config.image_size` (`configs/celeba_classifier.py`), mapped to
  [0, 1]; `log_fn` (default logging.info) gets ten lines and a last one. On
  the first `clf_config.test_examples` test images (0 = all), in inference
  mode, accuracy_a = mean_i [(logit_ia > 0) == (attribute a of image i)].
  Returns `(variables, accuracy)`: {'params': ...} and float64 (40,)
  accuracies in CELEB_A_ATTRIBUTES order. Raises ValueError for a bad
  `clf_config`, input_pipeline.DatasetUnavailableError if celeb_a is absent.
  """
  log = log_fn or logging.info
  _check_clf_config(clf_config, attribute=True)
  data = types.SimpleNamespace(
      name=celeba.CELEB_A, image_size=int(clf_config.image_size),
      attributes=celeba.CELEB_A_ATTRIBUTES,
      tfds_data_dir=getattr(data_config, 'tfds_data_dir', None) or None)
  model = make_classifier(data, clf_config)
  num_steps = int(clf_config.steps)
  batcher = celeba.CelebABatcher(data, int(clf_config.batch_size),
                                 int(clf_config.seed))
  to01 = lambda x: (x + 1) / 2  # pylint: disable=unnecessary-lambda-assignment
  variables = _fit(
      model, clf_config, (data.image_size, data.image_size, 3),
      _attribute_loss, to01, batcher.batch, 'attributes', num_steps,
      max(1, num_steps // 10),
      lambda done: f'attribute classifier step {done}/{num_steps}', log)
  hits, count = _test_hits(
      model, variables, celeba.celeb_a_dataset(
          data, 'test', batch_size=_EVAL_BATCH, seed=0, train=False,
          limit=int(clf_config.test_examples), drop_remainder=False),
      to01, _EVAL_BATCH, lambda logits, batch: np.sum(
          (logits > 0) == (batch['attributes'] > 0), axis=0))
  if not count:
    raise input_pipeline.DatasetUnavailableError(
        f'the celeb_a test split has no examples (data_dir '
        f'{data.tfds_data_dir}); prepare celeb_a again (README.md, "CelebA").')
  accuracy = hits / count
  worst = int(np.argmin(accuracy))
  log(f'attribute classifier test accuracy {accuracy.mean():.4f} (mean of '
      f'{len(accuracy)}; lowest {data.attributes[worst]} '
      f'{accuracy[worst]:.4f}) on {count} celeb_a test images')
  return variables, accuracy
