"""Data parallel over a simulated 8-device CPU mesh equals one device, and
start-up (`maybe_initialize_distributed`) joins a cluster or runs alone.

The mesh test's model has no code BatchNorm: through a BatchNorm, some
directions (the bias of a layer whose units are active on the whole batch)
have an exactly-zero gradient, and Adam scales the rounding noise of the
reduction order up to full-size steps, so no two reduction orders agree on
them.
"""

import logging
import os
import subprocess
import sys
import textwrap
import time

import jax
from jax.experimental import multihost_utils
import numpy as np
import pytest

from jacdistill import checkpoint
from jacdistill import parallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = textwrap.dedent('''
    import jax, numpy as np
    jax.config.update('jax_threefry_partitionable', False)
    from jax.sharding import Mesh, AxisType
    from jacdistill import growth, models, parallel, train
    assert jax.device_count() == 8, jax.devices()
    teacher = models.MLPAutoencoder(latent_dim=2, hidden=(32, 16, 8),
                                    code_norm=False)
    student = models.MLPAutoencoder(latent_dim=3, hidden=(32, 16, 8),
                                    code_norm=False)
    t_vars = jax.jit(teacher.init)(jax.random.key(0), models.example_input(teacher))
    s_vars = growth.grow(t_vars, student, jax.random.key(1))
    tx = train.make_optimizer(1e-3, weight_decay=1e-6)
    weights = train.LossWeights(rec=1.0, lat=0.25, jac=0.1, xcov=1e-3)
    rng = np.random.default_rng(0)
    batches = [{'image': rng.integers(0, 256, (32, 28, 28, 1), dtype=np.uint8)}
               for _ in range(4)]

    def run(mesh):
      step = train.make_train_step(student, teacher, tx, weights)
      state = parallel.replicate(train.create_train_state(
          jax.tree.map(np.array, s_vars), tx), mesh)
      tv = parallel.replicate(t_vars, mesh)
      for b in batches:
        state, metrics = step(state, tv, parallel.shard_batch(b, mesh),
                              jax.random.key(2))
      return jax.device_get(state.params), float(metrics['jac'])

    mesh8 = parallel.data_mesh()
    mesh1 = Mesh(np.array(jax.devices()[:1]), ('data',),
                 axis_types=(AxisType.Auto,))
    p8, j8 = run(mesh8)
    p1, j1 = run(mesh1)
    pairs = list(zip(jax.tree.leaves(p8), jax.tree.leaves(p1)))
    rel = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in pairs)
                  / sum(np.sum(b ** 2) for _, b in pairs))
    print('REL', rel, j8, j1)
    assert rel < 1e-5, rel
    assert abs(j8 - j1) < 1e-5 * abs(j1), (j8, j1)
    try:
      parallel.check_batch_size(12, mesh8)
      raise SystemExit('batch 12 accepted on 8 devices')
    except ValueError as e:
      assert '8 devices' in str(e) and 'e.g. 8, 16' in str(e), e
    print('OK')
''')


def test_eight_devices_equal_one():
  # Appended, so the worker also compiles with the tests' flags (conftest.py).
  flags = os.environ.get('XLA_FLAGS', '')
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=(
      flags + ' --xla_force_host_platform_device_count=8').strip())
  out = subprocess.run([sys.executable, '-c', WORKER], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'OK' in out.stdout, out.stdout


# --- start-up: parallel.maybe_initialize_distributed ---------------------

# Variables by which jax (or a launcher) would see a cluster.
_CLUSTER_PREFIXES = ('SLURM_', 'OMPI_', 'TPU_', 'MEGASCALE_', 'KUBERNETES_',
                     'JAX_COORDINATOR_', 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID')

NO_CLUSTER_WORKER = textwrap.dedent('''
    import time
    import jax, jax.numpy as jnp
    from jacdistill import parallel
    t = time.perf_counter()
    started = parallel.maybe_initialize_distributed()
    took = time.perf_counter() - t
    assert started is False, started
    assert not jax.distributed.is_initialized()
    assert parallel.maybe_initialize_distributed() is False  # idempotent
    assert jax.process_count() == 1, jax.process_count()
    assert float(jnp.arange(4.0).sum()) == 6.0
    print('TOOK', took)
''')


def _no_cluster_env():
  return {k: v for k, v in os.environ.items()
          if not k.startswith(_CLUSTER_PREFIXES)}


@pytest.fixture
def no_cluster(monkeypatch):
  """An environment with no cluster in it, even when the tests run on a TPU VM.

  Also replaces `jax.distributed.initialize` by a recorder (its calls land in
  the returned list) and `is_initialized` by False, so no test here starts a
  real runtime in the pytest process.
  """
  for k in list(os.environ):
    if k.startswith(_CLUSTER_PREFIXES):
      monkeypatch.delenv(k)
  try:
    from jax._src.clusters import cloud_tpu_cluster  # pylint: disable=g-import-not-at-top
    # On a real TPU VM jax's GCE check would find this machine's metadata.
    monkeypatch.setattr(cloud_tpu_cluster, 'running_in_cloud_tpu_vm', False,
                        raising=False)
  except ImportError:
    pass
  calls = []
  monkeypatch.setattr(jax.distributed, 'initialize',
                      lambda *a, **kw: calls.append((a, kw)))
  monkeypatch.setattr(jax.distributed, 'is_initialized', lambda: False)
  return calls


def test_no_cluster_starts_one_process_at_once():
  # A fresh process with the real jax.distributed: nothing detected, nothing
  # started, no network waited on, and jax computes as one process. (jax's
  # own switch keeps its GCE check off the metadata server of a real TPU VM.)
  env = dict(_no_cluster_env(), JAX_PLATFORMS='cpu', TPU_SKIP_MDS_QUERY='1')
  out = subprocess.run([sys.executable, '-c', NO_CLUSTER_WORKER], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]
  took = float(out.stdout.split('TOOK')[1])
  assert took < 2.0, took


def test_no_cluster_returns_false_without_calling_initialize(no_cluster):
  t = time.perf_counter()
  assert parallel.detected_cluster() is None
  assert parallel.maybe_initialize_distributed() is False
  assert time.perf_counter() - t < 2.0
  assert no_cluster == []


@pytest.mark.parametrize('env, expected', [
    ({'JAX_COORDINATOR_ADDRESS': '10.0.0.1:1234', 'JAX_NUM_PROCESSES': '4',
      'JAX_PROCESS_ID': '2'},
     {'coordinator_address': '10.0.0.1:1234', 'num_processes': 4,
      'process_id': 2}),
    # What is missing is left to jax: detected, or refused by name.
    ({'JAX_COORDINATOR_ADDRESS': '10.0.0.1:1234'},
     {'coordinator_address': '10.0.0.1:1234', 'num_processes': None,
      'process_id': None}),
])
def test_explicit_env_is_passed_through(no_cluster, monkeypatch, env,
                                        expected):
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  assert parallel.maybe_initialize_distributed() is True
  assert no_cluster == [((), expected)]


@pytest.mark.parametrize('env, cluster', [
    ({'SLURM_JOB_ID': '7', 'SLURM_STEP_NODELIST': 'node[1-2]',
      'SLURM_NTASKS': '2', 'SLURM_PROCID': '1', 'SLURM_LOCALID': '0'},
     'SlurmCluster'),
    ({'OMPI_MCA_orte_hnp_uri': '1531576320.0;tcp://10.96.0.1:34911'},
     'OmpiCluster'),
])
def test_detected_cluster_gets_a_plain_initialize(no_cluster, monkeypatch,
                                                  env, cluster):
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  assert parallel.detected_cluster() == cluster
  assert parallel.maybe_initialize_distributed() is True
  assert no_cluster == [((), {})]


def test_detected_tpu_pod_gets_a_plain_initialize(no_cluster, monkeypatch):
  # A Cloud TPU VM pod: jax's GCE check (metadata server) says yes.
  from jax._src.clusters import cloud_tpu_cluster  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(cloud_tpu_cluster.GceTpuCluster, 'is_env_present',
                      classmethod(lambda cls: True))
  assert parallel.detected_cluster() == 'GceTpuCluster'
  assert parallel.maybe_initialize_distributed() is True
  assert no_cluster == [((), {})]


def test_already_initialised_is_left_alone(no_cluster, monkeypatch):
  monkeypatch.setattr(jax.distributed, 'is_initialized', lambda: True)
  monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', '10.0.0.1:1234')
  assert parallel.maybe_initialize_distributed() is True
  assert no_cluster == []


def test_without_jax_cluster_list_initialize_decides(no_cluster, monkeypatch):
  # A jax whose private cluster list moved: initialize() detects, and its
  # "coordinator_address should be defined." means one process.
  monkeypatch.setattr(parallel, 'detected_cluster', lambda: '')
  errors = [ValueError('coordinator_address should be defined.')]

  def initialize():
    if errors:
      raise errors.pop()
  monkeypatch.setattr(jax.distributed, 'initialize', initialize)
  assert parallel.maybe_initialize_distributed() is False
  assert parallel.maybe_initialize_distributed() is True  # found one
  errors.append(ValueError('process_id and num_processes must be ...'))
  with pytest.raises(ValueError, match='process_id'):
    parallel.maybe_initialize_distributed()


# ------------------------------------------------- one decision, many processes


def test_a_step_another_process_cannot_read_is_passed_over_here_too(
    tmp_path, monkeypatch, caplog):
  directory = str(tmp_path / 'ckpts')
  ckpts = checkpoint.Checkpoints(directory)
  for step in (1, 2):
    ckpts.save(step, {'w': np.full(3, step, np.float32)}, {'step': step})
  ckpts.close()
  # This process reads step 2; process 1 (simulated) cannot: both take 1.
  seen = []

  def agree(mine):
    seen.append(int(mine))
    # pylint: disable-next=protected-access
    other = checkpoint._CORRUPT if len(seen) == 1 else checkpoint._READ
    return np.array([mine, other])
  monkeypatch.setattr(parallel, 'agree', agree)
  ckpts = checkpoint.Checkpoints(directory)
  with caplog.at_level(logging.WARNING):
    restored, record, step = ckpts.restore_latest(
        {'w': np.zeros(3, np.float32)})
  ckpts.close()
  assert seen == [checkpoint._READ] * 2  # pylint: disable=protected-access
  assert (step, record) == (1, {'step': 1})
  np.testing.assert_array_equal(restored['w'], np.ones(3))
  assert f'checkpoint {directory}/2 is unreadable on process 1' in caplog.text


def test_broadcast_from_process_0_keeps_every_bit():
  tree = {'w': np.array([-0.0, np.nan, 1.5], np.float32),
          'n': np.int64(2**40 + 3)}
  out = parallel.broadcast_from_process_0(tree)
  assert out['w'].tobytes() == tree['w'].tobytes()
  assert out['n'].shape == () and int(out['n']) == 2**40 + 3


def test_preemption_stop_stays_true_from_the_agreed_step(monkeypatch):
  calls = []

  def reached(step_id):
    calls.append(step_id)
    return step_id == 2
  monkeypatch.setattr(multihost_utils, 'reached_preemption_sync_point',
                      reached)
  should_stop = parallel.preemption_stop()
  assert [should_stop() for _ in range(5)] == [False, False, True, True, True]
  # Step ids count the calls; once agreed, the service is not asked again.
  assert calls == [0, 1, 2]
