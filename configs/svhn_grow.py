"""Progressive growth on SVHN (tfds `svhn_cropped`) with a conv autoencoder.

Upstream has no SVHN code; this is the MNIST recipe with the conv model of
jacdistill/models.py (32x32x3, flat code). Needs the prepared tfds dataset
(see README: "Preparing tfds data").

  python launch/main.py --config=configs/svhn_grow.py --workdir=workdirs/svhn
"""

from configs import mnist_grow


def get_config(variant: str = ''):
  c = mnist_grow.get_config()
  c.data.name = 'svhn_cropped'
  c.model.name = 'conv'
  c.train.epochs_per_stage = 20  # 73k images: 11k steps per stage.
  return mnist_grow.apply_variant(c, variant)
