"""An image and its edits, as the explorer and launch/manipulate.py make them.

An input image (a file, an upload) is prepared as the chain's training images
were (`image_geometry`, `prepare_image`; an upload's bytes are checked first,
`read_upload`); a code is edited by `apply_edits`, the one rule behind the
explorer's sliders and launch/manipulate.py's `--set`, which names each
editable index by `edit_names`. The explorer sends images as PNG data URLs
(`png_data_url`, `decode_data_url`).
"""

import base64
import io
import re
from typing import Sequence

import numpy as np
from PIL import Image

from jacdistill import attributes
from jacdistill import input_pipeline
from jacdistill import pictures

MAX_PIXELS = 4096 * 4096  # An upload of more pixels is refused, undecoded.
UPLOAD_FORMATS = ('PNG', 'JPEG')


class UploadError(ValueError):
  """Bytes that are not a PNG or JPEG image of an allowed size."""


# ------------------------------------------------------------------ images


def image_geometry(kind: str, config, model) -> tuple[int, int, int]:
  """(native side, model side, channels) of a chain's images: an upload is
  resized to the dataset's native side, then padded to the model's
  (`input_pipeline.resize`), as the training images were."""
  if kind == 'attribute':
    native = input_pipeline.IMAGE_SHAPES.get(config.data.name,
                                             (config.data.image_size,))[0]
    return native, int(config.data.image_size), int(model.image_channels)
  h, _, c = input_pipeline.IMAGE_SHAPES[config.data.name]
  return h, h, c


def prepare_image(img: Image.Image, native: int, size: int,
                  channels: int) -> np.ndarray:
  """A PIL image as the model takes it: uint8 (size, size, channels).

  Converted to grey or RGB (16-bit grey scaled to 8 bits, not clipped),
  centre-cropped to a square, resized (bilinear) to `native` x `native`,
  then padded (or resized) to `size`.
  """
  if img.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'I;16N'):
    # 16-bit grey (PIL opens a 16-bit PNG as one of these): 0..65535 onto
    # 0..255, where convert('L') would clip everything above 255.
    wide = np.asarray(img, np.float64)
    img = Image.fromarray(np.clip(np.round(wide / 257.0), 0, 255
                                  ).astype(np.uint8), 'L')
  img = img.convert('L' if channels == 1 else 'RGB')
  side = min(img.size)
  left, top = (img.width - side) // 2, (img.height - side) // 2
  img = img.crop((left, top, left + side, top + side)).resize(
      (native, native), Image.Resampling.BILINEAR)
  out = np.asarray(img, np.uint8).reshape(1, native, native, channels)
  return input_pipeline.resize(out, size)[0]


def read_upload(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
  """The decoded (loaded) image in `data`, a PNG or JPEG.

  Raises:
    UploadError: not a PNG or JPEG, truncated or corrupt, or more than
      `max_pixels` pixels (checked from the header, before the pixels are
      decoded, so a small file that would expand to gigabytes is refused
      cheaply).
  """
  if not data:
    raise UploadError('the upload is empty; send the bytes of a PNG or JPEG')
  try:
    img = Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS)
    width, height = img.size
    if width * height > max_pixels:
      raise UploadError(f'the image is {width}x{height} pixels, more than '
                        f'the {max_pixels} allowed; send a smaller one')
    img.load()
  except UploadError:
    raise
  except Image.DecompressionBombError as e:
    raise UploadError(f'the image is too large to decode ({e})') from None
  except (OSError, SyntaxError, ValueError, EOFError) as e:
    # PIL's errors for unknown formats, truncated and corrupt files; they
    # name the in-memory file by its repr, an address that means nothing
    # to the user.
    reason = re.sub(r'<[^<>]* at 0x[0-9a-fA-F]+>', 'the upload', str(e))
    raise UploadError(f'the upload is not a readable PNG or JPEG image '
                      f'({type(e).__name__}: {reason})') from None
  return img


def finite_float32(value: float) -> bool:
  """Whether `value` is finite as the float32 a code holds (1e39 is a
  finite Python float but float32's infinity)."""
  with np.errstate(over='ignore'):
    return bool(np.isfinite(np.float32(value)))


def png_data_url(image_HxWxC: np.ndarray) -> str:
  """A uint8 image as a `data:image/png;base64,...` URL."""
  return ('data:image/png;base64,' +
          base64.b64encode(pictures.png_bytes(image_HxWxC)).decode('ascii'))


def decode_data_url(url: str) -> np.ndarray:
  """The uint8 (H, W, C) pixels of a `png_data_url` (for tests)."""
  _, _, payload = url.partition('base64,')
  arr = np.asarray(Image.open(io.BytesIO(base64.b64decode(payload))))
  return arr[..., None] if arr.ndim == 2 else arr


# ------------------------------------------------------------------- edits


def apply_edits(codes: np.ndarray, edits: Sequence[tuple[int, float]],
                kind: str, num_attributes: int = 0,
                one_hot: bool = False) -> np.ndarray:
  """`codes` (N, K) with `edits` [(index, value), ...] applied in order.

  Growth: dim `index` is set to `value` (an index >= K is skipped, so one
  list of edits applies to a teacher and its longer students alike).
  Attribute: `attributes.edit_codes` sets score `index` (with `one_hot`,
  classes as attributes, a positive value also turns the active class
  off). Returns float32 (N, K), a new array.
  """
  out = np.array(codes, np.float32, copy=True)
  for index, value in edits:
    if kind == 'attribute':
      out = attributes.edit_codes(out, num_attributes, index, value,
                                  one_hot=one_hot)
    elif index < out.shape[1]:
      out[:, index] = value
  return out


def edit_names(kind: str, config, code_size: int) -> list[str]:
  """What `--set NAME=V` calls each editable index: the attribute names, or
  'dim0', 'dim1', ... for a growth code."""
  if kind == 'attribute':
    return list(config.data.attributes)
  return [f'dim{j}' for j in range(code_size)]
