"""Image grids: reconstructions and latent traversals, as PNG and arrays.

`grid` tiles images at their own size with a 1-pixel white border (the
chains' TensorBoard and PNG grids). `labelled_grid` is the grid a person
reads: tiles enlarged (nearest) to at least 64 pixels, a title over each
column and a label left of each row, drawn with PIL's default font.
"""

import functools
import io
import math
from typing import Optional, Sequence

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

from jacdistill import paths

FONT_SIZE = 11  # Pixels; PIL's default FreeType font stays legible at 11.
MIN_TILE = 64  # Smallest enlarged tile side `labelled_grid` picks by default.
TEXT_PAD = 3  # Pixels around each title and label.


def to_unit(images: np.ndarray, value_range: str) -> np.ndarray:
  """Images in the model's range to float [0, 1]."""
  images = np.asarray(images, np.float32)
  if value_range == '-11':
    images = (images + 1.0) / 2.0
  return np.clip(images, 0.0, 1.0)


def grid(images_RxCxHxWxC: np.ndarray, pad: int = 1) -> np.ndarray:
  """Tiles a (rows, cols, H, W, C) float [0,1] array into one uint8 image
  (rows*(H+pad)+pad, cols*(W+pad)+pad, 3), with white padding."""
  rows, cols, h, w, c = images_RxCxHxWxC.shape
  out = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), np.float32)
  for r in range(rows):
    for col in range(cols):
      tile = images_RxCxHxWxC[r, col]
      if c == 1:
        tile = np.repeat(tile, 3, axis=-1)
      y, x = pad + r * (h + pad), pad + col * (w + pad)
      out[y:y + h, x:x + w] = tile
  return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def save_png(path: str, image_HxWx3: np.ndarray, scale: int = 2) -> None:
  """Writes a uint8 image, enlarged `scale` times (nearest) for legibility."""
  img = Image.fromarray(image_HxWx3)
  if scale > 1:
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
  with paths.open(path, 'wb') as f:
    img.save(f, format='PNG')


def traversal_codes(base_code: np.ndarray, all_codes: np.ndarray,
                    steps: int) -> np.ndarray:
  """Codes for a traversal grid: row j varies dim j of `base_code` from the
  2nd to the 98th percentile of that dim over `all_codes`, others fixed.

  Args:
    base_code: (K,) the code to start from.
    all_codes: (N, K) codes of the test set, for each dim's range.
    steps: number of columns.
  Returns:
    (K, steps, K) codes.
  """
  k = base_code.shape[0]
  lo, hi = np.percentile(all_codes, [2, 98], axis=0)
  out = np.repeat(base_code[None, None, :], k, axis=0).repeat(steps, axis=1)
  for j in range(k):
    out[j, :, j] = np.linspace(lo[j], hi[j], steps)
  return out.astype(np.float32)


@functools.lru_cache(maxsize=1)
def _font():
  """PIL's default font at FONT_SIZE (a bitmap font where PIL has no
  FreeType, or a Pillow older than 10.1 that takes no size)."""
  try:
    return ImageFont.load_default(size=FONT_SIZE)
  except TypeError:
    return ImageFont.load_default()


def text_size(text: str) -> tuple[int, int]:
  """(width, height) in pixels that `labelled_grid` gives `text`: its ink
  width, and one line height for every text (so all titles share a band)."""
  font = _font()
  left, _, right, _ = font.getbbox(text) if text else (0, 0, 0, 0)
  _, top, _, bottom = font.getbbox('Agjy(|')
  return int(right - left), int(bottom)


def labelled_grid(tiles_RxCxHxWxC: np.ndarray,
                  column_titles: Optional[Sequence[str]] = None,
                  row_labels: Optional[Sequence[str]] = None,
                  scale: Optional[int] = None, pad: int = 2) -> np.ndarray:
  """Tiles float [0, 1] images into one labelled uint8 image.

  Layout (all in pixels; `text_size` gives each text's width w(t) and the
  line height h): tiles are enlarged `scale` times (nearest), to th x tw =
  H*scale x W*scale. Every column is `col_w = max(tw, max_t w(t) + 2 *
  TEXT_PAD)` wide, with its tile centred in it. A band of height `top = h +
  2 * TEXT_PAD` above the tiles holds the column titles (0 without titles);
  a margin of width `left = max_l w(l) + 2 * TEXT_PAD` holds the row labels,
  vertically centred on their row (0 without labels). Tile (r, c) has its
  top-left corner at

      y = top + pad + r * (th + pad),
      x = left + pad + c * (col_w + pad) + (col_w - tw) // 2,

  and the image is (top + pad + R * (th + pad), left + pad + C * (col_w +
  pad), 3), white between tiles, text black.

  Args:
    tiles_RxCxHxWxC: (R, C, H, W, C) floats in [0, 1], C = 1 or 3.
    column_titles: C' <= C titles, for the first C' columns; None = none.
    row_labels: R' <= R labels (e.g. 'dim 0 (teacher)', a stage name, an
      image's file name), for the first R' rows; None = none.
    scale: integer enlargement; None = the smallest that makes a tile at
      least MIN_TILE pixels on its shorter side (1 for tiles that are).
    pad: white pixels between tiles and around them.
  Returns:
    uint8 (height, width, 3).
  """
  tiles = np.asarray(tiles_RxCxHxWxC, np.float32)
  if tiles.ndim != 5 or tiles.shape[-1] not in (1, 3):
    raise ValueError(f'tiles must be (rows, cols, H, W, 1 or 3), got '
                     f'{tiles.shape}')
  rows, cols, h, w, _ = tiles.shape
  titles = list(column_titles or [])
  labels = list(row_labels or [])
  if len(titles) > cols or len(labels) > rows:
    raise ValueError(f'{len(titles)} titles for {cols} columns or '
                     f'{len(labels)} labels for {rows} rows')
  if scale is None:
    scale = max(1, math.ceil(MIN_TILE / min(h, w)))
  if scale < 1 or pad < 0:
    raise ValueError(f'need scale >= 1 and pad >= 0, got {scale}, {pad}')
  th, tw = h * scale, w * scale
  line = text_size('')[1]
  col_w = max([tw] + [text_size(t)[0] + 2 * TEXT_PAD for t in titles])
  top = line + 2 * TEXT_PAD if titles else 0
  left = (max(text_size(l)[0] for l in labels) + 2 * TEXT_PAD
          if labels else 0)
  height = top + pad + rows * (th + pad)
  width = left + pad + cols * (col_w + pad)
  out = np.full((height, width, 3), 255, np.uint8)
  enlarged = np.repeat(np.repeat(tiles, scale, axis=2), scale, axis=3)
  enlarged = (np.clip(enlarged, 0, 1) * 255).round().astype(np.uint8)
  for r in range(rows):
    for c in range(cols):
      y = top + pad + r * (th + pad)
      x = left + pad + c * (col_w + pad) + (col_w - tw) // 2
      out[y:y + th, x:x + tw] = enlarged[r, c]  # Broadcasts grey to RGB.
  if not titles and not labels:
    return out
  img = Image.fromarray(out)
  draw = ImageDraw.Draw(img)
  font = _font()
  for c, title in enumerate(titles):
    x = left + pad + c * (col_w + pad) + (col_w - text_size(title)[0]) // 2
    draw.text((x, TEXT_PAD), title, fill=(0, 0, 0), font=font)
  for r, label in enumerate(labels):
    y = top + pad + r * (th + pad) + (th - line) // 2
    draw.text((TEXT_PAD, y), label, fill=(0, 0, 0), font=font)
  return np.asarray(img)


def to_uint8(images: np.ndarray, value_range: str) -> np.ndarray:
  """Images in the model's range to uint8 [0, 255], same shape."""
  return (to_unit(images, value_range) * 255).round().astype(np.uint8)


def png_bytes(image_HxWxC: np.ndarray, compress_level: int = 1) -> bytes:
  """A uint8 (H, W, 1 or 3) image as PNG bytes (grey as mode 'L').

  Level 1 compresses a 32x32 tile in microseconds; the explorer encodes one
  per slider move.
  """
  image = np.asarray(image_HxWxC, np.uint8)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='PNG',
                              compress_level=compress_level)
  return buffer.getvalue()
