"""The life of one stage, shared by both chains: build or grow, open, train
with progress, fingerprint, evaluate, record, close.

A chain (`chain.py`, `attr_chain.py`) describes each of its stages as a
`Stage` and calls `run`; what differs between the chains (which model,
which teacher, how a finished stage is scored, what its summary entry
names) is passed in, never borrowed.

Resume policy: a stage whose final checkpoint exists is never retrained; a
stage with an intermediate checkpoint continues from it; a new stage starts
from its parent by `growth.grow` (or from a fresh initialisation). Data
order and every random key derive from (seed, stage, step), so a resumed run
ends with the same parameters as an uninterrupted one. A checkpoint trained
under another teacher is refused; an entry scored under other evaluation
settings is scored again.
"""

import dataclasses
import functools
import time
from typing import Any, Callable, Optional

from absl import logging
import flax.linen as nn
import jax
import numpy as np
import optax

from jacdistill import checkpoint
from jacdistill import device_loop
from jacdistill import growth
from jacdistill import models
from jacdistill import parallel
from jacdistill import paths
from jacdistill import rng
from jacdistill import train


class ConfigError(ValueError):
  """A config (or workdir) the run cannot use; the message says the fix."""


# `train.matmul_precision`: how float32 dots and convs run. 'highest' is
# full float32 everywhere; 'default' lets a GPU use TF32 (and a TPU bf16
# passes), faster and about 1e-3 relative per product. On CPU all three
# compute the same bits.
MATMUL_PRECISIONS = ('highest', 'high', 'default')


def matmul_precision(config) -> str:
  """The run's `train.matmul_precision` ('highest' when the config has no
  such field); ConfigError if it is not one of MATMUL_PRECISIONS."""
  value = config.train.get('matmul_precision', 'highest')
  if value not in MATMUL_PRECISIONS:
    raise ConfigError(f'train.matmul_precision={value!r}; choose from '
                      f'{", ".join(MATMUL_PRECISIONS)}')
  return value


def run_under_precision(train_and_evaluate: Callable) -> Callable:
  """A chain's `train_and_evaluate(config, workdir, hooks)` with every
  step and evaluation traced under the config's matmul precision."""
  @functools.wraps(train_and_evaluate)
  def run(config, *args, **kwargs):
    with jax.default_matmul_precision(matmul_precision(config)):
      return train_and_evaluate(config, *args, **kwargs)
  return run


class NonFiniteLossError(RuntimeError):
  """A loss term became NaN or Inf; the stage's saved checkpoints are kept."""


class Preempted(RuntimeError):
  """Training stopped on request after saving a checkpoint."""


@dataclasses.dataclass
class Hooks:
  """How a caller watches and steers a run. All optional."""
  should_stop: Callable[[], bool] = lambda: False
  classifier: Any = None  # A classifier.ClassifierHandle, or None.


@dataclasses.dataclass(frozen=True)
class Trainer:
  """A stage's own train state and step, for a stage that is not trained by
  train.py's (Fader Networks' adversarial pair, `fader.py`). The fields
  have train.py's signatures: `create_state(variables, tx) -> state`,
  `make_step(model, teacher, tx, weights, learning_rate, trainable=) ->
  step(state, teacher_vars, batch, rng) -> (state, metrics)`,
  `variables_of(state) -> the model's variables`."""
  create_state: Callable
  make_step: Callable
  variables_of: Callable


def _trainer(stage: 'Stage') -> Trainer:
  # train.py's functions are looked up when a stage runs, not when this
  # module is imported, so a test may replace one.
  return stage.trainer or Trainer(train.create_train_state,
                                  train.make_train_step, train.variables_of)


@dataclasses.dataclass
class Stage:
  """What the stage loop needs to know of one stage.

  Attributes:
    index: position in the chain (seeds its batches and keys).
    label: how logs name it, e.g. 'stage 3 (k=5)'.
    dir: its directory (checkpoints, events, pictures).
    model: the flax module it trains.
    weights: its loss weights.
    tx: its optimiser (made with `trainable`).
    trainable: 'all' or 'decoder' (train.TRAINABLE).
    keys: its random streams (train.stage_keys).
    inputs: batch fields sent to the devices.
    trainer: its own state and step, or None for train.py's.
  """
  index: int
  label: str
  dir: str
  model: nn.Module
  weights: train.LossWeights
  tx: optax.GradientTransformation
  trainable: str
  keys: train.StageKeys
  inputs: tuple[str, ...] = ('image',)
  trainer: Optional[Trainer] = None


class StageWriter:
  """A stage's clu metric writer, created on its first write.

  A finished stage that a rerun only restores writes nothing, so it gets no
  new (empty) TensorBoard events file. Process 0 writes events; the others
  only log. clu's writers import TensorFlow (seconds of start-up), so a run
  that stops before its first write (a config error, `--help`) never does.
  """

  def __init__(self, directory: str):
    self._directory = directory
    self._writer = None

  def __getattr__(self, name):
    if self._writer is None:
      if name in ('flush', 'close'):
        return lambda: None
      from clu import metric_writers  # pylint: disable=g-import-not-at-top
      self._writer = metric_writers.create_default_writer(
          self._directory, just_logging=jax.process_index() > 0)
    return getattr(self._writer, name)


@rng.draws
def initial_variables(model: nn.Module, keys: train.StageKeys,
                      parent: Optional[Any] = None, init: str = 'zero'):
  """A fresh initialisation of `model`, or `parent`'s variables grown into
  it (`growth.grow` with `init`)."""
  if parent is None:
    return jax.jit(model.init)(keys.init, *models.example_inputs(model))
  return growth.grow(parent, model, keys.growth, init=init)


def _first_nonfinite(history: list[dict], first_step: int):
  """(step, name) of the first non-finite metric in `history` (host dicts,
  one per step from `first_step`), or None.

  A NaN in one loss term reaches the total and the gradient norms in the same
  step; the term is named in preference to them.
  """
  terms = [f.name for f in dataclasses.fields(train.LossWeights)]
  blame = lambda name: (name not in terms, name != 'total', name)
  for offset, metrics in enumerate(history):
    for name in sorted(metrics, key=blame):
      if not np.isfinite(metrics[name]):
        return first_step + offset, name
  return None


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f'{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def open_stage(stage: Stage, state, keep: int, total: int,
               teacher_fingerprint: Optional[str], mesh=None):
  """The stage's checkpoints and where it stands: its newest readable
  checkpoint, or `state` at step 0. Returns (ckpts, state, start, elapsed).
  With a `mesh`, a checkpoint is restored replicated on it (each process
  fills its own devices: arrays on one process's device cannot move to a
  sharding that spans processes).

  Raises:
    ConfigError: the checkpoint was trained under another teacher.
  """
  ckpts = checkpoint.Checkpoints(paths.join(stage.dir, 'checkpoints'),
                                 max_to_keep=keep)
  restored = ckpts.restore_latest(
      state, None if mesh is None else parallel.replicated_sharding(mesh))
  if not restored:
    logging.info('%s: starting, %d steps, outputs in %s', stage.label, total,
                 stage.dir)
    return ckpts, state, 0, 0.0
  state, record, start = restored
  recorded = record.get('teacher_fingerprint', teacher_fingerprint)
  if recorded != teacher_fingerprint:
    ckpts.close()
    raise ConfigError(
        f'{stage.label}: the checkpoint in {ckpts.directory} was trained '
        f'under another teacher (fingerprint {str(recorded)[:12]}, now '
        f'{str(teacher_fingerprint)[:12]}); use a new --workdir, or move '
        f'{stage.dir} away to retrain this stage')
  logging.info('%s: resuming at step %d/%d from %s', stage.label, start,
               total, ckpts.directory)
  return ckpts, state, start, record.get('wall_time_s', 0.0)


def train_stage(stage: Stage, config, teacher: Optional[tuple], state,
                start_step: int, total_steps: int, elapsed: float, batcher,
                ckpts, writer, hooks: Hooks, mesh, record: dict):
  """Runs steps [start_step, total_steps); returns (state, elapsed, last).

  `teacher` is (model, variables) or None; `record` goes into every
  checkpoint's JSON record beside the step and wall time; `last` holds the
  last logged mean of every metric.
  """
  teacher_model, teacher_vars = teacher if teacher else (None, None)
  state = parallel.replicate(state, mesh)
  teacher_vars = parallel.replicate(teacher_vars, mesh)
  step_fn = _trainer(stage).make_step(
      stage.model, teacher_model, stage.tx, stage.weights,
      config.train.learning_rate, trainable=stage.trainable)
  history, last = [], {}
  t_start = time.time()
  t_progress, step_at_progress = t_start, start_step
  # Checkpoints restore read and found corrupt: reaching their step again
  # replaces them. Any other step is saved once.
  unreadable = set(ckpts.passed_over)
  saved_steps = set()

  def save(step):
    if step in saved_steps:
      return
    ckpts.save(step, state, dict(record, step=step, wall_time_s=(
        elapsed + time.time() - t_start)),
               replace_unreadable=step in unreadable)
    saved_steps.add(step)

  def flush(step):
    """Checks and writes the metrics of the steps before `step`."""
    nonlocal history, last
    if not history:
      return
    steps = device_loop.per_step(history)
    bad = _first_nonfinite(steps, step - len(steps))
    if bad:
      saved = ckpts.steps()
      kept = (f'the last good checkpoint (step {saved[-1]}) in '
              f'{ckpts.directory} is kept' if saved else
              'no checkpoint of this stage was saved yet')
      raise NonFiniteLossError(
          f'loss term {bad[1]!r} is not finite at step {bad[0]} of '
          f'{stage.label}; training stopped, {kept}')
    last = {k: float(np.mean([m[k] for m in steps])) for k in steps[0]}
    writer.write_scalars(step, last)
    history = []

  on_device = config.train.get('device_loop', False)
  if on_device:
    source = batcher.device_data()
    data = device_loop.put_data(source, mesh)
    chunk = device_loop.make_chunk(step_fn, source.make_batch, stage.inputs,
                                   mesh)
    ends = device_loop.chunk_ends(start_step, total_steps, (
        config.log.every_steps, config.checkpoint.every_steps))
  else:
    ends = range(start_step + 1, total_steps + 1)
  step = start_step
  for done in ends:
    if on_device:
      idx = device_loop.put_indices(source, range(step, done), mesh)
      state, metrics = chunk(state, teacher_vars, data, idx, stage.keys.steps)
    else:
      # Labels are not a training input; only `inputs` cross to the devices.
      host = batcher.batch(step)
      batch = parallel.shard_batch({k: host[k] for k in stage.inputs}, mesh)
      state, metrics = step_fn(state, teacher_vars, batch, stage.keys.steps)
    history.append(metrics)
    first, step = step == start_step, done
    if done % config.log.every_steps == 0:
      flush(done)
    if done % config.checkpoint.every_steps == 0 or done == total_steps:
      flush(done)
      save(done)
    now = time.time()
    if first and done < total_steps:
      # The first dispatch compiles; its time would make the first rate and
      # ETA nonsense, so the clock of the progress lines starts after it.
      logging.info('%s step %d/%d  compiled and ran in %.1f s', stage.label,
                   done, total_steps, now - t_start)
      t_progress, step_at_progress = now, done
    elif (now - t_progress >= config.log.progress_seconds or
          done == total_steps):
      rate = (done - step_at_progress) / max(now - t_progress, 1e-9)
      logging.info('%s step %d/%d  %.1f steps/s  ETA %s  loss %s',
                   stage.label, done, total_steps, rate,
                   _format_eta((total_steps - done) / max(rate, 1e-9)),
                   f"{last['total']:.5f}" if 'total' in last else '-')
      t_progress, step_at_progress = now, done
    if hooks.should_stop() and done < total_steps:
      flush(done)
      save(done)
      ckpts.wait()
      raise Preempted(f'stopped at step {done} of {stage.label}; the '
                      f'checkpoint is in {ckpts.directory}; re-run the same '
                      'command to resume')
  ckpts.wait()
  return state, elapsed + time.time() - t_start, last


def run(stage: Stage, *, config, variables, teacher: Optional[tuple],
        batcher, total: int, hooks: Hooks, mesh, recorded: Optional[dict],
        describe: dict, settings: dict,
        evaluate: Callable[[Any, Any], dict]) -> tuple[Any, dict, bool]:
  """One stage's whole life; returns (variables, entry, newly scored).

  Every argument but the stage is by keyword: `describe` and `settings`
  are both dicts, and swapping them would record one as the other.

  Args:
    stage: the stage.
    config: the run's config (train, log and checkpoint fields).
    variables: its initial variables (`initial_variables`).
    teacher: (model, variables) of its frozen teacher, or None.
    batcher: `batch(step)` -> host batch dict.
    total: its number of steps.
    hooks: the run's hooks.
    mesh: the data mesh.
    recorded: its entry in the workdir's summary, or None.
    describe: what its entry says of it besides the run's facts.
    settings: what its scores depend on besides its parameters (split sizes,
      protocol, classifier): an entry recorded under other settings, or for
      other parameters, is scored again.
    evaluate: `evaluate(variables, writer) -> scores` of a finished stage.
  """
  teacher_fp = None if teacher is None else checkpoint.fingerprint(teacher[1])
  state = _trainer(stage).create_state(variables, stage.tx)
  ckpts, state, start, elapsed = open_stage(
      stage, state, config.checkpoint.keep, total, teacher_fp, mesh)
  writer = StageWriter(stage.dir)
  try:
    last = {}
    if start < total:
      state, elapsed, last = train_stage(
          stage, config, teacher, state, start, total, elapsed, batcher,
          ckpts, writer, hooks, mesh,
          {**describe, 'teacher_fingerprint': teacher_fp})
    variables = parallel.local_copy(_trainer(stage).variables_of(state))
    fp = checkpoint.fingerprint(variables)
    if recorded is not None and (recorded.get('fingerprint'),
                                 recorded.get('eval')) == (fp, settings):
      logging.info('%s already complete; not retrained', stage.label)
      return variables, recorded, False
    entry = {**describe, 'teacher_fingerprint': teacher_fp, 'steps': total,
             'wall_time_s': round(elapsed, 2), 'train_losses': last,
             'fingerprint': fp, 'eval': settings}
    entry.update(evaluate(variables, writer))
    return variables, entry, True
  finally:
    writer.flush()
    writer.close()
    ckpts.close()


def classifier_settings(hooks: Hooks) -> dict:
  """The classifier's part of a stage's evaluation settings."""
  if hooks.classifier is None:
    return {}
  return {'classifier': checkpoint.fingerprint(hooks.classifier.variables)}


def restore_stage(stage: Stage, where: str):
  """The latest variables of a stage's checkpoints (ConfigError if none)."""
  like = _trainer(stage).create_state(
      initial_variables(stage.model, stage.keys), stage.tx)
  directory = paths.join(stage.dir, 'checkpoints')
  restored = None
  if paths.isdir(directory):
    ckpts = checkpoint.Checkpoints(directory)
    try:
      restored = ckpts.restore_latest(like)
    finally:
      ckpts.close()
  if restored is None:
    raise ConfigError(f'{where} has no checkpoint yet; run launch/main.py '
                      'on it first')
  return _trainer(stage).variables_of(restored[0])
