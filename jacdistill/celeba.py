"""The CelebA stream: aligned faces from TFDS, streamed with tf.data.

CelebA (about 200k JPEGs) does not fit in host memory as the small datasets
of `input_pipeline` do, so `celeb_a_dataset` streams it; `CelebABatcher`
addresses that stream by step as `input_pipeline.Batcher` does (a resumed run
needs no saved iterator state), and `celeb_a_arrays` reads a bounded
evaluation set into memory. TensorFlow is imported on first use only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jacdistill import sources

CELEB_A = 'celeb_a'  # The tfds name of the streamed dataset.
CELEB_A_SPLITS = ('train', 'validation', 'test')
# The order of tfds's `celeb_a` feature dict (alphabetical), which is also the
# column order of the original list_attr_celeba.txt.
CELEB_A_ATTRIBUTES = (
    '5_o_Clock_Shadow', 'Arched_Eyebrows', 'Attractive', 'Bags_Under_Eyes',
    'Bald', 'Bangs', 'Big_Lips', 'Big_Nose', 'Black_Hair', 'Blond_Hair',
    'Blurry', 'Brown_Hair', 'Bushy_Eyebrows', 'Chubby', 'Double_Chin',
    'Eyeglasses', 'Goatee', 'Gray_Hair', 'Heavy_Makeup', 'High_Cheekbones',
    'Male', 'Mouth_Slightly_Open', 'Mustache', 'Narrow_Eyes', 'No_Beard',
    'Oval_Face', 'Pale_Skin', 'Pointy_Nose', 'Receding_Hairline',
    'Rosy_Cheeks', 'Sideburns', 'Smiling', 'Straight_Hair', 'Wavy_Hair',
    'Wearing_Earrings', 'Wearing_Hat', 'Wearing_Lipstick', 'Wearing_Necklace',
    'Wearing_Necktie', 'Young',
)

# CelebA images per tf.data batch when reading a split into memory.
_CELEB_A_CHUNK = 500


def celeb_a_attribute_names(data_config: Any) -> tuple[str, ...]:
  """`data_config.attributes` (empty or None = all 40), checked.

  Raises:
    ValueError: a name that is not a CelebA attribute (one line, listing the
      valid names).
  """
  names = tuple(getattr(data_config, 'attributes', None) or CELEB_A_ATTRIBUTES)
  unknown = [a for a in names if a not in CELEB_A_ATTRIBUTES]
  if unknown:
    raise ValueError(f'Unknown CelebA attributes {unknown}; valid names: '
                     f'{", ".join(CELEB_A_ATTRIBUTES)}.')
  return names


def celeb_a_dataset(data_config: Any, split: str, batch_size: int, seed: int,
                    train: bool, shuffle_buffer: int = 10_000,
                    start_step: int = 0, limit: int = 0,
                    process_index: int = 0, process_count: int = 1,
                    drop_remainder: bool = True):
  """Streams aligned CelebA from TFDS (never downloads).

  Each image (218, 178, 3) has rows 20:-20 cut to (178, 178), is resized
  (bilinear, antialiased) to S = `data_config.image_size` (default 64) and
  scaled to [-1, 1]. When `train`, the stream is shuffled (files and a
  `shuffle_buffer` of encoded JPEGs), repeated forever, and each image
  flipped left-right with probability 1/2; all of it is determined by `seed`.
  Otherwise the split is read once, in order, unflipped.

  The stream is a sequence of global batches of B examples; global batch t
  holds stream positions [t B, (t + 1) B), and the flip of an example is keyed
  by (seed, position). `start_step` skips the first `start_step` global
  batches while the examples are still encoded (no JPEG is decoded for
  them), so the stream started at t yields exactly the batches t, t + 1, ...
  of the stream started at 0. With P processes, process i keeps positions
  [i B/P, (i + 1) B/P) of each global batch, again before decoding.

  Args:
    data_config: attribute object with `tfds_data_dir` (None = tfds's
      default), `image_size` (S, default 64), `attributes` (CelebA attribute
      names in the order wanted; empty or None = CELEB_A_ATTRIBUTES).
    split: 'train', 'validation' or 'test'.
    batch_size: the global batch size B.
    seed: shuffling and flipping seed.
    train: whether to shuffle, repeat and flip.
    shuffle_buffer: examples held by the shuffle buffer.
    start_step: global batches skipped, t >= 0.
    limit: read at most this many examples after the skipped ones (0 = no
      limit).
    process_index: this process, in [0, process_count).
    process_count: P; must divide B.
    drop_remainder: drop a last batch smaller than B / P (always dropped in
      a training stream, which never ends).

  Returns:
    An iterable of numpy dicts {'image': float32 (B/P, S, S, 3) in [-1, 1],
    'attributes': float32 (B/P, A) in {-1, +1}}.

  Raises:
    ValueError: unknown split or attribute names, bad sizes or steps.
    sources.DatasetUnavailableError: `celeb_a` is not prepared in
      the data_dir.
  """
  if split not in CELEB_A_SPLITS:
    raise ValueError(f'split={split!r}; valid CelebA splits: '
                     f'{", ".join(CELEB_A_SPLITS)}.')
  names = celeb_a_attribute_names(data_config)
  size = getattr(data_config, 'image_size', 64) or 64
  if int(size) != size or size < 1:
    raise ValueError(f'data.image_size={size!r} must be a positive integer '
                     '(64, 128 or 256 for the paper\'s models).')
  if batch_size < 1:
    raise ValueError(f'batch_size={batch_size} must be positive.')
  if process_count < 1 or batch_size % process_count:
    raise ValueError(f'process_count={process_count} must divide the global '
                     f'batch_size={batch_size}.')
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} must lie in '
                     f'[0, {process_count}).')
  if start_step < 0 or limit < 0:
    raise ValueError(f'start_step={start_step} and limit={limit} must be '
                     '>= 0.')
  size = int(size)
  local = batch_size // process_count

  tf, tfds = sources.import_tf()
  data_dir = getattr(data_config, 'tfds_data_dir', None) or None
  _, ds = sources.tfds_builder_and_dataset(
      CELEB_A, split, data_dir,
      shuffle_files=train,
      read_config=tfds.ReadConfig(shuffle_seed=seed),
      # Shuffling the JPEG bytes (about 10 kB each) instead of decoded images
      # (116 kB) keeps the buffer about 100 MB.
      decoders={'image': tfds.decode.SkipDecoding()})
  ds = ds.map(lambda ex: (ex['image'], ex['attributes']))
  if train:
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.repeat()
  # The stream position indexes the flip seed, so flips are a function of
  # (seed, position) and independent of skips, process slicing and parallel
  # map scheduling.
  ds = ds.enumerate()
  if start_step:
    ds = ds.skip(start_step * batch_size)
  if limit:
    ds = ds.take(limit)
  if process_count > 1:
    ds = ds.filter(
        lambda index, _: (index % batch_size) // local == process_index)

  def preprocess(index, example):
    jpeg, attributes = example
    image = tf.io.decode_jpeg(jpeg, channels=3)[20:-20]
    image = tf.image.resize(image, (size, size), method='bilinear',
                            antialias=True)
    if train:
      image = tf.image.stateless_random_flip_left_right(
          image, seed=tf.stack([tf.cast(seed, tf.int64), index]))
    # The resize filter has non-negative weights, but float rounding can
    # still land a hair outside [-1, 1].
    image = tf.clip_by_value(image / 127.5 - 1.0, -1.0, 1.0)
    targets = tf.stack([tf.cast(attributes[a], tf.float32) for a in names])
    return {'image': image, 'attributes': 2.0 * targets - 1.0}

  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local, drop_remainder=drop_remainder or train)
  return tfds.as_numpy(ds.prefetch(tf.data.AUTOTUNE))


def celeb_a_num_examples(data_config: Any, split: str) -> int:
  """Examples in a CelebA split (162,770 / 19,867 / 19,962 when prepared).

  Read from the dataset's recorded size; counted (encoded, not decoded) when
  it has none, as under `tfds.testing.mock_data`.

  Raises:
    ValueError: an unknown split.
    sources.DatasetUnavailableError: `celeb_a` is not prepared in
      the data_dir.
  """
  if split not in CELEB_A_SPLITS:
    raise ValueError(f'split={split!r}; valid CelebA splits: '
                     f'{", ".join(CELEB_A_SPLITS)}.')
  _, tfds = sources.import_tf()
  data_dir = getattr(data_config, 'tfds_data_dir', None) or None
  _, ds = sources.tfds_builder_and_dataset(
      CELEB_A, split, data_dir, shuffle_files=False,
      decoders={'image': tfds.decode.SkipDecoding()})
  n = int(ds.cardinality())
  if n < 0:
    n = int(ds.reduce(np.int64(0), lambda count, _: count + 1))
  return n


def celeb_a_arrays(data_config: Any, split: str,
                   limit: int = 0) -> dict[str, np.ndarray]:
  """The first `limit` examples of a CelebA split (0 = all), in memory.

  Preprocessed as `celeb_a_dataset` with `train=False`.

  Returns:
    {'image': float32 (N, S, S, 3) in [-1, 1], 'attributes': float32 (N, A)
    in {-1, +1}}, N = min(limit, split size).

  Raises:
    as `celeb_a_dataset`, and sources.DatasetUnavailableError if the
    split is empty.
  """
  chunks = list(celeb_a_dataset(data_config, split, batch_size=_CELEB_A_CHUNK,
                                seed=0, train=False, limit=limit,
                                drop_remainder=False))
  if not chunks:
    raise sources.DatasetUnavailableError(
        f'CelebA split {split!r} is empty (data_dir '
        f'{getattr(data_config, "tfds_data_dir", None)}); prepare celeb_a '
        'again (README.md, "CelebA").')
  return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


class CelebABatcher:
  """CelebA training batches addressed by step, like `input_pipeline.Batcher`.

  `batch(s)` is global batch s of `celeb_a_dataset(..., train=True)`, this
  process's slice of it: a function of (seed, s) alone. Consecutive steps
  read on from one open stream; any other step (a resumed run, a new stage)
  reopens the stream at that step, skipping the encoded examples before it.

  Attributes:
    num_examples: examples in the train split.
    opened: how many times the stream was (re)opened.

  Args:
    data_config: as `celeb_a_dataset` takes.
    batch_size: the global batch size B.
    seed: selects the shuffles and the flips.
    process_index, process_count: this process's slice, as in
      `input_pipeline.Batcher`.
    shuffle_buffer: examples held by the shuffle buffer.
  """

  def __init__(self, data_config: Any, batch_size: int, seed: int,
               process_index: int = 0, process_count: int = 1,
               shuffle_buffer: int = 10_000):
    self._args = dict(data_config=data_config, split='train',
                      batch_size=batch_size, seed=seed, train=True,
                      shuffle_buffer=shuffle_buffer,
                      process_index=process_index, process_count=process_count)
    self.num_examples = celeb_a_num_examples(data_config, 'train')
    if not 0 < batch_size <= self.num_examples:
      raise ValueError(f'batch_size={batch_size} must lie in [1, '
                       f'{self.num_examples}] (the CelebA train split has '
                       f'{self.num_examples} examples).')
    self._stream = None
    self._next_step = -1
    self.opened = 0

  @property
  def steps_per_epoch(self) -> int:
    return self.num_examples // self._args['batch_size']

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """This process's part of the global batch at `step` (>= 0).

    Returns:
      {'image': float32 (b, S, S, 3) in [-1, 1], 'attributes': float32 (b, A)
      in {-1, +1}} with b = batch_size // process_count.
    """
    if step < 0:
      raise ValueError(f'step={step} must be >= 0.')
    if step != self._next_step:
      self._stream = iter(celeb_a_dataset(start_step=step, **self._args))
      self.opened += 1
    self._next_step = step + 1
    return next(self._stream)
