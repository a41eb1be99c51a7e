"""Edits attributes of your own images with a trained attribute-chain stage.

  python launch/manipulate.py --workdir=workdirs/fashion_attr_quick \\
      --stage=student32 --image=shoe.png --set sandal=1.5 --set ankle_boot=-1 \\
      --sweep=bag --sweep_range=-2,2,5 --out=edits.png

  python launch/manipulate.py --workdir=workdirs/celeba_attr \\
      --image=face.jpg --set Smiling=1.5 --set Eyeglasses=1 --sweep=Male

Each image (PNG/JPEG, any size) is centre-cropped to a square and resized as
in training (to the dataset's native size, then padded to the model's;
CelebA: straight to the model's size, so a face filling the square as in
CelebA's aligned 178x178 crops edits best). Attribute names are the run's
data.attributes; an unknown name is an error that lists them. One
grid row per image: input, reconstruction, one column per --set alone, one
with every --set together (when there are several), then the sweep of
--sweep's attribute over --sweep_range (lo,hi,steps). Where the attributes
are a dataset's classes (Fashion-MNIST), setting one to a positive value
also sets the image's current class to minus that value, as the flip
accuracy does: one class stays on.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import jax
import numpy as np
from PIL import Image

from jacdistill import attr_chain
from jacdistill import attributes
from jacdistill import checkpoint
from jacdistill import evaluation
from jacdistill import input_pipeline
from jacdistill import pictures
from jacdistill import train

_WORKDIR = flags.DEFINE_string('workdir', None, 'Workdir of an attribute-chain run (launch/main.py).')
_STAGE = flags.DEFINE_string('stage', None, 'Stage to use; default the last.')
_IMAGES = flags.DEFINE_multi_string('image', [], 'Input image (repeatable).')
_SET = flags.DEFINE_multi_string('set', [], 'NAME=VALUE edit (repeatable).')
_SWEEP = flags.DEFINE_string('sweep', None, 'Attribute to sweep.')
_SWEEP_RANGE = flags.DEFINE_string('sweep_range', '-2,2,5', 'lo,hi,steps.')
_OUT = flags.DEFINE_string('out', 'manipulated.png', 'Output PNG.')

jax.config.update('jax_threefry_partitionable', False)


class ManipulateError(ValueError):
  """A bad argument; the message is one line naming it and the fix."""


def parse_edits(specs, names) -> list[tuple[int, float]]:
  """['smiling=1.5', ...] -> [(attribute index, value), ...]."""
  out = []
  for spec in specs:
    name, sep, value = spec.partition('=')
    if not sep:
      raise ManipulateError(f'--set {spec!r} is not NAME=VALUE')
    if name not in names:
      raise ManipulateError(f'unknown attribute {name!r}; known: '
                            f'{", ".join(names)}')
    try:
      out.append((list(names).index(name), float(value)))
    except ValueError:
      raise ManipulateError(f'--set {spec!r}: {value!r} is not a number') from None
  return out


def load_images(paths, config) -> np.ndarray:
  """uint8 (N, S, S, C) images prepared as the training data was."""
  c = config.model.image_channels
  native = evaluation.IMAGE_SHAPES.get(config.data.name,
                                       (config.data.image_size,))[0]
  out = []
  for path in paths:
    try:
      img = Image.open(path)
      img = img.convert('L' if c == 1 else 'RGB')
    except (OSError, ValueError) as e:
      raise ManipulateError(f'cannot read image {path}: {e}') from None
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize(
        (native, native), Image.Resampling.BILINEAR)
    out.append(np.asarray(img, np.uint8).reshape(native, native, c))
  return input_pipeline.resize(np.stack(out), config.data.image_size)


def manipulate(workdir, stage, image_paths, sets, sweep=None,
               sweep_range=(-2.0, 2.0, 5)) -> np.ndarray:
  """The grid (uint8 HxWx3) described in the module docstring."""
  if not image_paths:
    raise ManipulateError('no --image given')
  try:
    config, model, variables = attr_chain.load_stage(
        workdir, stage or _last_stage(workdir))
  except checkpoint.CheckpointError as e:
    raise ManipulateError(str(e).splitlines()[0]) from None
  names = list(config.data.attributes)
  edits = parse_edits(sets, names)
  if sweep is not None:
    parse_edits([f'{sweep}=0'], names)
  images = load_images(image_paths, config)
  code = np.asarray(jax.jit(lambda x: model.apply(
      variables, x, method=model.encode))(
          train.to_float(images, attr_chain.VALUE_RANGE)))
  decode = jax.jit(lambda c: model.apply(variables, c, method=model.decode))

  one_hot = attr_chain.classes_are_attributes(config)

  def edited(pairs):
    c = code
    for a, v in pairs:
      c = attributes.edit_codes(c, len(names), a, v, one_hot=one_hot)
    return decode(c)

  columns = [train.to_float(images, attr_chain.VALUE_RANGE), decode(code)]
  columns += [edited([e]) for e in edits]
  if len(edits) > 1:
    columns.append(edited(edits))
  if sweep is not None:
    lo, hi, steps = sweep_range
    a = names.index(sweep)
    columns += [edited([(a, v)]) for v in np.linspace(lo, hi, int(steps))]
  return pictures.grid(np.stack(
      [pictures.to_unit(c, attr_chain.VALUE_RANGE) for c in columns], axis=1))


def _last_stage(workdir):
  return attr_chain.read_config(workdir).stage_order[-1]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    lo, hi, steps = (float(v) for v in _SWEEP_RANGE.value.split(','))
  except ValueError:
    sys.exit(f'error: --sweep_range={_SWEEP_RANGE.value!r} is not lo,hi,steps')
  try:
    grid = manipulate(_WORKDIR.value, _STAGE.value, _IMAGES.value, _SET.value,
                      _SWEEP.value, (lo, hi, steps))
  except (ManipulateError, attr_chain.ConfigError) as e:
    sys.exit(f'error: {e}')
  pictures.save_png(_OUT.value, grid)
  print(f'wrote {_OUT.value} ({grid.shape[1]}x{grid.shape[0]})')


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir'])
  app.run(main)
