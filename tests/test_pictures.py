"""pictures.labelled_grid: layout, tile placement and text; grid unchanged."""

import numpy as np
import pytest

from jacdistill import pictures


def _tiles(rows=2, cols=3, h=8, w=6, c=1, seed=0):
  return np.random.default_rng(seed).random((rows, cols, h, w, c), np.float32)


def test_size_follows_from_tiles_scale_and_margins():
  tiles = _tiles()
  bare = pictures.labelled_grid(tiles, scale=4, pad=2)
  assert bare.dtype == np.uint8
  assert bare.shape == (2 + 2 * (32 + 2), 2 + 3 * (24 + 2), 3)
  # Short titles (narrower than a tile) add a band of one line, whatever
  # the number of rows; labels add a margin as wide as the widest label.
  line = pictures.text_size('x')[1]
  titled = pictures.labelled_grid(tiles, column_titles=['a', 'b', 'c'],
                                  scale=4, pad=2)
  assert titled.shape == (bare.shape[0] + line + 2 * pictures.TEXT_PAD,
                          bare.shape[1], 3)
  labels = ['dim 0 (teacher)', 'dim 1']
  labelled = pictures.labelled_grid(tiles, row_labels=labels, scale=4, pad=2)
  margin = pictures.text_size(labels[0])[0] + 2 * pictures.TEXT_PAD
  assert labelled.shape == (bare.shape[0], bare.shape[1] + margin, 3)
  # A title wider than the tiles widens every column to it.
  wide = 'ankle_boot=-1.00'
  col_w = pictures.text_size(wide)[0] + 2 * pictures.TEXT_PAD
  assert col_w > 24
  widened = pictures.labelled_grid(tiles, column_titles=['a', wide], scale=4,
                                   pad=2)
  assert widened.shape[1] == 2 + 3 * (col_w + 2)


def test_default_scale_makes_tiles_at_least_64_pixels():
  out = pictures.labelled_grid(_tiles(1, 1, 28, 28), pad=0)
  assert out.shape == (84, 84, 3)  # ceil(64 / 28) = 3.
  out = pictures.labelled_grid(_tiles(1, 1, 64, 64), pad=0)
  assert out.shape == (64, 64, 3)


def test_tile_pixels_land_where_the_layout_says():
  tiles = _tiles(2, 3, 8, 6, 3, seed=1)
  titles, labels = ['input', 'ankle_boot=-1.00', 'all edits'], ['a.png', 'b']
  scale, pad = 3, 2
  out = pictures.labelled_grid(tiles, titles, labels, scale=scale, pad=pad)
  th, tw = 8 * scale, 6 * scale
  line = pictures.text_size('')[1]
  top = line + 2 * pictures.TEXT_PAD
  left = max(pictures.text_size(l)[0] for l in labels) + 2 * pictures.TEXT_PAD
  col_w = max([tw] + [pictures.text_size(t)[0] + 2 * pictures.TEXT_PAD
                      for t in titles])
  expected = (np.clip(tiles, 0, 1) * 255).round().astype(np.uint8)
  for r in range(2):
    for c in range(3):
      y = top + pad + r * (th + pad)
      x = left + pad + c * (col_w + pad) + (col_w - tw) // 2
      tile = out[y:y + th, x:x + tw]
      # Nearest enlargement: every scale x scale block is one source pixel.
      np.testing.assert_array_equal(tile[::scale, ::scale], expected[r, c])
      np.testing.assert_array_equal(tile[scale - 1::scale, scale - 1::scale],
                                    expected[r, c])
      # White padding just outside the tile.
      assert (out[y - 1, x:x + tw] == 255).all()
      assert (out[y:y + th, x + tw] == 255).all()


def test_grey_tiles_are_repeated_to_rgb():
  tiles = np.full((1, 1, 4, 4, 1), 0.5, np.float32)
  out = pictures.labelled_grid(tiles, scale=2, pad=1)
  assert (out[1:9, 1:9] == 128).all()


def test_labels_render_into_the_margins():
  tiles = np.zeros((2, 2, 8, 8, 1), np.float32)
  out = pictures.labelled_grid(tiles, ['input', 'edit'], ['img.png', 'x'],
                               scale=8, pad=2)
  top = pictures.text_size('')[1] + 2 * pictures.TEXT_PAD
  left = pictures.text_size('img.png')[0] + 2 * pictures.TEXT_PAD
  title_band = out[:top, left:]
  label_margin = out[top:, :left]
  assert (title_band < 128).sum() > 20  # Dark ink of the titles.
  assert (label_margin < 128).sum() > 20
  # Without text the same regions are blank.
  blank = pictures.labelled_grid(tiles, ['', ''], ['', ''], scale=8, pad=2)
  assert (blank[:top] == 255).all()


def test_bad_arguments_are_refused():
  with pytest.raises(ValueError, match='rows, cols'):
    pictures.labelled_grid(np.zeros((2, 8, 8, 1)))
  with pytest.raises(ValueError, match='titles'):
    pictures.labelled_grid(_tiles(1, 1), column_titles=['a', 'b'])


def test_grid_is_unchanged():
  tiles = _tiles(2, 3, 8, 6, 1)
  out = pictures.grid(tiles)
  assert out.shape == (2 * 9 + 1, 3 * 7 + 1, 3)
  assert (out[0] == 255).all()
  np.testing.assert_array_equal(
      out[1:9, 1:7, 0], (tiles[0, 0, ..., 0] * 255).round().astype(np.uint8))


def test_png_bytes_round_trip():
  import io  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  grey = np.arange(64, dtype=np.uint8).reshape(8, 8, 1)
  back = np.asarray(Image.open(io.BytesIO(pictures.png_bytes(grey))))
  np.testing.assert_array_equal(back, grey[..., 0])
