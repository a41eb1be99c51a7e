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


def _assert_same_layer(ref, new, args, ref_input=lambda *a: a):
  """`new.apply(vars, *args)` equals `ref.apply(vars, *ref_input(*args))`:
  the same initial variables, then the same outputs and gradients (w.r.t.
  the variables and every argument) at random variables."""

  def apply_ref(v, *a):
    return ref.apply(v, *ref_input(*a))

  ref_vars = jax.jit(lambda *a: ref.init(jax.random.key(1), *ref_input(*a)))(
      *args)
  new_vars = jax.jit(lambda *a: new.init(jax.random.key(1), *a))(*args)
  # Same leaves, shapes and initial values: checkpoints and growth unchanged.
  jax.tree.map(np.testing.assert_array_equal, ref_vars, new_vars)
  # Random (non-zero) biases too, then outputs and both gradients agree.
  variables = jax.tree.map(
      lambda a: a + 0.1 * jax.random.normal(jax.random.key(2), a.shape),
      ref_vars)
  # Jitted: one compile per function instead of one per eager primitive.
  out_ref = jax.jit(apply_ref)(variables, *args)
  out_new = jax.jit(new.apply)(variables, *args)
  assert out_new.shape == out_ref.shape
  np.testing.assert_allclose(out_new, out_ref, atol=2e-6)

  def loss(fn):
    return lambda v, *a: jnp.sum(jnp.sin(fn(v, *a)))

  argnums = tuple(range(len(args) + 1))
  g_ref = jax.jit(jax.grad(loss(apply_ref), argnums))(variables, *args)
  g_new = jax.jit(jax.grad(loss(new.apply), argnums))(variables, *args)
  # A kernel gradient of the 32x32 shapes sums 2,048 products per entry.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, atol=5e-5,
                                                       rtol=2e-4),
               g_ref, g_new)


# Per kind, which 2x2-conv form (`layers.prefers_col2im`) each shape takes
# with 7 output channels: both forms of both kinds are checked.
SHAPES = [(3, 8, 6, 5), (2, 2, 2, 4), (2, 32, 32, 6)]
COL2IM = {'down': [False, False, True], 'up': [True, True, False]}


def test_test_shapes_cover_both_forms():
  for (_, h, w, c), down, up in zip(SHAPES, COL2IM['down'], COL2IM['up']):
    assert layers.prefers_col2im((h // 2) * (w // 2),
                                 (h // 2 + 1) * (w // 2 + 1), 4 * c, 7) == down
    assert layers.prefers_col2im((h + 1) * (w + 1), h * w, c, 4 * 7) == up


@pytest.mark.parametrize('kind', sorted(REFERENCES))
@pytest.mark.parametrize('shape', SHAPES)
def test_layer_equals_flax_reference(kind, shape):
  new_cls, ref_cls = REFERENCES[kind]
  x = jax.random.normal(jax.random.key(0), shape)
  _assert_same_layer(ref_cls(7), new_cls(7), (x,))


@pytest.mark.parametrize('shape', [(3, 2, 2, 5), (2, 8, 6, 4)])
def test_conditioned_up_conv_equals_conv_of_concatenated_input(shape):
  """`UpConv(f)(x, cond)` is the transposed conv of [broadcast cond, x]."""
  x = jax.random.normal(jax.random.key(0), shape)
  cond = jax.random.normal(jax.random.key(3), (shape[0], 3))

  def concatenated(x, cond):
    c_b = jnp.broadcast_to(cond[:, None, None], (*x.shape[:3], cond.shape[-1]))
    return (jnp.concatenate([c_b, x], axis=-1),)

  _assert_same_layer(REFERENCES['up'][1](7), layers.UpConv(7), (x, cond),
                     ref_input=concatenated)


def test_both_2x2_conv_forms_agree_valid_and_padded():
  """Both 2x2 conv forms compute the same VALID and padded convolutions."""
  x = jax.random.normal(jax.random.key(0), (2, 5, 4, 3))
  kernel = jax.random.normal(jax.random.key(1), (2, 2, 3, 6))
  for padded in (False, True):
    a = layers._conv_2x2(x, kernel, col2im=False, padded=padded)
    b = layers._conv_2x2(x, kernel, col2im=True, padded=padded)
    assert a.shape == ((2, 6, 5, 6) if padded else (2, 4, 3, 6))
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_up_conv_constant_golden_value():
  # A one-pixel input: the 4x4 transposed conv (SAME, stride 2) writes the
  # kernel's middle 2x2 taps (rows/cols 1, 2 in reverse) to the 2x2 output.
  kernel = jnp.arange(16.0).reshape(4, 4, 1, 1)
  out = layers.up_conv_constant(jnp.ones((1, 1)), kernel, 1, 1)
  # Output (p, q) takes tap (2 - p, 2 - q): 10, 9 / 6, 5.
  np.testing.assert_array_equal(out[0, :, :, 0], [[10.0, 9.0], [6.0, 5.0]])
  np.testing.assert_array_equal(
      out, layers.up_conv(jnp.ones((1, 1, 1, 1)), kernel))


def test_down_conv_golden_value():
  # One 2x2 one-channel image: with a one-pixel zero border every output of
  # the 4x4 stride-2 conv sees the image through the kernel's middle 2x2.
  x = jnp.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1)
  kernel = jnp.arange(16.0).reshape(4, 4, 1, 1)
  # Kernel rows/cols 1..2 hold 5, 6 / 9, 10: 1*5 + 2*6 + 3*9 + 4*10 = 84.
  assert float(layers.down_conv(x, kernel)[0, 0, 0, 0]) == 84.0


def test_the_conv_form_is_matmul_on_cpu_and_can_be_forced():
  assert jax.default_backend() == 'cpu' and layers.conv_form() == 'matmul'
  with layers.forced_conv_form('native'):
    assert layers.conv_form() == 'native'
    with layers.forced_conv_form('matmul'):
      assert layers.conv_form() == 'matmul'
    assert layers.conv_form() == 'native'
  assert layers.conv_form() == 'matmul'
  with pytest.raises(ValueError, match="'cudnn'"):
    with layers.forced_conv_form('cudnn'):
      pass


@pytest.mark.parametrize('form', layers.CONV_FORMS)
@pytest.mark.parametrize('kind', sorted(REFERENCES))
def test_each_forced_form_equals_flax_reference(form, kind):
  """Either form, forced, is flax's layer: outputs and gradients agree."""
  new_cls, ref_cls = REFERENCES[kind]
  x = jax.random.normal(jax.random.key(0), SHAPES[-1])
  with layers.forced_conv_form(form):
    _assert_same_layer(ref_cls(7), new_cls(7), (x,))


def test_native_conditioned_up_conv_equals_the_matmul_form():
  x = jax.random.normal(jax.random.key(0), (2, 8, 6, 4))
  cond = jax.random.normal(jax.random.key(3), (2, 3))
  layer = layers.UpConv(7)
  variables = layer.init(jax.random.key(1), x, cond)
  out = {}
  for form in layers.CONV_FORMS:
    with layers.forced_conv_form(form):
      out[form] = jax.jit(layer.apply)(variables, x, cond)
  np.testing.assert_allclose(out['native'], out['matmul'], atol=2e-6)


def test_a_checkpoint_written_under_one_form_restores_into_the_other(tmp_path):
  """The Fader model's parameters are the same tree under both forms, so
  one written by a CPU run (matmul) decodes the same under the native form
  (a GPU's), and the other way round."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from jacdistill import models  # pylint: disable=g-import-not-at-top
  model = models.FaderAutoencoder(image_size=16, num_attributes=3, nuisance=4,
                                  init_channels=4, max_channels=16)
  x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3), minval=-1)
  saved = {}
  for form in layers.CONV_FORMS:
    with layers.forced_conv_form(form):
      saved[form] = jax.jit(model.init)(jax.random.key(1), x)
      with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(tmp_path / form, saved[form])
  # Same initial values under both forms, as flax initialises both.
  jax.tree.map(np.testing.assert_array_equal, saved['matmul'],
               saved['native'])
  for written, read in (('matmul', 'native'), ('native', 'matmul')):
    with ocp.StandardCheckpointer() as ckpt:
      restored = ckpt.restore(tmp_path / written, saved[read])
    apply = lambda v: model.apply(v, x, train=False)
    with layers.forced_conv_form(read):
      got = jax.jit(apply)(restored)
    with layers.forced_conv_form(written):
      want = jax.jit(apply)(saved[written])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
                 got, want)
