"""The growth chain: a teacher, then students one code dim longer per stage.

`train_and_evaluate(config, workdir)` runs (or resumes) every stage of the
chain through the stage loop (`stages.run`). Stage s writes under
`workdir/stage_XX/`: orbax checkpoints, TensorBoard events and PNG grids;
`workdir/summary.json` gets a record per finished stage. Stage 0 (the
teacher) starts from a fresh initialisation; stage s from stage s-1 grown
by one dim, supervised by the frozen stage s-1 (or stage 0).

With `model.name='vae'` the chain is one stage, a beta-VAE of size
`growth.start_dim` (`vae.py`, KL weight `loss.beta`), scored as the
students are: its `eval.swap_dims` most informative dims are swapped.
"""

import json
from typing import Optional

from absl import logging
import flax.linen as nn
import jax
import ml_collections
import numpy as np

from jacdistill import disentanglement
from jacdistill import growth
from jacdistill import input_pipeline
from jacdistill import metrics
from jacdistill import models
from jacdistill import paths
from jacdistill import pictures
from jacdistill import rng
from jacdistill import stages
from jacdistill import train
from jacdistill import vae
from jacdistill import workdir_files

ConfigError = stages.ConfigError
MODEL_NAMES = ('mlp', 'conv', 'vae')
# Which stages normalise their code (BatchNorm without affine): 'first' the
# stage-0 teacher only (upstream: its students are `autoencoder_nobatchnorm`),
# 'all' every stage, 'none' no stage.
CODE_NORMS = ('first', 'all', 'none')


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
  if model_cfg.name == 'vae':
    return models.GaussianMLPAutoencoder(
        latent_dim=latent_dim, image_shape=image_shape,
        hidden=tuple(model_cfg.hidden), output=model_cfg.output)
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
  if config.model.name == 'vae':
    _validate_vae(config, dims)
  for name in ('batch_size', 'epochs_per_stage'):
    if config.train[name] < 1:
      raise ConfigError(f'train.{name}={config.train[name]} must be >= 1')
  if not config.train.learning_rate > 0:
    raise ConfigError(f'train.learning_rate={config.train.learning_rate} '
                      'must be > 0')
  return dims


def _validate_vae(config, dims: list[int]) -> None:
  """A beta-VAE run is one stage of Bernoulli pixel means."""
  if len(dims) != 1:
    raise ConfigError(f"model.name='vae' trains one stage; set growth.end_dim"
                      f' to growth.start_dim ({dims[0]}), not {dims[-1]}')
  if config.model.output != 'sigmoid':
    raise ConfigError(f"model.name='vae' decodes Bernoulli means; set "
                      f"model.output='sigmoid', not {config.model.output!r}")
  if not config.loss.get('beta', -1.0) >= 0:
    raise ConfigError(f"model.name='vae' needs loss.beta >= 0 (its KL "
                      f"weight); got {config.loss.get('beta')}")
  swap = factor_dims_of(config, dims)
  if not 1 <= swap <= dims[0]:
    raise ConfigError(f'eval.swap_dims={swap} must lie in [1, {dims[0]}]')


def factor_dims_of(config, dims: list[int]) -> int:
  """The code dims a stage's swap exchanges: the teacher's (the first
  stage's code), or `eval.swap_dims` where set (a beta-VAE)."""
  return config.eval.get('swap_dims', 0) or dims[0]


def eval_settings(config, splits: dict, hooks: stages.Hooks,
                  factor_dims: int) -> dict:
  """What a stage's scores depend on besides its parameters: the splits and
  their sizes, the disentanglement scores' settings, the swap protocol and the
  classifier (by fingerprint)."""
  out = {'splits': {name: len(split) for name, split in splits.items()},
         'matmul_precision': stages.matmul_precision(config),
         'disentanglement': {**disentanglement.PROTOCOL, 'seed': config.seed}}
  if hooks.classifier is not None:
    out.update(num_permutations=config.eval.num_permutations,
               seed=config.seed, factor_dims=factor_dims,
               **stages.classifier_settings(hooks))
  return out


def make_stage(config, workdir: str, index: int,
               image_shape: tuple[int, ...]) -> stages.Stage:
  """Stage `index` of the growth chain of `config` in `workdir`."""
  dim = stage_dims(config.growth)[index]
  return stages.Stage(
      index=index, label=f'stage {index} (k={dim})',
      dir=paths.join(workdir, f'stage_{index:02d}'),
      model=build_model(config.model, dim, image_shape, index),
      weights=stage_weights(config.loss, index),
      tx=train.make_optimizer(
          config.train.learning_rate, config.train.weight_decay,
          config.train.b1, config.train.b2, config.train.clip_norm),
      trainable='all', keys=train.stage_keys(config.seed, index),
      trainer=_vae_trainer(config) if config.model.name == 'vae' else None)


def _vae_trainer(config) -> stages.Trainer:
  """A beta-VAE stage: train.py's state, `vae.py`'s step."""
  return stages.Trainer(
      create_state=train.create_train_state,
      make_step=lambda model, teacher, tx, weights, learning_rate, trainable: (
          vae.make_train_step(model, tx, config.loss.beta, learning_rate)),
      variables_of=train.variables_of)


def evaluate_stage(stage: stages.Stage, config, variables,
                   splits: dict[str, input_pipeline.Split], factor_dims: int,
                   writer, hooks: stages.Hooks) -> dict:
  """Metrics of a finished stage, `{split name: {metric: value}}` for each of
  `splits`, and the PNG grids of the test split's first images."""
  model = stage.model
  value_range = train.value_range_of(model)
  decode = jax.jit(lambda c: model.apply(variables, c, method=model.decode))
  encode = jax.jit(lambda x: model.apply(variables, x, method=model.encode))
  batch = config.eval.batch_size
  out, codes = {}, {}
  for name, split in splits.items():
    codes[name], mse01 = train.encode_split(model, variables, split.images,
                                            batch)
    scores = metrics.reconstruction_scores(mse01)
    # The code against the class, disentanglement_lib's scores.
    scores.update(disentanglement.scores(codes[name], split.labels[:, None],
                                         seed=config.seed))
    if hooks.classifier is not None:
      scores.update(metrics.evaluate_autoencoder(
          encode, decode, split.images, split.labels, hooks.classifier.logits,
          factor_dims=factor_dims, value_range=value_range,
          num_permutations=config.eval.num_permutations, seed=config.seed,
          batch_size=batch))
    out[name] = scores
    writer.write_scalars(0, {f'{name}/{k}': v for k, v in scores.items()})

  test, test_codes = splits['test'], codes['test']
  m = min(config.eval.num_images, len(test))
  originals = pictures.to_unit(train.to_float(test.images[:m], value_range),
                               value_range)
  recon = pictures.to_unit(decode(test_codes[:m]), value_range)
  rec_grid = pictures.labelled_grid(
      np.stack([originals, recon]), row_labels=['test image',
                                                'reconstruction'])
  steps = config.eval.traversal_steps
  dim = test_codes.shape[1]
  trav = pictures.traversal_codes(test_codes[0], test_codes, steps)
  trav_images = pictures.to_unit(decode(trav.reshape(-1, dim)), value_range)
  trav_grid = pictures.labelled_grid(
      trav_images.reshape(dim, steps, *trav_images.shape[1:]),
      column_titles=traversal_titles(steps),
      row_labels=[f'dim {j}' + (' (teacher)' if j < factor_dims else '')
                  for j in range(dim)])
  if jax.process_index() == 0:
    pictures.save_png(paths.join(stage.dir, 'reconstructions.png'),
                      rec_grid, scale=1)
    pictures.save_png(paths.join(stage.dir, 'traversals.png'), trav_grid,
                      scale=1)
  writer.write_images(0, {'reconstructions': rec_grid[None],
                          'traversals': trav_grid[None]})
  return out


def traversal_titles(steps: int) -> list[str]:
  """Column heads of a traversal grid (`pictures.traversal_codes`): each
  dim goes from its 2nd to its 98th test percentile."""
  return ['p2'] + [''] * (steps - 2) + ['p98'] if steps > 1 else ['p2']


@rng.draws
@stages.run_under_precision
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       hooks: Optional[stages.Hooks] = None) -> dict:
  """Runs or resumes the whole growth chain; returns the summary dict."""
  hooks = hooks or stages.Hooks()
  dims = validate(config)
  workdir_files.check_workdir(config, workdir)
  train_split = input_pipeline.load_split(config.data, 'train')
  # Scored at every stage: the validation split (if any) for choices, the
  # test split for the report.
  eval_splits = {'test': input_pipeline.load_split(config.data, 'test')}
  if config.data.get('validation', 0):
    eval_splits = {'validation': input_pipeline.load_split(
        config.data, 'validation'), **eval_splits}
  image_shape = tuple(train_split.images.shape[1:])
  mesh = workdir_files.claim_workdir(config, workdir, len(train_split))
  summary = workdir_files.load_summary(workdir)
  summary['config'] = json.loads(config.to_json())
  if hooks.classifier is not None:
    summary['classifier_test_accuracy'] = hooks.classifier.test_accuracy
  factor_dims = factor_dims_of(config, dims)
  settings = eval_settings(config, eval_splits, hooks, factor_dims)
  # Entries of stages past a lowered growth.end_dim are dropped.
  done = {s['stage']: s for s in summary['stages'] if s['stage'] < len(dims)}
  first, parent = None, None
  for index, dim in enumerate(dims):
    stage = make_stage(config, workdir, index, image_shape)
    teacher = None
    if index > 0:
      teacher = first if config.growth.teacher == 'first' else parent
    variables = stages.initial_variables(
        stage.model, stage.keys, parent and parent[1], config.growth.init)
    batcher = input_pipeline.Batcher(
        train_split, config.train.batch_size, seed=config.seed * 1000 + index,
        process_index=jax.process_index(), process_count=jax.process_count())
    total = (config.train.steps_per_stage or
             config.train.epochs_per_stage * batcher.steps_per_epoch)
    describe = {'stage': index, 'latent_dim': dim,
                'teacher_stage': None if teacher is None else (
                    0 if config.growth.teacher == 'first' else index - 1)}
    variables, entry, scored = stages.run(
        stage, config=config, variables=variables, teacher=teacher,
        batcher=batcher, total=total, hooks=hooks, mesh=mesh,
        recorded=done.get(index), describe=describe, settings=settings,
        evaluate=lambda v, writer, stage=stage: evaluate_stage(
            stage, config, _scored_variables(stage, config, v, train_split),
            eval_splits, factor_dims, writer, hooks))
    done[index] = entry
    summary['stages'] = [done[i] for i in sorted(done)]
    workdir_files.write_summary(workdir, summary)
    if scored:
      test = entry['test']
      logging.info('stage %d (k=%d) done: test MSE %.5f, PSNR %.2f dB%s',
                   index, dim, test['mse'], test['psnr'],
                   f", swap acc {test['swap_acc']:.3f}"
                   if 'swap_acc' in test else '')
    parent = (stage.model, variables)
    if index == 0:
      first = parent
  return summary


def _scored_variables(stage: stages.Stage, config, variables,
                      train_split: input_pipeline.Split):
  """What a stage is scored with: its variables, a beta-VAE's with its code
  dims in decreasing mean KL on the training images (`vae.sort_dims`)."""
  if config.model.name != 'vae':
    return variables
  kl = vae.kl_per_dim(stage.model, variables, train_split.images,
                      config.eval.batch_size)
  return vae.sort_dims(stage.model, variables, np.argsort(-kl, kind='stable'))


def load_stage(workdir: str, index: int = -1):
  """The config, model and latest variables of stage `index` of a growth
  chain in `workdir` (-1: its last finished stage).

  Raises:
    ConfigError: `workdir` holds no growth-chain run, or no such stage.
    checkpoint.CheckpointError: the stage's checkpoints do not fit or cannot
      be read.
  """
  config = workdir_files.read_config(workdir, 'growth')
  finished = [s['stage'] for s in workdir_files.load_summary(workdir)['stages']]
  if index < 0:
    if not finished:
      raise ConfigError(f'{workdir} has no finished stage yet; run '
                        'launch/main.py on it first')
    index = finished[-1]
  dims = stage_dims(config.growth)
  if not 0 <= index < len(dims):
    raise ConfigError(f'stage {index} is not in {workdir}; its stages are '
                      f'0..{len(dims) - 1}')
  stage = make_stage(config, workdir, index,
                     input_pipeline.IMAGE_SHAPES[config.data.name])
  return config, stage.model, stages.restore_stage(
      stage, f'stage {index} of {workdir}')
