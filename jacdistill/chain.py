"""The growth chain: a teacher, then students one code dim longer per stage.

`train_and_evaluate(config, workdir)` runs (or resumes) every stage of the
chain. Stage s writes under `workdir/stage_XX/`: orbax checkpoints, TensorBoard
events and PNG grids; `workdir/summary.json` gets a record per finished stage.

Resume policy: a stage whose final checkpoint exists is never retrained; a
stage with an intermediate checkpoint continues from it; a new stage starts
from its parent by `growth.grow` (stage 0 from a fresh initialisation). Data
order and every random key derive from (seed, stage, step), so a resumed run
ends with the same parameters as an uninterrupted one.
"""

import dataclasses
import json
import os
import time
from typing import Any, Callable, Optional

from absl import logging
import flax.linen as nn
import jax
import ml_collections
import numpy as np

from jacdistill import checkpoint
from jacdistill import evaluation
from jacdistill import growth
from jacdistill import input_pipeline
from jacdistill import models
from jacdistill import parallel
from jacdistill import pictures
from jacdistill import train

MODEL_NAMES = ('mlp', 'conv')
# Which stages normalise their code (BatchNorm without affine): 'first' the
# stage-0 teacher only (upstream: its students are `autoencoder_nobatchnorm`),
# 'all' every stage, 'none' no stage.
CODE_NORMS = ('first', 'all', 'none')
# Fields a workdir's run may change between invocations without becoming a
# different run: extending the chain, logging and checkpoint cadence.
RESUMABLE_CHANGES = ('growth.end_dim', 'log.', 'checkpoint.every_steps',
                     'eval.')
# Fields added after workdirs were made, with the value that does what those
# runs did: absent from a workdir's config.json and at this value now is no
# change.
ADDED_FIELDS = {'trainable': 'all', 'epochs': 0, 'cycle_attr': 0.0,
                'cycle_z': 0.0, 'validation': 0, 'steps': 0}


class ConfigError(ValueError):
  """A config (or workdir) the run cannot use; the message says the fix."""


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


class NonFiniteLossError(RuntimeError):
  """A loss term became NaN or Inf; the stage's saved checkpoints are kept."""


class Preempted(RuntimeError):
  """Training stopped on request after saving a checkpoint."""


def stage_dims(growth_cfg) -> list[int]:
  """Code sizes of the stages, e.g. [2, 3, ..., 16]."""
  start, end, step = growth_cfg.start_dim, growth_cfg.end_dim, growth_cfg.step
  if start < 1 or step < 1 or end < start:
    raise ConfigError(
        f'growth needs 1 <= start_dim <= end_dim and step >= 1; got '
        f'start_dim={start}, end_dim={end}, step={step}')
  return list(range(start, end + 1, step))


def stage_code_norm(code_norm: str, stage: int) -> bool:
  """Whether stage `stage` normalises its code under `model.code_norm`."""
  if code_norm not in CODE_NORMS:
    raise ConfigError(f'model.code_norm={code_norm!r} is not one of '
                      f"{CODE_NORMS} ('first': the teacher only, as upstream)")
  return code_norm == 'all' or (code_norm == 'first' and stage == 0)


def build_model(model_cfg, latent_dim: int, image_shape: tuple[int, ...],
                stage: int = 0) -> nn.Module:
  """The flat-code autoencoder named by `model_cfg.name` for `image_shape`,
  as stage `stage` of a chain builds it (`stage_code_norm`)."""
  code_norm = stage_code_norm(model_cfg.code_norm, stage)
  if model_cfg.name == 'mlp':
    return models.MLPAutoencoder(
        latent_dim=latent_dim, image_shape=image_shape,
        hidden=tuple(model_cfg.hidden), code_norm=code_norm,
        output=model_cfg.output)
  if model_cfg.name == 'conv':
    return models.ConvAutoencoder(
        latent_dim=latent_dim, image_shape=image_shape,
        channels=tuple(model_cfg.channels), hidden=model_cfg.conv_hidden,
        code_norm=code_norm, output=model_cfg.output)
  raise ConfigError(f'model.name={model_cfg.name!r} is not one of '
                    f'{MODEL_NAMES}')


def stage_weights(loss_cfg, stage: int) -> train.LossWeights:
  """The teacher (stage 0) trains on reconstruction alone."""
  try:
    weights = train.LossWeights.from_config(loss_cfg)
  except ValueError as e:
    raise ConfigError(str(e)) from e
  if stage == 0:
    return train.LossWeights(rec=weights.rec, jacobian=weights.jacobian)
  return weights


def validate(config) -> list[int]:
  """Raises ConfigError for anything a run would trip over later."""
  dims = stage_dims(config.growth)
  if config.data.name not in input_pipeline.IN_MEMORY_DATASETS:
    raise ConfigError(f'data.name={config.data.name!r} is not one of '
                      f'{input_pipeline.IN_MEMORY_DATASETS}')
  if config.model.name not in MODEL_NAMES:
    raise ConfigError(f'model.name={config.model.name!r} is not one of '
                      f'{MODEL_NAMES}')
  stage_code_norm(config.model.code_norm, 0)
  if config.model.output not in models.OUTPUT_ACTIVATIONS:
    raise ConfigError(f'model.output={config.model.output!r} is not one of '
                      f'{sorted(models.OUTPUT_ACTIVATIONS)}')
  if config.growth.init not in growth.GROWTH_INITS:
    raise ConfigError(f'growth.init={config.growth.init!r} is not one of '
                      f'{growth.GROWTH_INITS}')
  if config.growth.teacher not in ('previous', 'first'):
    raise ConfigError(f"growth.teacher={config.growth.teacher!r} is not "
                      "'previous' or 'first'")
  stage_weights(config.loss, 1)
  for name in ('batch_size', 'epochs_per_stage'):
    if config.train[name] < 1:
      raise ConfigError(f'train.{name}={config.train[name]} must be >= 1')
  if not config.train.learning_rate > 0:
    raise ConfigError(f'train.learning_rate={config.train.learning_rate} '
                      'must be > 0')
  return dims


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

  Only the fields in RESUMABLE_CHANGES may differ from `workdir/config.json`.
  """
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return
  with open(path) as f:
    old = json.load(f)
  a, b = _flat(old), _flat(json.loads(config.to_json()))

  def added(k):
    field = k.rsplit('.', 1)[-1]
    return k not in a and field in ADDED_FIELDS and b[k] == ADDED_FIELDS[field]

  diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)
                and not k.startswith(RESUMABLE_CHANGES) and not added(k))
  if diff:
    shown = ', '.join(f'{k}: {a.get(k)!r} -> {b.get(k)!r}' for k in diff[:4])
    raise ConfigError(
        f'workdir {workdir} holds a run of a different config ({shown}); '
        'use a new --workdir, or the same config to resume')


def _write_config(config, workdir: str) -> None:
  """Records the run's config once every check has passed, so a refused config
  never becomes the workdir's config."""
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() != 0:
    return  # One writer; the others share the workdir.
  path = os.path.join(workdir, 'config.json')
  with open(path + '.tmp', 'w') as f:
    f.write(config.to_json(indent=2))
  os.replace(path + '.tmp', path)


def claim_workdir(config, workdir: str, num_train: int):
  """Last checks before any compilation, then records the config in the
  workdir. Returns the data mesh."""
  if config.train.batch_size > num_train:
    raise ConfigError(f'train.batch_size={config.train.batch_size} exceeds the '
                      f'{num_train} training examples')
  mesh = parallel.data_mesh()
  try:
    parallel.check_batch_size(config.train.batch_size, mesh)
  except ValueError as e:
    raise ConfigError(str(e)) from e
  _write_config(config, workdir)
  return mesh


@dataclasses.dataclass
class Hooks:
  """How a caller watches and steers a run. All optional."""
  should_stop: Callable[[], bool] = lambda: False
  classifier: Any = None  # An evaluation.ClassifierHandle, or None.


def _mean_metrics(history: list[dict]) -> dict[str, float]:
  host = jax.device_get(history)
  return {k: float(np.mean([h[k] for h in host])) for k in host[0]}


def _first_nonfinite(history: list[dict], first_step: int):
  """(step, name) of the first non-finite metric in `history`, or None.

  A NaN in one loss term reaches the total and the gradient norms in the same
  step; the term is named in preference to them.
  """
  terms = [f.name for f in dataclasses.fields(train.LossWeights)]
  blame = lambda name: (name not in terms, name != 'total', name)
  for offset, metrics in enumerate(jax.device_get(history)):
    for name in sorted(metrics, key=blame):
      if not np.isfinite(metrics[name]):
        return first_step + offset, name
  return None


def _load_summary(workdir: str) -> dict:
  path = os.path.join(workdir, 'summary.json')
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return {'stages': []}


def _write_summary(workdir: str, summary: dict) -> None:
  if jax.process_index() != 0:
    return  # Every process has the same summary; one writes it.
  path = os.path.join(workdir, 'summary.json')
  with open(path + '.tmp', 'w') as f:
    json.dump(summary, f, indent=2)
  os.replace(path + '.tmp', path)  # Never a half-written summary.


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f'{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


class _Stage:
  """One stage of the chain: its model, teacher, state and outputs."""

  def __init__(self, config, workdir, index, dim, image_shape):
    self.config = config
    self.index = index
    self.dim = dim
    self.dir = os.path.join(workdir, f'stage_{index:02d}')
    self.model = build_model(config.model, dim, image_shape, index)
    self.weights = stage_weights(config.loss, index)
    self.trainable = 'all'  # Growth stages train every parameter.
    self.tx = train.make_optimizer(
        config.train.learning_rate, config.train.weight_decay,
        config.train.b1, config.train.b2, config.train.clip_norm)
    self.keys = train.stage_keys(config.seed, index)


def _initial_variables(stage: _Stage, parent: Optional[tuple]) -> Any:
  if parent is None:
    return jax.jit(stage.model.init)(stage.keys.init,
                                     models.example_input(stage.model))
  return growth.grow(parent[1], stage.model, stage.keys.growth,
                     init=stage.config.growth.init)


def open_stage(stage_dir: str, state, keep: int, total: int, label: str):
  """The stage's checkpoints and where it stands: its newest readable
  checkpoint, or `state` at step 0. Returns (ckpts, state, start, elapsed)."""
  ckpts = checkpoint.Checkpoints(os.path.join(stage_dir, 'checkpoints'),
                                 max_to_keep=keep)
  restored = ckpts.restore_latest(state)
  if not restored:
    logging.info('%s: starting, %d steps, outputs in %s', label, total,
                 stage_dir)
    return ckpts, state, 0, 0.0
  state, record, start = restored
  logging.info('%s: resuming at step %d/%d from %s', label, start, total,
               ckpts.directory)
  return ckpts, state, start, record.get('wall_time_s', 0.0)


def _train_stage(stage: _Stage, teacher: Optional[tuple], state, start_step,
                 total_steps, elapsed, batcher, ckpts, writer, hooks, mesh,
                 inputs=('image',)):
  """Runs steps [start_step, total_steps); returns (state, elapsed, last).

  `inputs` are the batch fields sent to the devices (the attribute chain adds
  'attributes').
  """
  cfg = stage.config
  teacher_model, teacher_vars = teacher if teacher else (None, None)
  state = parallel.replicate(state, mesh)
  teacher_vars = parallel.replicate(teacher_vars, mesh)
  step_fn = train.make_train_step(stage.model, teacher_model, stage.tx,
                                  stage.weights, cfg.train.learning_rate,
                                  trainable=stage.trainable)
  history, last = [], {}
  t_start = time.time()
  t_progress, step_at_progress = t_start, start_step

  def record(step):
    return {'stage': stage.index, 'step': step, 'latent_dim': stage.dim,
            'wall_time_s': elapsed + time.time() - t_start}

  def flush(step):
    """Checks and writes the metrics of the steps before `step`."""
    nonlocal history, last
    if not history:
      return
    bad = _first_nonfinite(history, step - len(history))
    if bad:
      saved = ckpts.steps()
      kept = (f'the last good checkpoint (step {saved[-1]}) in '
              f'{ckpts.directory} is kept' if saved else
              'no checkpoint of this stage was saved yet')
      raise NonFiniteLossError(
          f'loss term {bad[1]!r} is not finite at step {bad[0]} of stage '
          f'{stage.index} (k={stage.dim}); training stopped, {kept}')
    last = _mean_metrics(history)
    writer.write_scalars(step, last)
    history = []

  for step in range(start_step, total_steps):
    # Labels are not a training input; only `inputs` cross to the devices.
    host = batcher.batch(step)
    batch = parallel.shard_batch({k: host[k] for k in inputs}, mesh)
    state, metrics = step_fn(state, teacher_vars, batch, stage.keys.steps)
    history.append(metrics)
    done = step + 1
    if done % cfg.log.every_steps == 0:
      flush(done)
    if done % cfg.checkpoint.every_steps == 0 or done == total_steps:
      flush(done)
      ckpts.save(done, state, record(done))
    now = time.time()
    if now - t_progress >= cfg.log.progress_seconds or done == total_steps:
      rate = (done - step_at_progress) / max(now - t_progress, 1e-9)
      logging.info(
          'stage %d (k=%d) step %d/%d  %.1f steps/s  ETA %s  loss %.5f',
          stage.index, stage.dim, done, total_steps, rate,
          _format_eta((total_steps - done) / max(rate, 1e-9)),
          last.get('total', float('nan')))
      t_progress, step_at_progress = now, done
    if hooks.should_stop() and done < total_steps:
      flush(done)
      ckpts.save(done, state, record(done))
      ckpts.wait()
      raise Preempted(f'stopped at step {done} of stage {stage.index}; the '
                      f'checkpoint is in {ckpts.directory}; re-run the same '
                      'command to resume')
  ckpts.wait()
  return state, elapsed + time.time() - t_start, last


def eval_settings(config, splits: dict, hooks, factor_dims: int) -> dict:
  """What a stage's scores depend on besides its parameters: the splits and
  their sizes, the swap protocol and the classifier (by fingerprint). A
  recorded entry scored under other settings is scored again."""
  out = {'splits': {name: len(split) for name, split in splits.items()}}
  if hooks.classifier is not None:
    out.update(num_permutations=config.eval.num_permutations,
               seed=config.seed, factor_dims=factor_dims,
               classifier=checkpoint.fingerprint(hooks.classifier.variables))
  return out


def _evaluate_stage(stage: _Stage, variables,
                    splits: dict[str, input_pipeline.Split], first_dim: int,
                    writer, hooks) -> dict:
  """Metrics of a finished stage, `{split name: {metric: value}}` for each of
  `splits`, and the PNG grids of the test split's first images."""
  cfg = stage.config
  value_range = train.value_range_of(stage.model)
  eval_fn = train.make_eval_step(stage.model)
  decode = jax.jit(lambda c: stage.model.apply(variables, c,
                                               method=stage.model.decode))
  encode = jax.jit(lambda x: stage.model.apply(variables, x,
                                               method=stage.model.encode))
  scale = 4.0 if value_range == '-11' else 1.0  # MSE in [0, 1] pixel units.
  out, codes = {}, {}
  for name, split in splits.items():
    parts = [eval_fn(variables, split.images[i:i + cfg.eval.batch_size])
             for i in range(0, len(split), cfg.eval.batch_size)]
    codes[name] = np.concatenate([np.asarray(p[1]) for p in parts])
    scores = evaluation.reconstruction_scores(
        np.concatenate([np.asarray(p[2]) for p in parts]) / scale)
    if hooks.classifier is not None:
      scores.update(evaluation.evaluate_autoencoder(
          encode, decode, split.images, split.labels, hooks.classifier.logits,
          factor_dims=first_dim, value_range=value_range,
          num_permutations=cfg.eval.num_permutations, seed=cfg.seed,
          batch_size=cfg.eval.batch_size))
    out[name] = scores
    writer.write_scalars(0, {f'{name}/{k}': v for k, v in scores.items()})

  test, test_codes = splits['test'], codes['test']
  m = min(cfg.eval.num_images, len(test))
  originals = pictures.to_unit(train.to_float(test.images[:m], value_range),
                               value_range)
  recon = pictures.to_unit(decode(test_codes[:m]), value_range)
  rec_grid = pictures.grid(np.stack([originals, recon]))
  steps = cfg.eval.traversal_steps
  trav = pictures.traversal_codes(test_codes[0], test_codes, steps)
  trav_images = pictures.to_unit(
      decode(trav.reshape(-1, stage.dim)), value_range)
  trav_grid = pictures.grid(trav_images.reshape(stage.dim, steps,
                                                *trav_images.shape[1:]))
  if jax.process_index() == 0:
    pictures.save_png(os.path.join(stage.dir, 'reconstructions.png'), rec_grid)
    pictures.save_png(os.path.join(stage.dir, 'traversals.png'), trav_grid)
  writer.write_images(0, {'reconstructions': rec_grid[None],
                          'traversals': trav_grid[None]})
  return out


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       hooks: Optional[Hooks] = None) -> dict:
  """Runs or resumes the whole growth chain; returns the summary dict."""
  hooks = hooks or Hooks()
  dims = validate(config)
  check_workdir(config, workdir)
  train_split = input_pipeline.load_split(config.data, 'train')
  # Scored at every stage: the validation split (if any) for choices, the
  # test split for the report.
  eval_splits = {'test': input_pipeline.load_split(config.data, 'test')}
  if config.data.get('validation', 0):
    eval_splits = {'validation': input_pipeline.load_split(
        config.data, 'validation'), **eval_splits}
  image_shape = tuple(train_split.images.shape[1:])
  mesh = claim_workdir(config, workdir, len(train_split))
  summary = _load_summary(workdir)
  summary['config'] = json.loads(config.to_json())
  if hooks.classifier is not None:
    summary['classifier_test_accuracy'] = hooks.classifier.test_accuracy
  settings = eval_settings(config, eval_splits, hooks, dims[0])
  done = {s['stage']: s for s in summary['stages']}
  first, parent = None, None
  for index, dim in enumerate(dims):
    stage = _Stage(config, workdir, index, dim, image_shape)
    teacher = None
    if index > 0:
      teacher = first if config.growth.teacher == 'first' else parent
    variables = _initial_variables(stage, parent)
    state = train.create_train_state(variables, stage.tx)
    batcher = input_pipeline.Batcher(
        train_split, config.train.batch_size, seed=config.seed * 1000 + index,
        process_index=jax.process_index(), process_count=jax.process_count())
    total = (config.train.steps_per_stage or
             config.train.epochs_per_stage * batcher.steps_per_epoch)
    ckpts, state, start, elapsed = open_stage(
        stage.dir, state, config.checkpoint.keep, total,
        f'stage {index} (k={dim})')
    writer = StageWriter(stage.dir)
    try:
      last = {}
      if start < total:
        state, elapsed, last = _train_stage(stage, teacher, state, start, total,
                                            elapsed, batcher, ckpts, writer,
                                            hooks, mesh)
      variables = parallel.local_copy(train.variables_of(state))
      fp = checkpoint.fingerprint(variables)
      entry = done.get(index)
      if (entry is None or entry.get('fingerprint') != fp or
          entry.get('eval') != settings):
        entry = {'stage': index, 'latent_dim': dim,
                 'teacher_stage': None if teacher is None else (
                     0 if config.growth.teacher == 'first' else index - 1),
                 'teacher_fingerprint': None if teacher is None else
                                        checkpoint.fingerprint(teacher[1]),
                 'steps': total, 'wall_time_s': round(elapsed, 2),
                 'train_losses': last, 'fingerprint': fp, 'eval': settings}
        entry.update(_evaluate_stage(stage, variables, eval_splits, dims[0],
                                     writer, hooks))
        done[index] = entry
        summary['stages'] = [done[i] for i in sorted(done)]
        _write_summary(workdir, summary)
        test = entry['test']
        logging.info('stage %d (k=%d) done: test MSE %.5f, PSNR %.2f dB%s',
                     index, dim, test['mse'], test['psnr'],
                     f", swap acc {test['swap_acc']:.3f}"
                     if 'swap_acc' in test else '')
      else:
        logging.info('stage %d (k=%d) already complete; not retrained', index,
                     dim)
    finally:
      writer.flush()
      writer.close()
      ckpts.close()
    parent = (stage.model, variables)
    if index == 0:
      first = parent
  return summary


def load_stage(workdir: str, index: int = -1):
  """The config, model and latest variables of stage `index` of a growth
  chain in `workdir` (-1: its last finished stage).

  Raises:
    ConfigError: `workdir` holds no growth-chain run, or no such stage.
    checkpoint.CheckpointError: the stage's checkpoints do not fit or cannot
      be read.
  """
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise ConfigError(f'{workdir} has no config.json; pass the --workdir of '
                      'a launch/main.py run')
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  if 'growth' not in config:
    raise ConfigError(f'{workdir} holds a run of another kind (no growth); '
                      'pass the --workdir of a growth-chain run')
  summary = _load_summary(workdir)
  finished = [s['stage'] for s in summary['stages']]
  if index < 0:
    if not finished:
      raise ConfigError(f'{workdir} has no finished stage yet; run '
                        'launch/main.py on it first')
    index = finished[-1]
  dims = stage_dims(config.growth)
  if not 0 <= index < len(dims):
    raise ConfigError(f'stage {index} is not in {workdir}; its stages are '
                      f'0..{len(dims) - 1}')
  shape = input_pipeline.IMAGE_SHAPES[config.data.name]
  stage = _Stage(config, workdir, index, dims[index], shape)
  like = train.create_train_state(_initial_variables(stage, None), stage.tx)
  directory = os.path.join(stage.dir, 'checkpoints')
  restored = None
  if os.path.isdir(directory):
    ckpts = checkpoint.Checkpoints(directory)
    try:
      restored = ckpts.restore_latest(like)
    finally:
      ckpts.close()
  if restored is None:
    raise ConfigError(f'stage {index} of {workdir} has no checkpoint yet; '
                      'run launch/main.py on it first')
  return config, stage.model, train.variables_of(restored[0])
