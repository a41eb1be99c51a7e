"""Runs every chain of a config's `sweep(add)` into sibling workdirs.

  python launch/sweep.py --config=configs/fashion_grow.py:quick --root=workdirs/sweep --parallel=2
  python launch/sweep.py --config=configs/fashion_grow.py:quick --root=workdirs/sweep --only=upstream
  python launch/sweep.py --config=configs/fashion_attr.py:quick --root=workdirs/attr_val --sweep=validation_sweep

Each chain is `launch/main.py` with the sweep's overrides, so each is
resumable on its own: re-running the sweep skips finished chains.
"""

import importlib.util
import os
import subprocess
import sys
import time

from absl import app
from absl import flags
from absl import logging

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


def main(argv):
  del argv
  path = _CONFIG.value.split(':')[0]
  entries = [(n, o) for n, o in _sweep_entries(path)
             if not _ONLY.value or n.startswith(tuple(_ONLY.value))]
  commands = []
  for name, overrides in entries:
    workdir = os.path.join(_ROOT.value, name)
    cmd = [sys.executable, os.path.join(HERE, 'main.py'),
           f'--config={_CONFIG.value}', f'--workdir={workdir}']
    cmd += [f'--config.{k}={v}' for k, v in overrides.items()]
    commands.append((name, workdir, cmd))
  if _DRY.value:
    for _, _, cmd in commands:
      print(' '.join(cmd[1:]))
    return
  os.makedirs(_ROOT.value, exist_ok=True)
  pending, running, failed = list(commands), [], []
  while pending or running:
    while pending and len(running) < _PARALLEL.value:
      name, workdir, cmd = pending.pop(0)
      os.makedirs(workdir, exist_ok=True)
      log = open(os.path.join(workdir, 'log.txt'), 'a')
      logging.info('start %s: %s', name, ' '.join(cmd[1:]))
      running.append((name, subprocess.Popen(cmd, stdout=log, stderr=log),
                      time.time()))
    time.sleep(2)
    for item in list(running):
      name, proc, t0 = item
      if proc.poll() is not None:
        running.remove(item)
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
