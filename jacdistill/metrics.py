"""Reconstruction and disentangling scores, as pure functions of arrays.

Reconstruction: per-image MSE in [0, 1] pixel units and the mean of the
per-image PSNRs (`reconstruction_scores`). Disentangling, docs/method.md's swap
protocol (`evaluate_autoencoder`): an external classifier, given as a
logits function, labels each reconstruction; the first `factor_dims` code
dims (the original teacher's) of `x_i` are replaced by those of `x_pi(i)`,
the result is decoded and labelled again, and the swap is right when the
classifier now says what it said of `x_pi(i)`'s reconstruction. Only pairs
whose reconstructions it labels differently count. The evaluator only
counts; training and caching the classifier are `classifier.py`'s and
`classifier_cache.py`'s.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jacdistill import input_pipeline


def pad_to(a: np.ndarray, size: int) -> np.ndarray:
  """Pads the first axis with zeros up to `size`: every batch then has one
  shape and the jitted callables compile once."""
  if a.shape[0] == size:
    return a
  return np.concatenate([a, np.zeros((size - a.shape[0], *a.shape[1:]),
                                     a.dtype)])


def batch_bounds(n: int, batch_size: int):
  """(start, stop) of consecutive batches covering range(n)."""
  for start in range(0, n, batch_size):
    yield start, min(start + batch_size, n)


def mse_per_image(x: jax.Array, x_hat: jax.Array) -> jax.Array:
  """`mse_i = mean_pixels((x_i - x_hat_i)^2)`: (N, ...) x2 -> (N,)."""
  sq = jnp.square(x.astype(jnp.float32) - x_hat.astype(jnp.float32))
  return jnp.mean(sq.reshape(sq.shape[0], -1), axis=1)


def psnr(x: jax.Array, x_hat: jax.Array, data_range: float) -> jax.Array:
  """Mean over images of the per-image peak signal-to-noise ratio, in dB.

  `psnr = mean_i 10 log10(data_range^2 / mse_i)`, `mse_i` as in
  `mse_per_image`. An exact reconstruction (`mse_i = 0`) gives +inf.

  Args:
    x, x_hat: images (N, ...), in the same units as `data_range` (1 for
      [0, 1] pixels, 2 for [-1, 1]).
    data_range: the peak-to-peak pixel range.

  Returns:
    float32 scalar.
  """
  return jnp.mean(10 * jnp.log10(jnp.square(data_range)
                                 / mse_per_image(x, x_hat)))


def reconstruction_scores(mse01: np.ndarray) -> dict[str, float]:
  """Reconstruction scores of a split from its per-image MSEs.

  `mse01` (N,) holds `mse_per_image` of images in [0, 1] units (a [-1, 1]
  model's per-image MSE divided by 4). Returns Python floats
  `mse = mean_i mse_i` and `psnr = mean_i 10 log10(1 / mse_i)` (dB; +inf if
  some mse_i = 0), the same as `psnr(x, x_hat, 1.0)`.
  """
  mse01 = np.asarray(mse01, np.float64)
  with np.errstate(divide='ignore'):
    per_image_psnr = -10 * np.log10(mse01)
  return {'mse': float(mse01.mean()), 'psnr': float(per_image_psnr.mean())}


def _fraction(hits: jax.Array, count: jax.Array) -> jax.Array:
  """hits / count as float32; NaN when nothing was counted."""
  return jnp.where(count > 0, hits / jnp.maximum(count, 1),
                   jnp.nan).astype(jnp.float32)


def swap_scores(pred_rec: jax.Array, pred_swap: jax.Array, perm: jax.Array,
                labels: jax.Array) -> dict[str, jax.Array]:
  """Swap scores of one permutation of a set of N images.

  Pair i is (x_i, x_perm[i]); `pred_swap[i]` labels the decode of code_i with
  its factor dims replaced by those of code_perm[i]. With
  `t_i = pred_rec[perm[i]]` and `C = {i : pred_rec[i] != t_i}` (pairs whose
  reconstructions the classifier tells apart),

    swap_acc  = |{i in C : pred_swap[i] == t_i}| / |C|
    swap_keep = |{i in C : pred_swap[i] == pred_rec[i]}| / |C|

  (`swap_keep`: the swap left the class unchanged.) Against the ground truth,
  with `g_i = labels[perm[i]]` and `G = {i : labels[i] != g_i}`,

    swap_acc_gt = |{i in G : pred_swap[i] == g_i}| / |G|

  and `rec_class_acc = mean_i(pred_rec[i] == labels[i])`. A ratio with an
  empty denominator is NaN.

  Args:
    pred_rec: int (N,), classifier labels of the plain reconstructions.
    pred_swap: int (N,), classifier labels of the swapped decodes.
    perm: int (N,), a permutation of range(N).
    labels: int (N,), ground-truth classes.

  Returns:
    Scalars: 'swap_acc', 'swap_keep', 'swap_acc_gt', 'rec_class_acc'
    (float32) and 'num_pairs' = |C|, 'num_pairs_gt' = |G| (int32).
  """
  target = pred_rec[perm]
  counted = pred_rec != target
  num_pairs = jnp.sum(counted, dtype=jnp.int32)
  target_gt = labels[perm]
  counted_gt = labels != target_gt
  num_pairs_gt = jnp.sum(counted_gt, dtype=jnp.int32)
  return {
      'swap_acc': _fraction(jnp.sum(counted & (pred_swap == target)),
                            num_pairs),
      'swap_keep': _fraction(jnp.sum(counted & (pred_swap == pred_rec)),
                             num_pairs),
      'swap_acc_gt': _fraction(jnp.sum(counted_gt & (pred_swap == target_gt)),
                               num_pairs_gt),
      'rec_class_acc': jnp.mean(pred_rec == labels, dtype=jnp.float32),
      'num_pairs': num_pairs,
      'num_pairs_gt': num_pairs_gt,
  }


_swap_scores = jax.jit(swap_scores)


def evaluate_autoencoder(encode: Callable[[jax.Array], jax.Array],
                         decode: Callable[[jax.Array], jax.Array],
                         images_uint8: np.ndarray, labels: np.ndarray,
                         classifier_logits: Callable[[jax.Array], jax.Array],
                         factor_dims: int, value_range: str,
                         num_permutations: int = 5, seed: int = 0,
                         batch_size: int = 500) -> dict[str, float]:
  """Swap accuracy of an autoencoder on a split (the reconstruction scores
  are `reconstruction_scores`, which the chain computes in its own pass).

  Every number is over the whole split. Swap scores (see `swap_scores`): permutation p (p = 1..P) is the p-th
  `rng.permutation(N)` of `rng = np.random.default_rng(seed)`; for each,
  pred_swap[i] labels decode(code_i with dims [0, factor_dims) taken from
  code_perm[i]). Reported: the mean over permutations of 'swap_acc',
  'swap_acc_gt', 'swap_keep', 'num_pairs', 'num_pairs_gt', the population
  standard deviations 'swap_acc_std', 'swap_acc_gt_std', and
  'rec_class_acc' (no permutation involved).

  With `factor_dims` equal to the whole code of a deterministic model,
  swap_acc is 1.0 by construction (the swapped code *is* code_perm[i], so
  pred_swap[i] = pred_rec[perm[i]]), as docs/method.md notes for the 2-dim teacher.

  The classifier sees reconstructions mapped to [0, 1] ((x + 1) / 2 for
  '-11'), exactly as it saw its training images; it is not clipped.

  Args:
    encode: jitted, float images (B, H, W, C) in `value_range` -> code (B, K).
    decode: jitted, code (B, K) -> float images (B, H, W, C) in `value_range`.
    images_uint8: uint8 (N, H, W, C), the split (N >= 2).
    labels: int (N,), its classes.
    classifier_logits: float images (B, H, W, C) in [0, 1] -> logits
      (B, classes), e.g. `ClassifierHandle.logits`.
    factor_dims: k0, how many leading code dims are swapped (the original
      teacher's), 1 <= k0 <= K.
    value_range: '01' or '-11', the range `encode` takes and `decode` gives.
    num_permutations: P >= 1.
    seed: seeds the permutations.
    batch_size: images per encode/decode call; the last batch is zero-padded
      so each callable compiles once.

  Returns:
    Python floats: 'swap_acc', 'swap_acc_std', 'swap_acc_gt',
    'swap_acc_gt_std', 'swap_keep', 'rec_class_acc', 'num_pairs',
    'num_pairs_gt'.
  """
  images_uint8 = np.asarray(images_uint8)
  labels = np.asarray(labels)
  if images_uint8.ndim != 4 or images_uint8.dtype != np.uint8:
    raise ValueError('images_uint8 must be uint8 (N, H, W, C), got '
                     f'{images_uint8.dtype} {images_uint8.shape}.')
  n = images_uint8.shape[0]
  if n < 2 or labels.shape != (n,):
    raise ValueError(f'Need N >= 2 images and labels of shape (N,); got '
                     f'{n} images and labels {labels.shape}.')
  if value_range not in input_pipeline.VALUE_RANGES:
    raise ValueError(f'value_range={value_range!r}; valid: '
                     f'{", ".join(input_pipeline.VALUE_RANGES)}.')
  if num_permutations < 1 or batch_size < 1:
    raise ValueError(f'num_permutations={num_permutations} and batch_size='
                     f'{batch_size} must both be >= 1.')
  b = min(batch_size, n)
  k0 = int(factor_dims)

  def to01(x):
    return x if value_range == '01' else (x + 1) / 2

  def predict(x_hat):
    return np.asarray(jnp.argmax(classifier_logits(to01(x_hat)), axis=-1))

  def batches():
    """(start, stop, padded float batch) over the split."""
    for start, stop in batch_bounds(n, b):
      yield start, stop, input_pipeline.to_float(
          pad_to(images_uint8[start:stop], b), value_range)

  # Pass 1: plain reconstructions. Only the factor dims are kept (N x k0), so
  # memory does not grow with the code size; pass 2 re-encodes instead.
  factors, pred_rec = None, np.empty((n,), np.int32)
  for start, stop, x in batches():
    m = stop - start
    code = encode(x)
    if factors is None:
      if code.ndim != 2 or code.shape[0] != b or not 1 <= k0 <= code.shape[1]:
        raise ValueError(f'encode must give a (B, K) code with 1 <= '
                         f'factor_dims <= K; got code {code.shape} and '
                         f'factor_dims={factor_dims}.')
      factors = np.empty((n, k0), code.dtype)
    factors[start:stop] = np.asarray(code[:m, :k0])
    x_hat = decode(code)
    pred_rec[start:stop] = predict(x_hat)[:m]

  # Pass 2: every permutation's swaps, one encode per batch.
  rng = np.random.default_rng(seed)
  perms = [rng.permutation(n) for _ in range(num_permutations)]
  pred_swap = np.empty((num_permutations, n), np.int32)
  for start, stop, x in batches():
    m = stop - start
    code = encode(x)
    for p, perm in enumerate(perms):
      donor = pad_to(factors[perm[start:stop]], b)
      swapped = jnp.concatenate([donor, code[:, k0:]], axis=1)
      pred_swap[p, start:stop] = predict(decode(swapped))[:m]

  per_perm = [jax.device_get(_swap_scores(pred_rec, pred_swap[p], perm,
                                          labels.astype(np.int32)))
              for p, perm in enumerate(perms)]

  def stat(name, fn=np.mean):
    return float(fn([float(s[name]) for s in per_perm]))

  return {
      'swap_acc': stat('swap_acc'),
      'swap_acc_std': stat('swap_acc', np.std),
      'swap_acc_gt': stat('swap_acc_gt'),
      'swap_acc_gt_std': stat('swap_acc_gt', np.std),
      'swap_keep': stat('swap_keep'),
      'rec_class_acc': stat('rec_class_acc'),
      'num_pairs': stat('num_pairs'),
      'num_pairs_gt': stat('num_pairs_gt'),
  }
