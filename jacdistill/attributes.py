"""Attribute editing and its score, flip accuracy (docs/method.md part B).

A conditional autoencoder's code is `[y ; z]`: `y` the A attribute scores
(+1 present, -1 absent), `z` the nuisance. An edit sets one score and keeps
everything else; flip accuracy asks an external classifier whether the
decoded image carries the requested value.

Protocol (`flip_accuracy`): for every code, attribute a and direction
d in {+1, -1},

    y'_a = d * strength, every other dim of the code kept,
    hit  = predict(decode(code'))[a] == (d > 0),

and the score of (a, d) is the fraction of hits over the codes. With
`one_hot=True` (classes used as attributes, e.g. Fashion-MNIST's 10 classes as
one-hot +-1 vectors) a +1 edit would leave two classes on, so the previously
active class b = argmax(y) is set to -strength as well (b = a changes
nothing); a -1 edit changes only y_a, so an image of class a then has no
active class and the decoder picks one. Classes are read as attributes by
`class_predictor`: the image carries +1 for class a iff the classifier's
argmax is a, and -1 iff it is any other class. With `one_hot=False`
(independent attributes, e.g. CelebA's 40) an edit changes y_a alone, and a
multi-label classifier is read by `attribute_predictor`: the image carries +1
for attribute a iff the classifier's logit a is > 0.

Every code is edited in every (a, d), including codes that already carry the
requested value (most codes for d = -1 with classes); that is the protocol of
upstream's table, so the -1 scores of class attributes are near 1 for any
decoder that keeps the image's class.

A fixed strength assumes every model's scores live on one scale; a student
trained without the score match can drift from it. `attribute_levels` reads
each model's own scale instead: the median score of attribute a over
training images that carry it (the +1 level) and over those that do not
(the -1 level); `flip_accuracy(levels=...)` edits to those levels, and a
+1 class edit turns the previous class to its own -1 level.
"""

import functools
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jacdistill import pictures



def edit_codes(codes: np.ndarray, num_attributes: int, attribute: int,
               value: float, one_hot: bool = False,
               off: Optional[np.ndarray] = None) -> np.ndarray:
  """Codes with score `attribute` set to `value`, the rest kept.

  Args:
    codes: (N, A + R) codes, attribute scores first.
    num_attributes: A.
    attribute: a in [0, A).
    value: the new score of a (d * strength).
    one_hot: classes as attributes: when the edit switches a on (`value` >
      0, or with `off` `value` > off[a]), the previously active class b =
      argmax(y) (if not a) is switched off, keeping one class on.
    off: (A,) the score each class is switched off to; None = -value.
  Returns:
    float32 (N, A + R), a new array.
  """
  if not 0 <= attribute < num_attributes:
    raise ValueError(f'attribute={attribute} must lie in [0, {num_attributes})')
  out = np.array(codes, np.float32, copy=True)
  switch_on = value > (0 if off is None else off[attribute])
  if one_hot and switch_on:
    active = np.argmax(out[:, :num_attributes], axis=1)
    out[np.arange(out.shape[0]), active] = (
        -value if off is None else np.asarray(off, np.float32)[active])
  out[:, attribute] = value
  return out


@functools.partial(jax.jit, static_argnums=1)
def _resize(x: jnp.ndarray, size: int) -> jnp.ndarray:
  """(B, H, W, C) -> (B, size, size, C), bilinear and antialiased."""
  return jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), 'linear',
                          antialias=True)


def _classifier_input(images, value_range: str, image_size: int,
                      resize: bool) -> jnp.ndarray:
  """Decoded images as a classifier takes them: [0, 1], H = W = image_size
  (centre crop, or with `resize` a bilinear antialiased resize), or as they
  are when image_size is 0 or already theirs."""
  x = pictures.to_unit(np.asarray(images), value_range)
  h, w = x.shape[1:3]
  if not image_size or (h, w) == (image_size, image_size):
    return jnp.asarray(x)
  if resize:
    return _resize(jnp.asarray(x), image_size)
  top, left = (h - image_size) // 2, (w - image_size) // 2
  return jnp.asarray(x[:, top:top + image_size, left:left + image_size])


def class_predictor(logits_fn: Callable, value_range: str,
                    image_size: int = 0) -> Callable:
  """Reads a class classifier as per-attribute predictions.

  Args:
    logits_fn: float images (B, H', W', C) in [0, 1] -> (B, A) logits, e.g.
      `classifier.ClassifierHandle.logits`.
    value_range: the decoder's pixel range, '01' or '-11'.
    image_size: H' = W' of the classifier's input; decoded images are
      centre-cropped to it (undoing the 28 -> 32 zero padding of training).
      0 = no crop.
  Returns:
    `predict(images) -> bool (B, A)`, True only at the argmax class.
  """
  def predict(images):
    logits = np.asarray(logits_fn(_classifier_input(
        images, value_range, image_size, resize=False)))
    return np.argmax(logits, axis=1)[:, None] == np.arange(logits.shape[1])

  return predict


def attribute_predictor(logits_fn: Callable, value_range: str,
                        image_size: int = 0,
                        columns: Optional[Sequence[int]] = None) -> Callable:
  """Reads a multi-label classifier (one logit per attribute) as predictions.

  Attribute a is present iff its logit is > 0.

  Args:
    logits_fn: float images (B, H', W', C) in [0, 1] -> (B, K) logits, e.g.
      `classifier.ClassifierHandle.logits` of the CelebA classifier.
    value_range: the decoder's pixel range, '01' or '-11'.
    image_size: H' = W' of the classifier's input; decoded images of another
      size are resized to it (bilinear, antialiased, as the data pipeline
      makes its images). 0 = no resize.
    columns: for each of the code's A attributes, in code order, the index
      of its logit among the K; None = the K logits in order (A = K).
  Returns:
    `predict(images) -> bool (B, A)`.
  """
  def predict(images):
    logits = np.asarray(logits_fn(_classifier_input(
        images, value_range, image_size, resize=True)))
    if columns is not None:
      logits = logits[:, list(columns)]
    return logits > 0

  return predict


def attribute_levels(codes: np.ndarray, labels: np.ndarray,
                     strength: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
  """A model's own -1 and +1 score levels per attribute (module doc).

  Args:
    codes: (N, A + R) codes of training images, attribute scores first.
    labels: (N, A) their attributes in {-1, +1}.
    strength: the level of an attribute no image (or every image) carries,
      -strength / +strength.
  Returns:
    (low, high), float32 (A,) each: the median of score a over the images
    with label a = -1, and over those with label a = +1.
  """
  codes = np.asarray(codes, np.float32)
  labels = np.asarray(labels)
  a = labels.shape[1]
  if codes.ndim != 2 or codes.shape[0] != labels.shape[0] or codes.shape[1] < a:
    raise ValueError(f'codes {codes.shape} and labels {labels.shape} must be '
                     '(N, >= A) and (N, A)')

  def median(a_index, sign):
    chosen = codes[labels[:, a_index] * sign > 0, a_index]
    return float(np.median(chosen)) if len(chosen) else sign * strength

  return (np.array([median(i, -1) for i in range(a)], np.float32),
          np.array([median(i, 1) for i in range(a)], np.float32))


def flip_accuracy(decode: Callable, predict: Callable, codes: np.ndarray,
                  num_attributes: int, strength: float = 1.0,
                  one_hot: bool = False, batch_size: int = 500,
                  levels: Optional[tuple[np.ndarray, np.ndarray]] = None
                  ) -> dict:
  """Flip accuracy per attribute and direction, and its mean (module doc).

  Args:
    decode: codes (B, A + R) -> images (B, ...).
    predict: images (B, ...) -> bool (B, A), True where the image carries +1.
    codes: (N, A + R) codes of real images (from the encoder).
    num_attributes: A.
    strength: |value| the edited score is set to.
    one_hot: classes as attributes (see `edit_codes`).
    batch_size: codes decoded at once.
    levels: (low, high), each (A,) (`attribute_levels`): a +1 edit sets
      y_a = high[a], a -1 edit y_a = low[a], and `strength` is not used;
      None = +-strength.
  Returns:
    {'flip_acc_pos': (A,) float list, fraction carrying +1 after y_a = +s;
     'flip_acc_neg': (A,) float list, fraction carrying -1 after y_a = -s;
     'flip_acc_pos_mean', 'flip_acc_neg_mean': their means (with classes as
     attributes the +1 direction is the informative one: a decoder that
     keeps the image's class scores (A - 1) / A in the -1 direction);
     'flip_acc': mean of the 2A fractions}.
  """
  codes = np.asarray(codes, np.float32)
  if codes.ndim != 2 or codes.shape[1] < num_attributes or not len(codes):
    raise ValueError(f'codes must be (N >= 1, >= {num_attributes}), got '
                     f'{codes.shape}')
  scores = {1: np.zeros(num_attributes), -1: np.zeros(num_attributes)}
  low = high = None
  if levels is not None:
    low, high = (np.asarray(v, np.float32) for v in levels)
    if low.shape != (num_attributes,) or high.shape != (num_attributes,):
      raise ValueError(f'levels must be two ({num_attributes},) arrays, got '
                       f'{low.shape} and {high.shape}')
  for a in range(num_attributes):
    for d in (1, -1):
      if levels is None:
        edited = edit_codes(codes, num_attributes, a, d * strength, one_hot)
      else:
        edited = edit_codes(codes, num_attributes, a,
                            float(high[a] if d > 0 else low[a]), one_hot,
                            off=low)
      hits = 0
      for i in range(0, len(edited), batch_size):
        pred = np.asarray(predict(decode(edited[i:i + batch_size])))
        hits += int(np.sum(pred[:, a] == (d > 0)))
      scores[d][a] = hits / len(codes)
  return {'flip_acc_pos': [float(v) for v in scores[1]],
          'flip_acc_neg': [float(v) for v in scores[-1]],
          'flip_acc_pos_mean': float(np.mean(scores[1])),
          'flip_acc_neg_mean': float(np.mean(scores[-1])),
          'flip_acc': float(np.mean(np.concatenate([scores[1], scores[-1]])))}
