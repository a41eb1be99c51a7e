"""Data parallel over a simulated 8-device CPU mesh equals one device.

The model has no code BatchNorm here: through a BatchNorm, some directions
(the bias of a layer whose units are active on the whole batch) have an
exactly-zero gradient, and Adam scales the rounding noise of the reduction
order up to full-size steps, so no two reduction orders agree on them.
"""

import os
import subprocess
import sys
import textwrap

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
