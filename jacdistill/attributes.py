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
"""

import functools
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jacdistill import pictures



def edit_codes(codes: np.ndarray, num_attributes: int, attribute: int,
               value: float, one_hot: bool = False) -> np.ndarray:
  """Codes with score `attribute` set to `value`, the rest kept.

  Args:
    codes: (N, A + R) codes, attribute scores first.
    num_attributes: A.
    attribute: a in [0, A).
    value: the new score of a (d * strength).
    one_hot: classes as attributes: when `value` > 0, the previously active
      class argmax(y) (if not a) is set to -value too, keeping one class on.
  Returns:
    float32 (N, A + R), a new array.
  """
  if not 0 <= attribute < num_attributes:
    raise ValueError(f'attribute={attribute} must lie in [0, {num_attributes})')
  out = np.array(codes, np.float32, copy=True)
  if one_hot and value > 0:
    active = np.argmax(out[:, :num_attributes], axis=1)
    out[np.arange(out.shape[0]), active] = -value
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


def flip_accuracy(decode: Callable, predict: Callable, codes: np.ndarray,
                  num_attributes: int, strength: float = 1.0,
                  one_hot: bool = False, batch_size: int = 500) -> dict:
  """Flip accuracy per attribute and direction, and its mean (module doc).

  Args:
    decode: codes (B, A + R) -> images (B, ...).
    predict: images (B, ...) -> bool (B, A), True where the image carries +1.
    codes: (N, A + R) codes of real images (from the encoder).
    num_attributes: A.
    strength: |value| the edited score is set to.
    one_hot: classes as attributes (see `edit_codes`).
    batch_size: codes decoded at once.
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
  for a in range(num_attributes):
    for d in (1, -1):
      edited = edit_codes(codes, num_attributes, a, d * strength, one_hot)
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
