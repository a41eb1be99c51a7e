"""beta-VAE on the growth task: the unsupervised baseline of part A.

The growth chain's MLP widths (configs/mnist_grow.py: encoder
784-256-128-64, mirrored decoder) with a Gaussian code of k = 8 dims (mean
and log-variance heads), Bernoulli pixels and KL weight `loss.beta`
(jacdistill/vae.py), on Fashion-MNIST from the local idx files. One stage,
as long as the k = 8 student's lineage in configs/fashion_grow.py:quick
(7 stages of 5 epochs), scored as the growth students are (test MSE, PSNR,
swap accuracy of its 2 most informative dims), so launch/report.py draws
it on the growth chains' trade-off plot:

  python launch/main.py --config=configs/fashion_vae.py --workdir=workdirs/vae/vae_beta4_s0
  python launch/sweep.py --config=configs/fashion_vae.py --root=workdirs/vae --parallel=2
  python launch/report.py --out=results/fashion_vae workdirs/grow/* workdirs/vae/*

Variants: '' the run above; 'smoke' seconds, for tests.
"""

from configs import fashion_grow

LATENT_DIM = 8  # k, the quick growth chain's last stage.
# Epochs of the growth chain's k = 8 lineage (configs/fashion_grow.py:quick):
# stages k = 2..8, 5 epochs each.
LINEAGE_EPOCHS = 7 * 5


def get_config(variant: str = ''):
  c = fashion_grow.get_config('smoke' if variant == 'smoke' else '')
  c.model.name = 'vae'  # models.GaussianMLPAutoencoder (code_norm unused).
  c.growth.start_dim = LATENT_DIM  # One stage: k = start_dim = end_dim.
  c.growth.end_dim = LATENT_DIM
  c.loss.beta = 4.0  # KL weight (1: the plain VAE).
  # The growth students' supervision terms do not apply to a VAE.
  c.loss.lat = c.loss.jac = c.loss.xcov = 0.0
  c.train.epochs_per_stage = LINEAGE_EPOCHS
  # Swapped code dims, the teacher's 2 in the growth chains; a VAE's are
  # its 2 of largest mean KL on the training images (vae.sort_dims).
  c.eval.swap_dims = 2
  if variant not in ('', 'smoke'):
    raise ValueError(f'unknown config variant {variant!r}; use smoke or '
                     'nothing')
  return c


BETAS = (1.0, 4.0, 16.0)
SEEDS = (0, 1, 2)


def sweep(add):
  """beta in BETAS, seeds 0, 1, 2: workdirs `vae_beta<beta>_s<seed>`
  (each `add(name, **overrides)` is one run), seed by seed so that a
  partial sweep is already comparable."""
  for seed in SEEDS:
    for beta in BETAS:
      add(f'vae_beta{beta:g}_s{seed}', seed=seed, **{'loss.beta': beta})
