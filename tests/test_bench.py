"""launch/bench.py's reading and timing of a compiled program's dots."""

import jax
import jax.numpy as jnp
import numpy as np

from launch import bench


def test_compiled_dots_lists_plain_dots_and_counts_the_others():
  def f(a, b, c, d):
    return (a @ b).sum() + jnp.einsum('bij,bjk->bik', c, d).sum()
  args = (np.ones((16, 8), np.float32), np.ones((8, 32), np.float32),
          np.ones((3, 16, 8), np.float32), np.ones((3, 8, 16), np.float32))
  text = jax.jit(f).lower(*args).compile().as_text()
  dots, others = bench.compiled_dots(text)
  assert dots == [((16, 8), (8, 32), 1, 0)]
  assert others == text.count(' dot(') - 1 >= 1


def test_time_dots_counts_the_flops_of_every_dot():
  dot = ((16, 8), (32, 8), 1, 1)
  result = bench.time_dots([dot, dot], length=3, calls=2)
  assert result['dots'] == 2
  np.testing.assert_allclose(result['dot_gflop'], 2 * 2 * 16 * 8 * 32 / 1e9)
  assert result['dots_ms'] > 0
