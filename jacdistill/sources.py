"""Raw sources of the in-memory datasets: MNIST-format idx files and TFDS.

`read_idx` reads one idx file; `load_idx` and `load_tfds` return one whole
split as a `Split` of uint8 images and int32 labels, and every failure is a
`DatasetUnavailableError` whose message says how to make the data available
(this code never downloads). `import_tf` and `tfds_builder_and_dataset` are
shared with the CelebA stream (`jacdistill.celeba`). `input_pipeline.load_split`
picks the source, the limit and the validation hold-out on top of these.

TensorFlow is imported on first use only: the idx path does not need it, and
importing it costs seconds.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import os
import struct
from typing import Any

import numpy as np

DEFAULT_IDX_DIR = '/usr/share/datasets/fashion-mnist'
IDX_DATASETS = ('mnist', 'fashion_mnist')  # Datasets with idx files.
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


def load_idx(name: str, split: str, idx_dir: str, limit: int) -> Split:
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


def load_tfds(name: str, split: str, data_dir: str | None,
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
