"""The stride-1 rewrites of the 4x4 stride-2 convs equal flax's own layers."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jacdistill import layers

REFERENCES = {
    'down': (layers.DownConv,
             lambda f: nn.Conv(f, (4, 4), strides=(2, 2),
                               padding=((1, 1), (1, 1)))),
    'up': (layers.UpConv,
           lambda f: nn.ConvTranspose(f, (4, 4), strides=(2, 2),
                                      padding='SAME')),
}


@pytest.mark.parametrize('kind', sorted(REFERENCES))
@pytest.mark.parametrize('shape', [(3, 8, 6, 5), (2, 2, 2, 4)])
def test_layer_equals_flax_reference(kind, shape):
  new_cls, ref_fn = REFERENCES[kind]
  x = jax.random.normal(jax.random.key(0), shape)
  ref, new = ref_fn(7), new_cls(7)
  ref_vars = ref.init(jax.random.key(1), x)
  new_vars = new.init(jax.random.key(1), x)
  # Same leaves, shapes and initial values: checkpoints and growth unchanged.
  jax.tree.map(np.testing.assert_array_equal, ref_vars, new_vars)
  # Random (non-zero) biases too, then outputs and both gradients agree.
  variables = jax.tree.map(
      lambda a: a + 0.1 * jax.random.normal(jax.random.key(2), a.shape),
      ref_vars)
  out_ref, out_new = ref.apply(variables, x), new.apply(variables, x)
  assert out_new.shape == out_ref.shape
  np.testing.assert_allclose(out_new, out_ref, atol=2e-6)

  def loss(module):
    return lambda v, x: jnp.sum(jnp.sin(module.apply(v, x)))

  g_ref = jax.grad(loss(ref), argnums=(0, 1))(variables, x)
  g_new = jax.grad(loss(new), argnums=(0, 1))(variables, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, atol=5e-5,
                                                       rtol=1e-5),
               g_ref, g_new)


def test_down_conv_golden_value():
  # One 2x2 one-channel image: with a one-pixel zero border every output of
  # the 4x4 stride-2 conv sees the image through the kernel's middle 2x2.
  x = jnp.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1)
  kernel = jnp.arange(16.0).reshape(4, 4, 1, 1)
  # Kernel rows/cols 1..2 hold 5, 6 / 9, 10: 1*5 + 2*6 + 3*9 + 4*10 = 84.
  assert float(layers.down_conv(x, kernel)[0, 0, 0, 0]) == 84.0
