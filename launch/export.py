"""Exports a trained stage (or the external classifier) as a shipped model.

  python launch/export.py --workdir=workdirs/grow/upstream_s0 --stage=6 \\
      --name=fashion_grow_k8 --chain=fashion_grow \\
      --command='python launch/main.py --config=configs/fashion_grow.py:quick --workdir=workdirs/grow/upstream_s0 --config.seed=0'
  python launch/export.py --workdir=workdirs/attr/chain_s0 --stage=student32 \\
      --name=fashion_attr_student32 --chain=fashion_attr
  python launch/export.py --classifier --name=fashion_classifier
  python launch/export.py --install_classifier=fashion_classifier

Writes `pretrained/NAME.npz` (the stage's variables, one array per
'/'-joined variable path) and its entry in `pretrained/MANIFEST.json`
(jacdistill/pretrained.py describes every field: hash, config, command,
commit, test metrics, the MSE on the first 1,000 test images, fingerprint).
--stage is a growth stage's index or an attribute stage's name (default:
the last). The training command is read from the first line of the
workdir's log.txt when it holds one; otherwise pass --command.
--chain groups the models of one run for launch/explore.py's stage
selector (default: the workdir's name).

--classifier exports the dataset's external classifier from its cache
(~/.cache/jacdistill/classifiers/<dataset>_full, or --classifier_dir), so
swap and flip accuracy reproduce without retraining it;
--install_classifier=NAME writes a shipped classifier back into that cache,
where launch/main.py finds it.
"""

import os
import sys


from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging

from jacdistill import checkpoint
from jacdistill import classifier_cache
from jacdistill import export
from jacdistill import input_pipeline
from jacdistill import pretrained
from jacdistill import stages

_WORKDIR = flags.DEFINE_string('workdir', None, 'Workdir of a launch/main.py run.')
_STAGE = flags.DEFINE_string('stage', None, 'Growth stage index or attribute stage name; default the last.')
_NAME = flags.DEFINE_string('name', None, 'Name of the shipped model (NAME.npz).')
_CHAIN = flags.DEFINE_string('chain', None, "Manifest 'chain' grouping this run's models; default the workdir's name.")
_COMMAND = flags.DEFINE_string('command', None, "The command that trained the run, if log.txt's first line is not it.")
_CLASSIFIER = flags.DEFINE_bool('classifier', False, 'Export the external classifier instead of a stage.')
_DATASET = flags.DEFINE_string('dataset', 'fashion_mnist', 'Dataset of the classifier to export.')
_CLASSIFIER_DIR = flags.DEFINE_string('classifier_dir', None, 'Classifier directory; default the cache.')
_INSTALL = flags.DEFINE_string('install_classifier', None, 'Write this shipped classifier into the classifier cache.')
_DIRECTORY = flags.DEFINE_string('directory', pretrained.DEFAULT_DIR, 'Where the .npz files and MANIFEST.json are.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)  # Orbax logs every read at INFO.
  try:
    if _INSTALL.value:
      target = pretrained.install_classifier(_INSTALL.value,
                                             _CLASSIFIER_DIR.value,
                                             _DIRECTORY.value)
      print(f'installed {_INSTALL.value} in {target}')
      return
    if not _NAME.value:
      sys.exit('error: pass --name=NAME, the name of the shipped model')
    if _CLASSIFIER.value:
      entry = export.export_classifier(
          _NAME.value, _DATASET.value, _CLASSIFIER_DIR.value, _DIRECTORY.value)
      score = f'test accuracy {entry["test"]["accuracy"]:.4f}'
    else:
      if not _WORKDIR.value:
        sys.exit('error: pass --workdir=W (or --classifier)')
      entry = export.export_stage(
          _WORKDIR.value, _NAME.value, _STAGE.value, _DIRECTORY.value,
          _COMMAND.value, _CHAIN.value)
      score = (f'test MSE {entry["test"]["mse"]:.5f}, first '
               f'{entry["check"]["images"]} {entry["check"]["mse"]:.5f}')
  except (pretrained.PretrainedError, stages.ConfigError, ValueError,
          checkpoint.CheckpointError,
          input_pipeline.DatasetUnavailableError) as e:
    sys.exit(f'error: {(str(e).splitlines() or [repr(e)])[0]}')
  except classifier_cache.ClassifierError as e:
    sys.exit(f'error: {" ".join(str(e).split())}')
  path = os.path.join(_DIRECTORY.value, entry['file'])
  print(f'wrote {path} ({entry["bytes"] / 1e6:.2f} MB, sha256 '
        f'{entry["sha256"][:12]}...; {score}) and its entry in '
        f'{os.path.join(_DIRECTORY.value, pretrained.MANIFEST)}')


if __name__ == '__main__':
  app.run(main)
