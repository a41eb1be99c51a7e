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
