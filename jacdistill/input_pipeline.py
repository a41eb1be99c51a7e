"""Input pipelines: in-memory MNIST-like datasets.

Small datasets (MNIST, Fashion-MNIST, SVHN) are loaded whole into host memory
as uint8 arrays by `load_split`, from TFDS or from raw idx files (the readers
live in `jacdistill.sources`), and batched by `Batcher`, whose batch at step
`s` is a pure function of `(seed, s)`: resuming a run at any step needs no
saved iterator state.

CelebA (about 200k JPEGs) does not fit that mould and is streamed with tf.data
by `jacdistill.celeba`.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from jacdistill import sources

# load_split's default directory, its return type and its error, as
# `jacdistill.sources` defines them.
DEFAULT_IDX_DIR = sources.DEFAULT_IDX_DIR
IDX_DATASETS = sources.IDX_DATASETS
Split = sources.Split
DatasetUnavailableError = sources.DatasetUnavailableError

IN_MEMORY_DATASETS = ('mnist', 'fashion_mnist', 'svhn_cropped')
# (H, W, C) of each in-memory dataset's images.
IMAGE_SHAPES = {'mnist': (28, 28, 1), 'fashion_mnist': (28, 28, 1),
                'svhn_cropped': (32, 32, 3)}
SPLITS = ('train', 'validation', 'test')
SOURCES = ('tfds', 'idx')
VALUE_RANGES = ('01', '-11')
RESIZE_METHODS = ('auto', 'pad', 'bilinear')


def load_split(data_config: Any, split: str, hold_out: bool = True) -> Split:
  """Loads one split of an in-memory dataset whole.

  The validation split is the last `data_config.validation` images of the
  dataset's train split (after `limit`), and the train split is then the
  images before them: choices made on validation numbers never see the
  test split, and training never sees the validation images.

  Args:
    data_config: ConfigDict or any attribute object with fields
      `name` (one of IN_MEMORY_DATASETS), `source` ('tfds' or 'idx', default
      'tfds'), `idx_dir` (default DEFAULT_IDX_DIR), `tfds_data_dir` (None =
      tfds's default), `limit` (0 = all, else the first `limit` examples),
      `validation` (default 0: no validation split).
    split: 'train', 'validation' or 'test'.
    hold_out: False gives the whole train split, validation images included
      (the external classifier, which judges every run of a dataset alike).

  Returns:
    A Split: uint8 images (N, H, W, C) (28x28x1 for (Fashion-)MNIST, 32x32x3
    for SVHN) and int32 labels (N,).

  Raises:
    ValueError: an unknown name, source, split or a negative limit.
    DatasetUnavailableError: the data is not on this machine or unreadable.
  """
  name = data_config.name
  source = getattr(data_config, 'source', 'tfds')
  idx_dir = getattr(data_config, 'idx_dir', None) or DEFAULT_IDX_DIR
  tfds_data_dir = getattr(data_config, 'tfds_data_dir', None) or None
  limit = getattr(data_config, 'limit', 0) or 0
  validation = getattr(data_config, 'validation', 0) or 0
  if name not in IN_MEMORY_DATASETS:
    raise ValueError(f'data.name={name!r} is not an in-memory dataset; valid '
                     f'names: {", ".join(IN_MEMORY_DATASETS)} (CelebA is '
                     'streamed by celeba.celeb_a_dataset).')
  if split not in SPLITS:
    raise ValueError(f'split={split!r}; valid splits: {", ".join(SPLITS)}.')
  if source not in SOURCES:
    raise ValueError(f'data.source={source!r}; valid sources: '
                     f'{", ".join(SOURCES)}.')
  if source == 'idx' and name not in IDX_DATASETS:
    raise ValueError(f'data.source=idx reads MNIST-format files, which '
                     f'{name!r} does not have; valid names with idx: '
                     f'{", ".join(IDX_DATASETS)}. Use data.source=tfds.')
  if int(limit) != limit or limit < 0:
    raise ValueError(f'data.limit={limit!r}; use 0 for the whole split or a '
                     'positive number of examples.')
  if int(validation) != validation or validation < 0:
    raise ValueError(f'data.validation={validation!r}; use 0 for no '
                     'validation split or a positive number of training '
                     'examples to hold out.')
  if split == 'validation' and not validation:
    raise ValueError('the validation split is empty: set '
                     '--config.data.validation=N to hold out the last N '
                     'training images.')
  source_split = 'test' if split == 'test' else 'train'
  if source == 'idx':
    whole = sources.load_idx(name, source_split, idx_dir, int(limit))
  else:
    whole = sources.load_tfds(name, source_split, tfds_data_dir, int(limit))
  if split == 'test' or not validation or (split == 'train' and not hold_out):
    return whole
  n = len(whole)
  if validation >= n:
    raise ValueError(f'data.validation={validation} leaves no training '
                     f'images of the {n}; hold out fewer.')
  part = slice(n - validation, n) if split == 'validation' else slice(
      0, n - validation)
  return Split(images=whole.images[part], labels=whole.labels[part])


# ------------------------------------------------------------ transformations


def to_float(images_uint8, value_range: str):
  """Scales uint8 pixels to float32.

  Works on numpy and jax arrays alike, so batches can travel to the device as
  uint8 (4x less transfer) and be scaled there.

  Args:
    images_uint8: uint8 array of any shape, values 0..255.
    value_range: '01' for [0, 1] (x / 255) or '-11' for [-1, 1]
      (x / 127.5 - 1).

  Returns:
    float32 array of the same shape.
  """
  if value_range not in VALUE_RANGES:
    raise ValueError(f'value_range={value_range!r}; valid: '
                     f'{", ".join(VALUE_RANGES)}.')
  x = images_uint8.astype(np.float32)
  if value_range == '01':
    return x * np.float32(1 / 255)
  return x * np.float32(2 / 255) - np.float32(1)


def resize(images_uint8: np.ndarray, size: int,
           method: str = 'auto') -> np.ndarray:
  """Resizes uint8 images (N, H, W, C) to (N, size, size, C).

  Args:
    images_uint8: uint8 (N, H, W, C).
    size: S, the output height and width.
    method: 'pad' centres the images by zero padding, which keeps every pixel
      exact (28x28 Fashion-MNIST on its black background -> 32x32); it needs
      both margins `S - H`, `S - W` even and non-negative. 'bilinear'
      resamples. 'auto' pads when it can and resamples otherwise; note that
      it pads 28 -> 64 too (a 28x28 image in the middle of a 64x64 canvas):
      pass 'bilinear' to scale it up instead.

  Returns:
    uint8 (N, S, S, C).
  """
  if method not in RESIZE_METHODS:
    raise ValueError(f'method={method!r}; valid: {", ".join(RESIZE_METHODS)}.')
  n, h, w, c = images_uint8.shape
  if (h, w) == (size, size):
    return images_uint8
  dh, dw = size - h, size - w
  can_pad = dh >= 0 and dw >= 0 and dh % 2 == 0 and dw % 2 == 0
  if method == 'pad' and not can_pad:
    raise ValueError(f'Cannot pad {h}x{w} images to {size}x{size}: both '
                     'margins must be even and non-negative. Use '
                     "method='bilinear'.")
  if method != 'bilinear' and can_pad:
    return np.pad(images_uint8,
                  ((0, 0), (dh // 2, dh // 2), (dw // 2, dw // 2), (0, 0)))
  from PIL import Image  # pylint: disable=g-import-not-at-top
  # PIL has no mode for 2-channel images; resample each channel as 'L'.
  out = np.empty((n, size, size, c), np.uint8)
  for i in range(n):
    for j in range(c):
      plane = Image.fromarray(images_uint8[i, :, :, j])
      out[i, :, :, j] = np.asarray(
          plane.resize((size, size), Image.Resampling.BILINEAR))
  return out


def to_channels(images: np.ndarray, c: int) -> np.ndarray:
  """Repeats a single channel: (..., 1) -> (..., c); (..., c) is unchanged."""
  if images.shape[-1] == c:
    return images
  if images.shape[-1] != 1:
    raise ValueError(f'to_channels maps 1 channel to {c}; got images of shape '
                     f'{images.shape}.')
  return np.repeat(images, c, axis=-1)


def one_hot_attributes(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """Class labels as attribute targets for the hinge loss.

  Args:
    labels: int (N,), values in [0, num_classes).
    num_classes: A.

  Returns:
    float32 (N, A): +1 at each example's class, -1 elsewhere.
  """
  labels = np.asarray(labels)
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f'labels must lie in [0, {num_classes}); got range '
                     f'[{labels.min()}, {labels.max()}].')
  hot = labels[:, None] == np.arange(num_classes)[None, :]
  return np.where(hot, np.float32(1), np.float32(-1))


# ------------------------------------------------------------------- batching


class Batcher:
  """Shuffled fixed-size batches of an in-memory Split, addressed by step.

  Epoch `e` visits the examples in the order
  `np.random.default_rng([seed, e]).permutation(N)`; step `s` is batch
  `s % steps_per_epoch` of epoch `s // steps_per_epoch`. The last
  `N % batch_size` examples of each permutation are dropped, so every batch
  has the same shape. With several processes, each takes its contiguous slice
  of the global batch.

  Args:
    split: the examples.
    batch_size: the global batch size B, over all processes.
    seed: selects the sequence of epoch permutations.
    process_index: this process, in [0, process_count).
    process_count: P; must divide B. Each process gets B // P examples.
  """

  def __init__(self, split: Split, batch_size: int, seed: int,
               process_index: int = 0, process_count: int = 1):
    n = len(split)
    if not 0 < batch_size <= n:
      raise ValueError(f'batch_size={batch_size} must lie in [1, {n}] (the '
                       f'split has {n} examples).')
    if process_count < 1 or batch_size % process_count:
      valid = [p for p in range(1, batch_size + 1) if batch_size % p == 0]
      raise ValueError(
          f'process_count={process_count} must divide the global '
          f'batch_size={batch_size}; valid counts: {valid}.')
    if not 0 <= process_index < process_count:
      raise ValueError(f'process_index={process_index} must lie in '
                       f'[0, {process_count}).')
    self._images = split.images
    self._labels = split.labels
    self._n = n
    self._batch_size = batch_size
    self._seed = seed
    self._local = batch_size // process_count
    self._offset = process_index * self._local
    self._cached_epoch = -1
    self._cached_perm = np.empty((0,), np.int64)

  @property
  def steps_per_epoch(self) -> int:
    return self._n // self._batch_size

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch != self._cached_epoch:
      self._cached_perm = np.random.default_rng(
          [self._seed, epoch]).permutation(self._n)
      self._cached_epoch = epoch
    return self._cached_perm

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """This process's part of the global batch at `step` (>= 0).

    Returns:
      {'image': uint8 (b, H, W, C), 'label': int32 (b,)} with
      b = batch_size // process_count.
    """
    idx = self.indices(step)
    return {'image': self._images[idx], 'label': self._labels[idx]}

  def indices(self, step: int) -> np.ndarray:
    """The rows of the split that `batch(step)` holds, (b,)."""
    if step < 0:
      raise ValueError(f'step={step} must be >= 0.')
    epoch, i = divmod(step, self.steps_per_epoch)
    start = i * self._batch_size + self._offset
    return self._permutation(epoch)[start:start + self._local]

  def device_data(self):
    """The split as `jacdistill.device_loop` keeps it on the devices
    (imported here: the device loop imports the library's JAX side, which
    the data pipeline does not need)."""
    from jacdistill import device_loop  # pylint: disable=g-import-not-at-top
    return device_loop.DeviceData(
        arrays={'image': self._images, 'label': self._labels},
        indices=self.indices)

  def iterate(self, start_step: int,
              num_steps: int) -> Iterator[dict[str, np.ndarray]]:
    """Yields `batch(s)` for s in [start_step, start_step + num_steps)."""
    for step in range(start_step, start_step + num_steps):
      yield self.batch(step)
