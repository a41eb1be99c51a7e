"""Conditional manipulation of faces: docs/method.md part B on aligned CelebA.

The 40 CelebA attributes (or the subset in data.attributes) are the scores
of a Fader-style autoencoder. The teacher (nuisance 512 x 2x2) learns them
from the labels, then its decoder alone is fine-tuned with cycle losses;
students grown to 1024 and 2048 nuisance channels learn the scores from that
frozen teacher alone (Jacobian + score match, no labels); a baseline of the
largest student's size learns from the labels without a teacher, and so
does a Fader Networks baseline of that size (attributes fed to the decoder,
a latent discriminator). Upstream's schedule, with its stage letters and
epochs: A teacher (100), B teacher_cycle (100), C student1024 (200; grown
from B, supervised by B), D student2048 (200; grown from C, supervised by
B, not C).

Images: tfds `celeb_a` (never downloaded here; README.md, "CelebA"), rows
20:-20 (178x178), resized to data.image_size, in [-1, 1], flipped at random
in training. Edits are scored by the project's CelebA attribute classifier
(configs/celeba_classifier.py), trained on first use or by
launch/classifier.py.

  python launch/classifier.py --config=configs/celeba_attr.py --config.data.tfds_data_dir=DIR
  python launch/main.py --config=configs/celeba_attr.py --config.data.tfds_data_dir=DIR --workdir=workdirs/celeba_attr
  python launch/main.py --config=configs/celeba_attr.py:256 --config.data.tfds_data_dir=DIR

Variants: '' 64x64 images; '128'; '256' (upstream's size: 7 convs, 32 -> 512
channels); 'quick' 64x64 and 5000 steps per stage; 'smoke' seconds on tfds
mock data, for tests.
"""

import ml_collections

from configs import _attr_common as common
from jacdistill import celeba


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.chain = 'attribute'  # Which chain launch/main.py runs: 'growth' or 'attribute'.
  c.seed = 0  # Seeds init, data order and flips, and the swap permutations.

  c.data = ml_collections.ConfigDict()
  c.data.name = 'celeb_a'  # Streamed from tfds (celeba.celeb_a_dataset).
  c.data.tfds_data_dir = ml_collections.config_dict.placeholder(str)  # tfds data_dir holding celeb_a/; None = default.
  c.data.image_size = 64  # 178x178 crops resized to this (a power of two >= 8).
  # Attribute names, in code order; any subset of
  # celeba.CELEB_A_ATTRIBUTES (set model.num_attributes to match).
  c.data.attributes = celeba.CELEB_A_ATTRIBUTES

  c.model = ml_collections.ConfigDict()
  c.model.num_attributes = 40  # A = len(data.attributes).
  c.model.init_channels = 32  # Width of the first conv; doubles per layer (upstream).
  c.model.max_channels = 512  # Cap of the conv widths (upstream).
  c.model.image_channels = 3  # RGB.

  # Stages run in this order; each names earlier stages only.
  c.stage_order = ('teacher', 'teacher_cycle', 'student1024', 'student2048',
                   'baseline2048', 'fader2048')
  # What launch/manipulate.py and launch/explore.py open without --stage.
  c.default_stage = 'student2048'
  c.stages = ml_collections.ConfigDict()
  # A: labels teach the scores; 100 rec + 0.1 hinge + 0.1 xcov (upstream).
  c.stages.teacher = common.stage(512, epochs=100, rec=100.0, attr=0.1,
                                  xcov=0.1)
  # B: the teacher's decoder fine-tuned with the cycle losses, its encoder
  # (hence every score) kept bit for bit (common.cycle_stage).
  c.stages.teacher_cycle = common.cycle_stage(512, init='teacher', epochs=100)
  # C: grown from B, supervised by it; no labels.
  # 100 rec + 0.01 xcov + 50 jac + 1 lat (upstream).
  c.stages.student1024 = common.stage(1024, init='teacher_cycle',
                                      teacher='teacher_cycle', rec=100.0,
                                      xcov=0.01, jac=50.0, lat=1.0)
  # D: grown from student1024 but supervised by the original teacher, which
  # is B, the teacher C learnt from: in upstream's train_examples.sh each
  # stage reloads the previous one's output, and D's teacher is the path C
  # reloads as its init and teacher.
  c.stages.student2048 = common.stage(2048, init='student1024',
                                      teacher='teacher_cycle', rec=100.0,
                                      xcov=0.01, jac=50.0, lat=1.0)
  # Baseline: the teacher's recipe (labels, no teacher) at the largest
  # student's code size, from a fresh initialisation.
  c.stages.baseline2048 = common.stage(2048, rec=100.0, attr=0.1, xcov=0.1)
  # Fader Networks at the same size: upstream's weight 1e-4 relative to the
  # reconstruction (here 100 rec), ramped over its 500,000 steps.
  c.stages.fader2048 = common.fader_stage(2048, 100.0 * 1e-4,
                                          ramp_steps=500_000)

  # Upstream: 100 epochs each for A and B (set above), 200 each for C and D;
  # the baseline gets as many as A + B.
  common.add_run_fields(c, epochs_per_stage=200, eval_batch_size=100,
                        flip_examples=500)
  c.train.shuffle_buffer = 10_000  # Encoded JPEGs in the shuffle buffer.
  c.eval.test_examples = 2000  # Test images read into memory for scoring.

  if variant in ('128', '256'):
    c.data.image_size = int(variant)
    c.eval.batch_size = 50
  elif variant == 'quick':
    c.train.steps_per_stage = 5000
    c.checkpoint.every_steps = 1000
  elif variant == 'smoke':
    # For tfds.testing.mock_data: a few random images, a tiny model.
    c.data.image_size = 8
    c.model.init_channels = 4
    c.model.max_channels = 8
    c.stages.teacher.nuisance = 2
    c.stages.teacher_cycle.nuisance = 2
    c.stages.student1024.nuisance = 4
    c.stages.student2048.nuisance = 6
    c.stages.baseline2048.nuisance = 6
    c.stages.fader2048.nuisance = 6
    c.stages.fader2048.adversary.ramp_steps = 2
    c.stages.fader2048.adversary.hidden = (8,)
    c.train.batch_size = 4
    c.train.steps_per_stage = 3
    c.train.shuffle_buffer = 16
    c.checkpoint.every_steps = 2
    c.log.every_steps = 2
    c.eval.batch_size = 8
    c.eval.test_examples = 8
    c.eval.flip_examples = 2
    c.eval.level_examples = 8
    c.eval.num_images = 2  # As many as flip_examples: one decode shape.
    c.eval.classifier = False
  elif variant:
    raise ValueError(f'unknown config variant {variant!r}; use 128, 256, '
                     'quick, smoke or nothing')
  return c
