"""Fader Networks: where each gradient goes, the zero-weight step, the ramp,
and a smoke stage of the attribute chain that trains, resumes and is scored."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image
import pytest

from configs import fashion_attr
from jacdistill import attr_chain
from jacdistill import attr_config
from jacdistill import checkpoint
from jacdistill import classifier
from jacdistill import fader
from jacdistill import input_pipeline
from jacdistill import losses
from jacdistill import models
from jacdistill import stages
from jacdistill import train
from jacdistill import workdir_files

A = 3
MODEL = models.FaderNetwork(image_size=16, num_attributes=A, nuisance=4,
                            init_channels=4, max_channels=8, image_channels=1)
DISCRIMINATOR = models.LatentDiscriminator(num_attributes=A, hidden=(8,))
LR = 1e-3
REC = train.LossWeights(rec=100.0)


def _batch(seed=0, n=8):
  rng = np.random.default_rng(seed)
  return {'image': rng.integers(0, 256, (n, 16, 16, 1), np.uint8),
          'attributes': np.where(rng.random((n, A)) < 0.5, -1.0,
                                 1.0).astype(np.float32)}


def _copy(tree):
  """A fresh copy: the train step donates the state's buffers."""
  return jax.tree.map(jnp.array, tree)


def _adversary(weight, ramp_steps=0):
  return fader.Adversary(discriminator=DISCRIMINATOR,
                         tx=train.make_optimizer(LR, b1=0.5),
                         weight=weight, ramp_steps=ramp_steps,
                         init_key=jax.random.key(1))


def _state(adversary, tx):
  variables = jax.jit(MODEL.init)(jax.random.key(0),
                                  *models.example_inputs(MODEL))
  return fader.create_state(adversary, MODEL, variables, tx)


def _nonzero(tree):
  return [bool(np.any(np.asarray(g) != 0)) for g in jax.tree.leaves(tree)]


def test_model_feeds_the_given_attributes_to_the_decoder():
  state = _state(_adversary(1.0), train.make_optimizer(LR))
  variables = fader.variables_of(state)
  x = train.to_float(_batch()['image'], '-11')
  t = _batch()['attributes']
  x_hat, code = MODEL.apply(variables, x, t)
  assert code.shape == (8, MODEL.code_size) == (8, A + 4 * 4)
  np.testing.assert_array_equal(code[:, :A], t)
  np.testing.assert_array_equal(
      code[:, A:], MODEL.apply(variables, x, method=MODEL.encode))
  # The encoder's output holds the nuisance alone.
  assert variables['params']['enc_out']['kernel'].shape[-1] == 4
  np.testing.assert_array_equal(
      x_hat, MODEL.apply(variables, code, method=MODEL.decode))
  other = MODEL.apply(variables, x, -t)[0]
  assert float(jnp.max(jnp.abs(other - x_hat))) > 1e-4


def test_discriminator_gradient_reaches_only_the_discriminator():
  state = _state(_adversary(1.0), train.make_optimizer(LR))
  loss = fader.make_discriminator_loss(MODEL, DISCRIMINATOR)
  grad_dis, grad_ae = jax.grad(lambda d, v: loss(d, v, _batch())[0],
                               argnums=(0, 1))(state.dis_params,
                                               fader.variables_of(state))
  assert all(_nonzero(grad_dis))
  assert not any(_nonzero(grad_ae['params']))


def test_adversarial_gradient_reaches_only_the_encoder():
  state = _state(_adversary(1.0), train.make_optimizer(LR))
  # The adversarial term alone: no reconstruction weight, weight 1.
  loss = fader.make_autoencoder_loss(MODEL, DISCRIMINATOR, rec_weight=0.0)
  grad_ae, grad_dis = jax.grad(
      lambda p, d: loss(p, state.batch_stats, d, _batch(), 1.0)[0],
      argnums=(0, 1))(state.params, state.dis_params)
  assert not any(_nonzero(grad_dis))
  decoder = models.decoder_mask(grad_ae)
  moved = jax.tree.map(lambda g: bool(np.any(np.asarray(g) != 0)), grad_ae)
  assert any(m for m, d in zip(jax.tree.leaves(moved),
                               jax.tree.leaves(decoder)) if not d)
  assert not any(m for m, d in zip(jax.tree.leaves(moved),
                                   jax.tree.leaves(decoder)) if d)
  # Its value is the frozen discriminator's loss against flipped attributes.
  x = train.to_float(_batch()['image'], '-11')
  z = MODEL.apply(fader.variables_of(state), x, train=True,
                  method=MODEL.encode, mutable=['batch_stats'])[0]
  logits = DISCRIMINATOR.apply({'params': state.dis_params}, z)
  np.testing.assert_allclose(
      loss(state.params, state.batch_stats, state.dis_params, _batch(),
           1.0)[0],
      losses.attribute_logistic(logits, -_batch()['attributes']), rtol=1e-6)


def _plain_step(tx):
  """A conditional autoencoder's step with no adversary, written out:
  `step(params, batch_stats, opt_state, batch) -> the three, updated`."""

  def loss(params, batch_stats, batch):
    x = train.to_float(batch['image'], '-11')
    (x_hat, _), updates = MODEL.apply(
        {'params': params, 'batch_stats': batch_stats}, x,
        batch['attributes'], train=True, mutable=['batch_stats'])
    return 100.0 * jnp.mean(jnp.square(x - x_hat)), updates['batch_stats']

  @jax.jit
  def step(params, batch_stats, opt_state, batch):
    (_, batch_stats), grads = jax.value_and_grad(loss, has_aux=True)(
        params, batch_stats, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state

  return step


def _difference_from_plain(weight, ramp_steps, steps):
  """Largest difference of the autoencoder's parameters and statistics
  after `steps` Fader steps from those after as many plain steps."""
  # SGD: a step is the learning rate times the gradient. Adam would map the
  # rounding noise of gradients that are exactly zero in exact arithmetic
  # (the biases of convs followed by BatchNorm) to learning-rate-sized steps.
  tx = optax.sgd(LR)
  adversary = _adversary(weight, ramp_steps)
  state = _state(adversary, tx)
  plain_state = _copy((state.params, state.batch_stats, state.opt_state))
  dis_before = _copy(state.dis_params)
  step = fader.make_train_step(adversary, MODEL, tx, REC, LR)
  plain = _plain_step(tx)
  weights = []
  for i in range(steps):
    state, metrics = step(state, None, _batch(i), jax.random.key(0))
    plain_state = plain(*plain_state, _batch(i))
    weights.append(float(metrics['adv_weight']))
  # The discriminator trained meanwhile, and the term is reported.
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(state.dis_params), jax.tree.leaves(dis_before)))
  assert float(metrics['adv']) > 0
  diff = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                      (state.params, state.batch_stats), plain_state[:2])
  return max(jax.tree.leaves(diff)), weights


# The claim: a zero adversarial weight adds nothing. Its gradients agree to
# 1e-4 (the reconstruction's have a norm of ~50), so parameters agree to
# 1e-4 times the learning rate; the smallest weight of FADER_GRID, 0.01,
# moves them 100 times further in 3 steps (tested below). No ulp count is
# the claim: the programs differ, and XLA may round them differently on
# another CPU.
TOLERANCE = 1e-4 * LR


@pytest.mark.parametrize('weight, ramp_steps, steps', [(0.0, 0, 3),
                                                      (5.0, 10, 1)])
def test_zero_adversarial_weight_is_a_plain_autoencoder_step(weight,
                                                             ramp_steps,
                                                             steps):
  # Weight 0 throughout, or the ramp's first step (weight 0 at step 0).
  diff, weights = _difference_from_plain(weight, ramp_steps, steps)
  assert weights == [0.0] * steps
  assert diff <= TOLERANCE


def test_a_small_adversarial_weight_is_far_outside_the_tolerance():
  weight = min(fashion_attr.FADER_GRID)
  diff, weights = _difference_from_plain(weight, 0, 3)
  np.testing.assert_allclose(weights, [weight] * 3, rtol=1e-7)
  assert diff > 100 * TOLERANCE


def test_discriminator_update_does_not_depend_on_the_adversarial_weight():
  tx = train.make_optimizer(LR, b1=0.5)
  out = []
  for weight in (0.0, 10.0):
    adversary = _adversary(weight)
    step = fader.make_train_step(adversary, MODEL, tx, REC, LR)
    state, _ = step(_state(adversary, tx), None, _batch(), jax.random.key(0))
    out.append(state)
  diff = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                      out[0].dis_params, out[1].dis_params)
  assert max(jax.tree.leaves(diff)) <= TOLERANCE
  # ...while the encoder's does: a weighted-in term moves it by ~lr.
  diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
      jax.tree.leaves(out[0].params['enc_out']),
      jax.tree.leaves(out[1].params['enc_out'])))
  assert diff > LR / 10


def test_adversarial_weight_ramps_linearly_then_stays():
  got = [float(fader.adversarial_weight(2.0, 4, jnp.int32(s)))
         for s in (0, 1, 2, 4, 9)]
  assert got == [0.0, 0.5, 1.0, 2.0, 2.0]
  assert float(fader.adversarial_weight(2.0, 0, jnp.int32(0))) == 2.0
  with pytest.raises(ValueError, match='ramp_steps=-1'):
    _adversary(1.0, -1)


HAVE_DATA = os.path.exists(os.path.join(input_pipeline.DEFAULT_IDX_DIR,
                                        'train-images-idx3-ubyte.gz'))


def _smoke_config():
  config = fashion_attr.get_config('smoke')
  config.stage_order = ('fader32',)
  return config


def _hooks(**kwargs):
  # An untrained classifier: the test checks the plumbing, not the scores.
  clf = classifier.Classifier(num_classes=10, widths=(4,), hidden=8)
  variables = clf.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)),
                       train=False)
  return stages.Hooks(classifier=classifier.ClassifierHandle(
      clf, variables, 0.0), **kwargs)


@pytest.fixture(scope='module')
def fader_run(tmp_path_factory):
  if not HAVE_DATA:
    pytest.skip('needs apt-get install dataset-fashion-mnist')
  workdir = str(tmp_path_factory.mktemp('fader'))
  return workdir, attr_chain.train_and_evaluate(_smoke_config(), workdir,
                                                _hooks())


def _discriminator_on_disk(workdir):
  config = _smoke_config()
  stage = attr_chain.make_stage(config, workdir, 'fader32')
  like = stage.trainer.create_state(
      stages.initial_variables(stage.model, stage.keys), stage.tx)
  ckpts = checkpoint.Checkpoints(os.path.join(workdir, 'fader32',
                                              'checkpoints'))
  try:
    state, _, step = ckpts.restore_latest(like)
  finally:
    ckpts.close()
  return step, state.dis_params


def test_fader_stage_trains_and_records_flip_accuracy(fader_run):
  workdir, summary = fader_run
  with open(os.path.join(workdir, 'summary.json')) as f:
    (entry,) = json.load(f)['stages']
  assert entry['name'] == 'fader32' and entry['kind'] == 'fader'
  assert entry['steps'] == 9 and entry['code_size'] == 10 + 4 * 6
  assert {'psnr', 'mse', 'flip_acc', 'flip_acc_pos', 'flip_acc_neg',
          'flip_acc_pos_mean', 'flip_acc_neg_mean'} <= set(entry['test'])
  # The nuisance code against the attributes (the decoder's input).
  assert 0.0 <= entry['test']['mig'] <= 1.0
  assert 0.0 <= entry['test']['dci_informativeness'] <= 1.0
  assert entry['eval']['disentanglement']['num_bins'] == 20
  assert len(entry['test']['flip_acc_pos']) == 10
  assert 0.0 <= entry['test']['flip_acc'] <= 1.0
  assert np.isfinite(entry['test']['psnr'])
  assert {'rec', 'adv', 'dis', 'dis_acc', 'adv_weight', 'dis_grad_norm'} <= set(
      entry['train_losses'])
  assert os.path.exists(os.path.join(workdir, 'fader32', 'edits.png'))
  _, _, variables = attr_chain.load_stage(workdir, 'fader32')
  assert checkpoint.fingerprint(variables) == entry['fingerprint']


def test_manipulate_refuses_a_fader_stage_in_one_line(fader_run, tmp_path):
  from launch import manipulate  # pylint: disable=g-import-not-at-top
  workdir, _ = fader_run
  path = str(tmp_path / 'in.png')
  Image.fromarray(np.zeros((28, 28), np.uint8)).save(path)
  with pytest.raises(manipulate.ManipulateError, match='Fader Networks'):
    manipulate.manipulate(workdir, 'fader32', [path], ['sandal=1'])


def test_fader_stage_resumes_mid_stage_bit_for_bit(fader_run, tmp_path):
  straight_dir, straight = fader_run
  workdir = str(tmp_path / 'interrupted')
  calls = {'n': 0}

  def stop_at_step_5():
    calls['n'] += 1
    return calls['n'] == 5

  with pytest.raises(stages.Preempted, match='step 5 of stage fader32'):
    attr_chain.train_and_evaluate(_smoke_config(), workdir,
                                  _hooks(should_stop=stop_at_step_5))
  assert _discriminator_on_disk(workdir)[0] == 5
  resumed = attr_chain.train_and_evaluate(_smoke_config(), workdir, _hooks())
  assert (resumed['stages'][0]['fingerprint'] ==
          straight['stages'][0]['fingerprint'])
  assert resumed['stages'][0]['test'] == straight['stages'][0]['test']
  step_a, dis_a = _discriminator_on_disk(workdir)
  step_b, dis_b = _discriminator_on_disk(straight_dir)
  assert step_a == step_b == 9
  assert checkpoint.fingerprint(dis_a) == checkpoint.fingerprint(dis_b)


def test_a_chain_may_append_a_stage_but_not_change_one_that_ran(tmp_path):
  config = fashion_attr.get_config('smoke')
  old = json.loads(config.to_json())
  old['stage_order'] = old['stage_order'][:-1]
  # A run of the chain before the Fader stage existed.
  del old['stages']['fader32']
  for spec in old['stages'].values():
    del spec['kind']
  with open(tmp_path / 'config.json', 'w') as f:
    json.dump(old, f)
  workdir_files.check_workdir(config, str(tmp_path))
  config.stages.baseline32.loss.rec = 1.0
  with pytest.raises(stages.ConfigError, match='stages.baseline32.loss.rec'):
    workdir_files.check_workdir(config, str(tmp_path))
  config = fashion_attr.get_config('smoke')
  config.stage_order = ('teacher', 'fader32')
  with pytest.raises(stages.ConfigError, match='stage_order'):
    workdir_files.check_workdir(config, str(tmp_path))


def test_fader_config_errors_name_the_field():
  config = fashion_attr.get_config('smoke')
  config.stages.fader32.teacher = 'teacher'
  with pytest.raises(stages.ConfigError, match="fader32 \\(kind='fader'\\)"):
    attr_config.validate(config)
  config = fashion_attr.get_config('smoke')
  config.stages.fader32.loss.attr = 1.0
  with pytest.raises(stages.ConfigError, match='loss.attr to 0'):
    attr_config.validate(config)
  config = fashion_attr.get_config('smoke')
  config.stage_order = ('fader32', 'teacher')
  config.stages.teacher.init = 'fader32'
  config.stages.teacher.nuisance = 6
  with pytest.raises(stages.ConfigError, match='teacher.init.*Fader stage'):
    attr_config.validate(config)
  config = fashion_attr.get_config('smoke')
  config.stages.teacher.kind = 'gan'
  with pytest.raises(stages.ConfigError, match="kind='gan'"):
    attr_config.validate(config)


def test_defaults_skip_a_fader_stage_in_manipulate_and_the_explorer(
    tmp_path, capsys):
  """A run ending in a Fader stage: without --stage both entry points open
  the run's default stage (the recipe's last student, or here, with no
  student, the teacher), and the explorer leaves the Fader stage out
  instead of failing every request."""
  if not HAVE_DATA:
    pytest.skip('needs apt-get install dataset-fashion-mnist')
  from jacdistill import attr_config, explore  # pylint: disable=g-import-not-at-top
  from launch import manipulate  # pylint: disable=g-import-not-at-top
  assert attr_config.default_stage(fashion_attr.get_config('quick')) == (
      'student32')
  config = fashion_attr.get_config('smoke')
  config.stage_order = ('teacher', 'fader32')
  config.eval.classifier = False
  workdir = str(tmp_path / 'run')
  attr_chain.train_and_evaluate(config, workdir)
  assert attr_config.default_stage(config) == 'teacher'
  path = str(tmp_path / 'in.png')
  Image.fromarray(np.zeros((28, 28), np.uint8)).save(path)
  grid = manipulate.manipulate(workdir, None, [path], ['sandal=1'])
  assert grid.ndim == 3
  assert 'using stage teacher' in capsys.readouterr().err
  explorer = explore.Explorer.from_workdir(workdir)
  assert list(explorer.stages) == ['teacher']
  reply = explorer.encode_test({'test': 0})
  assert list(reply['stages']) == ['teacher']
  with pytest.raises(stages.ConfigError, match="'fader32' .* is a Fader"):
    explore.Explorer.from_workdir(workdir, 'fader32')
