"""Golden values and disentanglement_lib's test cases for the numpy metrics."""

import math

import numpy as np
import pytest

from jacdistill import disentanglement as dis

N = 2000


def _uniform_factors(seed, k=2, num_values=10, n=N):
  return np.random.default_rng(seed).integers(0, num_values, size=(n, k))


def _balanced_grid(values, k, repeats, seed):
  """Every combination of `values` over k factors, once per block of rows.

  Blocks are shuffled within; a block boundary falls at 80% of the rows, so the
  train part of `dci` sees whole blocks and its factors are exactly
  uncorrelated there, not just in expectation.
  """
  grid = np.stack(np.meshgrid(*([values] * k), indexing='ij'), -1)
  grid = grid.reshape(-1, k)
  rng = np.random.default_rng(seed)
  return np.concatenate([grid[rng.permutation(len(grid))]
                         for _ in range(repeats)])


def test_discrete_entropy_and_mi_golden():
  fair = np.array([0, 1] * 50)
  assert dis.discrete_entropy(fair) == pytest.approx(math.log(2), abs=1e-12)
  # Two identical fair bits share all of their one bit.
  assert dis.discrete_mutual_info(fair, fair) == pytest.approx(
      math.log(2), abs=1e-12)
  # Every pair of values once: independent, MI 0.
  assert dis.discrete_mutual_info(np.array([0, 0, 1, 1]),
                                  np.array([0, 1, 0, 1])) == pytest.approx(
                                      0.0, abs=1e-12)
  assert dis.discrete_entropy(np.arange(4)) == pytest.approx(
      math.log(4), abs=1e-12)
  # a = 0001, b = 0011: H(a) = log 4 - 3/4 log 3, H(b) = log 2,
  # H(a, b) = 3/2 log 2 (p = 1/2, 1/4, 1/4) -> MI = 3/2 log 2 - 3/4 log 3.
  a, b = np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1])
  golden = 1.5 * math.log(2) - 0.75 * math.log(3)
  assert dis.discrete_mutual_info(a, b) == pytest.approx(golden, abs=1e-12)
  assert dis.discrete_mutual_info(b, a) == pytest.approx(golden, abs=1e-12)
  # Only the partition counts: other labels, other dtypes, the same MI.
  assert dis.discrete_mutual_info(np.array(['x', 'x', 'x', 'y']),
                                  np.array([-1, -1, 1, 1])) == pytest.approx(
                                      golden, abs=1e-12)


def test_histogram_discretize_matches_disentanglement_lib():
  rng = np.random.default_rng(0)
  codes = np.stack([rng.normal(size=500), rng.integers(0, 10, size=500),
                    np.full(500, 3.0)], axis=1)
  binned = dis.histogram_discretize(codes)
  for j in range(3):
    c = codes[:, j]
    np.testing.assert_array_equal(
        binned[:, j], np.digitize(c, np.histogram(c, 20)[1][:-1]))
  assert binned[:, 0].min() == 1 and binned[:, 0].max() == 20
  # 20 bins over 0..9 are 0.45 wide: each integer gets its own bin.
  assert len(np.unique(binned[:, 1])) == 10
  assert len(np.unique(binned[:, 2])) == 1


def test_identity_gives_high_mig_and_sap():
  f = _uniform_factors(0)
  # The plug-in MI of the unrelated code is biased up by about
  # (10 - 1)^2 / (2N) = 0.02 nats against H = log 10 = 2.3: MIG loses ~1%.
  assert 0.9 <= dis.mig(f.astype(float), f) <= 1.0
  assert 0.9 <= dis.sap(f.astype(float), f) <= 1.0


def test_zero_representation_scores_zero():
  f = _uniform_factors(1)
  zero = np.zeros((N, 2))
  # A constant code falls in one bin and has no variance: no information.
  assert dis.mig(zero, f) == pytest.approx(0.0, abs=1e-12)
  assert dis.sap(zero, f) == pytest.approx(0.0, abs=1e-12)


def test_duplicated_latents_have_no_gap():
  f = _uniform_factors(2)
  codes = np.hstack([f, f]).astype(float)
  # Two identical copies tie for first place: the gap is exactly 0.
  assert dis.mig(codes, f) == pytest.approx(0.0, abs=1e-12)
  assert dis.sap(codes, f) == pytest.approx(0.0, abs=1e-12)
  # Each copy still holds one factor only (disentanglement_lib: in [0.9, 1]).
  assert 0.9 <= dis.modularity(codes, f) <= 1.0


def test_single_code_gap_is_its_own_score():
  f = _uniform_factors(3, k=1)
  # J = 1: no runner-up, taken as 0, so a copy of the factor scores 1.
  assert dis.mig(f.astype(float), f) == pytest.approx(1.0, abs=1e-12)
  assert dis.sap(f.astype(float), f) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize('importance, disentanglement, completeness', [
    (np.diag(5.0 * np.ones(5)), 1.0, 1.0),
    (np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), 1.0, 1.0),
    (np.zeros((10, 10)), 0.0, 0.0),
    # Two codes per factor: each factor spreads evenly over 2 of 10 codes.
    (np.vstack([np.diag(5.0 * np.ones(5))] * 2), 1.0,
     1.0 - math.log(2) / math.log(10)),
    (np.diag(5.0 * np.ones(5))[:2], 1.0, 1.0),
    # Each code spreads evenly over 2 of 10 factors.
    (np.hstack([np.diag(5.0 * np.ones(5))] * 2),
     1.0 - math.log(2) / math.log(10), 1.0),
])
def test_dci_from_importance_golden(importance, disentanglement, completeness):
  # The cases of disentanglement_lib's dci_test.py.
  out = dis.dci_from_importance(importance)
  assert out['disentanglement'] == pytest.approx(disentanglement, abs=1e-12)
  assert out['completeness'] == pytest.approx(completeness, abs=1e-12)


@pytest.mark.parametrize('mi, golden', [
    # Two one-factor codes score 1, the empty code 0: mean 2/3.
    (np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), 2.0 / 3.0),
    (np.diag(5.0 * np.ones(5)), 1.0),
    (np.zeros((10, 10)), 0.0),
    (np.vstack([np.diag(5.0 * np.ones(5))] * 2), 1.0),
    (np.diag(5.0 * np.ones(5))[:2], 1.0),
    # Each code: two equal entries of 10, delta = 25 / (25 * 9).
    (np.hstack([np.diag(5.0 * np.ones(5))] * 2), 1.0 - 1.0 / 9.0),
])
def test_modularity_from_mi_golden(mi, golden):
  # The cases of disentanglement_lib's modularity_explicitness_test.py.
  assert dis.modularity_from_mi(mi) == pytest.approx(golden, abs=1e-12)


def test_identity_attributes_score_one_on_dci():
  f = np.random.default_rng(4).choice([-1, 1], size=(N, 3))
  out = dis.dci(f.astype(float), f)
  # A +-1 factor's one-hot targets are exact linear functions of its own code:
  # the fit leaves no residual, the other codes get zero weight (rounding
  # only) and the test part is classified without error.
  assert out['disentanglement'] == pytest.approx(1.0, abs=1e-9)
  assert out['completeness'] == pytest.approx(1.0, abs=1e-9)
  assert out['informativeness'] == 1.0


def test_identity_classes_score_one_on_disentanglement_and_completeness():
  f = _balanced_grid(np.arange(10), 2, 20, seed=5)
  out = dis.dci(f.astype(float), f)
  # The codes are exactly uncorrelated on the train part, so each factor's
  # coefficients on the other code are 0 up to rounding.
  assert out['disentanglement'] == pytest.approx(1.0, abs=1e-9)
  assert out['completeness'] == pytest.approx(1.0, abs=1e-9)


def test_linear_readout_cannot_decode_many_classes_from_one_number():
  f = _uniform_factors(6)
  # Argmax of 10 least-squares lines in one code picks out the end classes
  # only, far from the 1.0 a tree would reach (the docstring's caveat).
  assert dis.dci(f.astype(float), f)['informativeness'] < 0.5


def test_rotated_attributes_are_informative_but_entangled():
  f = _balanced_grid(np.array([-1, 1]), 2, 500, seed=7)
  codes = f @ np.array([[1.0, 1.0], [1.0, -1.0]]) / math.sqrt(2.0)
  out = dis.dci(codes, f)
  # Each factor is (u +- v) / sqrt 2: equal weight on both codes, both ways.
  assert out['disentanglement'] == pytest.approx(0.0, abs=1e-9)
  assert out['completeness'] == pytest.approx(0.0, abs=1e-9)
  assert out['informativeness'] == 1.0


def test_identity_modularity_near_one():
  f = _uniform_factors(8)
  # The unrelated code's MI bias (~0.02 nats of 2.3) enters squared: ~1e-4.
  assert 0.99 <= dis.modularity(f.astype(float), f) <= 1.0


def test_one_factor_undefined_scores_are_nan():
  rng = np.random.default_rng(9)
  codes = rng.normal(size=(500, 3))
  f = rng.integers(0, 3, size=(500, 1))
  out = dis.dci(codes, f)
  assert math.isnan(out['disentanglement'])
  assert math.isfinite(out['completeness'])
  assert math.isfinite(out['informativeness'])
  assert math.isnan(dis.modularity(codes, f))
  assert math.isfinite(dis.mig(codes, f))
  assert math.isfinite(dis.sap(codes, f))


def test_constant_factors_are_dropped():
  rng = np.random.default_rng(10)
  f = rng.integers(0, 4, size=(500, 2))
  codes = f + 0.3 * rng.normal(size=(500, 2))
  with_constant = np.hstack([f, np.full((500, 1), 7)])
  for score in (dis.mig, dis.sap, dis.modularity):
    assert score(codes, with_constant) == score(codes, f)
  assert dis.dci(codes, with_constant) == dis.dci(codes, f)
  assert math.isnan(dis.mig(codes, np.ones((500, 2))))
  # mutual_info_matrix keeps every column; the constant one is 0.
  m = dis.mutual_info_matrix(codes, with_constant)
  assert m.shape == (2, 3)
  np.testing.assert_array_equal(m[:, 2], 0.0)


def test_gaussian_tc_zero_for_uncorrelated_dims():
  # The columns of a balanced +-1 design are exactly uncorrelated.
  codes = _balanced_grid(np.array([-1.0, 1.0]), 3, 10, seed=11)
  assert dis.gaussian_total_correlation(codes) == pytest.approx(0.0, abs=1e-12)
  # Independent draws: TC ~ 0.5 chi^2_3 / N (mean 7.5e-4); TC >= 0.01 needs
  # chi^2_3 >= 40, probability 1e-8.
  rng = np.random.default_rng(12)
  assert 0.0 <= dis.gaussian_total_correlation(rng.normal(size=(N, 3))) < 0.01


@pytest.mark.parametrize('rho', [0.3, -0.8, 0.99])
def test_gaussian_tc_golden_two_dims(rho):
  rng = np.random.default_rng(13)
  x = rng.normal(size=N)
  x -= x.mean()
  e = rng.normal(size=N)
  e -= e.mean()
  e -= (e @ x) / (x @ x) * x  # orthogonal to x: sample correlation exactly rho
  e *= np.linalg.norm(x) / np.linalg.norm(e)
  codes = np.stack([x, rho * x + math.sqrt(1.0 - rho ** 2) * e], axis=1)
  golden = -0.5 * math.log(1.0 - rho ** 2)
  assert dis.gaussian_total_correlation(codes) == pytest.approx(golden,
                                                                rel=1e-10)
  # Blind to each dim's scale and offset, and to a constant dim.
  moved = np.hstack([codes * np.array([3.0, 0.01]) + 5.0, np.ones((N, 1))])
  assert dis.gaussian_total_correlation(moved) == pytest.approx(golden,
                                                                rel=1e-10)


@pytest.mark.parametrize('seed', range(5))
@pytest.mark.parametrize('scale', [2.0, -1.3, 0.7])
def test_gaussian_tc_infinite_for_duplicated_dim(seed, scale):
  # Rounding leaves the correlation of x and scale * x + 1 a hair off 1 (its
  # determinant ~1e-16, not 0) for most draws; that still counts as singular.
  x = np.random.default_rng(seed).normal(size=(100, 2))
  codes = np.hstack([x, scale * x[:, :1] + 1.0])
  assert dis.gaussian_total_correlation(codes) == math.inf


@pytest.mark.parametrize('codes_shape, factors_shape', [
    ((5,), (5, 2)),
    ((5, 2), (4, 2)),
    ((1, 2), (1, 2)),
    ((5, 2, 1), (5, 2)),
])
def test_bad_shapes_raise_naming_them(codes_shape, factors_shape):
  codes, factors = np.zeros(codes_shape), np.zeros(factors_shape)
  for score in (dis.mig, dis.sap, dis.dci, dis.modularity,
                dis.mutual_info_matrix):
    with pytest.raises(ValueError) as err:
      score(codes, factors)
    assert str(codes_shape) in str(err.value)
    assert str(factors_shape) in str(err.value)
  if len(codes_shape) != 2 or codes_shape[0] < 2:
    with pytest.raises(ValueError) as err:
      dis.gaussian_total_correlation(codes)
    assert str(codes_shape) in str(err.value)
  with pytest.raises(ValueError, match=r'\(3,\) and \(4,\)'):
    dis.discrete_mutual_info(np.zeros(3), np.zeros(4))


def test_scores_equal_the_single_metrics_on_the_seeded_order():
  rng = np.random.default_rng(11)
  f = rng.choice([-1, 1], size=(600, 2))
  codes = f + 0.3 * rng.normal(size=(600, 2))
  out = dis.scores(codes, f, seed=3)
  order = np.random.default_rng(3).permutation(600)
  c, g = codes[order], f[order]
  dci = dis.dci(c, g)
  assert out == {'mig': dis.mig(c, g), 'sap': dis.sap(c, g),
                 'dci_disentanglement': dci['disentanglement'],
                 'dci_completeness': dci['completeness'],
                 'dci_informativeness': dci['informativeness'],
                 'modularity': dis.modularity(c, g),
                 'gaussian_tc': dis.gaussian_total_correlation(c)}
  # The order only moves DCI's train/test cut; the counts do not change.
  assert dis.scores(codes, f, seed=4)['mig'] == out['mig']


def test_scores_leave_out_what_is_undefined_for_one_class_factor():
  rng = np.random.default_rng(12)
  codes = rng.normal(size=(400, 3))
  codes[:, 2] = codes[:, 1]  # A duplicated dim: infinite total correlation.
  out = dis.scores(codes, rng.integers(0, 10, size=(400, 1)), seed=0)
  assert set(out) == {'mig', 'sap', 'dci_completeness', 'dci_informativeness'}
  assert all(math.isfinite(v) for v in out.values())
