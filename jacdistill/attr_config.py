"""The attribute chain's config checks (`validate`): everything a run of
`attr_chain` would trip over is refused with a ConfigError that names the
field and the fix, before any data is read or code compiled; and how a
stage's fields are read (`stage_field`, `stage_weights`).
"""

from jacdistill import celeba
from jacdistill import input_pipeline
from jacdistill import stages
from jacdistill import train
from jacdistill import workdir_files

ConfigError = stages.ConfigError

# In memory (classes as one-hot attributes), or streamed (CelebA).
DATASETS = input_pipeline.IN_MEMORY_DATASETS + (celeba.CELEB_A,)
# A stage's model: the attribute scores in the code (the teacher, students
# and baselines), or Fader Networks (the attributes fed to the decoder).
KINDS = ('autoencoder', 'fader')


def validate(config) -> list[str]:
  """Raises ConfigError for anything a run would trip over; returns the order."""
  order = list(config.stage_order)
  if not order:
    raise ConfigError('stage_order is empty; name at least one stage')
  missing = [n for n in order if n not in config.stages]
  if missing:
    raise ConfigError(f'stage_order names {missing}, which are not in '
                      f'config.stages ({sorted(config.stages.keys())})')
  if len(set(order)) != len(order):
    raise ConfigError(f'stage_order={order} repeats a stage')
  _validate_data(config)
  for i, name in enumerate(order):
    stage = config.stages[name]
    for field in ('init', 'teacher'):
      ref = stage[field]
      if ref and ref not in order[:i]:
        raise ConfigError(f'stages.{name}.{field}={ref!r} must name an earlier '
                          f'stage of stage_order ({order[:i]}) or be empty')
    if stage.nuisance < 1:
      raise ConfigError(f'stages.{name}.nuisance={stage.nuisance} must be >= 1')
    if stage_field(stage, 'epochs') < 0:
      raise ConfigError(f'stages.{name}.epochs={stage.epochs} must be >= 0 '
                        '(0 = train.epochs_per_stage)')
    if stage_field(stage, 'steps') < 0:
      raise ConfigError(f'stages.{name}.steps={stage.steps} must be >= 0 '
                        '(0 = train.steps_per_stage or the epochs)')
    if stage.init and stage.nuisance < config.stages[stage.init].nuisance:
      raise ConfigError(f'stages.{name}.nuisance={stage.nuisance} is smaller '
                        f'than that of its init stage {stage.init!r}; growth '
                        'only lengthens the code')
    weights = stage_weights(config, name)
    if (weights.jac > 0 or weights.lat > 0) and not stage.teacher:
      raise ConfigError(f'stages.{name} has loss.jac or loss.lat > 0 but no '
                        f'teacher; set stages.{name}.teacher or zero them')
    _validate_trainable(config, name)
    _validate_kind(config, name, order[:i])
  if config.train.batch_size < 1:
    raise ConfigError(f'train.batch_size={config.train.batch_size} must be >= 1')
  if config.eval.test_examples < 0 or config.eval.flip_examples < 0:
    raise ConfigError(f'eval.test_examples={config.eval.test_examples} and '
                      f'eval.flip_examples={config.eval.flip_examples} must '
                      'be >= 0 (0 = all)')
  if not config.train.learning_rate > 0:
    raise ConfigError(f'train.learning_rate={config.train.learning_rate} '
                      'must be > 0')
  return order


def default_stage(config) -> str:
  """The stage a user's edit opens without --stage: `default_stage` where
  the config names one of its stages (the recipe's last student), else the
  last stage with the scores in its code (not a Fader stage, whose decoder
  takes the attributes as an input)."""
  order = list(config.stage_order)
  named = config.get('default_stage', '')
  if named in order:
    return named
  editable = [n for n in order
              if stage_field(config.stages[n], 'kind') == 'autoencoder']
  return (editable or order)[-1]


def stage_field(spec, name: str):
  """A stage field that the config.json of an older workdir may lack."""
  return spec.get(name, workdir_files.ADDED_FIELDS[name])


def _validate_trainable(config, name: str) -> None:
  """A decoder-only stage needs an init stage whose encoder it keeps."""
  stage = config.stages[name]
  trainable = stage_field(stage, 'trainable')
  if trainable not in train.TRAINABLE:
    raise ConfigError(f'stages.{name}.trainable={trainable!r} is not one of '
                      f'{train.TRAINABLE}')
  if trainable == 'all':
    return
  if not stage.init:
    raise ConfigError(f"stages.{name}.trainable='decoder' would freeze a "
                      f'random encoder; set stages.{name}.init to the stage '
                      'whose encoder it keeps')
  if stage.nuisance != config.stages[stage.init].nuisance:
    raise ConfigError(f"stages.{name}.trainable='decoder' keeps the encoder "
                      f'of {stage.init!r}, so its nuisance must be that '
                      f"stage's ({config.stages[stage.init].nuisance}), not "
                      f'{stage.nuisance}')


def _validate_kind(config, name: str, earlier: list[str]) -> None:
  """A Fader stage stands alone: fresh, no teacher, reconstruction and its
  adversary only; no stage grows from it or learns from it (its code holds
  the given attributes, not scores)."""
  stage = config.stages[name]
  kind = stage_field(stage, 'kind')
  if kind not in KINDS:
    raise ConfigError(f'stages.{name}.kind={kind!r} is not one of {KINDS}')
  for field in ('init', 'teacher'):
    if stage[field] in earlier and stage_field(config.stages[stage[field]],
                                               'kind') == 'fader':
      raise ConfigError(f'stages.{name}.{field}={stage[field]!r} is a Fader '
                        'stage, which no stage grows from or learns from')
  if kind != 'fader':
    return
  if stage.init or stage.teacher or stage_field(stage, 'trainable') != 'all':
    raise ConfigError(f"stages.{name} (kind='fader') starts fresh and has no "
                      "teacher; set its init and teacher to '' and its "
                      "trainable to 'all'")
  weights = stage_weights(config, name)
  others = [f for f in ('lat', 'jac', 'xcov', 'attr', 'cycle_attr', 'cycle_z')
            if getattr(weights, f) > 0]
  if others:
    raise ConfigError(f"stages.{name} (kind='fader') trains on rec and its "
                      f'adversary only; set stages.{name}.loss.'
                      f'{others[0]} to 0')
  adv = stage.adversary
  if not adv.weight >= 0 or adv.ramp_steps < 0 or not adv.hidden:
    raise ConfigError(f'stages.{name}.adversary needs weight >= 0, '
                      f'ramp_steps >= 0 and hidden widths; got weight='
                      f'{adv.weight}, ramp_steps={adv.ramp_steps}, hidden='
                      f'{tuple(adv.hidden)}')


def _validate_data(config) -> None:
  """The dataset, its attributes, image size and evaluation split."""
  data = config.data
  if data.name not in DATASETS:
    raise ConfigError(f'data.name={data.name!r} is not one of {DATASETS}')
  if config.train.get('device_loop', False) and data.name == celeba.CELEB_A:
    raise ConfigError('train.device_loop=True keeps an in-memory dataset on '
                      'the devices, and celeb_a is streamed; set it False')
  if len(data.attributes) != config.model.num_attributes:
    raise ConfigError(f'data.attributes names {len(data.attributes)} '
                      f'attributes but model.num_attributes='
                      f'{config.model.num_attributes}; set '
                      f'--config.model.num_attributes={len(data.attributes)}')
  size = data.image_size
  if int(size) != size or size < 8 or int(size) & (int(size) - 1):
    raise ConfigError(f'data.image_size={size} must be a power of two >= 8 '
                      '(e.g. 64, 128 or 256)')
  if data.name == celeba.CELEB_A:
    try:
      celeba.celeb_a_attribute_names(data)
    except ValueError as e:
      raise ConfigError(f'data.attributes: {e}') from e
    if not data.attributes:
      raise ConfigError('data.attributes is empty; name the CelebA attributes '
                        'to model (celeba.CELEB_A_ATTRIBUTES)')
    if config.model.image_channels != 3:
      raise ConfigError(f'model.image_channels={config.model.image_channels} '
                        'but CelebA images are RGB; set it to 3')
  splits = (('validation', 'test') if data.name == celeba.CELEB_A
            or data.get('validation', 0) else ('test',))
  if config.eval.split not in splits:
    raise ConfigError(f'eval.split={config.eval.split!r} is not one of '
                      f'{splits} for {data.name}')


def stage_weights(config, name: str) -> train.LossWeights:
  """The loss weights of stage `name` (ConfigError if they are bad)."""
  try:
    return train.LossWeights.from_config(config.stages[name].loss)
  except ValueError as e:
    raise ConfigError(f'stages.{name}.loss: {e}') from e
