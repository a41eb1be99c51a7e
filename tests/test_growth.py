"""Growth keeps the function, copies the old leaves and lets new dims learn."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jacdistill import growth
from jacdistill import models
from jacdistill import train

PAIRS = {
    'mlp': (models.MLPAutoencoder(latent_dim=3), models.MLPAutoencoder(latent_dim=5)),
    'mlp_no_norm': (models.MLPAutoencoder(latent_dim=2, code_norm=False),
                    models.MLPAutoencoder(latent_dim=3, code_norm=False)),
    'conv': (models.ConvAutoencoder(latent_dim=2, channels=(8, 16, 16), hidden=32),
             models.ConvAutoencoder(latent_dim=3, channels=(8, 16, 16), hidden=32)),
    'fader': (models.FaderAutoencoder(image_size=16, num_attributes=3, nuisance=4,
                                      init_channels=4, max_channels=16),
              models.FaderAutoencoder(image_size=16, num_attributes=3, nuisance=8,
                                      init_channels=4, max_channels=16)),
}


def _randomise(variables, seed):
  """Random values in every leaf (BatchNorm variances kept positive), so the
  check does not lean on a lucky initialisation."""
  rng = np.random.default_rng(seed)
  out = jax.tree.map(
      lambda l: jnp.asarray(rng.normal(size=l.shape) * 0.3, jnp.float32),
      variables)
  if 'batch_stats' in out:
    out['batch_stats'] = jax.tree.map(lambda v: jnp.abs(v) + 0.5,
                                      out['batch_stats'])
  return out


@functools.cache
def _setup(name):
  old, new = PAIRS[name]
  x = jax.random.uniform(jax.random.key(0), models.example_input(old, 6).shape)
  old_vars = _randomise(dict(jax.jit(old.init)(jax.random.key(1), x)), seed=2)
  new_vars = growth.grow(old_vars, new, jax.random.key(3))
  return old, new, old_vars, new_vars, x


@pytest.mark.parametrize('name', sorted(PAIRS))
def test_grown_model_reconstructs_exactly_as_parent(name):
  old, new, old_vars, new_vars, x = _setup(name)
  for train_mode in (False, True):
    mutable = ['batch_stats'] if 'batch_stats' in old_vars else False
    a = jax.jit(functools.partial(old.apply, train=train_mode,
                                  mutable=mutable))(old_vars, x)
    b = jax.jit(functools.partial(new.apply, train=train_mode,
                                  mutable=mutable))(new_vars, x)
    x_old = a[0][0] if mutable else a[0]
    x_new = b[0][0] if mutable else b[0]
    assert float(jnp.max(jnp.abs(x_old - x_new))) <= 1e-6


@pytest.mark.parametrize('name', sorted(PAIRS))
def test_old_entries_copied_bit_for_bit_and_new_decoder_entries_zero(name):
  old, new, old_vars, new_vars, _ = _setup(name)
  axes = new.latent_axes()
  flat_old = {growth._path_key(p): v for p, v in
              jax.tree_util.tree_flatten_with_path(old_vars)[0]}
  flat_new = {growth._path_key(p): v for p, v in
              jax.tree_util.tree_flatten_with_path(new_vars)[0]}
  assert flat_old.keys() == flat_new.keys()
  grown = 0
  for key, old_leaf in flat_old.items():
    new_leaf = np.asarray(flat_new[key])
    if key not in axes or old_leaf.shape == new_leaf.shape:
      np.testing.assert_array_equal(new_leaf, np.asarray(old_leaf))
      continue
    grown += 1
    axis, role = axes[key]
    n_old = old_leaf.shape[axis]
    np.testing.assert_array_equal(
        np.take(new_leaf, range(n_old), axis=axis), np.asarray(old_leaf))
    extra = np.take(new_leaf, range(n_old, new_leaf.shape[axis]), axis=axis)
    if role == models.DECODER:
      assert not extra.any(), key
    elif key[0] == 'params' and key[-1] == 'kernel':
      assert np.abs(extra).sum() > 0, key  # Fresh init, not zero.
  assert grown >= 3


def test_random_init_reproduces_upstream_both_sides_random():
  old, new, old_vars, _, x = _setup('mlp')
  grown = growth.grow(old_vars, new, jax.random.key(3), init='random')
  extra = np.asarray(grown['params']['dec_in']['kernel'])[3:]
  assert np.abs(extra).sum() > 0
  a, _ = jax.jit(old.apply)(old_vars, x)
  b, _ = jax.jit(new.apply)(grown, x)
  assert float(jnp.max(jnp.abs(a - b))) > 1e-4


@pytest.mark.parametrize('name', sorted(PAIRS))
def test_one_student_step_reaches_new_encoder_and_decoder_dims(name):
  old, new, old_vars, new_vars, x = _setup(name)
  weights = train.LossWeights(rec=1.0, lat=0.25, jac=0.1, xcov=1e-3)
  loss_fn = train.make_loss_fn(new, old, weights)
  batch = {'image': x}
  grads = jax.jit(jax.grad(lambda p: loss_fn(p, new_vars.get('batch_stats', {}),
                                     old_vars, batch, jax.random.key(4))[0]))(
                                         new_vars['params'])
  n_old = old.code_size if name != 'fader' else old.nuisance + 3
  enc = np.asarray(grads['enc_out']['kernel'])
  dec = np.asarray(grads['dec_in']['kernel'])
  if name == 'fader':
    new_enc, new_dec = enc[..., n_old:], dec[:, :, n_old:, :]
  else:
    new_enc, new_dec = enc[:, n_old:], dec[n_old:]
  assert np.abs(new_enc).sum() > 0
  assert np.abs(new_dec).sum() > 0


def test_growth_refuses_a_different_architecture():
  old = models.MLPAutoencoder(latent_dim=2)
  variables = jax.jit(old.init)(jax.random.key(0), models.example_input(old))
  other = models.MLPAutoencoder(latent_dim=3, hidden=(256, 128, 32))
  with pytest.raises(ValueError, match='not a latent leaf'):
    growth.grow(variables, other, jax.random.key(1))
  with pytest.raises(ValueError, match='growth init'):
    growth.grow(variables, models.MLPAutoencoder(latent_dim=3),
                jax.random.key(1), init='ones')
  with pytest.raises(ValueError, match='cannot grow'):
    growth.grow(variables, models.MLPAutoencoder(latent_dim=1), jax.random.key(1))


# A normalised teacher (upstream's first) and a student without the code
# BatchNorm (upstream's students), for both flat-code models.
FOLD_PAIRS = {
    'mlp': (models.MLPAutoencoder(latent_dim=2),
            models.MLPAutoencoder(latent_dim=3, code_norm=False)),
    'conv': (models.ConvAutoencoder(latent_dim=2, channels=(8, 16, 16),
                                    hidden=32),
             models.ConvAutoencoder(latent_dim=3, channels=(8, 16, 16),
                                    hidden=32, code_norm=False)),
}


@pytest.mark.parametrize('name', sorted(FOLD_PAIRS))
def test_student_without_code_norm_starts_as_the_normalised_teacher(name):
  old, new = FOLD_PAIRS[name]
  x = jax.random.uniform(jax.random.key(0), models.example_input(old, 6).shape)
  old_vars = dict(jax.jit(old.init)(jax.random.key(1), x))
  # Running statistics near those of the pre-norm code but not equal (a
  # trained BatchNorm's), so the normalised code is of unit scale, as in a
  # run, and a fold that ignored them would fail.
  raw = jax.jit(new.clone(latent_dim=2).apply, static_argnames='method')(
      {'params': {**old_vars['params'], 'enc_out': {
          'kernel': old_vars['params']['enc_out']['kernel'],
          'bias': jnp.zeros(2)}}}, x, method='encode')
  mean = jnp.mean(raw, axis=0) + 0.3 * jnp.std(raw, axis=0)
  var = 1.7 * jnp.var(raw, axis=0)
  old_vars['batch_stats'] = {'code_norm': {'mean': mean, 'var': var}}
  new_vars = growth.grow(old_vars, new, jax.random.key(3))
  assert 'batch_stats' not in new_vars
  t_hat, t_code = jax.jit(old.apply)(old_vars, x)
  s_hat, s_code = jax.jit(new.apply)(new_vars, x)
  assert 0.3 < float(jnp.max(jnp.abs(t_code))) < 10
  # Inference mode: the teacher normalises with its running statistics.
  # Equal up to float32 rounding of unit-scale numbers.
  assert float(jnp.max(jnp.abs(s_code[:, :2] - t_code))) <= 1e-6
  assert float(jnp.max(jnp.abs(s_hat - t_hat))) <= 1e-6
  # The fold itself: W / sigma and -mu / sigma with sigma = sqrt(var + eps).
  sigma = np.sqrt(np.asarray(var) + models.CODE_NORM_EPSILON)
  np.testing.assert_allclose(
      np.asarray(new_vars['params']['enc_out']['bias'])[:2],
      -np.asarray(mean) / sigma, rtol=1e-6)
  np.testing.assert_allclose(
      np.asarray(new_vars['params']['enc_out']['kernel'])[:, :2],
      np.asarray(old_vars['params']['enc_out']['kernel']) / sigma, rtol=1e-6)
