"""The attribute chain (docs/method.md part B): a Fader teacher, then students.

`train_and_evaluate(config, workdir, hooks)` runs (or resumes) the stages of
`config.stage_order` (see configs/fashion_attr.py, configs/celeba_attr.py).
The data are an in-memory dataset whose classes are one-hot attributes, or
CelebA streamed from tfds with its own (independent) attributes and scored
on `eval.test_examples` images read into memory. Each stage is a
`FaderAutoencoder` with its own nuisance size; it starts from a fresh
initialisation or from an earlier stage by `growth.grow` (`init`), and may be
supervised by another earlier, frozen stage (`teacher`). A stage of
`kind='fader'` is the Fader Networks baseline instead (`fader.py`): a
`FaderNetwork`, fed the attributes, and its latent discriminator, from a
fresh initialisation; its edits set the decoder's attribute input. A stage with
`trainable='decoder'` (upstream's cycle fine-tuning of the teacher) keeps its
init stage's encoder exactly and trains the decoder. Stage `name` writes
under `workdir/name/`: orbax checkpoints, TensorBoard events and `edits.png`
(rows: test images; columns: input, reconstruction, then each attribute set
to +strength); `workdir/summary.json` gets a record per finished stage with
test PSNR and flip accuracy (`attributes.flip_accuracy`).

Every stage runs through the stage loop both chains share (`stages.run`):
a finished stage is never retrained, an interrupted one continues from its
checkpoint, and stage i's batch at step s depends on (seed, i, s) alone,
streamed or not.
"""

import dataclasses
import functools
import json
from typing import Callable, Optional

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jacdistill import attr_config
from jacdistill import attributes
from jacdistill import celeba
from jacdistill import device_loop
from jacdistill import disentanglement
from jacdistill import fader
from jacdistill import input_pipeline
from jacdistill import metrics
from jacdistill import models
from jacdistill import paths
from jacdistill import pictures
from jacdistill import rng
from jacdistill import stages
from jacdistill import train
from jacdistill import workdir_files

ConfigError = stages.ConfigError
Hooks = stages.Hooks
VALUE_RANGE = '-11'  # The Fader decoder ends in tanh.
def build_model(config, nuisance: int,
                kind: str = 'autoencoder') -> models.FaderAutoencoder:
  m = config.model
  cls = models.FaderNetwork if kind == 'fader' else models.FaderAutoencoder
  return cls(
      image_size=config.data.image_size, num_attributes=m.num_attributes,
      nuisance=nuisance, init_channels=m.init_channels,
      max_channels=m.max_channels, image_channels=m.image_channels)


def make_stage(config, workdir: str, name: str) -> stages.Stage:
  """The stage `name` of the attribute chain of `config` in `workdir`."""
  spec = config.stages[name]
  kind = attr_config.stage_field(spec, 'kind')
  model = build_model(config, spec.nuisance, kind)
  trainable = attr_config.stage_field(spec, 'trainable')
  index = list(config.stage_order).index(name)
  keys = train.stage_keys(config.seed, index)
  return stages.Stage(
      index=index, label=f'stage {name} (code {model.code_size})',
      dir=paths.join(workdir, name), model=model,
      weights=attr_config.stage_weights(config, name),
      tx=train.make_optimizer(
          config.train.learning_rate, config.train.weight_decay,
          config.train.b1, config.train.b2, config.train.clip_norm,
          trainable=trainable),
      trainable=trainable, keys=keys, inputs=('image', 'attributes'),
      trainer=(_fader_trainer(config, spec, model, keys) if kind == 'fader'
               else None))


def _fader_trainer(config, spec, model: models.FaderNetwork,
                   keys: train.StageKeys) -> stages.Trainer:
  """A Fader stage's state (its discriminator's too) and step."""
  t, adv = config.train, spec.adversary
  adversary = fader.Adversary(
      discriminator=models.LatentDiscriminator(
          num_attributes=model.num_attributes, hidden=tuple(adv.hidden)),
      tx=train.make_optimizer(adv.learning_rate or t.learning_rate,
                              t.weight_decay, t.b1, t.b2, t.clip_norm),
      weight=adv.weight, ramp_steps=adv.ramp_steps,
      # The autoencoder's initialisation takes keys.init itself.
      init_key=jax.random.fold_in(keys.init, 1))
  return stages.Trainer(
      create_state=functools.partial(fader.create_state, adversary, model),
      make_step=lambda model, teacher, tx, weights, learning_rate, trainable: (
          fader.make_train_step(adversary, model, tx, weights, learning_rate)),
      variables_of=fader.variables_of)


class _AttributeBatcher:
  """A Batcher whose batches also carry the labels as +-1 attribute vectors."""

  def __init__(self, batcher: input_pipeline.Batcher, num_attributes: int):
    self._batcher = batcher
    self._num_attributes = num_attributes

  @property
  def steps_per_epoch(self) -> int:
    return self._batcher.steps_per_epoch

  def batch(self, step: int) -> dict[str, np.ndarray]:
    b = self._batcher.batch(step)
    return dict(b, attributes=input_pipeline.one_hot_attributes(
        b['label'], self._num_attributes))

  def device_data(self) -> device_loop.DeviceData:
    """The split on the devices; attributes made there from the labels."""
    inner = self._batcher.device_data()
    a = self._num_attributes
    return dataclasses.replace(inner, make_batch=lambda g: dict(
        g, attributes=2.0 * jax.nn.one_hot(g['label'], a) - 1.0))


def load_split(config, split: str) -> input_pipeline.Split:
  """The split with images resized (padded) to the model's size."""
  s = input_pipeline.load_split(config.data, split)
  images = input_pipeline.resize(s.images, config.data.image_size)
  if images.shape[-1] != config.model.image_channels:
    raise ConfigError(f'model.image_channels={config.model.image_channels} but '
                      f'{config.data.name} has {images.shape[-1]} channels')
  if s.labels.max(initial=0) >= config.model.num_attributes:
    raise ConfigError(f'model.num_attributes={config.model.num_attributes} is '
                      f'fewer than the {config.data.name} classes')
  return input_pipeline.Split(images=images, labels=s.labels)


class _Data:
  """Training batches by stage and step, and the evaluation images.

  In-memory datasets: `Batcher` over the train split, classes as one-hot
  attributes. CelebA: `CelebABatcher` streams with the attributes of the
  dataset. Either way stage i's batch at step s is a function of
  (seed, i, s), so a resumed stage sees the batches it would have seen.

  Attributes:
    num_train: examples in the train split.
    test_images: the first `eval.test_examples` images (0 = all) of
      `eval.split`, uint8 or float32 in [-1, 1], (N, S, S, C).
    test_attributes: their attributes, float32 (N, A) in {-1, +1}.
    level_images, level_attributes: the first `eval.level_examples`
      training images and their attributes, whose codes give each model's
      own score levels (`attributes.attribute_levels`).
  """

  def __init__(self, config):
    self._config = config
    self._streamed = config.data.name == celeba.CELEB_A
    n = config.eval.test_examples
    levels = config.eval.level_examples
    if self._streamed:
      self.num_train = celeba.celeb_a_num_examples(config.data,
                                                           'train')
      test = celeba.celeb_a_arrays(config.data, config.eval.split, n)
      self.test_images = test['image']
      self.test_attributes = test['attributes'].astype(np.float32)
      train = (celeba.celeb_a_arrays(config.data, 'train', levels) if levels
               else {'image': self.test_images[:0],
                     'attributes': self.test_attributes[:0]})
      self.level_images = train['image']
      self.level_attributes = train['attributes'].astype(np.float32)
    else:
      self._train = load_split(config, 'train')
      self.num_train = len(self._train)
      test = load_split(config, config.eval.split)
      self.test_images = test.images[:n or None]
      self.test_attributes = input_pipeline.one_hot_attributes(
          test.labels[:n or None], config.model.num_attributes)
      self.level_images = self._train.images[:levels]
      self.level_attributes = input_pipeline.one_hot_attributes(
          self._train.labels[:levels], config.model.num_attributes)

  def batcher(self, index: int):
    """Stage `index`'s batches: `batch(step)` -> {'image', 'attributes'}."""
    cfg = self._config
    args = dict(batch_size=cfg.train.batch_size,
                seed=cfg.seed * 1000 + index,
                process_index=jax.process_index(),
                process_count=jax.process_count())
    if self._streamed:
      return celeba.CelebABatcher(
          cfg.data, shuffle_buffer=cfg.train.shuffle_buffer, **args)
    return _AttributeBatcher(input_pipeline.Batcher(self._train, **args),
                             cfg.model.num_attributes)


def _flip_predictor(config, handle) -> Callable:
  """How flip accuracy reads the classifier `handle`: `predict(images) ->
  bool (B, A)`.

  Raises:
    ConfigError: a CelebA run given a classifier without attribute logits,
      or without one of the run's attributes.
  """
  if config.data.name != celeba.CELEB_A:
    # The classifier sees the unpadded size it was trained on.
    return attributes.class_predictor(
        handle.logits, VALUE_RANGE,
        image_size=input_pipeline.IMAGE_SHAPES[config.data.name][0])
  names = list(handle.attributes)
  missing = [a for a in config.data.attributes if a not in names]
  if not names or missing:
    raise ConfigError(f'the classifier has no logits for {missing or "any"} '
                      'CelebA attributes; use the CelebA attribute '
                      'classifier (configs/celeba_classifier.py) or set '
                      'eval.classifier=False')
  return attributes.attribute_predictor(
      handle.logits, VALUE_RANGE, image_size=handle.image_size,
      columns=[names.index(a) for a in config.data.attributes])


def classes_are_attributes(cfg) -> bool:
  """Whether a run's attributes are its dataset's classes, one on per image
  (the in-memory datasets), so an edit that switches a class on switches the
  image's current class off (`attributes.edit_codes`'s `one_hot`)."""
  return cfg.data.name in input_pipeline.IN_MEMORY_DATASETS


def fader_codes(model: models.FaderNetwork, variables, images: np.ndarray,
                attributes: np.ndarray, batch_size: int
                ) -> tuple[np.ndarray, np.ndarray]:
  """A Fader model's codes `[attributes ; vec(z)]` (N, A + 4 N') of a split
  and its per-image MSEs (N,) in [0, 1] pixel units, reconstructed under
  the images' own attributes (`train.encode_split`'s counterpart)."""
  value_range = train.value_range_of(model)

  @jax.jit
  def apply(x, t):
    x = train.to_float(x, value_range)
    x_hat, code = model.apply(variables, x, t, train=False)
    return code, jnp.mean(jnp.square(x - x_hat).reshape(x.shape[0], -1), 1)

  parts = [apply(images[i:i + batch_size], attributes[i:i + batch_size])
           for i in range(0, len(images), batch_size)]
  return (np.concatenate([np.asarray(p[0]) for p in parts]),
          np.concatenate([np.asarray(p[1]) for p in parts]) / 4.0)


def evaluate_stage(stage: stages.Stage, config, variables, data: '_Data',
                   writer, predictor) -> dict:
  """PSNR, disentanglement_lib's scores of the code against the
  attributes and flip accuracy (with `predictor`, from `_flip_predictor`, if
  not None; at `eval.flip_strength` and at the model's own levels,
  `rel_flip_*`, from `data.level_images`) of a finished stage on
  `data.test_images`, as `{split: {metric: value}}`, and the edit grid of
  its first images. A Fader stage (`models.FaderNetwork`) reconstructs under
  the images' attributes, and its edits set them."""
  cfg = config
  a = cfg.model.num_attributes
  test_images, test_attributes = data.test_images, data.test_attributes
  n = len(test_images)
  model = stage.model
  decode = jax.jit(lambda c: model.apply(variables, c, method=model.decode))

  def encode(images, labels):
    if isinstance(model, models.FaderNetwork):
      return fader_codes(model, variables, images, labels, cfg.eval.batch_size)
    return train.encode_split(model, variables, images, cfg.eval.batch_size)

  codes, mse01 = encode(test_images, test_attributes)
  out = metrics.reconstruction_scores(mse01)
  # The code against the attributes, disentanglement_lib's scores; a Fader
  # stage's attributes are its decoder's input, so its nuisance code alone.
  own = codes[:, a:] if isinstance(model, models.FaderNetwork) else codes
  out.update(disentanglement.scores(own.reshape(n, -1), test_attributes,
                                    seed=cfg.seed))
  strength = cfg.eval.flip_strength
  one_hot = classes_are_attributes(cfg)
  if predictor is not None:
    edited = codes[:cfg.eval.flip_examples or n]
    out.update(attributes.flip_accuracy(
        decode, predictor, edited, a, strength=strength, one_hot=one_hot,
        batch_size=cfg.eval.batch_size))
    if len(data.level_images):
      levels = attributes.attribute_levels(
          encode(data.level_images, data.level_attributes)[0][:, :a],
          data.level_attributes, strength)
      relative = attributes.flip_accuracy(
          decode, predictor, edited, a, one_hot=one_hot,
          batch_size=cfg.eval.batch_size, levels=levels)
      out.update({'rel_' + k: v for k, v in relative.items()})
      out['levels'] = {'low': levels[0].tolist(), 'high': levels[1].tolist()}

  m = min(cfg.eval.num_images, n)
  columns = [train.to_float(test_images[:m], VALUE_RANGE), decode(codes[:m])]
  columns += [decode(attributes.edit_codes(codes[:m], a, j, strength,
                                           one_hot=one_hot)) for j in range(a)]
  grid = pictures.labelled_grid(
      np.stack([pictures.to_unit(c, VALUE_RANGE) for c in columns], axis=1),
      column_titles=['input', 'reconstruction'] + [
          f'{name}={strength:+g}' for name in cfg.data.attributes],
      row_labels=[f'test {i}' for i in range(m)])
  if jax.process_index() == 0:
    pictures.save_png(paths.join(stage.dir, 'edits.png'), grid, scale=1)
  writer.write_images(0, {'edits': grid[None]})
  split = cfg.eval.split
  writer.write_scalars(0, {f'{split}/{k}': v for k, v in out.items()
                           if np.isscalar(v)})
  return {split: out}


@rng.draws
@stages.run_under_precision
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       hooks: Optional[Hooks] = None) -> dict:
  """Runs or resumes every stage of `config.stage_order`; returns the summary."""
  hooks = hooks or Hooks()
  order = attr_config.validate(config)
  workdir_files.check_workdir(config, workdir)
  predictor = (None if hooks.classifier is None else
               _flip_predictor(config, hooks.classifier))
  data = _Data(config)
  mesh = workdir_files.claim_workdir(config, workdir, data.num_train)
  summary = workdir_files.load_summary(workdir)
  summary['config'] = json.loads(config.to_json())
  if hooks.classifier is not None:
    summary['classifier_test_accuracy'] = hooks.classifier.test_accuracy
    if hooks.classifier.attributes:
      summary['classifier_attribute_accuracy'] = dict(zip(
          hooks.classifier.attributes, hooks.classifier.attribute_accuracy))
  settings = {'split': config.eval.split, 'examples': len(data.test_images),
              'flip_examples': config.eval.flip_examples,
              'flip_strength': config.eval.flip_strength,
              'level_examples': len(data.level_images),
              'matmul_precision': stages.matmul_precision(config),
              'disentanglement': {**disentanglement.PROTOCOL,
                                  'seed': config.seed},
              **stages.classifier_settings(hooks)}
  done = {s['name']: s for s in summary['stages']}
  finished = {}  # name -> (model, variables)
  for index, name in enumerate(order):
    stage = make_stage(config, workdir, name)
    spec = config.stages[name]
    teacher = finished[spec.teacher] if spec.teacher else None
    parent = finished.get(spec.init)
    variables = stages.initial_variables(stage.model, stage.keys,
                                         parent and parent[1])
    batcher = data.batcher(index)
    epochs = (attr_config.stage_field(spec, 'epochs') or
              config.train.epochs_per_stage)
    total = (attr_config.stage_field(spec, 'steps') or
             config.train.steps_per_stage or epochs * batcher.steps_per_epoch)
    describe = {'stage': index, 'name': name, 'nuisance': spec.nuisance,
                'code_size': stage.model.code_size, 'init': spec.init or None,
                'teacher': spec.teacher or None,
                'trainable': stage.trainable,
                'kind': attr_config.stage_field(spec, 'kind')}
    variables, entry, scored = stages.run(
        stage, config=config, variables=variables, teacher=teacher,
        batcher=batcher, total=total, hooks=hooks, mesh=mesh,
        recorded=done.get(name), describe=describe, settings=settings,
        evaluate=lambda v, writer, stage=stage: evaluate_stage(
            stage, config, v, data, writer, predictor))
    done[name] = entry
    summary['stages'] = [done[n] for n in order if n in done]
    workdir_files.write_summary(workdir, summary)
    if scored:
      scores = entry[config.eval.split]
      logging.info('stage %s done: %s PSNR %.2f dB%s', name,
                   config.eval.split, scores['psnr'],
                   f", flip acc {scores['flip_acc']:.3f}"
                   if 'flip_acc' in scores else '')
    finished[name] = (stage.model, variables)
  return summary


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config of the attribute-chain run in `workdir` (ConfigError if none)."""
  return workdir_files.read_config(workdir, 'attribute')


def load_stage(workdir: str, name: str):
  """The config, model and latest variables of a stage of `workdir`.

  Raises:
    ConfigError: `workdir` holds no attribute-chain run, or no stage `name`.
    checkpoint.CheckpointError: the stage's checkpoints do not fit or cannot
      be read.
  """
  config = read_config(workdir)
  if name not in config.stage_order:
    raise ConfigError(f'stage {name!r} is not in {workdir}; its stages are '
                      f'{list(config.stage_order)}')
  stage = make_stage(config, workdir, name)
  return config, stage.model, stages.restore_stage(
      stage, f'stage {name!r} of {workdir}')
