"""Runs a jacdistill chain: progressive growth, or the attribute chain.

  python launch/main.py --config=configs/fashion_grow.py:quick --workdir=workdirs/fashion_quick
  python launch/main.py --config=configs/svhn_grow.py --config.growth.end_dim=8
  python launch/main.py --config=configs/fashion_attr.py:quick --workdir=workdirs/fashion_attr_quick
  python launch/main.py --config=configs/celeba_attr.py --config.data.tfds_data_dir=DIR

A config with a `stage_order` field is an attribute chain (docs/method.md part B,
jacdistill/attr_chain.py); any other is a growth chain (jacdistill/chain.py).

Re-running the same command resumes where the last run stopped.
"""

import logging as std_logging
import os
import signal
import sys


from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

import configs
from jacdistill import attr_chain
from jacdistill import chain
from jacdistill import checkpoint
from jacdistill import classifier_cache
from jacdistill import input_pipeline
from jacdistill import parallel
from jacdistill import paths
from jacdistill import stages

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, with an optional :variant.', lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Output directory; defaults to workdirs/<config name>.')


def _default_workdir() -> str:
  spec = flags.FLAGS['config'].value if 'config' in flags.FLAGS else 'run'
  name = os.path.splitext(os.path.basename(str(spec).replace(':', '_')))[0]
  return os.path.join('workdirs', name)


def _quiet_orbax(record) -> bool:
  # Orbax logs every step of every save at INFO; keep its warnings only.
  return record.levelno >= std_logging.WARNING or '/orbax/' not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_quiet_orbax)
  parallel.maybe_initialize_distributed()
  config = _CONFIG.value
  workdir = paths.absolute(_WORKDIR.value or _default_workdir())
  try:
    paths.check_checkpoint_dir(workdir)
  except ValueError as e:
    sys.exit(f'error: {e}')
  stop = {'requested': False}
  if jax.distributed.is_initialized():
    # JAX's preemption service holds SIGTERM (a handler of ours would
    # replace its own), tells every process of a notice to any one, and
    # picks one step for all to stop at: processes that stopped at
    # different steps would wait on each other's collectives for ever.
    reached = parallel.preemption_stop()

    def should_stop():
      if not stop['requested'] and reached():
        logging.warning('preemption notice: saving a checkpoint and '
                        'stopping, at this step on every process')
        stop['requested'] = True
      return stop['requested']
  else:
    def on_sigterm(signum, frame):
      del signum, frame
      logging.warning('SIGTERM: saving a checkpoint and stopping')
      stop['requested'] = True

    signal.signal(signal.SIGTERM, on_sigterm)

    def should_stop():
      return stop['requested']
  runners = {'growth': chain, 'attribute': attr_chain}
  if config.get('chain') not in runners:
    sys.exit(f'error: config field chain={config.get("chain")!r} is not one '
             f'of {sorted(runners)}')
  runner = runners[config.chain]
  logging.info('workdir %s: summary.json, config.json and per stage '
               'checkpoints/, PNG grids and TensorBoard events (tensorboard '
               '--logdir %s)', workdir, workdir)
  hooks = stages.Hooks(should_stop=should_stop)
  try:
    if config.eval.classifier:
      clf_dir = (config.eval.classifier_dir or
                 classifier_cache.default_classifier_dir(config.data))
      logging.info('external classifier: %s', clf_dir)
      hooks.classifier = classifier_cache.load_or_train_classifier(
          config.data, configs.classifier_config(config.data.name), clf_dir)
    summary = runner.train_and_evaluate(config, workdir, hooks)
  except checkpoint.DiskFullError as e:
    sys.exit(f'error: {e.held_by(workdir)}')
  except (stages.ConfigError, stages.NonFiniteLossError,
          checkpoint.CheckpointError,
          input_pipeline.DatasetUnavailableError) as e:
    sys.exit(f'error: {e}')
  except classifier_cache.ClassifierError as e:
    sys.exit(f'error: {" ".join(str(e).split())}')
  except stages.Preempted as e:
    sys.exit(f'preempted: {e}')
  for s in summary['stages']:
    split = 'test' if 'test' in s else config.eval.split
    scores = s[split]
    logging.info('stage %-12s code %-5d %s MSE %.5f  PSNR %.2f%s',
                 s.get('name', s.get('stage')),
                 s.get('code_size', s.get('latent_dim')), split,
                 scores['mse'], scores['psnr'], ''.join(
                     f'  {k} {scores[k]:.3f}' for k in (
                         'swap_acc', 'flip_acc_pos_mean', 'flip_acc')
                     if k in scores))
  logging.info('summary: %s', paths.join(workdir, 'summary.json'))


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
