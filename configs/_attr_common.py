"""Pieces of every attribute-chain config (configs/fashion_attr.py,
configs/celeba_attr.py): a stage's fields, and the training, checkpoint,
logging and evaluation fields with upstream Fader Networks' optimiser
(docs/method.md part B: Adam lr 2e-4, betas (0.5, 0.999), global-norm clip 10,
batch 64)."""

import ml_collections

import configs


def loss(rec=100.0, lat=0.0, jac=0.0, xcov=0.0, attr=0.0, cycle_attr=0.0,
         cycle_z=0.0):
  """One stage's loss weights (fields of train.LossWeights)."""
  c = ml_collections.ConfigDict()
  c.rec = rec  # Reconstruction MSE (pixels in [-1, 1]).
  c.lat = lat  # Student attribute scores matched to the teacher's.
  c.jac = jac  # Jacobian supervision by the teacher.
  c.xcov = xcov  # Cross-covariance of the nuisance against the scores.
  c.attr = attr  # Label hinge on the attribute scores.
  c.cycle_attr = cycle_attr  # Cycle: re-encoded swapped scores hinged to their signs.
  c.cycle_z = cycle_z  # Cycle: re-encoded nuisance matched to the decoded one.
  c.jacobian = 'swap'  # 'swap' (upstream, first order) or 'jvp' (exact).
  return c


def stage(nuisance, init='', teacher='', trainable='all', epochs=0, steps=0,
          **weights):
  """One stage: its nuisance size, where it starts, who supervises it."""
  c = ml_collections.ConfigDict()
  c.nuisance = nuisance  # Channels N of the 2x2 nuisance grid (code A + 4N).
  c.init = init  # Stage grown into this one ('' = fresh initialisation).
  c.teacher = teacher  # Frozen stage supervising this one ('' = none).
  c.trainable = trainable  # 'all', or 'decoder' (the init stage's encoder kept).
  c.epochs = epochs  # Epochs of this stage; 0 = train.epochs_per_stage.
  c.steps = steps  # Steps of this stage; 0 = train.steps_per_stage, else the epochs.
  c.loss = loss(**weights)  # Loss weights of this stage.
  c.kind = 'autoencoder'  # Scores in the code; 'fader': fader_stage's model.
  return c


def fader_stage(nuisance, weight, ramp_steps, hidden=(512, 512), epochs=0,
                steps=0):
  """The Fader Networks baseline (Lample et al. 2017; jacdistill/fader.py).

  The attributes are not in the code but fed to the decoder; a latent
  discriminator (an MLP of widths `hidden` on the nuisance code) learns to
  predict them, and the encoder to fool it, with `100 rec + lambda adv`,
  lambda ramped linearly from 0 to `weight` over `ramp_steps` steps
  (upstream: 1e-4 for a reconstruction weight of 1, over 500,000 steps).
  Fresh, no teacher, no label hinge; its edits set the decoder's attribute
  input. The discriminator has the train fields' optimiser.
  """
  c = stage(nuisance, epochs=epochs, steps=steps, rec=100.0)
  c.kind = 'fader'
  c.adversary = ml_collections.ConfigDict()
  c.adversary.weight = weight  # Adversarial term's weight after the ramp.
  c.adversary.ramp_steps = ramp_steps  # Steps of the ramp from 0 (0: none).
  c.adversary.hidden = hidden  # Discriminator's hidden widths.
  c.adversary.learning_rate = 0.0  # Discriminator's; 0 = train.learning_rate.
  return c


def cycle_stage(nuisance, init, epochs=0):
  """Upstream's cycle fine-tuning of a Fader teacher (its stage B).

  Decoder only, from `init` (whose `nuisance` it must have), no teacher and
  no labels: `100 rec + 1e-3 cycle_attr + 1e-4 cycle_z`, the top of docs/method.md's
  ranges (hinge 1e-4..1e-3, nuisance match 1e-5..1e-4; upstream's B run used
  the bottom, its students the top). Neither scale carries over exactly:
  upstream's nuisance match is a batch L2 norm (`||z' - z|| / B`) where ours
  is a mean square, and upstream gives the cycle a second, decoder-only Adam
  step where ours shares the reconstruction's. The choice is unmeasured.
  Upstream's B also kept training the whole model on its teacher loss (only
  the cycle terms were decoder-only, as they are here in any stage):
  `trainable='all'` with `attr=0.1, xcov=0.1` added is that variant.
  """
  return stage(nuisance, init=init, trainable='decoder', epochs=epochs,
               rec=100.0, cycle_attr=1e-3, cycle_z=1e-4)


def add_run_fields(c: ml_collections.ConfigDict, epochs_per_stage: int,
                   eval_batch_size: int, flip_examples: int) -> None:
  """Adds `c.train`, `c.checkpoint`, `c.log` and `c.eval`."""
  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 64  # Global batch size (upstream Fader).
  c.train.epochs_per_stage = epochs_per_stage  # Epochs of a stage whose own epochs are 0.
  c.train.steps_per_stage = 0  # If > 0, the steps of every stage (epochs ignored).
  c.train.learning_rate = 2e-4  # Adam learning rate (upstream Fader).
  c.train.weight_decay = 0.0  # PyTorch-style L2 added to the gradient.
  c.train.b1 = 0.5  # Adam beta1 (upstream Fader).
  c.train.b2 = 0.999  # Adam beta2.
  c.train.clip_norm = 10.0  # Global-norm gradient clip (upstream Fader).
  # Float32 dots and convs: 'highest' (full float32, as on CPU), or
  # 'default' (TF32 on an Ampere/Hopper GPU: faster, ~1e-3 relative).
  c.train.matmul_precision = 'highest'
  # Keep the dataset on the devices and run log.every_steps steps per
  # dispatch (jacdistill/device_loop.py; not for CelebA, which streams).
  c.train.device_loop = False

  configs.add_checkpoint_and_log(c)

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = eval_batch_size  # Test-set evaluation batch.
  c.eval.split = 'test'  # Split a finished stage is scored on.
  c.eval.test_examples = 0  # Images of that split read for scoring (0 = all).
  c.eval.flip_examples = flip_examples  # Of those, images edited for flip accuracy (0 = all).
  c.eval.flip_strength = 1.0  # |score| an edit sets.
  # Training images whose scores give each model's own -1/+1 levels, for
  # flip accuracy at those levels too (rel_flip_*); 0 = fixed strength only.
  c.eval.level_examples = 1000
  c.eval.num_images = 8  # Test images (rows) in the edit grid.
  c.eval.classifier = True  # Score edits with the cached external classifier.
  c.eval.classifier_dir = ''  # '' = the shared per-dataset cache directory.
