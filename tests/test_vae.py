"""beta-VAE: the KL and likelihood terms by hand, a deterministic model at
evaluation, dims sorted without changing the function, and a smoke run
whose summary the growth report plots as a student."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import fashion_vae
from jacdistill import chain
from jacdistill import classifier
from jacdistill import input_pipeline
from jacdistill import losses
from jacdistill import models
from jacdistill import report
from jacdistill import stages
from jacdistill import train
from jacdistill import vae

MODEL = models.GaussianMLPAutoencoder(latent_dim=3, hidden=(32, 16, 8))


def _images(seed=0, n=8):
  return np.random.default_rng(seed).integers(0, 256, (n, 28, 28, 1),
                                              np.uint8)


def _variables():
  return jax.jit(MODEL.init)(jax.random.key(0), models.example_input(MODEL))


def test_gaussian_kl_by_hand():
  mean = jnp.array([[1.0, 0.0], [0.0, 2.0]])
  log_var = jnp.log(jnp.array([[1.0, 2.0], [0.5, 1.0]]))
  # Per dim (m^2 + v - 1 - log v) / 2: 1/2; (1 - ln 2) / 2; (ln 2 - 1/2) / 2;
  # 2. The two ln 2 cancel: the sum is 2.75, over a batch of 2.
  np.testing.assert_allclose(losses.gaussian_kl(mean, log_var), 1.375,
                             rtol=1e-6)
  # The prior itself is at distance 0.
  assert float(losses.gaussian_kl(jnp.zeros((4, 3)), jnp.zeros((4, 3)))) == 0


def test_bernoulli_nll_by_hand():
  x = jnp.array([[0.0, 1.0]])
  logits = jnp.array([[0.0, 2.0]])
  # -log(1 - sigmoid(0)) = ln 2; -log sigmoid(2) = ln(1 + e^-2).
  np.testing.assert_allclose(losses.bernoulli_nll(x, logits),
                             np.log(2) + np.log1p(np.exp(-2)), rtol=1e-6)


def test_model_is_deterministic_at_evaluation_and_samples_in_training():
  variables = _variables()
  x = train.to_float(_images(), '01')
  x_hat, code = MODEL.apply(variables, x)
  again = MODEL.apply(variables, x)
  np.testing.assert_array_equal(x_hat, again[0])
  np.testing.assert_array_equal(code, again[1])
  mean, _ = MODEL.apply(variables, x, method=MODEL.posterior)
  np.testing.assert_array_equal(code, mean)  # The code is the mean.
  np.testing.assert_array_equal(
      x_hat, MODEL.apply(variables, code, method=MODEL.decode))
  # Training draws its code: another key, another loss; the same, the same.
  loss = jax.jit(vae.make_loss_fn(MODEL, beta=4.0))
  batch = {'image': _images()}
  a = loss(variables['params'], batch, jax.random.key(1))[0]
  b = loss(variables['params'], batch, jax.random.key(2))[0]
  assert float(a) != float(b)
  assert float(a) == float(loss(variables['params'], batch,
                                jax.random.key(1))[0])


def test_step_weighs_the_kl_by_beta():
  tx = train.make_optimizer(1e-3)
  batch = {'image': _images()}
  metrics = {}
  for beta in (0.0, 16.0):
    step = vae.make_train_step(MODEL, tx, beta)
    state = train.create_train_state(_variables(), tx)
    _, metrics[beta] = step(state, None, batch, jax.random.key(0))
  for beta, m in metrics.items():
    np.testing.assert_allclose(m['total'], m['nll'] + beta * m['kl'],
                               rtol=1e-6)
  assert float(metrics[0.0]['kl']) > 0


def test_sorting_the_dims_keeps_the_function():
  variables = _variables()
  x = train.to_float(_images(), '01')
  order = np.array([2, 0, 1])
  moved = vae.sort_dims(MODEL, variables, order)
  x_hat, code = MODEL.apply(variables, x)
  x_hat2, code2 = MODEL.apply(moved, x)
  np.testing.assert_allclose(code2, code[:, order], rtol=1e-6)
  np.testing.assert_allclose(x_hat2, x_hat, rtol=1e-5, atol=1e-6)
  kl = vae.kl_per_dim(MODEL, variables, _images(n=5), batch_size=2)
  assert kl.shape == (3,) and np.all(kl >= 0)
  np.testing.assert_allclose(vae.kl_per_dim(MODEL, moved, _images(n=5), 2),
                             kl[order], rtol=1e-5)


def test_config_and_sweep():
  config = fashion_vae.get_config()
  assert chain.validate(config) == [8]
  assert config.model.hidden == (256, 128, 64)  # The growth chain's widths.
  names = []
  fashion_vae.sweep(lambda name, **overrides: names.append(
      (name, overrides['loss.beta'], overrides['seed'])))
  assert len(names) == 9 and names[0] == ('vae_beta1_s0', 1.0, 0)
  assert {(b, s) for _, b, s in names} == {
      (b, s) for b in (1.0, 4.0, 16.0) for s in (0, 1, 2)}
  config.growth.end_dim = 9
  with pytest.raises(stages.ConfigError, match='growth.end_dim'):
    chain.validate(config)
  config = fashion_vae.get_config()
  config.loss.beta = -1.0
  with pytest.raises(stages.ConfigError, match='loss.beta'):
    chain.validate(config)


HAVE_DATA = os.path.exists(os.path.join(input_pipeline.DEFAULT_IDX_DIR,
                                        'train-images-idx3-ubyte.gz'))


@pytest.mark.skipif(not HAVE_DATA,
                    reason='needs apt-get install dataset-fashion-mnist')
def test_smoke_run_is_scored_and_plotted_as_a_growth_student(tmp_path):
  # An untrained classifier: the test checks the plumbing, not the scores.
  clf = classifier.Classifier(num_classes=10, widths=(4,), hidden=8)
  variables = clf.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)),
                       train=False)
  hooks = stages.Hooks(classifier=classifier.ClassifierHandle(
      clf, variables, 0.0))
  workdir = str(tmp_path / 'vae_beta4_s0')
  summary = chain.train_and_evaluate(fashion_vae.get_config('smoke'),
                                     workdir, hooks)
  with open(os.path.join(workdir, 'summary.json')) as f:
    (entry,) = json.load(f)['stages']
  assert entry['fingerprint'] == summary['stages'][0]['fingerprint']
  assert entry['latent_dim'] == 8 and entry['teacher_stage'] is None
  assert entry['eval']['factor_dims'] == 2
  assert {'mse', 'psnr', 'swap_acc', 'swap_acc_gt', 'swap_keep',
          'rec_class_acc'} <= set(entry['test'])
  assert 0 < entry['test']['mse'] < 0.3
  assert {'nll', 'kl', 'rec', 'total'} <= set(entry['train_losses'])
  # The growth report reads it as one student stage of k = 8.
  data = report.load([workdir])
  assert report.first_dim(data['vae_beta4'][0]) == 2
  assert [s['latent_dim'] for s in report.students(data['vae_beta4'][0])
          ] == [8]
  report.plot_tradeoff(data, str(tmp_path / 'tradeoff.png'))
  assert os.path.getsize(tmp_path / 'tradeoff.png') > 0
  # Scored by its own evaluation, restored from its checkpoint.
  _, model, restored = chain.load_stage(workdir)
  assert isinstance(model, models.GaussianMLPAutoencoder)
  assert set(restored) == {'params'}
