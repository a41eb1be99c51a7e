"""Shared pytest set-up."""

import atexit
import os
import shutil
import tempfile

import jax


# Tests compile far more than they compute: XLA's backend at -O0 cuts their
# CPU time by about 30% (tests/test_svhn_mock.py + test_growth.py: 81 s of CPU
# instead of 115 s), and XLA:CPU's older elemental emitters instead of its
# fusion emitters compile the small Fader model's student step in 2.1 s
# instead of 5.0 s. Subprocesses inherit both; a caller's own XLA_FLAGS come
# first and can still set either.
for _flag, _value in (('--xla_backend_optimization_level', '0'),
                      ('--xla_cpu_use_fusion_emitters', 'false')):
  if _flag not in os.environ.get('XLA_FLAGS', ''):
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                               f' {_flag}={_value}').strip()

# One persistent XLA compilation cache for the whole session, inherited by the
# launch/main.py subprocesses that many tests start and by pytest-xdist
# workers: the same smoke configs compile once instead of once per process
# (test_main_job + test_faults: 137 s instead of 218 s on 2 cores). The first
# process (pytest itself, or the xdist controller) makes it and removes it at
# exit; its children find it in the environment.
if 'JACDISTILL_TEST_XLA_CACHE' not in os.environ:
  os.environ['JACDISTILL_TEST_XLA_CACHE'] = tempfile.mkdtemp(
      prefix='jacdistill-tests-xla-')
  atexit.register(shutil.rmtree, os.environ['JACDISTILL_TEST_XLA_CACHE'],
                  ignore_errors=True)
os.environ['JAX_COMPILATION_CACHE_DIR'] = os.environ['JACDISTILL_TEST_XLA_CACHE']
os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0.3'
jax.config.update('jax_compilation_cache_dir',
                  os.environ['JAX_COMPILATION_CACHE_DIR'])
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.3)

# The tests draw their own inputs and initialisations in JAX's classic
# threefry scheme, the library's (jacdistill/rng.py), so that their
# hand-calibrated thresholds see the numbers they were written for; the
# library itself draws the same under either (tests/test_rng.py).
jax.config.update('jax_threefry_partitionable', False)


def pytest_unconfigure(config):
  """Drops JAX's tracing and compilation caches before pytest's final sweep.

  pytest ends a session with five full `gc.collect()` passes (its
  unraisable-exception check), each slow over a worker's hundreds of cached
  jaxprs and executables; past 5 s, pytest-xdist's execnet interrupts the
  worker with a SIGINT and a `KeyboardInterrupt` traceback lands in the log.
  """
  del config
  jax.clear_caches()
