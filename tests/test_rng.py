"""The library leaves its host's JAX settings alone and draws the same
numbers whatever they are (jacdistill/rng.py)."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jacdistill import growth
from jacdistill import models
from jacdistill import rng
from jacdistill import stages
from jacdistill import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('setting', [True, False])
def test_importing_the_library_changes_no_global_jax_setting(setting):
  code = textwrap.dedent(f'''
      import jax
      jax.config.update('jax_threefry_partitionable', {setting})
      before = jax.random.normal(jax.random.key(0), (3,))
      import jacdistill, jacdistill.chain, jacdistill.attr_chain
      import jacdistill.explore, jacdistill.pretrained, jacdistill.classifier
      assert jax.config.jax_threefry_partitionable is {setting}
      after = jax.random.normal(jax.random.key(0), (3,))
      assert (before == after).all(), (before, after)
      ''')
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, timeout=300,
                       capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]


def _draws():
  """A stage's keys, a fresh initialisation, a growth and two train steps
  (whose swap permutations and keys are drawn inside the jitted step)."""
  teacher = models.MLPAutoencoder(latent_dim=2, hidden=(16, 8))
  student = models.MLPAutoencoder(latent_dim=3, hidden=(16, 8),
                                  code_norm=False)
  keys = train.stage_keys(3, 1)
  t_vars = stages.initial_variables(teacher, keys)
  # Host copies: the step donates the state built from them.
  s_vars = jax.tree.map(np.asarray, growth.grow(t_vars, student, keys.growth,
                                                init='random'))
  tx = optax.adam(1e-3)
  step = train.make_train_step(student, teacher, tx, train.LossWeights(
      rec=1.0, lat=0.25, jac=0.1, xcov=1e-3))
  state = train.create_train_state(jax.tree.map(jnp.array, s_vars), tx)
  batch = {'image': jnp.asarray(
      np.random.default_rng(0).integers(0, 255, (8, 28, 28, 1)), jnp.uint8)}
  for _ in range(2):
    state, metrics = step(state, t_vars, batch, keys.steps)
  return jax.tree.map(np.asarray, (jax.random.key_data(keys.init), t_vars,
                                   s_vars, train.variables_of(state),
                                   metrics))


def test_the_library_draws_the_same_numbers_whatever_the_callers_setting():
  with jax.threefry_partitionable(True):
    partitionable = _draws()
  with jax.threefry_partitionable(False):
    classic = _draws()
  jax.tree.map(np.testing.assert_array_equal, partitionable, classic)
  # And they are the classic scheme's: the stage's keys as drawn under it.
  with rng.scheme():
    expected = jax.random.split(jax.random.fold_in(jax.random.key(3), 1), 3)[0]
  np.testing.assert_array_equal(classic[0], jax.random.key_data(expected))
  with jax.threefry_partitionable(True):
    other = jax.random.split(jax.random.fold_in(jax.random.key(3), 1), 3)[0]
  assert not np.array_equal(classic[0], jax.random.key_data(other))


def test_a_jitted_step_lowers_under_the_librarys_scheme():
  f = rng.draws(jax.jit(lambda k: jax.random.normal(k, (4,))))
  with jax.threefry_partitionable(True):
    lowered = f.lower(jax.random.key(0)).compile()(jax.random.key(0))
  with jax.threefry_partitionable(False):
    called = f(jax.random.key(0))
  np.testing.assert_array_equal(lowered, called)
