"""Input pipelines: in-memory MNIST-like datasets.

Small datasets (MNIST, Fashion-MNIST, SVHN) are loaded whole into host memory
as uint8 arrays, either from TFDS or from raw idx files, and batched by
`Batcher`, whose batch at step `s` is a pure function of `(seed, s)`: resuming
a run at any step needs no saved iterator state.

CelebA (about 200k JPEGs) does not fit that mould and is streamed with tf.data
by `jacdistill.celeba`, which shares `import_tf`, `tfds_builder_and_dataset`
and `DatasetUnavailableError` with this module.

TensorFlow is imported on first use only: the idx path and `Batcher` do not
need it, and importing it costs seconds.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import os
import struct
from typing import Any, Iterator

import numpy as np

DEFAULT_IDX_DIR = '/usr/share/datasets/fashion-mnist'

IN_MEMORY_DATASETS = ('mnist', 'fashion_mnist', 'svhn_cropped')
# (H, W, C) of each in-memory dataset's images.
IMAGE_SHAPES = {'mnist': (28, 28, 1), 'fashion_mnist': (28, 28, 1),
                'svhn_cropped': (32, 32, 3)}
IDX_DATASETS = ('mnist', 'fashion_mnist')
SPLITS = ('train', 'validation', 'test')
SOURCES = ('tfds', 'idx')
VALUE_RANGES = ('01', '-11')
RESIZE_METHODS = ('auto', 'pad', 'bilinear')

# idx type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/).
_IDX_DTYPES = {
    0x08: np.dtype('>u1'),
    0x09: np.dtype('>i1'),
    0x0B: np.dtype('>i2'),
    0x0C: np.dtype('>i4'),
    0x0D: np.dtype('>f4'),
    0x0E: np.dtype('>f8'),
}
_IDX_PREFIX = {'train': 'train', 'test': 't10k'}
# Enough to amortise tf.data overhead, small enough to bound the peak memory
# of materialising a split (SVHN's 32x32x3 uint8: 30 MB per chunk).
_TFDS_CHUNK = 10_000


class DatasetUnavailableError(RuntimeError):
  """A dataset is not prepared, not downloadable, or its files are unreadable.

  The message is one paragraph naming the dataset, where it was looked for and
  how to make it available.
  """


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
  """One split of an in-memory dataset.

  Attributes:
    images: uint8 (N, H, W, C); C = 1 for (Fashion-)MNIST, 3 for SVHN.
    labels: int32 (N,).
  """

  images: np.ndarray
  labels: np.ndarray

  def __post_init__(self):
    if self.images.ndim != 4 or self.images.dtype != np.uint8:
      raise ValueError(
          'Split.images must be uint8 (N, H, W, C), got '
          f'{self.images.dtype} {self.images.shape}.')
    if self.labels.shape != self.images.shape[:1] or (
        self.labels.dtype != np.int32):
      raise ValueError(
          f'Split.labels must be int32 ({self.images.shape[0]},), got '
          f'{self.labels.dtype} {self.labels.shape}.')

  def __len__(self) -> int:
    return self.images.shape[0]


# ------------------------------------------------------------------ idx files


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
  """Reads an MNIST-format idx file, gzipped (by `.gz` suffix) or plain.

  Args:
    path: the file, e.g. `.../train-images-idx3-ubyte.gz`.

  Returns:
    An array of the shape stored in the header, in native byte order: uint8
    (N, 28, 28) for MNIST image files, uint8 (N,) for label files.

  Raises:
    DatasetUnavailableError: the file is missing, unreadable, truncated, or
      its header is not a valid idx header.
  """
  path = os.fspath(path)
  try:
    if path.endswith('.gz'):
      with gzip.open(path, 'rb') as f:
        data = f.read()
    else:
      with open(path, 'rb') as f:
        data = f.read()
  except (OSError, EOFError) as e:
    # gzip reports truncation as EOFError and bad compression as
    # BadGzipFile (an OSError).
    raise DatasetUnavailableError(
        f'Cannot read idx file {path}: {e}. Check that the file exists and is '
        'complete (on Debian, `apt-get install --reinstall '
        'dataset-fashion-mnist` restores the Fashion-MNIST files), or point '
        '--config.data.idx_dir at a directory holding intact idx files.'
    ) from e

  def corrupt(why: str) -> DatasetUnavailableError:
    return DatasetUnavailableError(
        f'idx file {path} is corrupt: {why}. Replace it with an intact copy '
        '(on Debian, `apt-get install --reinstall dataset-fashion-mnist` '
        'restores the Fashion-MNIST files).')

  if len(data) < 4:
    raise corrupt(f'{len(data)} bytes, shorter than the 4-byte magic number')
  zero, type_code, ndim = struct.unpack('>HBB', data[:4])
  if zero != 0 or type_code not in _IDX_DTYPES or ndim == 0:
    raise corrupt(f'bad magic number 0x{data[:4].hex()} (expected 0x0000, a '
                  'type byte in {08,09,0B,0C,0D,0E} and a nonzero rank)')
  header_len = 4 + 4 * ndim
  if len(data) < header_len:
    raise corrupt(f'header truncated: rank {ndim} needs {header_len} bytes, '
                  f'file has {len(data)}')
  shape = struct.unpack(f'>{ndim}I', data[4:header_len])
  dtype = _IDX_DTYPES[type_code]
  expected = header_len + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  if len(data) != expected:
    raise corrupt(f'header says shape {shape} of {dtype.name} '
                  f'({expected} bytes in all) but the file has {len(data)} '
                  'bytes')
  array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape)
  return array.astype(dtype.newbyteorder('='))


def _idx_file(idx_dir: str, name: str, split: str, kind: str) -> str:
  """Path of the `kind` ('images' or 'labels') idx file, preferring `.gz`."""
  rank = 3 if kind == 'images' else 1
  stem = os.path.join(idx_dir, f'{_IDX_PREFIX[split]}-{kind}-idx{rank}-ubyte')
  for candidate in (stem + '.gz', stem):
    if os.path.isfile(candidate):
      return candidate
  fashion_hint = (
      'run `apt-get install dataset-fashion-mnist` (it installs them in '
      f'{DEFAULT_IDX_DIR}, the default idx_dir), or ' if name == 'fashion_mnist'
      else '')
  raise DatasetUnavailableError(
      f'Dataset {name!r} ({split} split) not found as idx files in '
      f'{idx_dir}: neither {stem}.gz nor {stem} exists. To fix, '
      f'{fashion_hint}put the four idx files (train-images-idx3-ubyte.gz, '
      'train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, '
      't10k-labels-idx1-ubyte.gz) in one directory and pass '
      '`--config.data.source=idx --config.data.idx_dir=DIR`, or use '
      '`--config.data.source=tfds` with a prepared TFDS data_dir.')


def _load_idx(name: str, split: str, idx_dir: str, limit: int) -> Split:
  if (name == 'mnist' and os.path.normpath(idx_dir) ==
      os.path.normpath(DEFAULT_IDX_DIR)):
    # idx headers do not say which dataset they hold; without this check
    # `name='mnist'` with the default directory would silently train on
    # Fashion-MNIST.
    raise ValueError(
        f'data.name=mnist with data.idx_dir={idx_dir!r}, which is where '
        'Debian installs Fashion-MNIST. Set --config.data.idx_dir to a '
        'directory of MNIST idx files, or use data.name=fashion_mnist.')
  images_path = _idx_file(idx_dir, name, split, 'images')
  labels_path = _idx_file(idx_dir, name, split, 'labels')
  images = read_idx(images_path)
  labels = read_idx(labels_path)
  if (images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1 or
      images.shape[0] != labels.shape[0]):
    raise DatasetUnavailableError(
        f'Dataset {name!r} idx files do not match: {images_path} holds '
        f'{images.dtype} {images.shape} (expected uint8 (N, H, W)) and '
        f'{labels_path} holds {labels.dtype} {labels.shape} (expected (N,)). '
        f'Check that {idx_dir} holds one dataset\'s images and labels.')
  if limit:
    images, labels = images[:limit], labels[:limit]
  return Split(images=np.ascontiguousarray(images[..., None]),
               labels=labels.astype(np.int32))


# ---------------------------------------------------------------------- tfds


@functools.cache
def import_tf():
  """Imports TensorFlow (and tfds) with every accelerator hidden from it.

  TF would otherwise reserve GPU memory that JAX needs; this must happen
  before TF initialises its devices, hence once, here, before any TF use.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:
    # Raised when another caller initialised TF's devices first; the
    # setting can no longer change, and that caller owns the decision.
    pass
  return tf, tfds


def _tfds_unavailable(name: str, builder: Any, data_dir: str | None,
                      cause: BaseException) -> DatasetUnavailableError:
  root = data_dir or builder.data_dir_root
  idx_hint = ''
  if name in IDX_DATASETS:
    idx_hint = (' Alternatively read raw idx files with '
                '`--config.data.source=idx --config.data.idx_dir=DIR`')
    if name == 'fashion_mnist':
      idx_hint += (f' (`apt-get install dataset-fashion-mnist` puts them in '
                   f'{DEFAULT_IDX_DIR})')
    idx_hint += '.'
  if isinstance(cause, AssertionError):
    # tfds's text for this case suggests download=True, which we never do.
    problem = 'is not prepared'
  else:
    detail = (str(cause).splitlines() or [type(cause).__name__])[0]
    problem = f'is not readable ({detail})'
  return DatasetUnavailableError(
      f'TFDS dataset {name!r} {problem} in {builder.data_dir} (data_dir '
      f'{root}), and this pipeline never downloads. To fix, on a machine '
      'with network run `python -c "import tensorflow_datasets as tfds; '
      f"tfds.builder('{name}', data_dir='{root}').download_and_prepare()\"` "
      f'and copy {os.path.join(root, name)} to this machine, passing its '
      f'parent as `--config.data.tfds_data_dir=DIR`.{idx_hint}')


def tfds_builder_and_dataset(name: str, split: str, data_dir: str | None,
                              **as_dataset_kwargs):
  """Returns (builder, tf.data.Dataset) or raises DatasetUnavailableError."""
  tf, tfds = import_tf()
  builder = tfds.builder(name, data_dir=data_dir)
  try:
    # tfds signals an unprepared dataset with AssertionError.
    ds = builder.as_dataset(split=split, **as_dataset_kwargs)
  except (AssertionError, OSError, tf.errors.OpError) as e:
    raise _tfds_unavailable(name, builder, data_dir, e) from e
  return builder, ds


def _load_tfds(name: str, split: str, data_dir: str | None,
               limit: int) -> Split:
  tf, tfds = import_tf()
  builder, ds = tfds_builder_and_dataset(name, split, data_dir,
                                          shuffle_files=False)
  if limit:
    ds = ds.take(limit)
  # Batched in chunks rather than with `batch_size=-1`: that batches by
  # `info.splits.total_num_examples`, which is 0 under
  # `tfds.testing.mock_data`, so tfds falls back to `sys.maxsize` and TF
  # aborts the whole process.
  ds = ds.map(lambda ex: (ex['image'], ex['label'])).batch(_TFDS_CHUNK)
  images, labels = [], []
  try:
    for image_chunk, label_chunk in tfds.as_numpy(ds):
      images.append(image_chunk)
      labels.append(label_chunk)
  except (OSError, tf.errors.OpError) as e:
    raise _tfds_unavailable(name, builder, data_dir, e) from e
  if not images:
    raise _tfds_unavailable(
        name, builder, data_dir, ValueError(f'split {split!r} is empty'))
  return Split(images=np.concatenate(images).astype(np.uint8),
               labels=np.concatenate(labels).astype(np.int32))


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
    whole = _load_idx(name, source_split, idx_dir, int(limit))
  else:
    whole = _load_tfds(name, source_split, tfds_data_dir, int(limit))
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
    if step < 0:
      raise ValueError(f'step={step} must be >= 0.')
    epoch, i = divmod(step, self.steps_per_epoch)
    start = i * self._batch_size + self._offset
    idx = self._permutation(epoch)[start:start + self._local]
    return {'image': self._images[idx], 'label': self._labels[idx]}

  def iterate(self, start_step: int,
              num_steps: int) -> Iterator[dict[str, np.ndarray]]:
    """Yields `batch(s)` for s in [start_step, start_step + num_steps)."""
    for step in range(start_step, start_step + num_steps):
      yield self.batch(step)
