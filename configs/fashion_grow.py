"""Progressive growth on Fashion-MNIST from local files: the offline default.

The upstream MNIST recipe (configs/mnist_grow.py) on Fashion-MNIST, read from
the idx .gz files that Debian's `dataset-fashion-mnist` package installs in
/usr/share/datasets/fashion-mnist (`--config.data.idx_dir` to change).

  python launch/main.py --config=configs/fashion_grow.py:quick --workdir=workdirs/fashion_quick
  python launch/main.py --config=configs/fashion_grow.py --workdir=workdirs/fashion
  python launch/sweep.py --config=configs/fashion_grow.py:k8 --root=workdirs/grow100 --sweep=budget_sweep --parallel=2
"""

from configs import mnist_grow


def get_config(variant: str = ''):
  c = mnist_grow.get_config()
  c.data.name = 'fashion_mnist'
  c.data.source = 'idx'
  return mnist_grow.apply_variant(c, variant)


# The supervision variants of the growth-chain ablation (dotted overrides).
# upstream: the recipe, rec + 0.25 lat + 0.1 jac + 1e-3 xcov. b1: no
# Jacobian term (latent match only). b2: no supervision at all (growth
# init only). jac_1: Jacobian weight 1. jac_only_W: Jacobian weight W and
# no latent match, which isolates the Jacobian term.
SUPERVISION = {
    'upstream': {},
    'b1_latent_only': {'loss.jac': 0.0},
    'b2_no_supervision': {'loss.jac': 0.0, 'loss.lat': 0.0, 'loss.xcov': 0.0},
    'jac_1': {'loss.jac': 1.0},
    'jac_only_0.1': {'loss.lat': 0.0},
    'jac_only_1': {'loss.lat': 0.0, 'loss.jac': 1.0},
}
SEEDS = (0, 1, 2)


def sweep(add):
  """The growth-chain ablation, run by launch/sweep.py into sibling workdirs
  named `<variant>_s<seed>` (each `add(name, **overrides)` is one chain).

  In order, so that a partial sweep is already comparable: every
  supervision variant (SUPERVISION) for seeds 0, 1, 2; then upstream and b1
  under `model.code_norm='all'` and `'none'` (3 seeds), which separates the
  normalisation from the supervision; then upstream and b1 at 20 epochs per
  stage (seed 0), to see whether the short-run conclusions survive longer
  training. Every chain grows the code 2 -> 8 (the `:quick` variant).
  """
  for seed in SEEDS:
    for name, overrides in SUPERVISION.items():
      add(f'{name}_s{seed}', seed=seed, **overrides)
  for seed in SEEDS:
    for norm in ('all', 'none'):
      for name in ('upstream', 'b1_latent_only'):
        add(f'{name}_norm_{norm}_s{seed}', seed=seed,
            **SUPERVISION[name], **{'model.code_norm': norm})
  for name in ('upstream', 'b1_latent_only'):
    add(f'{name}_long_s0', seed=0, **SUPERVISION[name],
        **{'train.epochs_per_stage': 20})


BUDGET_SEEDS = (0, 1, 2)


def budget_sweep(add):
  """The ablation's central pair at upstream's budget, with the `:k8`
  variant (100 epochs per stage, k 2 -> 8): upstream and b1 for seeds 0, 1,
  2, each seed's pair next to each other so that `--parallel=2` trains a
  pair side by side on one machine; then the Jacobian term alone (weight
  0.1) for the same seeds. Workdirs `<variant>_s<seed>`, as sweep()'s."""
  for seed in BUDGET_SEEDS:
    for name in ('upstream', 'b1_latent_only'):
      add(f'{name}_s{seed}', seed=seed, **SUPERVISION[name])
  for seed in BUDGET_SEEDS:
    add(f'jac_only_0.1_s{seed}', seed=seed, **SUPERVISION['jac_only_0.1'])
