"""Trains (or restores) the external classifier that scores a run's dataset.

  python launch/classifier.py --config=configs/celeba_attr.py --config.data.tfds_data_dir=DIR
  python launch/classifier.py --config=configs/fashion_attr.py

`--config` is a run config (launch/main.py's); this trains the classifier
that launch/main.py would load for it (configs.classifier_config of its
dataset), in the same directory (`eval.classifier_dir`, or the shared cache
`$JACDISTILL_CACHE/classifiers/<dataset>_<limit or full>`), and prints its
test accuracy: per attribute for CelebA. A finished classifier is restored,
not retrained; delete its directory to retrain it.
"""

import sys


from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from ml_collections import config_flags

import configs
from jacdistill import classifier
from jacdistill import classifier_cache
from jacdistill import input_pipeline

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Run config file, with an optional :variant.',
    lock_config=True)


def load_or_train(config, log_fn=print) -> classifier.ClassifierHandle:
  """The classifier launch/main.py uses for `config`, trained if missing."""
  directory = (config.eval.classifier_dir or
               classifier_cache.default_classifier_dir(config.data))
  log_fn(f'classifier directory: {directory}')
  return classifier_cache.load_or_train_classifier(
      config.data, configs.classifier_config(config.data.name), directory,
      log_fn=log_fn)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    handle = load_or_train(_CONFIG.value)
  except (ValueError, RuntimeError,
          input_pipeline.DatasetUnavailableError) as e:
    sys.exit(f'error: {str(e).splitlines()[0]}')
  for name, accuracy in zip(handle.attributes, handle.attribute_accuracy):
    print(f'{name:20s} {accuracy:.4f}')
  print(f'test accuracy {handle.test_accuracy:.4f}'
        + (' (mean over attributes)' if handle.attributes else ''))


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
