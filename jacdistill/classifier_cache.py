"""The disk cache of the external classifier (`load_or_train_classifier`):
one classifier per dataset, trained on first use (`classifier.py`) and
restored after, so every run on a dataset is judged by the same one; with
many processes, process 0 alone reads and writes it and the others take
its variables.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import time
from typing import Any, Callable, Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jacdistill import celeba
from jacdistill import classifier
from jacdistill import parallel
from jacdistill import paths

CHECKPOINT_SUBDIR = 'variables'
# Written last, so its presence marks a finished classifier directory.
RECORD_FILE = 'classifier.json'


class ClassifierError(ValueError):
  """A classifier directory that cannot serve the run: another dataset or
  config, or unreadable files. The message names the directory and the fix."""


def default_classifier_dir(data_config: Any) -> str:
  """Where the classifier of `data_config`'s dataset lives by default, so
  every run on a dataset reuses one classifier: `$JACDISTILL_CACHE` (default
  `~/.cache/jacdistill`)`/classifiers/<name>_<limit or 'full'>`."""
  root = os.environ.get('JACDISTILL_CACHE',
                        os.path.expanduser('~/.cache/jacdistill'))
  limit = getattr(data_config, 'limit', 0) or 'full'
  return paths.join(root, 'classifiers', f'{data_config.name}_{limit}')


def _variable_shapes(model: classifier.Classifier,
                     image_shape: Sequence[int]) -> Any:
  # Shapes only: initialising for real would compile the random draws of
  # every layer, seconds on CPU, for values that are overwritten.
  return jax.eval_shape(functools.partial(model.init, train=False),
                        jax.random.key(0),
                        jnp.zeros((1, *image_shape), jnp.float32))


def _checkpointer() -> ocp.StandardCheckpointer:
  """Orbax for this process alone: its barriers would wait for processes
  that never come (only process 0 reads and writes the cache)."""
  me = jax.process_index()
  return ocp.StandardCheckpointer(
      multiprocessing_options=ocp.options.MultiprocessingOptions(
          primary_host=me, active_processes={me}))


def restore(directory: str, model: classifier.Classifier,
            image_shape: Sequence[int]) -> Any:
  """The variables of the classifier checkpoint in `directory`, on this
  process's first device (ClassifierError if they cannot be read)."""
  # This process's own device: jax.devices()[0] is process 0's.
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device),
      _variable_shapes(model, image_shape))
  path = paths.join(paths.absolute(directory), CHECKPOINT_SUBDIR)
  try:
    with _checkpointer() as checkpointer:
      return checkpointer.restore(path, abstract)
  except Exception as e:  # pylint: disable=broad-except
    # Missing, truncated or mismatched files all mean the same to the user.
    raise ClassifierError(
        f'Cannot restore the classifier in {directory} ({type(e).__name__}: '
        f'{e}). Delete that directory to retrain it.') from e


def load_or_train_classifier(data_config: Any, clf_config: Any,
                             directory: Optional[str] = None,
                             log_fn: Optional[Callable[[str], None]] = None
                             ) -> classifier.ClassifierHandle:
  """Restores the classifier in `directory`, or trains and saves one there.

  A finished directory holds an orbax checkpoint of the variables in
  `variables/` and `classifier.json` (dataset, test accuracy, config, wall
  time; for CelebA also the attribute names and per-attribute accuracies),
  written last, so an interrupted save is retrained rather than half-read.
  CelebA (`data_config.name == 'celeb_a'`) gets the multi-label classifier
  of `classifier.train_attribute_classifier`, every other dataset
  `classifier.train_classifier`'s.

  `data_config`: as `input_pipeline.load_split` takes, or CelebA's (only
  its name and `tfds_data_dir` are read); `clf_config`: that of
  configs/classifier.py (CelebA: celeba_classifier.py) or an override;
  `directory` None = `default_classifier_dir`; `log_fn`: progress lines
  (default logging.info). Raises ClassifierError if `directory` holds a
  classifier of another dataset, limit or config, or an unreadable
  checkpoint; ValueError for a bad config; DatasetUnavailableError
  (input_pipeline's) if training needs absent data.

  With many processes, process 0 alone restores or trains (so only it reads
  and writes `directory`, which may be its own disk) while the others wait;
  then every process holds process 0's variables, bit for bit, on its first
  local device. Where process 0 fails, it raises its error and the others
  a ClassifierError that quotes it.
  """
  if jax.process_count() == 1:
    return _load_or_train(data_config, clf_config, directory, log_fn)
  return _from_process_0(data_config, clf_config, directory, log_fn)


# Numbers the classifiers a run of many processes asks for: each one's key
# in the coordination service, under which process 0 posts its answer.
_SHARED = itertools.count()


def _from_process_0(data_config: Any, clf_config: Any,
                    directory: Optional[str],
                    log_fn: Optional[Callable[[str], None]]
                    ) -> classifier.ClassifierHandle:
  """`load_or_train_classifier` on process 0; its result on every process."""
  log = log_fn or logging.info
  key = f'jacdistill/classifier/{next(_SHARED)}'
  shown = directory or default_classifier_dir(data_config)
  model = classifier.make_classifier(data_config, clf_config)
  image_shape = classifier.classifier_image_shape(data_config, clf_config)
  if jax.process_index() == 0:
    try:
      handle = _load_or_train(data_config, clf_config, directory, log_fn)
    except BaseException as e:
      parallel.publish(key, json.dumps({'error': ' '.join(str(e).split())}))
      raise
    word = {'test_accuracy': handle.test_accuracy,
            'attributes': list(handle.attributes),
            'attribute_accuracy': list(handle.attribute_accuracy)}
    parallel.publish(key, json.dumps(word))
    variables = handle.variables
  else:
    log(f'Waiting for process 0 to restore or train the classifier in '
        f'{shown}.')
    word = json.loads(parallel.wait_for(key))
    if 'error' in word:
      raise ClassifierError(f'process 0 could not restore or train the '
                            f'classifier in {shown}: {word["error"]}')
    variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                             _variable_shapes(model, image_shape))
  variables = jax.device_put(parallel.broadcast_from_process_0(variables),
                             jax.local_devices()[0])
  return classifier.ClassifierHandle(
      model, variables, float(word['test_accuracy']),
      attributes=tuple(word['attributes']),
      attribute_accuracy=tuple(word['attribute_accuracy']),
      image_size=int(image_shape[0]))


def _load_or_train(data_config: Any, clf_config: Any,
                   directory: Optional[str],
                   log_fn: Optional[Callable[[str], None]]
                   ) -> classifier.ClassifierHandle:
  """`load_or_train_classifier` in this process alone."""
  log = log_fn or logging.info
  directory = directory or default_classifier_dir(data_config)
  try:
    paths.check_checkpoint_dir(directory)
  except ValueError as e:
    raise ClassifierError(str(e)) from None
  record_path = paths.join(directory, RECORD_FILE)
  model = classifier.make_classifier(data_config, clf_config)
  image_shape = classifier.classifier_image_shape(data_config, clf_config)
  dataset = {'name': data_config.name,
             'limit': int(getattr(data_config, 'limit', 0) or 0)}
  # The config as JSON gives it back (tuples become lists), for comparison.
  config = json.loads(json.dumps(clf_config.to_dict() if hasattr(
      clf_config, 'to_dict') else dict(clf_config)))

  if paths.exists(record_path):
    record = paths.read_json(record_path)
    if record['dataset'] != dataset or record['config'] != config:
      raise ClassifierError(
          f'{directory} holds a classifier of dataset {record["dataset"]} with '
          f'config {record["config"]}, not the requested dataset {dataset} '
          f'with config {config}. Pass another directory, or delete that one '
          'to retrain it (scores are only comparable under one classifier).')
    variables = restore(directory, model, image_shape)
    log(f'Restored the {data_config.name} classifier from {directory} (test '
        f'accuracy {record["test_accuracy"]:.4f}).')
  else:
    log(f'No finished classifier in {directory}; training one.')
    start_time = time.time()
    extra = {}
    if data_config.name == celeba.CELEB_A:
      variables, accuracy = classifier.train_attribute_classifier(
          data_config, clf_config, log_fn)
      test_accuracy = float(np.mean(accuracy))
      extra = {'attributes': list(celeba.CELEB_A_ATTRIBUTES),
               'attribute_accuracy': [float(a) for a in accuracy]}
    else:
      variables, test_accuracy = classifier.train_classifier(
          data_config, clf_config, log_fn)
    wall_time = time.time() - start_time
    paths.makedirs(directory)
    with _checkpointer() as checkpointer:
      # force: a checkpoint without its record is a leftover of an
      # interrupted save and is overwritten. Among many processes orbax
      # refuses to write arrays of one device, so they go as numpy.
      checkpointer.save(paths.join(paths.absolute(directory),
                                   CHECKPOINT_SUBDIR),
                        variables if jax.process_count() == 1 else
                        jax.device_get(variables), force=True)
      checkpointer.wait_until_finished()
    record = {'dataset': dataset, 'test_accuracy': test_accuracy,
              'num_classes': model.num_classes, **extra,
              'config': config, 'wall_time_s': wall_time,
              'backend': jax.default_backend()}
    paths.write_json(record_path, record)
    log(f'Saved the {data_config.name} classifier to {directory} (test '
        f'accuracy {test_accuracy:.4f}, {wall_time:.0f} s).')
  return classifier.ClassifierHandle(
      model, variables, float(record['test_accuracy']),
      attributes=tuple(record.get('attributes', ())),
      attribute_accuracy=tuple(record.get('attribute_accuracy', ())),
      image_size=int(image_shape[0]))
