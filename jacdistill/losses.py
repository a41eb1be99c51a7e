"""Loss terms of Jacobian supervision, as pure functions of arrays.

Every function is jittable and has no hidden state. Shapes use B for the batch,
k for the teacher's (factor) code size, d for the student's extra dims, and
`...` for any trailing image shape. Teacher-side arguments are wrapped in
`jax.lax.stop_gradient`, so a gradient never reaches a teacher even if a caller
forgets to freeze it.
"""

from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array


def reconstruction(x: Array, x_hat: Array) -> Array:
  """Mean squared error over every element: `mean((x - x_hat)^2)`.

  Args:
    x: targets, any shape (B, ...).
    x_hat: reconstructions, same shape.
  Returns:
    A scalar.
  """
  return jnp.mean(jnp.square(x - x_hat))


def latent_match(y_student: Array, y_teacher: Array) -> Array:
  """`mean((stop_grad(y_teacher) - y_student)^2)`.

  Args:
    y_student: (B, k) the student's factor dims.
    y_teacher: (B, k) the teacher's code; no gradient flows into it.
  Returns:
    A scalar.
  """
  return jnp.mean(jnp.square(jax.lax.stop_gradient(y_teacher) - y_student))


def xcov(a: Array, b: Array) -> Array:
  """Cross-covariance penalty of Cheung et al. (2014): `||A_c^T B_c||_F / B`.

  `A_c`, `B_c` are `a`, `b` centred over the batch. The Frobenius norm is not
  squared (as upstream). Adding a constant to any column changes nothing, and a
  side that is constant over the batch gives zero.

  Args:
    a: (B, p); trailing dims beyond the first are flattened.
    b: (B, q); likewise.
  Returns:
    A scalar.
  """
  a = a.reshape(a.shape[0], -1)
  b = b.reshape(b.shape[0], -1)
  a_c = a - jnp.mean(a, axis=0, keepdims=True)
  b_c = b - jnp.mean(b, axis=0, keepdims=True)
  c_pq = a_c.T @ b_c
  # sqrt(sum c^2) has an infinite gradient at exactly zero (e.g. a constant
  # side); the double-where keeps that gradient finite (zero) instead of NaN.
  sq = jnp.sum(jnp.square(c_pq))
  safe = jnp.where(sq > 0, sq, 1.0)
  return jnp.where(sq > 0, jnp.sqrt(safe), 0.0) / a.shape[0]


def swap_jacobian(student_out: Array, student_swapped: Array,
                  teacher_out: Array, teacher_swapped: Array) -> Array:
  """First-order Jacobian supervision by swapping factor codes in a batch.

  `mean(((T - T_pi) - (S - S_pi))^2)` with the teacher side stop-gradient, where
  `T = D_T(y_T)`, `T_pi = D_T(y_T[pi])`, `S = D_S(y_S, w)` and
  `S_pi = D_S(y_S[pi], w)`: swapping the factor code moves the student's output
  as it moves the teacher's.

  Args:
    student_out: (B, ...) student decode of its own code.
    student_swapped: (B, ...) student decode with the factor dims permuted.
    teacher_out: (B, ...) teacher decode of its code.
    teacher_swapped: (B, ...) teacher decode of the permuted code (this is just
      `teacher_out[pi]`: the caller need not decode twice).
  Returns:
    A scalar.
  """
  d_teacher = jax.lax.stop_gradient(teacher_out - teacher_swapped)
  d_student = student_out - student_swapped
  return jnp.mean(jnp.square(d_teacher - d_student))


def jvp_jacobian(teacher_decode: Callable[[Array], Array],
                 student_decode: Callable[[Array], Array],
                 y_teacher: Array, code_student: Array, h: Array) -> Array:
  """Exact Jacobian supervision along directions `h` in factor space.

  `mean((J_{D_T}(y_T) h - J_{D_S}(y_S, w) [h; 0])^2)`, both products computed
  by forward-mode `jax.jvp` (one extra decoder pass each, no Jacobian is ever
  formed). The teacher side is stop-gradient. For small `h`, it equals
  `swap_jacobian` with `y[pi] = y + h` divided by `|h|^2` to first order.

  Args:
    teacher_decode: maps a (B, k) code to (B, ...) images.
    student_decode: maps a (B, k + d) code to (B, ...) images.
    y_teacher: (B, k) point at which the teacher is linearised.
    code_student: (B, k + d) point at which the student is linearised; its
      first k entries are the factor dims.
    h: (B, k) one direction per example.
  Returns:
    A scalar.
  """
  k = h.shape[-1]
  if code_student.shape[-1] < k:
    raise ValueError(f'student code has {code_student.shape[-1]} dims, fewer '
                     f'than the {k} factor dims of the direction h')
  # The directions come from the teacher's codes: no gradient flows into them.
  h = jax.lax.stop_gradient(h)
  _, jt_h = jax.jvp(teacher_decode, (jax.lax.stop_gradient(y_teacher),), (h,))
  h_padded = jnp.zeros_like(code_student).at[..., :k].set(h)
  _, js_h = jax.jvp(student_decode, (code_student,), (h_padded,))
  return jnp.mean(jnp.square(jax.lax.stop_gradient(jt_h) - js_h))


def attribute_hinge(scores: Array, targets: Array) -> Array:
  """`sum_attr max(0, 1 - s * t)`, averaged over the batch.

  Args:
    scores: (B, A) predicted attribute scores.
    targets: (B, A) in {-1, +1}.
  Returns:
    A scalar.
  """
  return jnp.sum(jax.nn.relu(1.0 - scores * targets)) / scores.shape[0]


def cycle_consistency(code_re: Array, code_in: Array,
                      k: int) -> tuple[Array, Array]:
  """Cycle losses of a decode then re-encode (upstream's Fader cycle stage).

  `code_in = [y ; z]` was decoded (typically `y` taken from another example of
  the batch) and the image re-encoded to `code_re = [y' ; z']`. Returns

    attr = attribute_hinge(y', sign(y))   and   nuisance = mean((z' - z)^2),

  with `code_in` stop-gradient: the re-encoding should carry the signs of the
  requested scores and the nuisance it was given. A requested score of exactly
  0 has no sign; its hinge is the constant 1.

  Args:
    code_re: (B, k + d) the re-encoded code.
    code_in: (B, k + d) the code that was decoded; no gradient flows into it.
    k: number of leading factor (attribute) dims.
  Returns:
    `(attr, nuisance)`, two scalars; `nuisance` is 0 when d = 0.
  """
  code_in = jax.lax.stop_gradient(code_in)
  attr = attribute_hinge(code_re[:, :k], jnp.sign(code_in[:, :k]))
  if code_in.shape[1] == k:
    return attr, jnp.zeros((), code_re.dtype)
  return attr, latent_match(code_re[:, k:], code_in[:, k:])


def attribute_logistic(logits: Array, targets: Array) -> Array:
  """Logistic loss of attribute logits: `sum_attr log(1 + exp(-l * t))`,
  averaged over the batch (a two-way cross-entropy per attribute, summed
  over the attributes as Fader Networks' discriminator loss is).

  Fader Networks' encoder minimises it against the flipped targets `-t`: it
  is trained to make the latent discriminator predict the opposite of every
  attribute.

  Args:
    logits: (B, A), attribute a present iff its logit is > 0.
    targets: (B, A) in {-1, +1}.
  Returns:
    A scalar.
  """
  return jnp.sum(jax.nn.softplus(-logits * targets)) / logits.shape[0]


def gaussian_kl(mean: Array, log_var: Array) -> Array:
  """KL divergence of N(mean, exp(log_var)) from N(0, I), summed over the
  code dims and averaged over the batch:
  `mean_b sum_j (mean^2 + exp(log_var) - 1 - log_var) / 2`.

  Args:
    mean: (B, k) posterior means.
    log_var: (B, k) posterior log-variances.
  Returns:
    A scalar (nats).
  """
  per_dim = 0.5 * (jnp.square(mean) + jnp.exp(log_var) - 1.0 - log_var)
  return jnp.sum(per_dim) / mean.shape[0]


def bernoulli_nll(x: Array, logits: Array) -> Array:
  """Negative log-likelihood of pixels `x` in [0, 1] under Bernoulli means
  `sigmoid(logits)`, summed over the pixels and averaged over the batch:
  `mean_b sum_pixels (softplus(l) - x l)` (the cross-entropy, stable for
  any logit).

  Args:
    x: (B, ...) targets in [0, 1].
    logits: same shape.
  Returns:
    A scalar (nats).
  """
  return jnp.sum(jax.nn.softplus(logits) - x * logits) / x.shape[0]
