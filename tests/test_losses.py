"""Golden values and invariants of the pure loss functions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jacdistill import losses

jax.config.update('jax_enable_x64', False)


def test_reconstruction_golden():
  x = jnp.array([[0.0, 1.0], [2.0, 3.0]])
  x_hat = jnp.array([[1.0, 1.0], [0.0, 3.0]])
  # Squared errors 1, 0, 4, 0 -> mean 5/4.
  assert float(losses.reconstruction(x, x_hat)) == pytest.approx(1.25)


def test_latent_match_golden():
  y_s = jnp.array([[1.0, 2.0], [3.0, 4.0]])
  y_t = jnp.array([[1.0, 0.0], [0.0, 4.0]])
  # Squared errors 0, 4, 9, 0 -> 13/4.
  assert float(losses.latent_match(y_s, y_t)) == pytest.approx(3.25)


def test_xcov_golden():
  a = jnp.array([[1.0], [-1.0], [1.0], [-1.0]])
  b = jnp.array([[2.0, 1.0], [-2.0, 1.0], [2.0, -1.0], [-2.0, -1.0]])
  # Already centred. C = a^T b = [[8, 1 - 1 - 1 + 1]] = [[8, 0]]:
  # ||C||_F = 8, / B=4 -> 2.
  assert float(losses.xcov(a, b)) == pytest.approx(2.0)
  b2 = jnp.array([[0.0, 1.0], [0.0, 1.0], [0.0, -1.0], [0.0, -1.0]])
  # a^T b2 = [[0, 1 - 1 - 1 + 1]] = 0.
  assert float(losses.xcov(a, b2)) == pytest.approx(0.0)
  # Not centred: a + 3 and b + [5, -7] give the same answer.
  assert float(losses.xcov(a + 3.0, b + jnp.array([5.0, -7.0]))) == (
      pytest.approx(2.0))


def test_xcov_invariances():
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.normal(size=(16, 3)), jnp.float32)
  b = jnp.asarray(rng.normal(size=(16, 5)), jnp.float32)
  base = float(losses.xcov(a, b))
  assert base > 0
  for col in range(3):
    shifted = a.at[:, col].add(7.5)
    assert float(losses.xcov(shifted, b)) == pytest.approx(base, rel=1e-5)
  for col in range(5):
    shifted = b.at[:, col].add(-3.0)
    assert float(losses.xcov(a, shifted)) == pytest.approx(base, rel=1e-5)
  const = jnp.ones((16, 4)) * jnp.array([1.0, -2.0, 3.0, 0.5])
  assert float(losses.xcov(const, b)) == 0.0
  assert float(losses.xcov(a, const)) == 0.0
  # Finite gradient even where the penalty is exactly zero.
  g = jax.grad(lambda a_: losses.xcov(a_, const))(a)
  assert bool(jnp.all(jnp.isfinite(g)))


def test_swap_jacobian_golden():
  s = jnp.array([[1.0, 2.0]])
  s_pi = jnp.array([[0.0, 0.0]])
  t = jnp.array([[3.0, 1.0]])
  t_pi = jnp.array([[1.0, 1.0]])
  # dT = [2, 0], dS = [1, 2], diff [1, -2] -> mean(1, 4) = 2.5.
  assert float(losses.swap_jacobian(s, s_pi, t, t_pi)) == pytest.approx(2.5)


def test_attribute_hinge_golden():
  scores = jnp.array([[2.0, 0.5, -1.0], [0.0, -3.0, 0.25]])
  targets = jnp.array([[1.0, 1.0, 1.0], [-1.0, -1.0, 1.0]])
  # Row 0: max(0,1-2)=0, 0.5, 2 -> 2.5. Row 1: 1, 0, 0.75 -> 1.75. / B=2.
  assert float(losses.attribute_hinge(scores, targets)) == pytest.approx(2.125)


def _decoder(seed, k, d, n=12):
  """A smooth random decoder of a (B, k + d) code to (B, n) outputs."""
  rng = np.random.default_rng(seed)
  w1 = jnp.asarray(rng.normal(size=(k + d, 16)) / np.sqrt(k + d), jnp.float32)
  w2 = jnp.asarray(rng.normal(size=(16, n)) / 4.0, jnp.float32)
  return lambda c: jnp.tanh(jnp.tanh(c @ w1) @ w2), (w1, w2)


def test_jacobian_losses_vanish_when_decoders_coincide_on_factor_dims():
  k, d, b = 3, 2, 6
  teacher, (w1, w2) = _decoder(0, k, 0)
  # The student ignores its free dims and equals the teacher on the factor dims.
  w1_s = jnp.concatenate([w1, jnp.zeros((d, 16))], axis=0)
  student = lambda c: jnp.tanh(jnp.tanh(c @ w1_s) @ w2)
  rng = np.random.default_rng(1)
  y = jnp.asarray(rng.normal(size=(b, k)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(b, d)), jnp.float32)
  code = jnp.concatenate([y, w], axis=1)
  perm = jnp.array([1, 2, 3, 4, 5, 0])
  code_pi = code.at[:, :k].set(y[perm])
  swap = losses.swap_jacobian(student(code), student(code_pi), teacher(y),
                              teacher(y[perm]))
  assert float(swap) < 1e-12
  h = jnp.asarray(rng.normal(size=(b, k)), jnp.float32)
  assert float(losses.jvp_jacobian(teacher, student, y, code, h)) < 1e-12


def test_jvp_jacobian_equals_explicit_jacfwd_contraction():
  k, d, b = 3, 2, 4
  teacher, _ = _decoder(2, k, 0)
  student, _ = _decoder(3, k, d)
  rng = np.random.default_rng(4)
  y = jnp.asarray(rng.normal(size=(b, k)), jnp.float32)
  code = jnp.asarray(rng.normal(size=(b, k + d)), jnp.float32)
  h = jnp.asarray(rng.normal(size=(b, k)), jnp.float32)
  # Per-example Jacobians: J_T (n, k), J_S (n, k + d).
  j_t = jax.vmap(jax.jacfwd(lambda v: teacher(v[None])[0]))(y)
  j_s = jax.vmap(jax.jacfwd(lambda v: student(v[None])[0]))(code)
  want = jnp.mean(jnp.square(jnp.einsum('bnk,bk->bn', j_t, h)
                             - jnp.einsum('bnk,bk->bn', j_s[:, :, :k], h)))
  got = losses.jvp_jacobian(teacher, student, y, code, h)
  np.testing.assert_allclose(float(got), float(want), rtol=1e-5)


def test_swap_over_h_squared_matches_jvp_for_small_h():
  k, d, b = 2, 3, 8
  teacher, _ = _decoder(5, k, 0)
  student, _ = _decoder(6, k, d)
  rng = np.random.default_rng(7)
  y = jnp.asarray(rng.normal(size=(b, k)), jnp.float32)
  code = jnp.asarray(rng.normal(size=(b, k + d)), jnp.float32)
  u = rng.normal(size=(b, k))
  u = jnp.asarray(u / np.linalg.norm(u, axis=1, keepdims=True), jnp.float32)
  eps = 1e-2
  h = eps * u
  code_h = code.at[:, :k].add(h)
  swap = losses.swap_jacobian(student(code_h), student(code), teacher(y + h),
                              teacher(y))
  jvp = losses.jvp_jacobian(teacher, student, y, code, u)
  np.testing.assert_allclose(float(swap) / eps**2, float(jvp), rtol=1e-2)


def test_no_gradient_reaches_the_teacher_side():
  rng = np.random.default_rng(8)
  a = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
  t = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
  zero = np.zeros((5, 3), np.float32)
  g = jax.grad(lambda t_: losses.latent_match(a, t_))(t)
  np.testing.assert_array_equal(np.asarray(g), zero)
  g_t, g_tpi = jax.grad(lambda t_, tp: losses.swap_jacobian(a, a * 2, t_, tp),
                        argnums=(0, 1))(t, t * 3)
  np.testing.assert_array_equal(np.asarray(g_t), zero)
  np.testing.assert_array_equal(np.asarray(g_tpi), zero)
  # The student side does get a gradient.
  g_s = jax.grad(lambda s: losses.swap_jacobian(s, a, t, 2 * t))(a)
  assert float(jnp.abs(g_s).sum()) > 0

  k, d = 3, 2
  _, (w1, w2) = _decoder(9, k, 0)
  student, _ = _decoder(10, k, d)
  y = jnp.asarray(rng.normal(size=(5, k)), jnp.float32)
  code = jnp.asarray(rng.normal(size=(5, k + d)), jnp.float32)
  h = jnp.asarray(rng.normal(size=(5, k)), jnp.float32)

  def loss_of_teacher(w1_, w2_, y_, h_):
    teacher = lambda c: jnp.tanh(jnp.tanh(c @ w1_) @ w2_)
    return losses.jvp_jacobian(teacher, student, y_, code, h_)

  grads = jax.grad(loss_of_teacher, argnums=(0, 1, 2, 3))(w1, w2, y, h)
  for g in grads:
    np.testing.assert_array_equal(np.asarray(g), np.zeros_like(g))
  assert float(loss_of_teacher(w1, w2, y, h)) > 0


def test_cycle_consistency_golden_and_zero_cases():
  code_in = jnp.array([[2.0, -0.5, 1.0, 3.0], [-1.0, 0.0, -2.0, 0.0]])
  code_re = jnp.array([[0.5, -2.0, 1.0, 1.0], [1.0, 4.0, -2.0, 1.0]])
  # k = 2. Targets sign(y) = [[1, -1], [-1, 0]]. Hinges: row 0: 1 - 0.5 =
  # 0.5, max(0, 1 - 2) = 0; row 1: 1 + 1 = 2, 1 - 0 = 1 -> 3.5 / B=2.
  # Nuisance errors: 0, -2, 0, 1 -> mean 5/4.
  attr, nuisance = losses.cycle_consistency(code_re, code_in, 2)
  assert float(attr) == pytest.approx(1.75)
  assert float(nuisance) == pytest.approx(1.25)
  # A re-encoding that returns the code, with every |score| >= 1: both zero.
  exact = code_in.at[:, :2].set(jnp.array([[1.0, -3.0], [-1.5, 2.0]]))
  assert [float(v) for v in losses.cycle_consistency(exact, exact, 2)] == [
      0.0, 0.0]
  # No nuisance dims: the nuisance term is 0, not the mean of nothing.
  _, empty = losses.cycle_consistency(code_re[:, :2], code_in[:, :2], 2)
  assert float(empty) == 0.0


def test_cycle_consistency_gradient_reaches_only_the_re_encoding():
  rng = np.random.default_rng(11)
  code_in = jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)
  code_re = jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)
  total = lambda re, c: sum(losses.cycle_consistency(re, c, 2))
  g_re, g_in = jax.grad(total, argnums=(0, 1))(code_re, code_in)
  np.testing.assert_array_equal(np.asarray(g_in), np.zeros((4, 5)))
  assert bool(jnp.all(g_re[:, 2:] != 0))
