"""Exporting a shipped model: a run's stage or the external classifier.

`export_stage` and `export_classifier` (launch/export.py is the command line)
write a model's variables as `pretrained.flatten`'s flat `.npz` and its entry
in the manifest, the format pretrained.py describes and `pretrained.load`
checks: what made the model (the training command, from the run's log.txt;
the code's commit; the config) and what it scored, including `check`, the
test MSE (`test_mse`) or classifier accuracy (`classifier_accuracy`) on the
first CHECK_IMAGES test images, which a reload recomputes to see that it is
the same model.
"""

import datetime
import io
import json
import os
import re
import subprocess
from typing import Optional

import ml_collections
import numpy as np

from jacdistill import attr_chain
from jacdistill import chain
from jacdistill import checkpoint
from jacdistill import classifier
from jacdistill import classifier_cache
from jacdistill import input_pipeline
from jacdistill import paths
from jacdistill import pretrained
from jacdistill import train
from jacdistill import workdir_files

CHECK_IMAGES = 1000  # Test images whose MSE (or accuracy) an entry records.
# The datasets whose classifier can be exported (the in-memory ones).
CLASSIFIER_DATASETS = input_pipeline.IN_MEMORY_DATASETS


# ------------------------------------------------------------------ checks


def test_mse(model, variables, images_uint8: np.ndarray) -> float:
  """Mean per-image MSE in [0, 1] pixel units (`train.encode_split`, one
  batch), as summary.json's are."""
  _, mse01 = train.encode_split(model, variables, images_uint8,
                                len(images_uint8))
  return float(np.mean(np.asarray(mse01, np.float64)))


def classifier_accuracy(handle: classifier.ClassifierHandle,
                        split: input_pipeline.Split) -> float:
  """The accuracy of `handle` on `split`'s images (uint8) and labels."""
  x = input_pipeline.to_float(split.images, '01')
  return float(np.mean(np.asarray(handle.predict(x)) == split.labels))


# ------------------------------------------------------------------ export


def code_commit(repo: str = pretrained.REPO_ROOT) -> str:
  """`git rev-parse HEAD` of `repo`, or 'unknown' outside a git checkout."""
  try:
    out = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=repo, check=True,
                         capture_output=True, text=True, timeout=30)
  except (OSError, subprocess.SubprocessError):
    return 'unknown'
  return out.stdout.strip()


_COMMAND = re.compile(r'(?:^|\s)(\S*launch/main\.py\s.*)$')


def command_from_log(workdir: str) -> Optional[str]:
  """The training command on the first line of `workdir/log.txt`, as
  `python launch/main.py ...`, or None (no log, or its first line is not a
  launch/main.py command line)."""
  path = paths.join(workdir, 'log.txt')
  if not paths.exists(path):
    return None
  with paths.open(path, 'rb') as f:
    first = f.readline().decode(errors='replace').strip()
  match = _COMMAND.search(first)
  if not match:
    return None
  command = match.group(1)
  return 'python launch/main.py' + command[command.index('launch/main.py') +
                                           len('launch/main.py'):]


def _summary_entry(workdir: str, kind: str, stage) -> dict:
  path = paths.join(workdir, 'summary.json')
  stages = workdir_files.load_summary(workdir)['stages']
  key = 'stage' if kind == 'growth' else 'name'
  for s in stages:
    if s.get(key) == stage:
      return s
  raise pretrained.PretrainedError(
      f'stage {stage!r} of {workdir} is not finished (not in {path}); export '
      'it once launch/main.py has finished it')


def _write_npz(directory: str, name: str, flat: dict) -> tuple[str, int, str]:
  paths.makedirs(directory)
  path = paths.join(directory, f'{name}.npz')
  buffer = io.BytesIO()
  np.savez(buffer, **flat)
  paths.replace(path, buffer.getvalue())
  return (paths.basename(path), len(buffer.getvalue()),
          pretrained.file_sha256(path))


def _write_manifest(directory: str, manifest: dict) -> None:
  # Never a half-written manifest.
  paths.replace(paths.join(directory, pretrained.MANIFEST),
                json.dumps(manifest, indent=2, sort_keys=True) + '\n')


def _record(directory: str, name: str, new: dict) -> dict:
  manifest = pretrained.read_manifest(directory)
  manifest['models'][name] = new
  _write_manifest(directory, manifest)
  return new


def _check_name(name: str) -> None:
  if not re.fullmatch(r'[A-Za-z0-9][A-Za-z0-9_.-]*', name or ''):
    raise pretrained.PretrainedError(
        f'name {name!r} is not a plain file name (letters, digits, _ . -); '
        'pick another --name')


def export_stage(workdir: str, name: str, stage=None,
                 directory: str = pretrained.DEFAULT_DIR,
                 command: Optional[str] = None,
                 chain_name: Optional[str] = None,
                 commit: Optional[str] = None) -> dict:
  """Writes stage `stage` of the run in `workdir` as `directory/name.npz`
  and its manifest entry (pretrained.py's docstring); returns the entry.

  Args:
    workdir: a launch/main.py workdir (growth or attribute chain).
    name: the model's name (file name without .npz).
    stage: growth: index (int or digit string; None = the last finished);
      attribute: name (None = the last of stage_order).
    directory: where the .npz and MANIFEST.json go.
    command: the command that trained the run; None = the first line of
      `workdir/log.txt` (PretrainedError if it holds none).
    chain_name: the manifest `chain` grouping this run's models; None = the
      workdir's base name.
    commit: the code's commit; None = `code_commit()`.

  Raises:
    pretrained.PretrainedError: no command, an unfinished stage, a bad name,
      or a checkpoint whose fingerprint is not summary.json's.
    stages.ConfigError, checkpoint.CheckpointError: no such run or stage.
    input_pipeline.DatasetUnavailableError: no test images for the check.
  """
  _check_name(name)
  command = command or command_from_log(workdir)
  if not command:
    raise pretrained.PretrainedError(
        f'{paths.join(workdir, "log.txt")} does not start with the training '
        "command; pass it with --command='python launch/main.py ...'")
  run_config = workdir_files.load_config(workdir).to_dict()
  kind = pretrained.kind_of(ml_collections.ConfigDict(run_config))
  if kind == 'growth':
    if stage is None:
      stage = -1
    config, model, variables = chain.load_stage(workdir, int(stage))
    if int(stage) < 0:
      stage = int(_summary_stages(workdir)[-1])
    stage = int(stage)
  else:
    config = attr_chain.read_config(workdir)
    stage = stage or list(config.stage_order)[-1]
    config, model, variables = attr_chain.load_stage(workdir, stage)
  summary = _summary_entry(workdir, kind, stage)
  fingerprint = checkpoint.fingerprint(variables)
  if summary.get('fingerprint') != fingerprint:
    raise pretrained.PretrainedError(
        f'the latest checkpoint of stage {stage!r} in {workdir} has '
        f'fingerprint {fingerprint[:12]}, summary.json records '
        f'{str(summary.get("fingerprint"))[:12]}; re-run launch/main.py on '
        'the workdir so that they agree, then export')
  split = 'test' if 'test' in summary else config.eval.split
  images = pretrained.test_images(kind, config, CHECK_IMAGES)
  file, size, sha = _write_npz(directory, name, pretrained.flatten(variables))
  return _record(directory, name, {
      'file': file, 'bytes': size, 'sha256': sha, 'kind': kind,
      'chain': chain_name or paths.basename(workdir),
      'dataset': config.data.name, 'stage': stage,
      'code_size': int(model.code_size), 'config': run_config,
      'commit': commit or code_commit(), 'command': command,
      'workdir': _relative(workdir), 'fingerprint': fingerprint,
      'test': summary[split], 'split': split,
      'check': {'images': len(images),
                'mse': test_mse(model, variables, images)},
      'exported': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds')})


def _relative(path: str) -> str:
  """`path` relative to the repository when inside it (as commands name it)."""
  path = paths.absolute(path)
  if paths.is_url(path):
    return path
  if path.startswith(pretrained.REPO_ROOT + os.sep):
    return os.path.relpath(path, pretrained.REPO_ROOT)
  home = os.path.expanduser('~')
  if path.startswith(home + os.sep):
    return '~' + path[len(home):]  # No user's home directory in a manifest.
  return path


def _summary_stages(workdir: str) -> list:
  return [s['stage'] for s in workdir_files.load_summary(workdir)['stages']]


def export_classifier(name: str, dataset: str = 'fashion_mnist',
                      classifier_dir: Optional[str] = None,
                      directory: str = pretrained.DEFAULT_DIR,
                      commit: Optional[str] = None) -> dict:
  """Writes the external classifier of `dataset` (restored from
  `classifier_dir`, default `classifier_cache.default_classifier_dir`, with
  evaluation's own restore) as `directory/name.npz` and its entry.

  Raises:
    pretrained.PretrainedError: no finished classifier there, or one of
      another dataset.
    classifier_cache.ClassifierError: its checkpoint cannot be read.
  """
  _check_name(name)
  if dataset not in CLASSIFIER_DATASETS:
    raise pretrained.PretrainedError(
        f'dataset {dataset!r} has no exportable classifier; use one of '
        f'{CLASSIFIER_DATASETS}')
  data = pretrained.classifier_data(dataset)
  classifier_dir = (classifier_dir or
                    classifier_cache.default_classifier_dir(data))
  record_path = paths.join(classifier_dir, classifier_cache.RECORD_FILE)
  if not paths.exists(record_path):
    raise pretrained.PretrainedError(
        f'{record_path} is missing: no finished classifier there; train it '
        'with launch/classifier.py or pass --classifier_dir')
  record = paths.read_json(record_path)
  if record['dataset'].get('name') != dataset:
    raise pretrained.PretrainedError(
        f'{classifier_dir} holds a classifier of {record["dataset"]}, not '
        f'{dataset}; pass the right --classifier_dir')
  clf_config = ml_collections.ConfigDict(record['config'])
  model = classifier.make_classifier(data, clf_config)
  shape = classifier.classifier_image_shape(data, clf_config)
  # pylint: disable-next=protected-access
  variables = classifier_cache.restore(classifier_dir, model, shape)
  handle = classifier.ClassifierHandle(model, variables,
                                       float(record['test_accuracy']),
                                       image_size=int(shape[0]))
  split = input_pipeline.load_split(data, 'test')
  first = input_pipeline.Split(images=split.images[:CHECK_IMAGES],
                               labels=split.labels[:CHECK_IMAGES])
  file, size, sha = _write_npz(directory, name, pretrained.flatten(variables))
  return _record(directory, name, {
      'file': file, 'bytes': size, 'sha256': sha, 'kind': 'classifier',
      'chain': name, 'dataset': dataset, 'stage': dataset,
      'config': record['config'], 'record': record,
      'commit': commit or code_commit(),
      'command': 'python launch/classifier.py (or the first launch/main.py '
                 f'run on {dataset}), with configs/classifier.py',
      'workdir': _relative(classifier_dir),
      'fingerprint': checkpoint.fingerprint(variables),
      'test': {'accuracy': float(record['test_accuracy'])}, 'split': 'test',
      'check': {'images': len(first),
                'accuracy': classifier_accuracy(handle, first)},
      'exported': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds')})
