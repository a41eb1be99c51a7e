"""Disentanglement scores of a code against known factors, in numpy only.

Ports of disentanglement_lib's metrics (google-research/disentanglement_lib,
evaluation/metrics/{mig,sap_score,dci,modularity_explicitness}.py) to fixed
arrays, examples first (disentanglement_lib stores them transposed): `codes`
(N, J) floats and `factors` (N, K) discrete values of any dtype (class labels,
+-1 attributes), each factor column mapped to ints 0..C-1 in sorted order.
Mutual information is counted from joint histograms, in nats: the scikit-learn
estimator disentanglement_lib uses drifts with library versions. Each code dim
is cut into `num_bins` (20) equal-width bins over its own range, as its
`_histogram_discretize` does.

A factor constant over the N examples carries no information (entropy 0, on
which MIG would divide by zero) and is dropped before scoring; K counts the
factors left, and a score is NaN when none is. With K = 1, DCI disentanglement
and modularity are undefined (an entropy in base 1, a division by K - 1) and
are NaN. Wrong ndim, a mismatched N or N < 2 raise ValueError naming shapes.
"""

from typing import Dict

import numpy as np

NUM_BINS = 20


def _labels(values: np.ndarray) -> np.ndarray:
  """Maps a 1-D array of any values to ints 0..C-1 (sorted unique order)."""
  return np.unique(values, return_inverse=True)[1].reshape(-1)


def _entropy_of_counts(counts: np.ndarray) -> float:
  p = counts[counts > 0] / counts.sum()
  return float(-np.sum(p * np.log(p)))


def discrete_entropy(a: np.ndarray) -> float:
  """`H(a) = -sum_v p(v) log p(v)` in nats of (N,) values, p from counts."""
  return discrete_mutual_info(a, a)  # I(a; a) = H(a), with no rounding.


def discrete_mutual_info(a: np.ndarray, b: np.ndarray) -> float:
  """`I(a; b) = H(a) + H(b) - H(a, b)` in nats of two (N,) arrays, counted."""
  a, b = np.asarray(a), np.asarray(b)
  if a.ndim != 1 or a.shape != b.shape or a.shape[0] == 0:
    raise ValueError(f'need two non-empty 1-D arrays of one length; got shapes '
                     f'{a.shape} and {b.shape}')
  ia, ib = _labels(a), _labels(b)
  joint = np.bincount(ia * (int(ib.max()) + 1) + ib)
  mi = (_entropy_of_counts(np.bincount(ia))
        + _entropy_of_counts(np.bincount(ib)) - _entropy_of_counts(joint))
  # The three sums round differently; true MI is never negative.
  return max(0.0, mi)


def histogram_discretize(codes: np.ndarray, num_bins: int = NUM_BINS
                         ) -> np.ndarray:
  """(N, J) codes to (N, J) bin ids 1..num_bins, equal width per dim's range.

  As disentanglement_lib: `np.digitize(c, np.histogram(c, num_bins)[1][:-1])`,
  so the maximum falls in the last bin and a constant dim in one bin.
  """
  codes = np.asarray(codes, dtype=np.float64)
  return np.stack([np.digitize(c, np.histogram_bin_edges(c, num_bins)[:-1])
                   for c in codes.T], axis=1)


def _check_codes(codes: np.ndarray) -> np.ndarray:
  codes = np.asarray(codes, dtype=np.float64)
  if not np.all(np.isfinite(codes)):
    raise ValueError(f'codes {codes.shape} hold non-finite values')
  return codes


def _check(codes: np.ndarray, factors: np.ndarray, drop_constant: bool = True):
  """Validates shapes; returns float codes and (N, K') int labels."""
  c, f = np.shape(codes), np.shape(factors)
  if len(c) != 2 or len(f) != 2 or c[0] != f[0] or c[0] < 2 or 0 in c + f:
    raise ValueError('need codes (N, J) and factors (N, K) with one N >= 2 and '
                     f'J, K >= 1; got shapes {c} and {f}')
  codes, factors = _check_codes(codes), np.asarray(factors)
  labels = np.stack([_labels(col) for col in factors.T], axis=1)
  return codes, (labels[:, labels.max(axis=0) > 0] if drop_constant
                 else labels)


def _mi_matrix(binned: np.ndarray, labels: np.ndarray) -> np.ndarray:
  return np.array([[discrete_mutual_info(c, y) for y in labels.T]
                   for c in binned.T])


def mutual_info_matrix(codes: np.ndarray, factors: np.ndarray,
                       num_bins: int = NUM_BINS) -> np.ndarray:
  """(J, K) `m[j, k] = I(discretised code j; factor k)` in nats, >= 0.

  All K columns are kept here; a constant factor's column is 0.
  """
  codes, labels = _check(codes, factors, drop_constant=False)
  return _mi_matrix(histogram_discretize(codes, num_bins), labels)


def _gap_top_two(scores: np.ndarray) -> np.ndarray:
  """Best minus second-best over codes (axis 0) of a (J, K) score matrix >= 0.

  A zero row stands in for the runner-up, which changes nothing for J >= 2 and
  makes the gap of a single code (J = 1) its score itself: it has no rival.
  """
  top = -np.sort(-np.vstack([scores, np.zeros((1, scores.shape[1]))]), axis=0)
  return top[0] - top[1]


def mig(codes: np.ndarray, factors: np.ndarray,
        num_bins: int = NUM_BINS) -> float:
  """Mutual information gap: `mean_k (m[(1), k] - m[(2), k]) / H(f_k)`.

  `m` is `mutual_info_matrix`, `m[(1), k] >= m[(2), k]` its two largest
  entries over codes j, `H` the factor's discrete entropy. With one code dim
  (J = 1) the runner-up is taken as 0, so the score is `mean_k m[0, k] / H_k`.
  Returns a float in [0, 1].
  """
  codes, labels = _check(codes, factors)
  if labels.shape[1] == 0:
    return float('nan')
  m = _mi_matrix(histogram_discretize(codes, num_bins), labels)
  h = np.array([discrete_entropy(labels[:, k]) for k in range(labels.shape[1])])
  return float(np.mean(_gap_top_two(m) / h))


def sap(codes: np.ndarray, factors: np.ndarray) -> float:
  """SAP score, continuous form: `mean_k (S[(1), k] - S[(2), k])`.

  `S[j, k] = cov(c_j, f_k)^2 / (var(c_j) var(f_k))`, the R^2 of a linear
  regression of factor k on code j, and 0 for a code dim of variance at most
  1e-12 (as disentanglement_lib). `f_k` enters as its labels 0..C-1, equal to
  its values up to an affine map for consecutive integer classes and +-1
  attributes, to which R^2 is blind. With J = 1 the runner-up is 0. Returns a
  float in [0, 1].
  """
  codes, labels = _check(codes, factors)
  if labels.shape[1] == 0:
    return float('nan')
  c = codes - codes.mean(axis=0)
  f = labels - labels.mean(axis=0)
  var_c, var_f = c.var(axis=0, ddof=1), f.var(axis=0, ddof=1)
  cov = c.T @ f / (codes.shape[0] - 1)
  ok = var_c > 1e-12  # as disentanglement_lib: R^2 of rounding noise is 0.
  s = np.zeros(cov.shape)
  s[ok] = cov[ok] ** 2 / (var_c[ok, None] * var_f[None, :])
  return float(np.mean(_gap_top_two(s)))


def _one_minus_entropy(p_rows: np.ndarray, base: int) -> np.ndarray:
  """`1 - H_base(row / sum row)` per row; 0 for an all-zero row (uniform)."""
  total = p_rows.sum(axis=1, keepdims=True)
  p = p_rows / np.where(total > 0, total, 1.0)
  plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
  # 0 <= H_base <= 1 for `base` entries; clip only the rounding.
  score = np.clip(1.0 + plogp.sum(axis=1) / np.log(base), 0.0, 1.0)
  return np.where(total[:, 0] > 0, score, 0.0)


def _check_matrix(name: str, m: np.ndarray) -> np.ndarray:
  m = np.asarray(m, dtype=np.float64)
  if m.ndim != 2 or m.size == 0 or np.any(m < 0) or not np.all(np.isfinite(m)):
    raise ValueError(f'{name} must be a non-empty (J, K) matrix of finite '
                     f'values >= 0; got shape {m.shape}')
  return m


def _weighted_score(r: np.ndarray, weights: np.ndarray) -> float:
  """`sum_rows rho (1 - H_C(row))`, rho from `weights`, base C = columns."""
  if r.shape[1] == 1:
    return float('nan')
  rho = weights.sum(axis=1) / weights.sum()
  return float(np.sum(rho * _one_minus_entropy(r, r.shape[1])))


def dci_from_importance(importance: np.ndarray) -> Dict[str, float]:
  """DCI disentanglement and completeness of an importance matrix R (J, K).

  disentanglement = sum_j rho_j (1 - H_K(R[j] / sum R[j])),
    rho_j = sum R[j] / sum R;
  completeness = sum_k rho_k (1 - H_J(R[:, k] / sum R[:, k])),
    rho_k = sum R[:, k] / sum R.
  An all-zero row (column) scores 0 and weighs 0; an all-zero R weighs all
  uniformly and scores 0 (as disentanglement_lib). Disentanglement is NaN for
  K = 1 and completeness for J = 1 (entropy in base 1).

  Returns {'disentanglement': float, 'completeness': float}, each in [0, 1].
  """
  r = _check_matrix('importance', importance)
  weights = r if r.sum() > 0 else np.ones_like(r)
  return {'disentanglement': _weighted_score(r, weights),
          'completeness': _weighted_score(r.T, weights.T)}


def dci(codes: np.ndarray, factors: np.ndarray,
        train_fraction: float = 0.8) -> Dict[str, float]:
  """DCI (Eastwood & Williams 2018) with linear importances.

  Codes are standardised with the first `round(train_fraction N)` examples,
  the train part; the rest is the test part (shuffle ordered data first).
  Per factor with C classes, least squares with an intercept fits its C one-hot
  targets on the train part; R[j, k] sums |coefficient of code j| over the C
  classes, and each column of R is scaled to sum 1, as a boosted tree's
  feature_importances_ are in disentanglement_lib, so that a many-class factor
  does not outweigh a binary one. Informativeness is the mean over factors of
  the test accuracy of argmax over the C scores. A linear one-vs-rest model
  cannot single out the middle classes of a many-class factor held as one
  number, and its residuals leak importance onto codes correlated with them by
  chance, so such a code scores low on all three (identity code of two uniform
  10-class factors, N = 2000: D = C = 0.74, I = 0.21); for +-1 attributes the
  fit is exact and the identity code scores 1.

  Returns {'disentanglement', 'completeness', 'informativeness'}: floats in
  [0, 1]; disentanglement is NaN for K = 1, completeness for J = 1.
  """
  codes, labels = _check(codes, factors)
  if not 0.0 < train_fraction < 1.0:
    raise ValueError(f'train_fraction must be in (0, 1); got {train_fraction}')
  if labels.shape[1] == 0:
    return dict.fromkeys(('disentanglement', 'completeness', 'informativeness'),
                         float('nan'))
  n, num_codes = codes.shape
  n_train = min(n - 1, max(1, int(round(train_fraction * n))))
  std = codes[:n_train].std(axis=0)
  # A dim constant on the train part becomes a zero column, which the
  # minimum-norm least-squares solution gives a zero coefficient.
  z = (codes - codes[:n_train].mean(axis=0)) / np.where(std > 0, std, 1.0)
  x = np.hstack([z, np.ones((n, 1))])
  importance = np.zeros((num_codes, labels.shape[1]))
  accuracy = []
  for k in range(labels.shape[1]):
    y = labels[:, k]
    onehot = np.eye(int(y.max()) + 1)[y]
    w = np.linalg.lstsq(x[:n_train], onehot[:n_train], rcond=None)[0]
    importance[:, k] = np.abs(w[:-1]).sum(axis=1)
    pred = np.argmax(x[n_train:] @ w, axis=1)
    accuracy.append(np.mean(pred == y[n_train:]))
  col = importance.sum(axis=0)
  importance /= np.where(col > 0, col, 1.0)
  out = dci_from_importance(importance)
  out['informativeness'] = float(np.mean(accuracy))
  return out


def modularity_from_mi(mi: np.ndarray) -> float:
  """Modularity (Ridgeway & Zemel 2018) of a (J, K) mutual information matrix.

  Per code j: theta_j = max_k m[j, k], template t_j = theta_j at that k and 0
  elsewhere, delta_j = sum_k (m[j, k] - t_j[k])^2 / (theta_j^2 (K - 1)), score
  1 - delta_j; a code with theta_j = 0 scores 0 (as disentanglement_lib).
  Modularity = mean_j score_j, in [0, 1]; NaN for K = 1 (divides by K - 1).
  """
  m = _check_matrix('mi', mi)
  if m.shape[1] == 1:
    return float('nan')
  sq = m ** 2
  top = sq.max(axis=1)
  delta = (sq.sum(axis=1) - top) / np.where(top > 0, top * (m.shape[1] - 1), 1)
  return float(np.mean(np.where(top > 0, 1.0 - delta, 0.0)))


def modularity(codes: np.ndarray, factors: np.ndarray,
               num_bins: int = NUM_BINS) -> float:
  """`modularity_from_mi` of the MI matrix of the non-constant factors.

  A float in [0, 1]; NaN for K = 1.
  """
  codes, labels = _check(codes, factors)
  if labels.shape[1] == 0:
    return float('nan')
  return modularity_from_mi(
      _mi_matrix(histogram_discretize(codes, num_bins), labels))


def gaussian_total_correlation(codes: np.ndarray) -> float:
  """Total correlation of a Gaussian with the codes' covariance, in nats.

  `TC = 0.5 (sum_j log Cov[j, j] - log det Cov) = -0.5 log det Corr`: 0 for
  uncorrelated dims, blind to each dim's scale, and inf for a correlation
  singular up to rounding (an eigenvalue <= 1e-12: a duplicated dim). Constant
  dims are independent of the rest and are left out (their log variance is
  -inf). Needs no labels.
  Returns a float >= 0 of (N, J) codes.
  """
  if np.ndim(codes) != 2 or np.shape(codes)[0] < 2:
    raise ValueError(f'need codes (N, J) with N >= 2; got shape '
                     f'{np.shape(codes)}')
  codes = _check_codes(codes)
  x = codes[:, codes.std(axis=0) > 0]
  if x.shape[1] < 2:
    return 0.0
  # An exact linear dependence leaves an eigenvalue of rounding size, not 0.
  eig = np.linalg.eigvalsh(np.corrcoef(x, rowvar=False))
  if eig.min() <= 1e-12:
    return float('inf')
  # Rounding can put log det of a near-identity correlation just above 0.
  return max(0.0, float(-0.5 * np.sum(np.log(eig))))


# Fixed settings of `scores`, recorded beside the scores of a run.
PROTOCOL = {'num_bins': NUM_BINS, 'dci_train_fraction': 0.8}


def scores(codes: np.ndarray, factors: np.ndarray, seed: int) -> dict:
  """Every score above of one code, as a run's summary records them.

  The examples are shuffled with `seed` first (DCI fits on the first 80% and
  tests on the rest; the other scores do not depend on the order).

  Returns {'mig', 'sap', 'dci_disentanglement', 'dci_completeness',
  'dci_informativeness', 'modularity', 'gaussian_tc'}, floats; a score that
  is undefined here (NaN: DCI disentanglement and modularity for one factor,
  completeness for one code dim) or infinite (the total correlation of a
  duplicated dim) is left out, so that the summary stays plain JSON.
  """
  order = np.random.default_rng(seed).permutation(np.shape(codes)[0])
  codes, factors = np.asarray(codes)[order], np.asarray(factors)[order]
  out = {'mig': mig(codes, factors, PROTOCOL['num_bins']),
         'sap': sap(codes, factors)}
  out.update({f'dci_{k}': v for k, v in dci(
      codes, factors, PROTOCOL['dci_train_fraction']).items()})
  out['modularity'] = modularity(codes, factors, PROTOCOL['num_bins'])
  out['gaussian_tc'] = gaussian_total_correlation(codes)
  return {k: float(v) for k, v in out.items() if np.isfinite(v)}
