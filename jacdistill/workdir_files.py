"""A run's workdir files, shared by both chains: its config.json (refused if
another run's, `check_workdir`; written once the run's last checks pass,
`claim_workdir`), its summary.json, and reading a finished run's config
back (`read_config`). Every write replaces a file whole, from process 0.
"""

import json
from typing import Any, Optional

import jax
import ml_collections

from jacdistill import checkpoint
from jacdistill import parallel
from jacdistill import paths
from jacdistill import stages

# Fields a workdir's run may change between invocations without becoming a
# different run: extending the chain, logging, checkpoint cadence, scoring.
RESUMABLE_CHANGES = ('growth.end_dim', 'log.', 'checkpoint.every_steps',
                     'eval.', 'default_stage')
# Fields added after workdirs were made, with the value that does what those
# runs did: absent from a workdir's config.json and at this value now is no
# change.
ADDED_FIELDS = {'trainable': 'all', 'epochs': 0, 'cycle_attr': 0.0,
                'cycle_z': 0.0, 'validation': 0, 'steps': 0,
                'kind': 'autoencoder', 'matmul_precision': 'highest',
                'device_loop': False}


def _flat(d: dict, prefix: str = '') -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def check_workdir(config, workdir: str) -> None:
  """Refuses a workdir that holds a run of a different config.

  Only the fields in RESUMABLE_CHANGES may differ from `workdir/config.json`;
  an attribute chain may also append stages to its `stage_order` (as a
  growth chain may raise `growth.end_dim`), and the fields of a stage that
  has not run (in `stages` but not in the old order) may change.
  """
  path = paths.join(workdir, 'config.json')
  if not paths.exists(path):
    return
  old = paths.read_json(path)
  new = json.loads(config.to_json())
  a, b = _flat(old), _flat(new)
  ran = list(old.get('stage_order', ()))

  def added(k):
    field = k.rsplit('.', 1)[-1]
    return k not in a and field in ADDED_FIELDS and b[k] == ADDED_FIELDS[field]

  def not_run(k):
    if k == 'stage_order':
      return list(new.get('stage_order', ()))[:len(ran)] == ran
    return k.startswith('stages.') and k.split('.')[1] not in ran

  diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)
                and not k.startswith(RESUMABLE_CHANGES) and not added(k)
                and not (ran and not_run(k)))
  if diff:
    shown = ', '.join(f'{k}: {a.get(k)!r} -> {b.get(k)!r}' for k in diff[:4])
    raise stages.ConfigError(
        f'workdir {workdir} holds a run of a different config ({shown}); '
        'use a new --workdir, or the same config to resume')


def write_json(path: str, value: Any) -> None:
  """Replaces `path` whole with `value` as JSON (never half written), from
  process 0 only: every process holds the same value.

  Raises:
    checkpoint.DiskFullError: no space for it; `path` is left as it was.
  """
  if jax.process_index() != 0:
    return
  try:
    paths.write_json(path, value)
  except OSError as e:
    if not checkpoint.is_disk_full(e):
      raise
    kept = (f'{path} is kept as it was' if paths.exists(path) else
            f'{path} was not written')
    raise checkpoint.DiskFullError(path, f'writing {path}', kept) from e


def claim_workdir(config, workdir: str, num_train: int):
  """Last checks before any compilation, then records the config in the
  workdir (so a refused config never becomes the workdir's config).
  Returns the data mesh."""
  try:
    paths.check_checkpoint_dir(workdir)
  except ValueError as e:
    raise stages.ConfigError(str(e)) from e
  if config.train.batch_size > num_train:
    raise stages.ConfigError(
        f'train.batch_size={config.train.batch_size} exceeds the '
        f'{num_train} training examples')
  mesh = parallel.data_mesh()
  try:
    parallel.check_batch_size(config.train.batch_size, mesh)
  except ValueError as e:
    raise stages.ConfigError(str(e)) from e
  try:
    paths.makedirs(workdir)
  except FileNotFoundError as e:  # A missing bucket.
    raise stages.ConfigError(str(e)) from e
  write_json(paths.join(workdir, 'config.json'), json.loads(config.to_json()))
  return mesh


def load_summary(workdir: str) -> dict:
  """The workdir's summary.json, or an empty one."""
  path = paths.join(workdir, 'summary.json')
  if paths.exists(path):
    return paths.read_json(path)
  return {'stages': []}


def write_summary(workdir: str, summary: dict) -> None:
  write_json(paths.join(workdir, 'summary.json'), summary)


def chain_of(config) -> Optional[str]:
  """'growth' or 'attribute': the config's `chain` field (configs written
  before it existed: attribute chains are the ones with a stage_order)."""
  if 'chain' in config:
    return config['chain']
  if 'stage_order' in config:
    return 'attribute'
  return 'growth' if 'growth' in config else None


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config.json of the run in `workdir` (ConfigError if it has none)."""
  path = paths.join(workdir, 'config.json')
  if not paths.exists(path):
    raise stages.ConfigError(f'{workdir} has no config.json; pass the '
                             '--workdir of a launch/main.py run')
  return ml_collections.ConfigDict(paths.read_json(path))


def read_config(workdir: str, chain: str) -> ml_collections.ConfigDict:
  """The config.json of the run in `workdir`, which must be a run of the
  chain `chain` ('growth' or 'attribute'; ConfigError if it has no config or
  is of another chain)."""
  config = load_config(workdir)
  if chain_of(config) != chain:
    raise stages.ConfigError(f'{workdir} holds a run of another kind (chain='
                             f'{chain_of(config)!r}); pass the --workdir of a '
                             f'{chain}-chain run')
  return config
