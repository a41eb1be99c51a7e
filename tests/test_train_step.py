"""The jitted train step: frozen teacher, one code path, falling loss."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jacdistill import growth
from jacdistill import models
from jacdistill import train

TEACHER = models.MLPAutoencoder(latent_dim=2, hidden=(32, 16, 8))
STUDENT = models.MLPAutoencoder(latent_dim=3, hidden=(32, 16, 8))
UPSTREAM = train.LossWeights(rec=1.0, lat=0.25, jac=0.1, xcov=1e-3)
FADER = models.FaderAutoencoder(image_size=16, num_attributes=3, nuisance=4,
                                init_channels=4, max_channels=8)


def _batch(seed=0, n=16):
  """Smooth random images (blobs), which an autoencoder can learn."""
  rng = np.random.default_rng(seed)
  grid = np.arange(28)[None, :, None]
  centre = rng.uniform(6, 22, size=(n, 1, 2))
  width = rng.uniform(2, 6, size=(n, 1, 1))
  blob = np.exp(-((grid - centre[..., :1]) ** 2 + (grid.transpose(0, 2, 1)
                  - centre[..., 1:]) ** 2) / (2 * width ** 2))
  return {'image': (blob[..., None] * 255).astype(np.uint8)}


def _copy(tree):
  """A fresh copy: the train step donates the state's buffers."""
  return jax.tree.map(jnp.array, tree)


def _teacher_and_student(seed=0):
  x = models.example_input(TEACHER)
  t_vars = jax.jit(TEACHER.init)(jax.random.key(seed), x)
  s_vars = growth.grow(t_vars, STUDENT, jax.random.key(seed + 1))
  return t_vars, s_vars


def _leaves_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(
      np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


@pytest.mark.parametrize('jacobian', ['swap', 'jvp'])
def test_teacher_is_untouched_and_not_in_optimizer_state(jacobian):
  t_vars, s_vars = _teacher_and_student()
  before = jax.tree.map(np.array, t_vars)
  tx = train.make_optimizer(1e-3, weight_decay=1e-6)
  state = train.create_train_state(s_vars, tx)
  weights = train.LossWeights(rec=1.0, lat=0.25, jac=0.1, xcov=1e-3,
                              jacobian=jacobian)
  step = train.make_train_step(STUDENT, TEACHER, tx, weights)
  for i in range(3):
    state, metrics = step(state, t_vars, _batch(i), jax.random.key(0))
  assert _leaves_equal(before, t_vars)
  for name in ('rec', 'lat', 'jac', 'xcov', 'total', 'grad_norm', 'param_norm'):
    assert np.isfinite(float(metrics[name])), name
  assert float(metrics['jac']) > 0
  # Adam's moments mirror the student's params, and the teacher's shapes
  # (a 2-dim code) appear nowhere in the optimiser state.
  opt_shapes = {l.shape for l in jax.tree.leaves(state.opt_state)}
  teacher_only = {l.shape for l in jax.tree.leaves(t_vars['params'])} - {
      l.shape for l in jax.tree.leaves(state.params)}
  assert teacher_only and not opt_shapes & teacher_only
  adam = next(s for s in state.opt_state if hasattr(s, 'mu'))
  assert jax.tree.structure(adam.mu) == jax.tree.structure(state.params)


def test_loss_falls_on_a_fixed_batch():
  t_vars, s_vars = _teacher_and_student()
  tx = train.make_optimizer(1e-3)
  state = train.create_train_state(s_vars, tx)
  step = train.make_train_step(STUDENT, TEACHER, tx, UPSTREAM)
  batch = _batch(7)
  first = None
  for _ in range(60):
    state, metrics = step(state, t_vars, batch, jax.random.key(1))
    first = first or {k: float(v) for k, v in metrics.items()}
  # The latent match cannot go far: the untrained teacher's code has running
  # statistics the normalised student code does not share. The total and the
  # reconstruction must fall.
  assert float(metrics['rec']) < 0.5 * first['rec']
  assert float(metrics['total']) < 0.8 * first['total']


def test_student_with_zero_supervision_equals_plain_autoencoder_step():
  t_vars, s_vars = _teacher_and_student()
  tx = train.make_optimizer(1e-3, weight_decay=1e-6)
  zero = train.LossWeights(rec=1.0, lat=0.0, jac=0.0, xcov=0.0)
  supervised = train.make_train_step(STUDENT, TEACHER, tx, zero)
  plain = train.make_train_step(STUDENT, None, tx, zero)
  a = train.create_train_state(_copy(s_vars), tx)
  b = train.create_train_state(_copy(s_vars), tx)
  for i in range(3):
    a, ma = supervised(a, t_vars, _batch(i), jax.random.key(2))
    b, mb = plain(b, None, _batch(i), jax.random.key(2))
  # The claim: a zero weight adds nothing. A weighted-in term would move the
  # parameters by Adam steps of about the learning rate (1e-3) per step, so
  # anything 1,000x below that is the same step. The two programs differ
  # (one has more outputs), and XLA may fuse and round them differently on
  # another CPU (1 ulp apart on AMD AVX2, 4 on Intel AVX-512, after 3 steps):
  # no ulp count is the claim.
  same = functools.partial(np.testing.assert_allclose, rtol=0, atol=1e-6)
  jax.tree.map(same, a.params, b.params)
  jax.tree.map(same, a.batch_stats, b.batch_stats)
  np.testing.assert_allclose(float(ma['rec']), float(mb['rec']), rtol=1e-6)
  # The supervised step still reports the terms it did not weight in.
  assert float(ma['jac']) > 0 and float(ma['lat']) > 0


def test_step_key_comes_from_the_step_number():
  t_vars, s_vars = _teacher_and_student()
  tx = train.make_optimizer(1e-3)
  step = train.make_train_step(STUDENT, TEACHER, tx, UPSTREAM)
  # Two steps from step 5 and step 6 states built from the same params draw
  # different permutations, hence different swap losses.
  s5 = train.create_train_state(_copy(s_vars), tx).replace(step=jnp.int32(5))
  s6 = train.create_train_state(_copy(s_vars), tx).replace(step=jnp.int32(6))
  _, m5 = step(s5, t_vars, _batch(3), jax.random.key(0))
  _, m6 = step(s6, t_vars, _batch(3), jax.random.key(0))
  s5b = train.create_train_state(_copy(s_vars), tx).replace(step=jnp.int32(5))
  _, m5b = step(s5b, t_vars, _batch(3), jax.random.key(0))
  assert float(m5['jac']) == float(m5b['jac'])
  assert float(m5['jac']) != float(m6['jac'])


def test_teacher_stage_and_fader_attribute_terms():
  variables = jax.jit(FADER.init)(jax.random.key(0), models.example_input(FADER))
  tx = train.make_optimizer(2e-4, b1=0.5, clip_norm=10.0)
  weights = train.LossWeights(rec=100.0, attr=0.1, xcov=0.1)
  step = train.make_train_step(FADER, None, tx, weights)
  state = train.create_train_state(_copy(variables), tx)
  rng = np.random.default_rng(0)
  batch = {'image': rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8),
           'attributes': np.sign(rng.normal(size=(4, 3))).astype(np.float32)}
  state, metrics = step(state, None, batch, jax.random.key(0))
  assert set(metrics) >= {'rec', 'attr', 'xcov', 'total', 'grad_norm'}
  assert not set(metrics) & {'jac', 'lat', 'cycle_attr', 'cycle_z'}
  want = 100 * metrics['rec'] + 0.1 * metrics['attr'] + 0.1 * metrics['xcov']
  np.testing.assert_allclose(float(metrics['total']), float(want), rtol=1e-6)
  assert not _leaves_equal(state.batch_stats, variables['batch_stats'])


def test_bad_weights_are_refused():
  with pytest.raises(ValueError, match='jac=-1'):
    train.LossWeights(jac=-1.0)
  with pytest.raises(ValueError, match='cycle_z=-1'):
    train.LossWeights(cycle_z=-1.0)
  with pytest.raises(ValueError, match='jacobian'):
    train.LossWeights(jacobian='exact')
  with pytest.raises(ValueError, match="trainable='encoder'"):
    train.make_optimizer(1e-3, trainable='encoder')


def _fader_batch(seed=0):
  rng = np.random.default_rng(seed)
  return {'image': rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)}


def _decoder_split(tree):
  """(decoder leaves, other leaves) of a collection, by models.decoder_mask."""
  pairs = zip(jax.tree.leaves(models.decoder_mask(tree)), jax.tree.leaves(tree))
  dec, other = [], []
  for is_dec, leaf in pairs:
    (dec if is_dec else other).append(np.asarray(leaf))
  return dec, other


@pytest.mark.parametrize('model', [
    models.MLPAutoencoder(latent_dim=3, hidden=(8, 4)),
    models.ConvAutoencoder(latent_dim=3, image_shape=(8, 8, 1), channels=(2,),
                           hidden=4),
    FADER], ids=['mlp', 'conv', 'fader'])
def test_decoder_mask_is_what_decode_reads(model):
  variables = jax.jit(model.init)(jax.random.key(0),
                                  models.example_input(model))
  code = jax.random.normal(jax.random.key(1), (2, model.code_size))
  grads = jax.jit(jax.grad(lambda p: jnp.sum(jnp.square(model.apply(
      dict(variables, params=p), code, method=model.decode)))))(
          variables['params'])
  dec, other = _decoder_split(grads)
  assert dec and other
  assert all(np.any(g != 0) for g in dec)
  assert all(not np.any(g) for g in other)


def test_cycle_terms_reach_only_the_decoder():
  variables = jax.jit(FADER.init)(jax.random.key(0),
                                  models.example_input(FADER))
  weights = train.LossWeights(rec=0.0, cycle_attr=1.0, cycle_z=1.0)
  loss_fn = train.make_loss_fn(FADER, None, weights)
  (total, (terms, _)), grads = jax.jit(jax.value_and_grad(
      loss_fn, has_aux=True))(variables['params'], variables['batch_stats'],
                              None, _fader_batch(), jax.random.key(3))
  assert float(terms['cycle_attr']) > 0 and float(terms['cycle_z']) > 0
  np.testing.assert_allclose(
      float(total), float(terms['cycle_attr'] + terms['cycle_z']), rtol=1e-6)
  dec, other = _decoder_split(grads)
  assert all(np.all(np.isfinite(g)) for g in dec)
  assert any(np.any(g != 0) for g in dec)
  assert all(not np.any(g) for g in other)


def test_decoder_only_stage_keeps_the_encoder():
  variables = jax.jit(FADER.init)(jax.random.key(0),
                                  models.example_input(FADER))
  # Weight decay would move a frozen parameter if the mask missed it.
  tx = train.make_optimizer(1e-2, weight_decay=1e-2, b1=0.5, clip_norm=10.0,
                            trainable='decoder')
  # The encoder-only xcov term must move nothing; the cycle terms, which
  # reach the decoder alone anyway, run in the smoke chain of
  # tests/test_attributes.py.
  weights = train.LossWeights(rec=100.0, xcov=0.1)
  step = train.make_train_step(FADER, None, tx, weights, trainable='decoder')
  state = train.create_train_state(_copy(variables), tx)
  for i in range(3):
    state, metrics = step(state, None, _fader_batch(i), jax.random.key(0))
  assert np.isfinite(float(metrics['total']))
  assert float(metrics['grad_norm']) > 0
  for new, old in ((state.params, variables['params']),
                   (state.batch_stats, variables['batch_stats'])):
    new_dec, new_other = _decoder_split(new)
    old_dec, old_other = _decoder_split(old)
    assert all(np.array_equal(a, b) for a, b in zip(new_other, old_other))
    assert all(not np.array_equal(a, b) for a, b in zip(new_dec, old_dec))
  # Adam keeps moments for the decoder's parameters only.
  moments = sum(l.size for l in jax.tree.leaves(state.opt_state))
  dec_size = sum(l.size for l in _decoder_split(state.params)[0])
  assert 2 * dec_size <= moments < 2 * dec_size + 8


@pytest.mark.parametrize('model, teacher, batch', [
    (STUDENT, TEACHER, _batch(4)),
    # A Fader teacher has nuisance dims: it decodes plain and swapped codes
    # as one batch (no gradient reaches it, so the terms say it all); the
    # student's decoder has BatchNorm and decodes them apart.
    (FADER, FADER.clone(nuisance=2), _fader_batch(4)),
], ids=['mlp', 'fader'])
def test_batched_decodes_give_the_separate_decodes_loss(monkeypatch, model,
                                                        teacher, batch):
  """The swap loss decodes plain and swapped codes as one batch where rows
  are independent; terms (and the student's gradients) are those of
  separate decodes."""
  t_vars = jax.jit(teacher.init)(jax.random.key(0),
                                 models.example_input(teacher))
  s_vars = growth.grow(t_vars, model, jax.random.key(1))
  weights = train.LossWeights(rec=1.0, lat=0.25, jac=0.1, xcov=1e-3)
  args = (s_vars['params'], s_vars.get('batch_stats', {}), t_vars, batch,
          jax.random.key(2))
  with_grads = model is STUDENT

  def terms_and_grads():
    loss_fn = train.make_loss_fn(model, teacher, weights)
    if not with_grads:
      return jax.jit(loss_fn)(*args)[1][0]
    (_, (terms, _)), grads = jax.jit(jax.value_and_grad(
        loss_fn, has_aux=True))(*args)
    return terms, grads

  joint = terms_and_grads()
  monkeypatch.setattr(train, '_decode_both', lambda decode, a, b: (
      decode(a), decode(b)))
  apart = terms_and_grads()
  assert float((joint[0] if with_grads else joint)['jac']) > 0
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-7),
               joint, apart)


def _ynn_computations_with_dots(hlo_text):
  """Names of the computations that YNNPACK fusions call and that hold a dot."""
  bodies, name = {}, None
  for line in hlo_text.splitlines():
    if line.startswith('%') and line.rstrip().endswith('{'):
      name = line.split()[0]
      bodies[name] = []
    elif name is not None:
      bodies[name].append(line)
  called = {line.split('calls=')[1].split(',')[0]
            for line in hlo_text.splitlines()
            if '__ynn_fusion' in line and 'calls=' in line}
  return {c for c in called if any(' dot(' in l for l in bodies.get(c, []))}


def test_train_step_compiles_its_dots_with_xla_on_cpu():
  if not train.step_compiler_options():
    pytest.skip('the options apply to an XLA:CPU that has them')
  t_vars, s_vars = _teacher_and_student()
  tx = train.make_optimizer(1e-3)
  state = train.create_train_state(s_vars, tx)
  step = train.make_train_step(STUDENT, TEACHER, tx, UPSTREAM)
  lowered = step.lower(state, t_vars, _batch(), jax.random.key(0))
  with_ynn_dots = lowered.compile({'xla_cpu_experimental_ynn_fusion_type':
                                   'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT'})
  if not _ynn_computations_with_dots(with_ynn_dots.as_text()):
    pytest.skip('YNNPACK takes no dots on this CPU')
  assert _ynn_computations_with_dots(lowered.compile().as_text()) == set()


def test_step_compiler_options_are_dropped_where_xla_lacks_them(monkeypatch):
  monkeypatch.setattr(train, '_CPU_COMPILER_OPTIONS',
                      {'xla_cpu_no_such_option': True})
  train.step_compiler_options.cache_clear()
  try:
    assert train.step_compiler_options() == {}
  finally:
    train.step_compiler_options.cache_clear()
