"""Progressive growth on MNIST, the upstream recipe (docs/method.md part A).

MLP autoencoder 784-256-128-64-k; a teacher with a 2-dim code, then students
that grow the code one dim at a time up to 16, each supervised by the frozen
student before it; 100 epochs per stage; upstream loss weights and optimiser.

  python launch/main.py --config=configs/mnist_grow.py --workdir=workdirs/mnist
  python launch/main.py --config=configs/mnist_grow.py:quick --workdir=/tmp/q

Variants (the text after ':'): '' the full recipe; 'k8' the full recipe
(100 epochs per stage) grown to k = 8 only; 'quick' 5 epochs per stage up to
k = 8 (minutes on a laptop CPU); 'smoke' seconds, for tests.
The other growth configs import this one and change a few fields.
"""

import ml_collections

import configs

from jacdistill import input_pipeline


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.chain = 'growth'  # Which chain launch/main.py runs: 'growth' or 'attribute'.
  c.seed = 0  # Seeds init, data order and the swap permutations.

  c.data = ml_collections.ConfigDict()
  c.data.name = 'mnist'  # tfds name: mnist, fashion_mnist or svhn_cropped.
  c.data.source = 'tfds'  # 'tfds', or 'idx' for local MNIST-format .gz files.
  c.data.idx_dir = input_pipeline.DEFAULT_IDX_DIR  # Where the idx files are.
  c.data.tfds_data_dir = ml_collections.config_dict.placeholder(str)  # tfds data_dir; None = tfds default.
  c.data.limit = 0  # Use only the first `limit` examples of each split; 0 = all.
  # Hold the last N training images out as a validation split, scored at
  # every stage beside the test split; 0 = train on all (upstream).
  c.data.validation = 0

  c.model = ml_collections.ConfigDict()
  c.model.name = 'mlp'  # 'mlp' (28x28 images) or 'conv' (32x32x3 images).
  c.model.hidden = (256, 128, 64)  # Encoder widths; the decoder mirrors them.
  c.model.channels = (32, 64, 128)  # Conv widths (conv model only).
  c.model.conv_hidden = 256  # Dense width around the code (conv model only).
  # BatchNorm (no affine) on the code: 'first' the stage-0 teacher only
  # (upstream), 'all' every stage, 'none' no stage.
  c.model.code_norm = 'first'
  c.model.output = 'sigmoid'  # 'sigmoid' for pixels in [0,1], 'tanh' for [-1,1].

  c.growth = ml_collections.ConfigDict()
  c.growth.start_dim = 2  # Code size of the stage-0 teacher.
  c.growth.end_dim = 16  # Code size of the last student.
  c.growth.step = 1  # Dims added per stage.
  c.growth.init = 'zero'  # 'zero': new decoder weights zero (exact); 'random': upstream.
  c.growth.teacher = 'previous'  # 'previous' (upstream chain) or 'first' (always stage 0).

  c.loss = ml_collections.ConfigDict()
  c.loss.rec = 1.0  # Reconstruction MSE weight (every stage).
  c.loss.lat = 0.25  # Student factor dims matched to the teacher's code.
  c.loss.jac = 0.1  # Jacobian supervision weight.
  c.loss.xcov = 1e-3  # Cross-covariance of new dims against the factor dims.
  c.loss.jacobian = 'swap'  # 'swap' (upstream, first order) or 'jvp' (exact).

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 128  # Global batch size.
  c.train.epochs_per_stage = 100  # Epochs of each stage (upstream: 100).
  c.train.steps_per_stage = 0  # If > 0, overrides epochs_per_stage.
  c.train.learning_rate = 3e-4  # Adam learning rate.
  c.train.weight_decay = 1e-6  # PyTorch-style L2 added to the gradient.
  c.train.b1 = 0.9  # Adam beta1.
  c.train.b2 = 0.999  # Adam beta2.
  c.train.clip_norm = 0.0  # Global-norm gradient clip; 0 = none.
  # Float32 dots and convs: 'highest' (full float32, as on CPU), or
  # 'default' (TF32 on an Ampere/Hopper GPU: faster, ~1e-3 relative).
  c.train.matmul_precision = 'highest'
  # Keep the dataset on the devices and run log.every_steps steps per
  # dispatch (jacdistill/device_loop.py): the same batches, fewer host trips.
  c.train.device_loop = False

  configs.add_checkpoint_and_log(c)

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 500  # Test-set evaluation batch.
  c.eval.num_images = 16  # Test images in the reconstruction / traversal grids.
  c.eval.traversal_steps = 9  # Columns of the traversal grid.
  c.eval.classifier = True  # Score disentangling with the external classifier.
  c.eval.classifier_dir = ''  # '' = the shared per-dataset cache directory.
  c.eval.num_permutations = 5  # Swap-accuracy permutations (mean and spread).

  return apply_variant(c, variant)


def apply_variant(c: ml_collections.ConfigDict,
                  variant: str) -> ml_collections.ConfigDict:
  """Overrides a few fields for the 'k8', 'quick' and 'smoke' variants."""
  if variant == 'k8':
    c.growth.end_dim = 8
  elif variant == 'quick':
    c.growth.end_dim = 8
    c.train.epochs_per_stage = 5
  elif variant == 'smoke':
    c.data.limit = 512
    c.growth.end_dim = 3
    c.train.batch_size = 64
    c.train.steps_per_stage = 24
    c.checkpoint.every_steps = 10
    c.log.every_steps = 8
    c.eval.batch_size = 256
    c.eval.num_permutations = 2
    c.eval.classifier = False
  elif variant:
    raise ValueError(f'unknown config variant {variant!r}; use k8, quick, '
                     'smoke or nothing')
  return c
