"""Tests of jacdistill.input_pipeline and jacdistill.sources on real idx files,
hand-made files and tfds mock data (no network)."""

import gzip
import os
import struct

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jacdistill import celeba
from jacdistill import input_pipeline as ip
from jacdistill import sources

FASHION_DIR = ip.DEFAULT_IDX_DIR
FASHION_PRESENT = os.path.isfile(
    os.path.join(FASHION_DIR, 'train-images-idx3-ubyte.gz'))
needs_fashion = pytest.mark.skipif(
    not FASHION_PRESENT,
    reason=f'Fashion-MNIST idx files not in {FASHION_DIR} '
    '(apt-get install dataset-fashion-mnist)')


def data_config(**overrides):
  config = ml_collections.ConfigDict(dict(
      name='fashion_mnist', source='idx', idx_dir=FASHION_DIR,
      tfds_data_dir=None, limit=0, image_size=64, attributes=[]))
  config.update(overrides)
  return config


def idx_bytes(array: np.ndarray, type_code: int) -> bytes:
  """Serialises `array` as idx by hand: magic, big-endian dims, data."""
  header = struct.pack('>HBB', 0, type_code, array.ndim)
  header += struct.pack(f'>{array.ndim}I', *array.shape)
  return header + array.astype(array.dtype.newbyteorder('>')).tobytes()


def write_idx_dir(directory, images: np.ndarray, labels: np.ndarray,
                  split: str = 'train', compress: bool = True):
  prefix = {'train': 'train', 'test': 't10k'}[split]
  suffix = '.gz' if compress else ''
  opener = gzip.open if compress else open
  for kind, rank, array in (('images', 3, images), ('labels', 1, labels)):
    with opener(os.path.join(directory, f'{prefix}-{kind}-idx{rank}-ubyte'
                             f'{suffix}'), 'wb') as f:
      f.write(idx_bytes(array, 0x08))


# ------------------------------------------------------------------ read_idx


@pytest.fixture(scope='module')
def fashion_train():
  return (sources.read_idx(os.path.join(FASHION_DIR, 'train-images-idx3-ubyte.gz')),
          sources.read_idx(os.path.join(FASHION_DIR, 'train-labels-idx1-ubyte.gz')))


@needs_fashion
def test_read_idx_real_fashion_mnist_train(fashion_train):
  images, labels = fashion_train
  assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
  assert labels.shape == (60000,) and labels.dtype == np.uint8
  # Golden values of the published files: the first item is an ankle boot
  # (class 9), the classes are balanced, and these pixel sums.
  np.testing.assert_array_equal(labels[:10], [9, 0, 0, 3, 0, 2, 7, 2, 5, 5])
  np.testing.assert_array_equal(np.bincount(labels), [6000] * 10)
  assert int(images[0].sum(dtype=np.int64)) == 76247
  assert int(images.sum(dtype=np.int64)) == 3431114169


@needs_fashion
def test_read_idx_real_fashion_mnist_test():
  images = sources.read_idx(os.path.join(FASHION_DIR, 't10k-images-idx3-ubyte.gz'))
  labels = sources.read_idx(os.path.join(FASHION_DIR, 't10k-labels-idx1-ubyte.gz'))
  assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
  assert labels.shape == (10000,) and labels.min() == 0 and labels.max() == 9
  np.testing.assert_array_equal(labels[:5], [9, 2, 1, 1, 6])
  np.testing.assert_array_equal(np.bincount(labels), [1000] * 10)


@pytest.mark.parametrize('compress', [False, True])
def test_read_idx_tiny_uint8(tmp_path, compress):
  path = tmp_path / ('tiny.idx' + ('.gz' if compress else ''))
  data = struct.pack('>BBBB', 0, 0, 0x08, 3) + struct.pack('>3I', 2, 2, 3)
  data += bytes(range(12))
  with (gzip.open if compress else open)(path, 'wb') as f:
    f.write(data)
  out = sources.read_idx(path)
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out, np.arange(12).reshape(2, 2, 3))


def test_read_idx_tiny_big_endian_int32(tmp_path):
  path = tmp_path / 'ints.idx'
  # Three big-endian int32s written byte by byte: 1, -2, 70000.
  path.write_bytes(b'\x00\x00\x0c\x01' b'\x00\x00\x00\x03'
                   b'\x00\x00\x00\x01' b'\xff\xff\xff\xfe' b'\x00\x01\x11\x70')
  out = sources.read_idx(path)
  assert out.dtype == np.int32 and out.dtype.isnative
  np.testing.assert_array_equal(out, [1, -2, 70000])


def test_read_idx_truncated_raises_naming_path(tmp_path):
  path = tmp_path / 'short-images-idx3-ubyte'
  path.write_bytes(idx_bytes(np.zeros((3, 4, 4), np.uint8), 0x08)[:-1])
  with pytest.raises(ip.DatasetUnavailableError, match='short-images') as e:
    sources.read_idx(path)
  assert str(path) in str(e.value)
  assert '3, 4, 4' in str(e.value)


def test_read_idx_truncated_gzip_raises(tmp_path):
  path = tmp_path / 'cut.gz'
  full = gzip.compress(idx_bytes(np.arange(4000, dtype=np.uint8).reshape(
      1000, 4) % 251, 0x08))
  path.write_bytes(full[:len(full) // 2])
  with pytest.raises(ip.DatasetUnavailableError) as e:
    sources.read_idx(path)
  assert str(path) in str(e.value)
  assert isinstance(e.value.__cause__, (EOFError, OSError))


def test_read_idx_bad_magic_raises_naming_path(tmp_path):
  path = tmp_path / 'bad.idx'
  path.write_bytes(b'\x01\x00\x08\x01' + struct.pack('>I', 2) + b'\x05\x06')
  with pytest.raises(ip.DatasetUnavailableError, match='magic') as e:
    sources.read_idx(path)
  assert str(path) in str(e.value)


def test_read_idx_missing_file_raises(tmp_path):
  path = tmp_path / 'absent.gz'
  with pytest.raises(ip.DatasetUnavailableError) as e:
    sources.read_idx(path)
  assert str(path) in str(e.value)
  assert isinstance(e.value.__cause__, FileNotFoundError)


# ------------------------------------------------------------- load_split idx


@needs_fashion
def test_load_split_idx_fashion_with_limit(fashion_train):
  split = ip.load_split(data_config(limit=100), 'train')
  assert split.images.shape == (100, 28, 28, 1)
  assert split.images.dtype == np.uint8 and split.labels.dtype == np.int32
  np.testing.assert_array_equal(split.images[..., 0], fashion_train[0][:100])
  np.testing.assert_array_equal(split.labels, fashion_train[1][:100])
  test = ip.load_split(data_config(limit=7), 'test')
  assert len(test) == 7 and test.labels[0] == 9


@pytest.mark.parametrize('compress', [False, True])
def test_load_split_idx_hand_made_dir(tmp_path, compress):
  images = (np.arange(5 * 4 * 3) % 256).astype(np.uint8).reshape(5, 4, 3)
  labels = np.array([3, 1, 4, 1, 5], np.uint8)
  write_idx_dir(tmp_path, images, labels, split='test', compress=compress)
  split = ip.load_split(data_config(name='mnist', idx_dir=str(tmp_path)),
                        'test')
  np.testing.assert_array_equal(split.images, images[..., None])
  np.testing.assert_array_equal(split.labels, labels)
  assert split.labels.dtype == np.int32


def test_load_split_idx_mismatched_counts_raise(tmp_path):
  write_idx_dir(tmp_path, np.zeros((5, 2, 2), np.uint8),
                np.zeros((4,), np.uint8))
  with pytest.raises(ip.DatasetUnavailableError, match=str(tmp_path)):
    ip.load_split(data_config(idx_dir=str(tmp_path)), 'train')


def test_load_split_idx_missing_dir_names_dir_and_fix(tmp_path):
  missing = tmp_path / 'no-such-dir'
  with pytest.raises(ip.DatasetUnavailableError) as e:
    ip.load_split(data_config(idx_dir=str(missing)), 'train')
  message = str(e.value)
  assert str(missing) in message
  assert 'fashion_mnist' in message
  assert 'apt-get install dataset-fashion-mnist' in message
  assert '--config.data.idx_dir' in message
  assert '\n' not in message


def test_load_split_rejects_bad_config(tmp_path):
  with pytest.raises(ValueError, match='mnist, fashion_mnist, svhn_cropped'):
    ip.load_split(data_config(name='cifar10'), 'train')
  with pytest.raises(ValueError, match='train, validation, test'):
    ip.load_split(data_config(), 'dev')
  with pytest.raises(ValueError, match='validation split is empty'):
    ip.load_split(data_config(), 'validation')
  with pytest.raises(ValueError, match='tfds, idx'):
    ip.load_split(data_config(source='npz'), 'train')
  with pytest.raises(ValueError, match='svhn_cropped'):
    ip.load_split(data_config(name='svhn_cropped'), 'train')
  with pytest.raises(ValueError, match='limit'):
    ip.load_split(data_config(limit=-1), 'train')
  # The default idx dir holds Fashion-MNIST; reading it as MNIST is an error.
  with pytest.raises(ValueError, match='Fashion-MNIST'):
    ip.load_split(data_config(name='mnist'), 'train')


# ------------------------------------------------------------ load_split tfds


@pytest.mark.parametrize('name,shape', [
    ('mnist', (28, 28, 1)),
    ('fashion_mnist', (28, 28, 1)),
    ('svhn_cropped', (32, 32, 3)),
])
def test_load_split_tfds_mock(tmp_path, name, shape):
  config = data_config(name=name, source='tfds', tfds_data_dir=str(tmp_path))
  with tfds.testing.mock_data(num_examples=6):
    split = ip.load_split(config, 'test')
    limited = ip.load_split(data_config(
        name=name, source='tfds', tfds_data_dir=str(tmp_path), limit=4),
                            'train')
  assert split.images.shape == (6,) + shape
  assert split.images.dtype == np.uint8
  assert split.labels.shape == (6,) and split.labels.dtype == np.int32
  assert split.labels.min() >= 0 and split.labels.max() <= 9
  assert limited.images.shape == (4,) + shape


def test_load_split_tfds_unprepared_raises(tmp_path):
  config = data_config(name='svhn_cropped', source='tfds',
                       tfds_data_dir=str(tmp_path))
  with pytest.raises(ip.DatasetUnavailableError) as e:
    ip.load_split(config, 'train')
  message = str(e.value)
  assert 'svhn_cropped' in message and str(tmp_path) in message
  assert 'is not prepared' in message and 'never downloads' in message
  assert 'download_and_prepare' in message and '\n' not in message
  assert isinstance(e.value.__cause__, AssertionError)


def test_load_split_tfds_unprepared_fashion_suggests_idx(tmp_path):
  config = data_config(source='tfds', tfds_data_dir=str(tmp_path))
  with pytest.raises(ip.DatasetUnavailableError,
                     match='--config.data.source=idx'):
    ip.load_split(config, 'test')


# -------------------------------------------------------------------- Batcher


def indexed_split(n: int) -> ip.Split:
  """Image i is filled with i % 256 and its label is i, so a batch names the
  examples it holds."""
  ids = np.arange(n)
  images = np.broadcast_to((ids % 256).astype(np.uint8)[:, None, None, None],
                           (n, 2, 3, 1)).copy()
  return ip.Split(images=images, labels=ids.astype(np.int32))


def test_batcher_shapes_and_steps():
  batcher = ip.Batcher(indexed_split(103), batch_size=10, seed=0)
  assert batcher.steps_per_epoch == 10
  batch = batcher.batch(0)
  assert batch['image'].shape == (10, 2, 3, 1)
  assert batch['image'].dtype == np.uint8
  assert batch['label'].shape == (10,) and batch['label'].dtype == np.int32
  np.testing.assert_array_equal(batch['image'][:, 0, 0, 0],
                                batch['label'] % 256)


def test_batcher_matches_documented_permutation():
  batcher = ip.Batcher(indexed_split(103), batch_size=10, seed=7)
  perm = np.random.default_rng([7, 2]).permutation(103)
  np.testing.assert_array_equal(batcher.batch(2 * 10 + 3)['label'],
                                perm[30:40])


def test_batcher_deterministic_and_resumable():
  split = indexed_split(103)
  straight = [b['label'] for b in
              ip.Batcher(split, 10, seed=3).iterate(0, 35)]
  resumed = ip.Batcher(split, 10, seed=3)
  tail = [b['label'] for b in resumed.iterate(17, 18)]
  for a, b in zip(straight[17:], tail, strict=True):
    np.testing.assert_array_equal(a, b)
  # Out-of-order access (a jump back to an earlier epoch) changes nothing.
  np.testing.assert_array_equal(resumed.batch(4)['label'], straight[4])
  other_seed = ip.Batcher(split, 10, seed=4)
  assert not np.array_equal(other_seed.batch(0)['label'], straight[0])


def test_batcher_each_epoch_is_a_permutation():
  n, batch_size = 100, 10
  batcher = ip.Batcher(indexed_split(n), batch_size, seed=0)
  epochs = []
  for epoch in range(3):
    labels = np.concatenate([
        batcher.batch(epoch * 10 + i)['label'] for i in range(10)])
    np.testing.assert_array_equal(np.sort(labels), np.arange(n))
    epochs.append(labels)
  assert not np.array_equal(epochs[0], epochs[1])
  assert not np.array_equal(epochs[1], epochs[2])


def test_batcher_drops_remainder():
  batcher = ip.Batcher(indexed_split(25), batch_size=10, seed=1)
  assert batcher.steps_per_epoch == 2
  labels = np.concatenate([batcher.batch(s)['label'] for s in range(2)])
  assert len(np.unique(labels)) == 20
  perm = np.random.default_rng([1, 0]).permutation(25)
  assert set(labels) == set(perm[:20])


def test_batcher_process_slices_concatenate_to_global_batch():
  split = indexed_split(97)
  whole = ip.Batcher(split, batch_size=12, seed=5)
  parts = [ip.Batcher(split, 12, seed=5, process_index=p, process_count=3)
           for p in range(3)]
  for step in (0, 1, 8, 9, 50):
    pieces = [p.batch(step) for p in parts]
    assert all(piece['label'].shape == (4,) for piece in pieces)
    np.testing.assert_array_equal(
        np.concatenate([piece['label'] for piece in pieces]),
        whole.batch(step)['label'])
    np.testing.assert_array_equal(
        np.concatenate([piece['image'] for piece in pieces]),
        whole.batch(step)['image'])


def test_batcher_rejects_bad_arguments():
  split = indexed_split(20)
  with pytest.raises(ValueError, match=r'valid counts: \[1, 2, 3, 4, 6, 12\]'):
    ip.Batcher(split, 12, seed=0, process_count=5)
  with pytest.raises(ValueError, match='process_index'):
    ip.Batcher(split, 12, seed=0, process_index=2, process_count=2)
  with pytest.raises(ValueError, match='20 examples'):
    ip.Batcher(split, 21, seed=0)
  with pytest.raises(ValueError, match='step'):
    ip.Batcher(split, 4, seed=0).batch(-1)


# --------------------------------------------------------------------- CelebA


def celeb_a_batches(tmp_path, num_examples=8, **kwargs):
  config = data_config(tfds_data_dir=str(tmp_path),
                       attributes=kwargs.pop('attributes', []),
                       image_size=kwargs.pop('image_size', 64))
  with tfds.testing.mock_data(num_examples=num_examples):
    return list(celeba.celeb_a_dataset(config, **kwargs))


def test_celeb_a_attribute_names_match_tfds():
  features = tfds.builder('celeb_a').info.features['attributes']
  assert tuple(features.keys()) == celeba.CELEB_A_ATTRIBUTES
  assert len(celeba.CELEB_A_ATTRIBUTES) == 40


def test_celeb_a_eval_shapes_ranges_and_attribute_order(tmp_path):
  every = celeb_a_batches(tmp_path, split='validation', batch_size=3, seed=0,
                          train=False)
  assert len(every) == 2  # 8 examples, remainder of 2 dropped.
  images = every[0]['image']
  assert images.shape == (3, 64, 64, 3) and images.dtype == np.float32
  assert images.min() >= -1.0 and images.max() <= 1.0
  assert images.max() - images.min() > 1.0  # Scaled, not left at 0..1.
  everything = np.concatenate([b['attributes'] for b in every])
  assert everything.shape == (6, 40) and everything.dtype == np.float32
  assert set(np.unique(everything)) <= {-1.0, 1.0}

  wanted = ['Smiling', 'Male', 'Bald']
  subset = celeb_a_batches(tmp_path, split='validation', batch_size=3, seed=0,
                           train=False, attributes=wanted, image_size=32)
  assert subset[0]['image'].shape == (3, 32, 32, 3)
  columns = [celeba.CELEB_A_ATTRIBUTES.index(a) for a in wanted]
  np.testing.assert_array_equal(
      np.concatenate([b['attributes'] for b in subset]),
      everything[:, columns])


def test_celeb_a_train_is_seeded_and_repeats(tmp_path):
  def first_batches(seed):
    config = data_config(tfds_data_dir=str(tmp_path), image_size=16)
    with tfds.testing.mock_data(num_examples=6):
      stream = iter(celeba.celeb_a_dataset(config, 'train', batch_size=4,
                                       seed=seed, train=True))
      # 6 examples, batches of 4: a third batch exists only if it repeats.
      return [next(stream) for _ in range(3)]
  a, b, c = first_batches(1), first_batches(1), first_batches(2)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['image'], y['image'])
    np.testing.assert_array_equal(x['attributes'], y['attributes'])
  assert not all(np.array_equal(x['image'], z['image']) for x, z in zip(a, c))


def test_celeb_a_flip_is_applied_in_train(tmp_path):
  config = data_config(tfds_data_dir=str(tmp_path), image_size=16)
  with tfds.testing.mock_data(num_examples=8):
    eval_images = next(iter(celeba.celeb_a_dataset(
        config, 'test', batch_size=8, seed=0, train=False)))['image']
    # A buffer of 1 keeps the order, so only flips can differ.
    train_images = next(iter(celeba.celeb_a_dataset(
        config, 'test', batch_size=8, seed=0, train=True,
        shuffle_buffer=1)))['image']
  flipped = [np.allclose(t, e[:, ::-1]) and not np.allclose(t, e)
             for t, e in zip(train_images, eval_images)]
  kept = [np.allclose(t, e) for t, e in zip(train_images, eval_images)]
  assert all(f or k for f, k in zip(flipped, kept))
  # Fair coins; both outcomes among 8 fail to appear with probability 1/128.
  assert any(flipped) and any(kept)


def test_celeb_a_unknown_attribute_raises(tmp_path):
  config = data_config(tfds_data_dir=str(tmp_path), attributes=['Smiling',
                                                                 'Happy'])
  with pytest.raises(ValueError, match="'Happy'.*Wearing_Necktie"):
    celeba.celeb_a_dataset(config, 'train', batch_size=2, seed=0, train=True)
  with pytest.raises(ValueError, match='validation'):
    celeba.celeb_a_dataset(data_config(), 'val', batch_size=2, seed=0, train=True)


def test_celeb_a_unprepared_raises(tmp_path):
  config = data_config(tfds_data_dir=str(tmp_path))
  with pytest.raises(ip.DatasetUnavailableError, match='celeb_a') as e:
    celeba.celeb_a_dataset(config, 'test', batch_size=2, seed=0, train=False)
  assert str(tmp_path) in str(e.value)


# ------------------------------------------------------------ transformations


def test_to_float_ranges():
  x = np.array([0, 51, 255], np.uint8)
  zero_one = ip.to_float(x, '01')
  assert zero_one.dtype == np.float32
  np.testing.assert_allclose(zero_one, [0.0, 0.2, 1.0], rtol=1e-6)
  minus_one_one = ip.to_float(x, '-11')
  assert minus_one_one.dtype == np.float32
  np.testing.assert_allclose(minus_one_one, [-1.0, -0.6, 1.0], rtol=1e-6)
  with pytest.raises(ValueError, match='01, -11'):
    ip.to_float(x, '0255')


def test_resize_pads_exactly_when_margins_are_even():
  images = np.random.default_rng(0).integers(1, 256, (2, 28, 28, 1),
                                             dtype=np.uint8)
  for method in ('auto', 'pad'):
    padded = ip.resize(images, 32, method)
    assert padded.shape == (2, 32, 32, 1) and padded.dtype == np.uint8
    np.testing.assert_array_equal(padded[:, 2:30, 2:30], images)
    assert padded.sum(dtype=np.int64) == images.sum(dtype=np.int64)
  assert ip.resize(images, 28) is images
  with pytest.raises(ValueError, match='bilinear'):
    ip.resize(images, 31, 'pad')


@pytest.mark.parametrize('size,method', [
    (64, 'bilinear'), (27, 'auto'), (31, 'auto'), (32, 'bilinear')])
def test_resize_bilinear(size, method):
  images = np.full((3, 28, 28, 3), 77, np.uint8)
  images[1] = 200
  images[2, :, :14] = 10  # Left half dark, right half bright.
  out = ip.resize(images, size, method)
  assert out.shape == (3, size, size, 3) and out.dtype == np.uint8
  # A constant image stays constant under any interpolation.
  np.testing.assert_array_equal(out[0], 77)
  np.testing.assert_array_equal(out[1], 200)
  # No padding: the corners keep their image's values.
  np.testing.assert_array_equal(out[2, [0, -1], 0], 10)
  np.testing.assert_array_equal(out[2, [0, -1], -1], 77)


def test_to_channels():
  gray = np.arange(2 * 2 * 2, dtype=np.uint8).reshape(2, 2, 2, 1)
  rgb = ip.to_channels(gray, 3)
  assert rgb.shape == (2, 2, 2, 3)
  for c in range(3):
    np.testing.assert_array_equal(rgb[..., c], gray[..., 0])
  assert ip.to_channels(rgb, 3) is rgb
  with pytest.raises(ValueError, match='1 channel'):
    ip.to_channels(np.zeros((1, 2, 2, 2)), 3)


def test_one_hot_attributes():
  out = ip.one_hot_attributes(np.array([2, 0]), 3)
  assert out.dtype == np.float32
  np.testing.assert_array_equal(out, [[-1, -1, 1], [1, -1, -1]])
  with pytest.raises(ValueError, match=r'\[0, 3\)'):
    ip.one_hot_attributes(np.array([3]), 3)
