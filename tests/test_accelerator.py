"""What a user with a GPU or TPU meets, checked on CPU: the install extras
pin the jax the tests run, and a sweep's chains share one accelerator."""

import configparser
import os

import jax

from launch import sweep

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
  env = sweep.child_env({'PATH': '/bin'})
  assert env == {'PATH': '/bin', 'XLA_PYTHON_CLIENT_PREALLOCATE': 'false'}
  # A policy the caller chose is kept.
  for chosen in ({'XLA_PYTHON_CLIENT_PREALLOCATE': 'true'},
                 {'XLA_PYTHON_CLIENT_MEM_FRACTION': '0.3'}):
    assert sweep.child_env(chosen) == chosen
