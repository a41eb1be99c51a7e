"""Image grids: reconstructions and latent traversals, as PNG and arrays."""

import numpy as np
from PIL import Image


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
  img.save(path)


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
