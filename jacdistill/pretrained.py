"""Shipped models: a stage's variables as a flat `.npz` and a manifest entry.

`pretrained/MANIFEST.json` (`{'format': 1, 'models': {name: entry}}`)
describes each `pretrained/<name>.npz`. An entry records what the file is
(`file`, `bytes`, `sha256`), what made it (`config`: the run's config.json;
`command`: the command that trained the run; `commit`: the code's git
commit at export; `workdir`), where it sits (`kind`: 'growth', 'attribute'
or 'classifier'; `chain`: the group of models of one run, e.g. a teacher
and its students; `dataset`; `stage`: a growth stage's index or an
attribute stage's name; `code_size`), and what it scored: `test` (the
stage's test metrics from summary.json, or the classifier's test
accuracy), `check` (the test MSE, or for the classifier the accuracy, on
the first `export.CHECK_IMAGES` test images, computed at export by the
model's eval path so a reload can be checked against it quickly) and
`fingerprint` (`checkpoint.fingerprint` of the variables). `jacdistill.export`
writes the files and entries; this module reads them.

An `.npz` holds one array per variable, keyed by its '/'-joined path
('params/encoder/Dense_0/kernel'), readable with `allow_pickle=False`.
`load(name)` checks the file's sha256 before reading it, and after reading
its arrays' shapes and dtypes against the model rebuilt from the entry's
config and its fingerprint against the entry's; any failure is a
`PretrainedError` with one line that names the file and what to do.
`load_classifier` gives a shipped classifier as the handle evaluation takes,
and `install_classifier` writes it into the classifier cache.
"""

import hashlib
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from jacdistill import attr_chain
from jacdistill import chain
from jacdistill import checkpoint
from jacdistill import classifier
from jacdistill import classifier_cache
from jacdistill import input_pipeline
from jacdistill import models
from jacdistill import paths
from jacdistill import stages
from jacdistill import workdir_files

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DIR = os.path.join(REPO_ROOT, 'pretrained')
MANIFEST = 'MANIFEST.json'
FORMAT = 1
KINDS = ('growth', 'attribute', 'classifier')


class PretrainedError(RuntimeError):
  """A shipped model cannot be used or made; one line: the file and the fix."""


# ------------------------------------------------------------ flat arrays


def _key(entry) -> str:
  return str(getattr(entry, 'key', getattr(entry, 'name',
                                           getattr(entry, 'idx', entry))))


def flatten(tree: Any) -> dict[str, np.ndarray]:
  """A nested dict of arrays -> {'a/b/c': numpy array} (host copies)."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {'/'.join(_key(k) for k in path): np.asarray(jax.device_get(leaf))
          for path, leaf in flat}


def unflatten(flat: dict[str, np.ndarray]) -> dict:
  """{'a/b/c': array} -> {'a': {'b': {'c': array}}} (plain dicts)."""
  out = {}
  for path, value in flat.items():
    node = out
    *parents, leaf = path.split('/')
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return out


def file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with paths.open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


# ---------------------------------------------------------------- manifest


def read_manifest(directory: str = DEFAULT_DIR) -> dict:
  """The manifest of `directory`; an empty one if it has none."""
  path = paths.join(directory, MANIFEST)
  if not paths.exists(path):
    return {'format': FORMAT, 'models': {}}
  try:
    manifest = paths.read_json(path)
  except (OSError, ValueError) as e:
    raise PretrainedError(f'{path} cannot be read ({type(e).__name__}: '
                          f'{e}); check it out again from git') from None
  if manifest.get('format') != FORMAT or 'models' not in manifest:
    raise PretrainedError(f'{path} is not a format-{FORMAT} manifest; check '
                          'it out again from git')
  return manifest


def entry(name: str, directory: str = DEFAULT_DIR) -> dict:
  """The manifest entry of `name` (PretrainedError naming the known ones)."""
  models_ = read_manifest(directory)['models']
  if name not in models_:
    known = ', '.join(sorted(models_)) or 'none'
    raise PretrainedError(
        f'no model {name!r} in {paths.join(directory, MANIFEST)} (shipped: '
        f'{known}); pick one of those or export it with launch/export.py')
  return models_[name]


def chain_members(name: str, directory: str = DEFAULT_DIR) -> list[str]:
  """The shipped models of `name`'s chain (its manifest `chain`), in stage
  order: growth stages by index, attribute stages by the run's stage_order.
  A classifier is a chain of one."""
  this = entry(name, directory)
  if this['kind'] == 'classifier':
    return [name]
  found = [(n, e) for n, e in read_manifest(directory)['models'].items()
           if e.get('chain') == this['chain'] and e['kind'] == this['kind']]

  def order(item):
    e = item[1]
    if e['kind'] == 'growth':
      return (e['stage'], item[0])
    stages = list(e['config']['stage_order'])
    return (stages.index(e['stage']) if e['stage'] in stages else 1 << 30,
            item[0])

  return [n for n, _ in sorted(found, key=order)]


# ------------------------------------------------------------------ models


def kind_of(config) -> str:
  """'attribute' for an attribute-chain config, 'growth' for a growth one."""
  chain = workdir_files.chain_of(config)
  if chain:
    return chain
  raise stages.ConfigError('the config is of neither chain (no growth, no '
                          'stage_order)')


def build_model(kind: str, config, stage):
  """The model of stage `stage` (growth: index; attribute: name)."""
  if kind == 'growth':
    dims = chain.stage_dims(config.growth)
    return chain.build_model(config.model, dims[stage],
                             input_pipeline.IMAGE_SHAPES[config.data.name],
                             stage)
  if kind == 'attribute':
    return attr_chain.build_model(config, config.stages[stage].nuisance)
  raise ValueError(f'kind={kind!r} is not growth or attribute')


def classifier_data(dataset: str):
  """The data config of a shipped classifier of `dataset`: its idx files,
  no limit."""
  return ml_collections.ConfigDict({
      'name': dataset, 'source': 'idx',
      'idx_dir': input_pipeline.DEFAULT_IDX_DIR, 'limit': 0})


def _shapes(kind: str, config, stage) -> tuple[Any, dict]:
  """(model, {path: ShapeDtypeStruct}) of the variables the entry describes,
  without initialising any (eval_shape compiles nothing)."""
  if kind == 'classifier':
    data = classifier_data(stage)
    model = classifier.make_classifier(data, config)
    shape = classifier.classifier_image_shape(data, config)
    tree = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, *shape)),
                                               train=False),
                          jax.random.key(0))
  else:
    model = build_model(kind, config, stage)
    tree = jax.eval_shape(lambda k: model.init(k, models.example_input(model)),
                          jax.random.key(0))
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return model, {'/'.join(_key(k) for k in path): leaf for path, leaf in flat}


def test_images(kind: str, config, count: int = 0) -> np.ndarray:
  """The first `count` (0 = all) test images as the model takes them, uint8:
  growth (N, H, W, C) native; attribute (N, S, S, C) padded to
  data.image_size (attr_chain.load_split)."""
  if kind == 'attribute':
    images = attr_chain.load_split(config, 'test').images
  else:
    images = input_pipeline.load_split(config.data, 'test').images
  return images[:count or None]


# -------------------------------------------------------------------- load


def load(name: str, directory: str = DEFAULT_DIR):
  """A shipped model, checked: returns (config, model, variables, entry).

  `config` is the run's ConfigDict (for a classifier, its training config),
  `model` the rebuilt Flax module, `variables` {'params': ..., maybe
  'batch_stats': ...} of numpy arrays, `entry` the manifest entry, as
  `chain.load_stage` / `attr_chain.load_stage` return plus the entry.

  Raises:
    PretrainedError: an unknown name; a missing file; a file whose sha256 is
      not the manifest's (checked before the file is read); arrays whose
      shapes or dtypes do not fit the model rebuilt from the entry's config;
      a fingerprint that is not the entry's.
  """
  e = entry(name, directory)
  path = paths.join(directory, e['file'])
  if not paths.exists(path):
    raise PretrainedError(f'{path} is missing; check it out from git '
                          '(git checkout -- pretrained) or export it again '
                          'with launch/export.py')
  sha = file_sha256(path)
  if sha != e['sha256']:
    raise PretrainedError(f'{path} has sha256 {sha[:12]}..., the manifest '
                          f'records {e["sha256"][:12]}...: the file is '
                          'damaged or was replaced; check it out again from '
                          'git (git checkout -- pretrained) or re-export it')
  config = ml_collections.ConfigDict(e['config'])
  model, expected = _shapes(e['kind'], config, e['stage'])
  try:
    with paths.open(path, 'rb') as f, np.load(f, allow_pickle=False) as npz:
      flat = {k: npz[k] for k in npz.files}
  except (OSError, ValueError) as e_:
    raise PretrainedError(f'{path} cannot be read ({type(e_).__name__}: '
                          f'{e_}); check it out again from git') from None
  problems = [f'{k} is {flat[k].shape} {flat[k].dtype} in the file but '
              f'{tuple(expected[k].shape)} {expected[k].dtype} in the model'
              for k in sorted(flat.keys() & expected.keys())
              if (flat[k].shape != tuple(expected[k].shape) or
                  flat[k].dtype != expected[k].dtype)]
  problems += [f'{k} is in the file but not in the model'
               for k in sorted(flat.keys() - expected.keys())]
  problems += [f'{k} is in the model but not in the file'
               for k in sorted(expected.keys() - flat.keys())]
  if problems:
    more = f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''
    raise PretrainedError(f'{path} does not fit the model its manifest entry '
                          f'describes: {problems[0]}{more}; re-export it with '
                          'launch/export.py from a run of this code')
  variables = unflatten(flat)
  if checkpoint.fingerprint(variables) != e['fingerprint']:
    raise PretrainedError(f'{path} holds other parameters than the manifest '
                          'records (fingerprint differs); re-export it with '
                          'launch/export.py')
  return config, model, variables, e


def load_classifier(name: str, directory: str = DEFAULT_DIR
                    ) -> tuple[classifier.ClassifierHandle, dict]:
  """A shipped classifier as the handle `stages.Hooks.classifier` takes (the
  swap and flip accuracies then need no cache), and its entry."""
  config, model, variables, e = load(name, directory)
  if e['kind'] != 'classifier':
    raise PretrainedError(f'{name!r} in {paths.join(directory, MANIFEST)} '
                          f'is a {e["kind"]} model, not a classifier; pick a '
                          'classifier entry')
  shape = classifier.classifier_image_shape(classifier_data(e['dataset']),
                                            config)
  variables = jax.tree.map(jnp.asarray, variables)
  return classifier.ClassifierHandle(
      model, variables, float(e['test']['accuracy']),
      image_size=int(shape[0])), e


def install_classifier(name: str, classifier_dir: Optional[str] = None,
                       directory: str = DEFAULT_DIR) -> str:
  """Writes a shipped classifier where
  `classifier_cache.load_or_train_classifier` looks (`classifier_dir`,
  default `classifier_cache.default_classifier_dir` of its dataset), so
  launch/main.py scores swaps and flips with it instead of training one.
  Returns the directory.

  Raises:
    PretrainedError: as `load`, or that directory already holds a classifier
      (delete it first).
  """
  handle, e = load_classifier(name, directory)
  target = classifier_dir or classifier_cache.default_classifier_dir(
      classifier_data(e['dataset']))
  record_path = paths.join(target, classifier_cache.RECORD_FILE)
  if paths.exists(record_path):
    raise PretrainedError(f'{record_path} exists: {target} already holds a '
                          'classifier; delete that directory to install '
                          f'{name!r} there')
  paths.makedirs(target)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(paths.join(paths.absolute(target),
                                 classifier_cache.CHECKPOINT_SUBDIR),
                      handle.variables, force=True)
    checkpointer.wait_until_finished()
  # The record last, as load_or_train_classifier writes it: a directory
  # without one is an interrupted save and is overwritten.
  paths.write_json(record_path, e['record'])
  return target
