"""The 4x4 stride-2 convolutions of the conv models: native, or as matmuls.

On CPU they are computed as matmuls (below); on GPU and TPU as XLA's own
strided and transposed convolutions, which cuDNN and the TPU compiler run
without building any patches. `conv_form` decides, in this one place; both
forms take the same parameters, so a checkpoint moves between backends.

`DownConv` computes exactly what `nn.Conv(features, (4, 4), strides=(2, 2),
padding=((1, 1), (1, 1)))` computes, and `UpConv` exactly what
`nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding='SAME')` computes,
with the same parameters (`kernel` of shape (4, 4, in, out), `bias` of shape
(out,)), the same initialisers and the same random keys: checkpoints, growth
and `latent_axes` see no difference. `UpConv` also takes an optional
per-example vector `cond` (B, A) and then equals the transposed conv of
`concatenate([broadcast(cond), x], -1)`, without building that input.

Why: XLA:CPU runs strided and input-dilated convolutions (a transposed conv,
and the input gradient of a strided one) on a slow path, single threaded.
Rewritten with no stride and no dilation, a layer is a stride-1 2x2
convolution, computed as a matmul plus shifted views, forward and backward,
so every layer of a train step runs as multi-threaded matmuls.

- Down: pad by one pixel, fold each 2x2 pixel block into channels
  (space-to-depth), then a 2x2 VALID conv whose kernel is the 4x4 kernel
  regrouped the same way: `y[i] = sum_t xp[2i + t] k[t]`, `t = 2a + b`.
- Up: per spatial dim the transposed conv gives `y[2j+1] = x[j] k1 + x[j+1] k3`
  and `y[2j+2] = x[j] k0 + x[j+1] k2`, so a 2x2 VALID conv over the input padded
  by one pixel yields both output phases of every window `j = -1 .. n-1` as
  channels; depth-to-space and dropping the first and last row/column give the
  2n outputs.

A 2x2 VALID conv is computed one of two ways (`_conv_2x2`):
- im2col: concatenate the four shifted views of the input, one matmul
  (B*H'*W', 4C) x (4C, O);
- col2im: one matmul of every input pixel with all four taps,
  (B*H*W, C) x (C, 4O), then the sum of four shifted views of the products.
`prefers_col2im` picks the one that writes fewer numbers unless it multiplies
over 30% more: an up-conv's im2col multiplies the padding border, a
down-conv's col2im the s2d border. In a Fader 64x64 student step that puts
dec_in, dec_conv_0 and dec_conv_3 (the thin last layer) on col2im and
dec_conv_1/2 on im2col: 979-1,046 ms per step against 1,148-1,191 ms with
every up-conv on col2im (2 cores, alternating runs in one process).

The conditioning vector is constant over the image, so its share of an
up-conv's output is linear in it alone (`up_conv_constant`): `cond` times
each of the 16 kernel taps, (B, 4, 4, O), then per output pixel the sum of
the taps through which some input pixel reaches it (`_tap_counts`). That is
16*A*O multiplies per example and a small contraction instead of A more
input channels in every window of the conv's matmul, and no broadcast copy
of `cond`.
"""

import contextlib
import contextvars
import functools
from typing import Any, Iterator, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


CONV_FORMS = ('matmul', 'native')
_FORCED = contextvars.ContextVar('jacdistill_conv_form', default=None)


def conv_form() -> str:
  """How DownConv and UpConv compute: 'matmul' (the rewrite below) on CPU,
  'native' (`lax.conv_general_dilated` / `lax.conv_transpose`) on any other
  backend, unless `forced_conv_form` says otherwise. Read when a model is
  traced, so a function jitted under one form keeps it."""
  return _FORCED.get() or (
      'matmul' if jax.default_backend() == 'cpu' else 'native')


@contextlib.contextmanager
def forced_conv_form(form: str) -> Iterator[None]:
  """Traces inside this context use `form` ('matmul' or 'native')."""
  if form not in CONV_FORMS:
    raise ValueError(f'conv form {form!r}; choose from {CONV_FORMS}')
  token = _FORCED.set(form)
  try:
    yield
  finally:
    _FORCED.reset(token)


_NHWC = ('NHWC', 'HWIO', 'NHWC')


def _shift(a: jax.Array, before: tuple[int, int],
           after: tuple[int, int]) -> jax.Array:
  """Zero-pads the two spatial dims of NHWC `a`."""
  return jnp.pad(a, ((0, 0), (before[0], after[0]), (before[1], after[1]),
                     (0, 0)))


def _conv_2x2(x: jax.Array, kernel: jax.Array, col2im: bool,
              padded: bool) -> jax.Array:
  """Stride-1 2x2 conv of NHWC `x` with a (2, 2, C, O) kernel.

  Args:
    x: (B, H, W, C).
    kernel: (2, 2, C, O).
    col2im: the matmul-then-shift form (see the module docstring), else im2col.
    padded: False for a VALID conv, (B, H-1, W-1, O); True for the VALID conv
      of `x` zero-padded by one pixel on every side, (B, H+1, W+1, O) (col2im
      never multiplies that padding; im2col pads `x` first).
  """
  b, h, w, c = x.shape
  o = kernel.shape[-1]
  if not col2im:
    if padded:
      x = _shift(x, (1, 1), (1, 1))
      h, w = h + 2, w + 2
    patches = jnp.concatenate([x[:, i:h - 1 + i, j:w - 1 + j]
                               for i in (0, 1) for j in (0, 1)], axis=-1)
    return jnp.einsum('bhwk,ko->bhwo', patches, kernel.reshape(4 * c, o))
  # z[..., t, :]: every pixel times tap t = 2a + b.
  z = jnp.einsum('bhwc,cto->bhwto', x,
                 kernel.transpose(2, 0, 1, 3).reshape(c, 4, o))
  return _sum_taps(z, padded)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _sum_taps(z: jax.Array, padded: bool) -> jax.Array:
  """(B, H, W, 4, O) tap products -> the 2x2 conv's windows.

  Window J sums tap (a, b) of input pixel J + (a, b) (VALID) or of
  J + (a, b) - 1 (padded input, zero outside).
  """
  _, h, w, _, _ = z.shape
  if padded:
    views = [_shift(z[:, :, :, 2 * a + b], (1 - a, 1 - b), (a, b))
             for a in (0, 1) for b in (0, 1)]
  else:
    views = [z[:, a:h - 1 + a, b:w - 1 + b, 2 * a + b]
             for a in (0, 1) for b in (0, 1)]
  return sum(views[1:], views[0])


def _sum_taps_fwd(z, padded):
  return _sum_taps(z, padded), None


def _sum_taps_bwd(padded, _, dy):
  """Tap t's gradient is the window gradient seen from its pixels: one
  stack of four shifted views (autodiff would add four zero-padded copies
  of the whole product array)."""
  if padded:
    _, h1, w1, _ = dy.shape
    h, w = h1 - 1, w1 - 1
    views = [dy[:, 1 - a:1 - a + h, 1 - b:1 - b + w]
             for a in (0, 1) for b in (0, 1)]
  else:
    views = [_shift(dy, (a, b), (1 - a, 1 - b))
             for a in (0, 1) for b in (0, 1)]
  return (jnp.stack(views, axis=3),)


_sum_taps.defvjp(_sum_taps_fwd, _sum_taps_bwd)


def prefers_col2im(windows: int, inputs: int, c: int, o: int) -> bool:
  """Which form computes a 2x2 conv of `inputs` pixels into `windows` windows.

  C input and O output channels. im2col writes 4C numbers per window and
  multiplies at every window; col2im writes 4O per input pixel and multiplies
  at every input pixel. The form that writes fewer numbers, unless it
  multiplies over 30% more than the other.
  """
  if inputs * o < windows * c:
    return inputs <= 1.3 * windows
  return windows > 1.3 * inputs


def down_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`x` (B, H, W, C) with H, W even, `kernel` (4, 4, C, O) -> (B, H/2, W/2, O).

  Equal to the stride-2 conv with one pixel of zero padding on every side.
  """
  b, h, w, c = x.shape
  o = kernel.shape[-1]
  xp = _shift(x, (1, 1), (1, 1))
  # (B, H/2+1, 2, W/2+1, 2, C) -> blocks as channels, ordered (bh, bw, C).
  s2d = xp.reshape(b, h // 2 + 1, 2, w // 2 + 1, 2, c)
  s2d = s2d.transpose(0, 1, 3, 2, 4, 5).reshape(b, h // 2 + 1, w // 2 + 1, 4 * c)
  # Kernel tap t = 2a + b: (ah, bh, aw, bw, C, O) -> (ah, aw, (bh, bw, C), O).
  k = kernel.reshape(2, 2, 2, 2, c, o).transpose(0, 2, 1, 3, 4, 5)
  col2im = prefers_col2im((h // 2) * (w // 2), (h // 2 + 1) * (w // 2 + 1),
                          4 * c, o)
  return _conv_2x2(s2d, k.reshape(2, 2, 4 * c, o), col2im, padded=False)


def _phase_kernel(kernel: jax.Array) -> jax.Array:
  """(4, 4, C, O) -> (2, 2, C, 4O): per window offset, both output phases of
  each spatial dim as channels ordered (phase h, phase w, O)."""
  c, o = kernel.shape[2:]
  # Per dim, phase p = 0 (odd outputs) uses taps 1, 3; p = 1 (even) taps 0, 2.
  k = jnp.stack([kernel[1::2], kernel[0::2]], axis=1)  # (2v, 2p, 4, C, O)
  k = jnp.stack([k[:, :, 1::2], k[:, :, 0::2]], axis=3)  # (vh, ph, vw, pw, C, O)
  return k.transpose(0, 2, 4, 1, 3, 5).reshape(2, 2, c, 4 * o)


def up_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`x` (B, H, W, C), `kernel` (4, 4, C, O) -> (B, 2H, 2W, O).

  Equal to `lax.conv_transpose(x, kernel, (2, 2), 'SAME')` (kernel not
  flipped, as `nn.ConvTranspose` calls it).
  """
  b, h, w, c = x.shape
  o = kernel.shape[-1]
  col2im = prefers_col2im((h + 1) * (w + 1), h * w, c, 4 * o)
  y = _conv_2x2(x, _phase_kernel(kernel), col2im, padded=True)
  y = y.reshape(b, h + 1, w + 1, 2, 2, o)
  y = y.transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h + 2, 2 * w + 2, o)
  return y[:, 1:-1, 1:-1]


def _tap_counts(n: int) -> np.ndarray:
  """(2n, 4): how many of the n inputs reach output p through tap t of one
  spatial dim of the up-conv (input i reaches p = 2i + 2 - t)."""
  counts = np.zeros((2 * n, 4), np.float32)
  for i in range(n):
    for t in range(4):
      if 0 <= 2 * i + 2 - t < 2 * n:
        counts[2 * i + 2 - t, t] += 1
  return counts


def up_conv_constant(cond: jax.Array, kernel: jax.Array, h: int,
                     w: int) -> jax.Array:
  """`up_conv` of the (B, h, w, A) maps that repeat `cond` (B, A) at every
  pixel, with `kernel` (4, 4, A, O): (B, 2h, 2w, O), without building them."""
  per_tap = jnp.einsum('ba,tuao->btuo', cond, kernel)
  return jnp.einsum('pt,qu,btuo->bpqo', _tap_counts(h), _tap_counts(w),
                    per_tap)


class _Conv4x4(nn.Module):
  """A 4x4 stride-2 conv layer with `nn.Conv`'s parameters."""
  features: int
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros_init()

  def _params(self, in_features: int):
    kernel = self.param('kernel', self.kernel_init,
                        (4, 4, in_features, self.features), jnp.float32)
    bias = self.param('bias', self.bias_init, (self.features,), jnp.float32)
    return kernel, bias


class DownConv(_Conv4x4):
  """`nn.Conv(features, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)))`."""

  @nn.compact
  def __call__(self, x):
    kernel, bias = self._params(x.shape[-1])
    if conv_form() == 'native':
      return jax.lax.conv_general_dilated(
          x, kernel, (2, 2), ((1, 1), (1, 1)), dimension_numbers=_NHWC) + bias
    return down_conv(x, kernel) + bias


class UpConv(_Conv4x4):
  """`nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding='SAME')`.

  Called as `layer(x, cond)` with `cond` (B, A), it is that layer applied to
  `concatenate([broadcast_to(cond[:, None, None], (B, H, W, A)), x], -1)`:
  its kernel has A + C input channels, the condition's first.
  """

  @nn.compact
  def __call__(self, x, cond: Optional[jax.Array] = None):
    a = 0 if cond is None else cond.shape[-1]
    kernel, bias = self._params(a + x.shape[-1])
    if conv_form() == 'native':
      if cond is not None:
        x = jnp.concatenate([jnp.broadcast_to(
            cond[:, None, None], (*x.shape[:3], a)).astype(x.dtype), x], -1)
      return jax.lax.conv_transpose(x, kernel, (2, 2), 'SAME',
                                    dimension_numbers=_NHWC) + bias
    y = up_conv(x, kernel[:, :, a:])
    if cond is not None:
      y = y + up_conv_constant(cond, kernel[:, :, :a], *x.shape[1:3])
    return y + bias
