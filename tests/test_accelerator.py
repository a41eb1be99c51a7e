"""What a user with a GPU or TPU meets, checked on CPU: the install extras
pin the jax the tests run, and a sweep's chains share one accelerator."""

import configparser
import os

import jax

from jacdistill import parallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_accelerator_extras_pin_the_jax_the_tests_run():
  cfg = configparser.ConfigParser()
  cfg.read(os.path.join(ROOT, 'setup.cfg'))
  extras = cfg['options.extras_require']
  assert extras['cuda12'].split() == [f'jax[cuda12]=={jax.__version__}']
  assert extras['tpu'].split() == [f'jax[tpu]=={jax.__version__}']
  with open(os.path.join(ROOT, 'launch', 'tpu_vm.sh')) as f:
    assert f"'jax[tpu]=={jax.__version__}'" in f.read()


def test_sweep_children_allocate_gpu_memory_on_demand():
  env = parallel.shared_accelerator_env({'PATH': '/bin'})
  assert env == {'PATH': '/bin', 'XLA_PYTHON_CLIENT_PREALLOCATE': 'false'}
  # A policy the caller chose is kept.
  for chosen in ({'XLA_PYTHON_CLIENT_PREALLOCATE': 'true'},
                 {'XLA_PYTHON_CLIENT_MEM_FRACTION': '0.3'}):
    assert parallel.shared_accelerator_env(chosen) == chosen
  # launch/sweep.py starts every chain with it.
  with open(os.path.join(ROOT, 'launch', 'sweep.py')) as f:
    assert 'env = parallel.shared_accelerator_env(dict(os.environ))' in f.read()


def test_matmul_precision_is_a_config_field_recorded_in_every_entry(tmp_path):
  """'highest' (the science configs') and 'default' (TF32 on a GPU) compute
  the same bits on CPU, so a CPU run's fingerprints do not depend on it;
  every entry records which ran, and a bad value is refused before any
  file is written."""
  import pytest  # pylint: disable=g-import-not-at-top
  from configs import fashion_grow  # pylint: disable=g-import-not-at-top
  from jacdistill import chain  # pylint: disable=g-import-not-at-top
  from jacdistill import input_pipeline  # pylint: disable=g-import-not-at-top
  from jacdistill import stages  # pylint: disable=g-import-not-at-top
  if not os.path.exists(os.path.join(input_pipeline.DEFAULT_IDX_DIR,
                                     'train-images-idx3-ubyte.gz')):
    pytest.skip('needs apt-get install dataset-fashion-mnist')
  prints = {}
  for precision in ('highest', 'default'):
    config = fashion_grow.get_config('smoke')
    assert config.train.matmul_precision == 'highest'
    config.train.matmul_precision = precision
    summary = chain.train_and_evaluate(config, str(tmp_path / precision))
    assert {s['eval']['matmul_precision'] for s in summary['stages']} == {
        precision}
    prints[precision] = [s['fingerprint'] for s in summary['stages']]
  assert prints['highest'] == prints['default']
  config = fashion_grow.get_config('smoke')
  config.train.matmul_precision = 'tf32'
  with pytest.raises(stages.ConfigError, match="matmul_precision='tf32'"):
    chain.train_and_evaluate(config, str(tmp_path / 'bad'))
  assert not os.path.exists(tmp_path / 'bad')


def test_device_check_runs_on_cpu_at_tiny_sizes(tmp_path):
  """launch/device_check.py's whole measurement, tiny: every step case at
  both precisions (the conv one with both conv forms) and both loops."""
  import json  # pylint: disable=g-import-not-at-top
  import math  # pylint: disable=g-import-not-at-top
  from launch import device_check  # pylint: disable=g-import-not-at-top
  result = device_check.check(tiny=True, steps=2)
  json.dumps(result)  # What the script writes.
  assert result['default_conv_form'] == 'matmul'
  combos = {(r['case'], r['conv_form'], r['precision'])
            for r in result['steps']}
  assert combos == {
      ('mlp_teacher', None, 'highest'), ('mlp_teacher', None, 'default'),
      ('mlp_student', None, 'highest'), ('mlp_student', None, 'default'),
      *{('conv_student', f, p) for f in ('matmul', 'native')
        for p in ('highest', 'default')}}
  loss = {}
  for r in result['steps']:
    assert r['ms_per_step'] > 0 and math.isfinite(r['final_loss'])
    loss.setdefault(r['case'], []).append(r['final_loss'])
  # The same steps from the same state: on CPU the precision changes no
  # bit, the conv form only rounding.
  for case, values in loss.items():
    assert max(values) - min(values) <= 1e-5 * abs(values[0]), (case, values)
  assert [r['case'] for r in result['loops']] == ['mlp_teacher', 'mlp_student']
  for r in result['loops']:
    assert min(r['bare_ms_per_step'], r['per_step_loop_ms_per_step'],
               r['device_loop_ms_per_step']) > 0
