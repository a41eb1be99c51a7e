"""Runs every chain of a config's `sweep(add)` into sibling workdirs.

  python launch/sweep.py --config=configs/fashion_grow.py:quick --root=workdirs/sweep --parallel=2
  python launch/sweep.py --config=configs/fashion_grow.py:quick --root=workdirs/sweep --only=upstream
  python launch/sweep.py --config=configs/fashion_attr.py:quick --root=workdirs/attr_val --sweep=validation_sweep

Each chain is `launch/main.py` with the sweep's overrides, so each is
resumable on its own: re-running the sweep skips finished chains. On a GPU
the chains share it: each child allocates GPU memory as it needs it
(XLA_PYTHON_CLIENT_PREALLOCATE=false) instead of JAX's default 75% per
process, which would let the second chain fail out of memory.
"""

import importlib.util
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging

from jacdistill import parallel
from jacdistill import paths

_CONFIG = flags.DEFINE_string('config', None, 'Config file with a sweep(), '
                              'optionally :variant.')
_ROOT = flags.DEFINE_string('root', None, 'Parent of the sibling workdirs.')
_PARALLEL = flags.DEFINE_integer('parallel', 1, 'Chains run at once.')
_ONLY = flags.DEFINE_multi_string('only', [], 'Run only names with a prefix.')
_DRY = flags.DEFINE_bool('dry_run', False, 'Print the commands only.')
_SWEEP = flags.DEFINE_string('sweep', 'sweep', 'Name of the config module\'s '
                             'function that lists the chains.')

HERE = os.path.dirname(os.path.abspath(__file__))


def _sweep_entries(path: str) -> list[tuple[str, dict]]:
  spec = importlib.util.spec_from_file_location('sweep_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, _SWEEP.value):
    raise app.UsageError(f'{path} has no {_SWEEP.value}(add) function')
  entries = []
  getattr(module, _SWEEP.value)(
      lambda name, **overrides: entries.append((name, overrides)))
  return entries


def _local_log(workdir: str) -> str:
  """The local file a chain's output is appended to: `workdir/log.txt`, or
  for a URL workdir a local copy of it (in the temporary directory, started
  from the copy in the workdir), uploaded to `workdir/log.txt` when the chain
  exits: an object store cannot be appended to."""
  if not paths.is_url(workdir):
    return paths.join(workdir, 'log.txt')
  local = os.path.join(tempfile.gettempdir(), 'jacdistill_sweep_logs',
                       re.sub(r'[^A-Za-z0-9._-]+', '_', workdir) + '.txt')
  os.makedirs(os.path.dirname(local), exist_ok=True)
  remote = paths.join(workdir, 'log.txt')
  with open(local, 'wb') as f:
    if paths.exists(remote):
      with paths.open(remote, 'rb') as r:
        f.write(r.read())
  return local


def main(argv):
  del argv
  path = _CONFIG.value.split(':')[0]
  entries = [(n, o) for n, o in _sweep_entries(path)
             if not _ONLY.value or n.startswith(tuple(_ONLY.value))]
  commands = []
  for name, overrides in entries:
    workdir = paths.join(_ROOT.value, name)
    cmd = [sys.executable, os.path.join(HERE, 'main.py'),
           f'--config={_CONFIG.value}', f'--workdir={workdir}']
    cmd += [f'--config.{k}={v}' for k, v in overrides.items()]
    commands.append((name, workdir, cmd))
  if _DRY.value:
    for _, _, cmd in commands:
      print(' '.join(cmd[1:]))
    return
  paths.makedirs(_ROOT.value)
  env = parallel.shared_accelerator_env(dict(os.environ))
  pending, running, failed = list(commands), [], []
  while pending or running:
    while pending and len(running) < _PARALLEL.value:
      name, workdir, cmd = pending.pop(0)
      paths.makedirs(workdir)
      local = _local_log(workdir)
      log = open(local, 'a')
      # The command first, as launch/export.py reads it back from log.txt.
      log.write('python ' + shlex.join(cmd[1:]) + '\n')
      log.flush()
      logging.info('start %s: %s', name, ' '.join(cmd[1:]))
      running.append((name, workdir, local, log,
                      subprocess.Popen(cmd, stdout=log, stderr=log, env=env),
                      time.time()))
    time.sleep(2)
    for item in list(running):
      name, workdir, local, log, proc, t0 = item
      if proc.poll() is not None:
        running.remove(item)
        log.close()
        if paths.is_url(workdir):
          with open(local, 'rb') as f:
            paths.replace(paths.join(workdir, 'log.txt'), f.read())
        logging.info('%s %s after %.0f s', 'done' if proc.returncode == 0
                     else f'FAILED (exit {proc.returncode})', name,
                     time.time() - t0)
        if proc.returncode:
          failed.append(name)
  if failed:
    sys.exit(f'failed: {", ".join(failed)} (see their log.txt)')


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'root'])
  app.run(main)
