"""Progressive growth on Fashion-MNIST from local files: the offline default.

The upstream MNIST recipe (configs/mnist_grow.py) on Fashion-MNIST, read from
the idx .gz files that Debian's `dataset-fashion-mnist` package installs in
/usr/share/datasets/fashion-mnist (`--config.data.idx_dir` to change).

  python launch/main.py --config=configs/fashion_grow.py:quick --workdir=workdirs/fashion_quick
  python launch/main.py --config=configs/fashion_grow.py --workdir=workdirs/fashion
"""

from configs import mnist_grow


def get_config(variant: str = ''):
  c = mnist_grow.get_config()
  c.data.name = 'fashion_mnist'
  c.data.source = 'idx'
  return mnist_grow.apply_variant(c, variant)


def sweep(add):
  """Baselines and ablations of issue #4, run by launch/sweep.py into sibling
  workdirs (each `add(name, **overrides)` is one chain; dotted field names).

  upstream: the recipe. b1_latent_only: Jacobian weight 0. b2_no_supervision:
  every supervision weight 0 (growth init only). jac_{swap,jvp}_W: Jacobian
  weight W in either form. no_code_norm: upstream without the code BatchNorm.
  """
  # Seed 0 of the main variants first, then the seeds that give the spread,
  # then the rest of the weight sweep: a partial sweep is already comparable.
  def main_variants(seed):
    # Seeds 1 and 2 stop at k=5: enough for the seed spread, half the cost.
    short = {} if seed == 0 else {'growth.end_dim': 5}
    add(f'upstream_s{seed}', seed=seed, **short)
    add(f'b1_latent_only_s{seed}', seed=seed, **{'loss.jac': 0.0}, **short)
    add(f'b2_no_supervision_s{seed}', seed=seed, **short,
        **{'loss.jac': 0.0, 'loss.lat': 0.0, 'loss.xcov': 0.0})

  def jac(form, weight):
    add(f'jac_{form}_{weight:g}_s0', **{'loss.jacobian': form, 'loss.jac': weight})

  main_variants(0)
  jac('swap', 1.0)
  jac('swap', 10.0)
  jac('jvp', 1.0)
  main_variants(1)
  main_variants(2)
  jac('jvp', 0.1)  # ('swap', 0.1) is `upstream`.
  jac('jvp', 10.0)
  add('no_code_norm_s0', **{'model.code_norm': False, 'growth.end_dim': 5})
