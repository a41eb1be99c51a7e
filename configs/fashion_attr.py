"""Conditional manipulation offline: Fashion-MNIST classes as attributes.

SPEC.md part B's chain on Fashion-MNIST from the local idx files: the 10
classes are 10 attributes in {-1, +1} (one +1 per image), images are zero
padded 28 -> 32 and scaled to [-1, 1]. A Fader-style teacher with a small
nuisance code learns the attribute scores from the labels; students with
longer nuisance codes, grown from it, learn them from the teacher alone
(Jacobian + score match, no labels); a baseline of the largest student's size
learns from the labels without a teacher.

  python launch/main.py --config=configs/fashion_attr.py:quick --workdir=workdirs/fashion_attr_quick
  python launch/main.py --config=configs/fashion_attr.py --workdir=workdirs/fashion_attr

Variants: '' the recipe; 'quick' a short run of every stage (step count not
yet timed on 2 CPU cores); 'smoke' seconds, for tests.
"""

import ml_collections

from configs import _attr_common as common
from jacdistill import input_pipeline


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # Seeds init, data order and the swap permutations.

  c.data = ml_collections.ConfigDict()
  c.data.name = 'fashion_mnist'  # The classes are the attributes.
  c.data.source = 'idx'  # Local MNIST-format .gz files ('tfds' also works).
  c.data.idx_dir = input_pipeline.DEFAULT_IDX_DIR  # Where the idx files are.
  c.data.tfds_data_dir = ml_collections.config_dict.placeholder(str)  # tfds data_dir; None = default.
  c.data.limit = 0  # Use only the first `limit` examples of each split; 0 = all.
  c.data.image_size = 32  # Images are zero padded 28 -> 32 (a size the model takes).
  # Attribute names, in code order (class i is attribute i).
  c.data.attributes = ('tshirt', 'trouser', 'pullover', 'dress', 'coat',
                       'sandal', 'shirt', 'sneaker', 'bag', 'ankle_boot')

  c.model = ml_collections.ConfigDict()
  c.model.num_attributes = 10  # A: one attribute per class.
  c.model.init_channels = 16  # Width of the first conv; doubles per layer.
  c.model.max_channels = 128  # Cap of the conv widths.
  c.model.image_channels = 1  # Grey images.

  # Stages run in this order; each names earlier stages only.
  c.stage_order = ('teacher', 'student32', 'student64', 'baseline64')
  c.stages = ml_collections.ConfigDict()
  # Labels teach the attribute scores; small nuisance so they must be used.
  c.stages.teacher = common.stage(16, rec=100.0, attr=0.1, xcov=0.1)
  # Grown from the teacher, supervised by it; no labels.
  c.stages.student32 = common.stage(32, init='teacher', teacher='teacher',
                                    rec=100.0, xcov=0.01, jac=50.0, lat=1.0)
  # Grown from student32 and supervised by it (upstream's chain).
  c.stages.student64 = common.stage(64, init='student32',
                                    teacher='student32', rec=100.0, xcov=0.01, jac=50.0, lat=1.0)
  # Baseline: the teacher's recipe (labels, no teacher: jac = lat = 0) at the
  # largest student's code size, from a fresh initialisation.
  c.stages.baseline64 = common.stage(64, rec=100.0, attr=0.1, xcov=0.1)

  common.add_run_fields(c, epochs_per_stage=20, eval_batch_size=500,
                        flip_examples=1000)

  if variant == 'quick':
    c.train.steps_per_stage = 1500
    c.checkpoint.every_steps = 500
  elif variant == 'smoke':
    c.data.limit = 256
    c.model.init_channels = 8
    c.model.max_channels = 16
    c.stages.teacher.nuisance = 2
    c.stages.student32.nuisance = 4
    c.stages.student64.nuisance = 6
    c.stages.baseline64.nuisance = 6
    c.train.steps_per_stage = 3
    c.checkpoint.every_steps = 2
    c.log.every_steps = 2
    c.eval.batch_size = 128
    c.eval.flip_examples = 16
    c.eval.num_images = 4
    c.eval.classifier = False
  elif variant:
    raise ValueError(f'unknown config variant {variant!r}; use quick, smoke or '
                     'nothing')
  return c
