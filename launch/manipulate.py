"""Edits your own images (or test images) with a trained stage or a shipped model.

  python launch/manipulate.py --workdir=workdirs/fashion_attr_quick \\
      --stage=student32 --image=shoe.png --set sandal=1.5 --set ankle_boot=-1 \\
      --sweep=bag --sweep_range=-2,2,5 --out=edits.png

  python launch/manipulate.py --workdir=workdirs/celeba_attr \\
      --image=face.jpg --set Smiling=1.5 --set Eyeglasses=1 --sweep=Male

  python launch/manipulate.py --pretrained=fashion_grow_k8 --test_index=0 \\
      --set dim0=1.2 --sweep=dim3

The model: --workdir (and --stage: an attribute stage's name or a growth
stage's index; default the last) of a launch/main.py run, or --pretrained=NAME,
a shipped model (pretrained/MANIFEST.json). Each image (PNG/JPEG, any size)
is centre-cropped to a square and resized as in training (to the dataset's
native size, then padded to the model's; CelebA: straight to the model's
size, so a face filling the square as in CelebA's aligned 178x178 crops
edits best); --test_index=I takes test image I instead. Edit names are the
run's data.attributes, or dim0, dim1, ... for a growth chain's code; an
unknown name or a value that is not a finite number is an error. One grid
row per image (labelled with its file name), one titled column each for:
input, reconstruction, every --set alone, all of them together (when there
are several, applied in order), then the sweep of --sweep over --sweep_range
(lo,hi,steps). Where the attributes are a dataset's classes (Fashion-MNIST),
setting one to a positive value also sets the image's current class to minus
that value, as the flip accuracy does: one class stays on. launch/explore.py's
"copy command" writes these calls.
"""

import sys


from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
import jax
import numpy as np
from PIL import Image

from jacdistill import attr_chain
from jacdistill import attr_config
from jacdistill import chain
from jacdistill import checkpoint
from jacdistill import editing
from jacdistill import input_pipeline
from jacdistill import models
from jacdistill import paths
from jacdistill import pictures
from jacdistill import pretrained
from jacdistill import stages
from jacdistill import train
from jacdistill import workdir_files

_WORKDIR = flags.DEFINE_string('workdir', None, 'Workdir of a launch/main.py run.')
_STAGE = flags.DEFINE_string('stage', None, 'Stage to use (attribute: name; growth: index); default the last.')
_PRETRAINED = flags.DEFINE_string('pretrained', None, 'A shipped model (pretrained/MANIFEST.json) instead of --workdir.')
_DIRECTORY = flags.DEFINE_string('directory', pretrained.DEFAULT_DIR, 'Where the shipped models are.')
_IMAGES = flags.DEFINE_multi_string('image', [], 'Input image (repeatable).')
_TEST_INDEX = flags.DEFINE_multi_integer('test_index', [], 'Test image by index (repeatable).')
_SET = flags.DEFINE_multi_string('set', [], 'NAME=VALUE edit (repeatable).')
_SWEEP = flags.DEFINE_string('sweep', None, 'Attribute (or dimJ) to sweep.')
_SWEEP_RANGE = flags.DEFINE_string('sweep_range', '-2,2,5', 'lo,hi,steps.')
_OUT = flags.DEFINE_string('out', 'manipulated.png', 'Output PNG.')


class ManipulateError(ValueError):
  """A bad argument; the message is one line naming it and the fix."""


def parse_edits(specs, names) -> list[tuple[int, float]]:
  """['smiling=1.5', ...] -> [(index in names, value), ...].

  Raises:
    ManipulateError: not NAME=VALUE, an unknown name, or a value that is not
      a finite number (a NaN or Inf would decode to an image of NaNs).
  """
  out = []
  for spec in specs:
    name, sep, value = spec.partition('=')
    if not sep:
      raise ManipulateError(f'--set {spec!r} is not NAME=VALUE')
    if name not in names:
      raise ManipulateError(f'unknown attribute {name!r}; known: '
                            f'{", ".join(names)}')
    try:
      number = float(value)
    except ValueError:
      raise ManipulateError(f'--set {spec!r}: {value!r} is not a number') from None
    if not editing.finite_float32(number):
      raise ManipulateError(f'--set {spec!r}: {value!r} is not a finite '
                            'float32 number')
    out.append((list(names).index(name), number))
  return out


def load_images(image_paths, config, kind: str = 'attribute') -> np.ndarray:
  """uint8 (N, S, S, C) images prepared as the training data was
  (`editing.prepare_image`)."""
  native, size, channels = editing.image_geometry(kind, config, config.model)
  out = []
  for path in image_paths:
    try:
      with paths.open(path, 'rb') as f:
        img = Image.open(f)
        img.load()
    except (OSError, ValueError, SyntaxError) as e:
      raise ManipulateError(f'cannot read image {path}: {e}') from None
    out.append(editing.prepare_image(img, native, size, channels))
  return np.stack(out)


def load_model(workdir=None, stage=None, pretrained_name=None,
               directory=pretrained.DEFAULT_DIR):
  """(kind, config, model, variables) of a workdir's stage or a shipped
  model."""
  if bool(workdir) == bool(pretrained_name):
    raise ManipulateError('pass --workdir=W (and --stage) or --pretrained=NAME')
  if pretrained_name:
    if stage is not None:
      raise ManipulateError('--stage goes with --workdir; a shipped model is '
                            'one stage')
    try:
      config, model, variables, entry = pretrained.load(pretrained_name,
                                                        directory)
    except pretrained.PretrainedError as e:
      raise ManipulateError(str(e)) from None
    if entry['kind'] == 'classifier':
      raise ManipulateError(f'{pretrained_name!r} is a classifier; pick an '
                            'autoencoder')
    return entry['kind'], config, model, variables
  path = paths.join(workdir, 'config.json')
  growth = (paths.exists(path) and
            workdir_files.chain_of(paths.read_json(path)) == 'growth')
  try:
    if growth:
      try:
        index = -1 if stage is None else int(stage)
      except ValueError:
        raise ManipulateError(f'--stage={stage!r}: a growth stage is an '
                              'index (0, 1, ...)') from None
      return ('growth', *chain.load_stage(workdir, index))
    if stage is None:
      stage = attr_config.default_stage(attr_chain.read_config(workdir))
      print(f'using stage {stage} (the run\'s default; --stage picks '
            'another)', file=sys.stderr)
    return ('attribute', *attr_chain.load_stage(workdir, stage))
  except checkpoint.CheckpointError as e:
    raise ManipulateError(str(e).splitlines()[0]) from None


def manipulate(workdir, stage, image_paths, sets, sweep=None,
               sweep_range=(-2.0, 2.0, 5), pretrained_name=None,
               test_indices=(), labelled=False,
               directory=pretrained.DEFAULT_DIR) -> np.ndarray:
  """The grid (uint8 HxWx3) described in the module docstring.

  With `labelled` (what the command line writes), `pictures.labelled_grid`:
  tiles enlarged, titled columns and labelled rows; without, the bare
  `pictures.grid` of the tiles at their own size.
  """
  if not image_paths and not test_indices:
    raise ManipulateError('no --image or --test_index given')
  kind, config, model, variables = load_model(workdir, stage, pretrained_name,
                                              directory)
  if isinstance(model, models.FaderNetwork):
    raise ManipulateError(
        f'stage {stage or pretrained_name!r} is a Fader Networks stage, whose '
        'decoder takes an '
        "image's attributes beside its code, which this command does not "
        'read; its edits are scored in summary.json and drawn in its '
        'edits.png')
  value_range = train.value_range_of(model)
  names = editing.edit_names(kind, config, model.code_size)
  edits = parse_edits(sets, names)
  lo, hi, steps = sweep_range
  if sweep is not None:
    parse_edits([f'{sweep}=0'], names)
    if not (editing.finite_float32(lo) and editing.finite_float32(hi)) or (
        steps < 1 or int(steps) != steps):
      raise ManipulateError(f'--sweep_range={lo},{hi},{steps}: need finite '
                            'lo, hi and a whole number of steps >= 1')
  images, rows = [], []
  if image_paths:
    images.append(load_images(image_paths, config, kind))
    rows += [paths.basename(p) for p in image_paths]
  if test_indices:
    test = pretrained.test_images(kind, config)
    bad = [i for i in test_indices if not 0 <= i < len(test)]
    if bad:
      raise ManipulateError(f'--test_index={bad[0]} is not in [0, '
                            f'{len(test)})')
    images.append(test[list(test_indices)])
    rows += [f'test #{i}' for i in test_indices]
  images = np.concatenate(images)
  code = np.asarray(jax.jit(lambda x: model.apply(
      variables, x, method=model.encode))(train.to_float(images, value_range)))
  decode = jax.jit(lambda c: model.apply(variables, c, method=model.decode))
  num_attributes = (config.model.num_attributes if kind == 'attribute'
                    else 0)
  one_hot = kind == 'attribute' and attr_chain.classes_are_attributes(config)

  def edited(pairs):
    return decode(editing.apply_edits(code, pairs, kind, num_attributes,
                                      one_hot))

  fmt = lambda v: f'{v:g}'
  columns = [train.to_float(images, value_range), decode(code)]
  titles = ['input', 'reconstruction']
  columns += [edited([e]) for e in edits]
  titles += [f'{names[a]}={fmt(v)}' for a, v in edits]
  if len(edits) > 1:
    columns.append(edited(edits))
    titles.append('all edits')
  if sweep is not None:
    a = names.index(sweep)
    for v in np.linspace(lo, hi, int(steps)):
      columns.append(edited([(a, float(v))]))
      titles.append(f'{sweep}={fmt(round(float(v), 4))}')
  tiles = np.stack([pictures.to_unit(c, value_range) for c in columns], axis=1)
  if labelled:
    return pictures.labelled_grid(tiles, titles, rows)
  return pictures.grid(tiles)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)  # Orbax logs every read at INFO.
  try:
    lo, hi, steps = (float(v) for v in _SWEEP_RANGE.value.split(','))
  except ValueError:
    sys.exit(f'error: --sweep_range={_SWEEP_RANGE.value!r} is not lo,hi,steps')
  try:
    grid = manipulate(_WORKDIR.value, _STAGE.value, _IMAGES.value, _SET.value,
                      _SWEEP.value, (lo, hi, steps), _PRETRAINED.value,
                      _TEST_INDEX.value, labelled=True,
                      directory=_DIRECTORY.value)
  except (ManipulateError, stages.ConfigError,
          input_pipeline.DatasetUnavailableError) as e:
    sys.exit(f'error: {(str(e).splitlines() or [repr(e)])[0]}')
  pictures.save_png(_OUT.value, grid, scale=1)  # Already enlarged.
  print(f'wrote {_OUT.value} ({grid.shape[1]}x{grid.shape[0]})')


if __name__ == '__main__':
  app.run(main)
