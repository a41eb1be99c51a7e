"""The autoencoders: MLP (28x28), conv (32x32x3), Fader-style, and two
baselines built on them: Fader Networks and a Gaussian (beta-VAE) MLP.

Every model has the same surface, so the train step, growth and evaluation never
look inside one:

- `encode(x, train) -> code`, a flat (B, code_size) array. Its first dims are
  the factor dims that a teacher supervises: for the flat models the teacher's
  whole code, for the Fader model the `num_attributes` attribute scores.
- `decode(code, train) -> x_hat`, images in the model's output range.
- `__call__(x, train) -> (x_hat, code)`.
- `latent_axes()` -> {variable path: (axis, role)}: which leaves carry the
  latent dimension and along which axis, so `growth.grow` can rebuild any of them.
  Role 'encoder' marks leaves that produce the code (new entries get a fresh
  initialisation); 'decoder' marks leaves that consume it (new entries start at
  zero so a grown model computes exactly what its parent did).
- Its decoder's top-level submodules, and only they, have names that start
  with `DECODER_PREFIX` ('dec'), so `decoder_mask` can tell which variables
  a decoder-only stage trains.

Variables are linen's `{'params': ..., 'batch_stats': ...}` collections.
"""

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jacdistill import layers

OUTPUT_ACTIVATIONS: dict[str, Callable] = {'sigmoid': nn.sigmoid, 'tanh': jnp.tanh}
# Pixel range each output activation produces, for the input pipeline.
OUTPUT_RANGES = {'sigmoid': '01', 'tanh': '-11'}

# The code BatchNorm's epsilon, which `growth.fold_code_norm` must match.
CODE_NORM_EPSILON = 1e-5

ENCODER = 'encoder'
DECODER = 'decoder'
DECODER_PREFIX = 'dec'


def decoder_mask(collection):
  """True on every leaf of `collection` that belongs to the decoder.

  Args:
    collection: one linen collection of any model here (`params` or
      `batch_stats`), `{top-level module name: subtree}`.
  Returns:
    A tree of bools of the same structure: True under the modules whose name
    starts with DECODER_PREFIX.
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, _: path[0].key.startswith(DECODER_PREFIX), collection)


def _output_activation(name: str) -> Callable:
  if name not in OUTPUT_ACTIVATIONS:
    raise ValueError(f'output activation {name!r} is not one of '
                     f'{sorted(OUTPUT_ACTIVATIONS)}')
  return OUTPUT_ACTIVATIONS[name]


def _flat_code_axes(code_norm: bool) -> dict:
  """Latent leaves of the flat-code models (a dense layer on each side)."""
  axes = {('params', 'enc_out', 'kernel'): (1, ENCODER),
          ('params', 'dec_in', 'kernel'): (0, DECODER)}
  if code_norm:
    axes[('batch_stats', 'code_norm', 'mean')] = (0, ENCODER)
    axes[('batch_stats', 'code_norm', 'var')] = (0, ENCODER)
  else:
    axes[('params', 'enc_out', 'bias')] = (0, ENCODER)
  return axes


def _code_head(module: nn.Module, h, train: bool):
  """The flat models' code: `enc_out`, then the optional code BatchNorm."""
  code = module.enc_out(h)
  if module.code_norm:
    code = module.norm(code, use_running_average=not train)
  return code


class MLPAutoencoder(nn.Module):
  """docs/method.md's MLP: encoder 784-256-128-64-k, decoder k-64-128-256-784, ReLU.

  Attributes:
    latent_dim: code size k.
    image_shape: (H, W, C) of the images.
    hidden: encoder hidden widths; the decoder mirrors them.
    code_norm: BatchNorm without scale or bias on the code, as upstream's first
      teacher (the chain's `model.code_norm` says which stages have it).
    output: 'sigmoid' for pixels in [0, 1], 'tanh' for [-1, 1].
  """
  latent_dim: int
  image_shape: Sequence[int] = (28, 28, 1)
  hidden: Sequence[int] = (256, 128, 64)
  code_norm: bool = True
  output: str = 'sigmoid'

  def setup(self):
    self.enc = [nn.Dense(h, name=f'enc_{i}') for i, h in enumerate(self.hidden)]
    # BatchNorm removes any bias of the code, and Adam would only walk a bias
    # with an exactly-zero gradient on rounding noise.
    self.enc_out = nn.Dense(self.latent_dim, use_bias=not self.code_norm,
                            name='enc_out')
    if self.code_norm:
      self.norm = nn.BatchNorm(use_scale=False, use_bias=False, momentum=0.9,
                               epsilon=CODE_NORM_EPSILON, name='code_norm')
    self.dec_in = nn.Dense(self.hidden[-1], name='dec_in')
    self.dec = [nn.Dense(h, name=f'dec_{i}')
                for i, h in enumerate(reversed(self.hidden[:-1]))]
    self.dec_out = nn.Dense(math.prod(self.image_shape), name='dec_out')

  @property
  def code_size(self) -> int:
    return self.latent_dim

  def encode(self, x, train: bool = False):
    h = x.reshape(x.shape[0], -1)
    for layer in self.enc:
      h = nn.relu(layer(h))
    return _code_head(self, h, train)

  def decode(self, code, train: bool = False):
    del train  # No state in this decoder; the argument keeps one surface.
    h = nn.relu(self.dec_in(code))
    for layer in self.dec:
      h = nn.relu(layer(h))
    out = _output_activation(self.output)(self.dec_out(h))
    return out.reshape((code.shape[0], *self.image_shape))

  def __call__(self, x, train: bool = False):
    code = self.encode(x, train)
    return self.decode(code, train), code

  def latent_axes(self) -> dict:
    return _flat_code_axes(self.code_norm)


class GaussianMLPAutoencoder(nn.Module):
  """beta-VAE on `MLPAutoencoder`'s widths: encoder 784-256-128-64, then
  two heads, the posterior's mean and log-variance (k each); decoder
  k-64-128-256-784 with a sigmoid output (Bernoulli pixel means).

  `encode` gives the mean, so evaluation, swaps and traversals are
  deterministic; the sampled code of training (`vae.py`) is
  `mean + exp(log_var / 2) * eps`.

  Attributes:
    latent_dim: code size k.
    image_shape: (H, W, C) of the images.
    hidden: encoder hidden widths; the decoder mirrors them.
  """
  latent_dim: int
  image_shape: Sequence[int] = (28, 28, 1)
  hidden: Sequence[int] = (256, 128, 64)
  output: str = 'sigmoid'  # Fixed: pixels are Bernoulli means in [0, 1].

  def setup(self):
    if self.output != 'sigmoid':
      raise ValueError(f'GaussianMLPAutoencoder decodes Bernoulli means, so '
                       f"its output is 'sigmoid', not {self.output!r}")
    self.enc = [nn.Dense(h, name=f'enc_{i}') for i, h in enumerate(self.hidden)]
    self.enc_mean = nn.Dense(self.latent_dim, name='enc_mean')
    self.enc_log_var = nn.Dense(self.latent_dim, name='enc_log_var')
    self.dec_in = nn.Dense(self.hidden[-1], name='dec_in')
    self.dec = [nn.Dense(h, name=f'dec_{i}')
                for i, h in enumerate(reversed(self.hidden[:-1]))]
    self.dec_out = nn.Dense(math.prod(self.image_shape), name='dec_out')

  @property
  def code_size(self) -> int:
    return self.latent_dim

  def posterior(self, x):
    """(mean, log_var), each (B, k)."""
    h = x.reshape(x.shape[0], -1)
    for layer in self.enc:
      h = nn.relu(layer(h))
    return self.enc_mean(h), self.enc_log_var(h)

  def encode(self, x, train: bool = False):
    del train  # No state; the mean in training too (the step samples).
    return self.posterior(x)[0]

  def decode_logits(self, code):
    """Pixel logits (B, H, W, C)."""
    h = nn.relu(self.dec_in(code))
    for layer in self.dec:
      h = nn.relu(layer(h))
    return self.dec_out(h).reshape((code.shape[0], *self.image_shape))

  def decode(self, code, train: bool = False):
    del train  # No state in this decoder; the argument keeps one surface.
    return nn.sigmoid(self.decode_logits(code))

  def __call__(self, x, train: bool = False):
    code = self.encode(x, train)
    return self.decode(code, train), code

  def latent_axes(self) -> dict:
    return {('params', 'enc_mean', 'kernel'): (1, ENCODER),
            ('params', 'enc_mean', 'bias'): (0, ENCODER),
            ('params', 'enc_log_var', 'kernel'): (1, ENCODER),
            ('params', 'enc_log_var', 'bias'): (0, ENCODER),
            ('params', 'dec_in', 'kernel'): (0, DECODER)}


class ConvAutoencoder(nn.Module):
  """Conv autoencoder with a flat code, for 32x32x3 images (SVHN).

  Encoder: three k4 s2 convs (32 -> 16 -> 8 -> 4 pixels) with ReLU, a dense
  hidden layer, then the code. Decoder mirrors it with transposed convs. Same
  spirit as the MLP: the code is a flat vector that growth extends.

  Attributes:
    latent_dim: code size k.
    image_shape: (H, W, C); H and W must be divisible by 8.
    channels: conv widths from the image inwards.
    hidden: width of the dense layer on each side of the code.
    code_norm, output: as in `MLPAutoencoder`.
  """
  latent_dim: int
  image_shape: Sequence[int] = (32, 32, 3)
  channels: Sequence[int] = (32, 64, 128)
  hidden: int = 256
  code_norm: bool = True
  output: str = 'sigmoid'

  def setup(self):
    h, w, c = self.image_shape
    scale = 2 ** len(self.channels)
    if h % scale or w % scale:
      raise ValueError(f'ConvAutoencoder needs H and W divisible by {scale}, '
                       f'got image_shape={tuple(self.image_shape)}')
    self.inner_shape = (h // scale, w // scale, self.channels[-1])
    self.enc = [layers.DownConv(ch, name=f'enc_conv_{i}')
                for i, ch in enumerate(self.channels)]
    self.enc_hidden = nn.Dense(self.hidden, name='enc_hidden')
    # BatchNorm removes any bias of the code, and Adam would only walk a bias
    # with an exactly-zero gradient on rounding noise.
    self.enc_out = nn.Dense(self.latent_dim, use_bias=not self.code_norm,
                            name='enc_out')
    if self.code_norm:
      self.norm = nn.BatchNorm(use_scale=False, use_bias=False, momentum=0.9,
                               epsilon=CODE_NORM_EPSILON, name='code_norm')
    self.dec_in = nn.Dense(self.hidden, name='dec_in')
    self.dec_hidden = nn.Dense(math.prod(self.inner_shape), name='dec_hidden')
    outs = list(reversed(self.channels[:-1])) + [c]
    self.dec = [layers.UpConv(ch, name=f'dec_conv_{i}')
                for i, ch in enumerate(outs)]

  @property
  def code_size(self) -> int:
    return self.latent_dim

  def encode(self, x, train: bool = False):
    h = x
    for layer in self.enc:
      h = nn.relu(layer(h))
    h = nn.relu(self.enc_hidden(h.reshape(h.shape[0], -1)))
    return _code_head(self, h, train)

  def decode(self, code, train: bool = False):
    del train  # No state in this decoder; the argument keeps one surface.
    h = nn.relu(self.dec_in(code))
    h = nn.relu(self.dec_hidden(h)).reshape((code.shape[0], *self.inner_shape))
    for layer in self.dec[:-1]:
      h = nn.relu(layer(h))
    return _output_activation(self.output)(self.dec[-1](h))

  def __call__(self, x, train: bool = False):
    code = self.encode(x, train)
    return self.decode(code, train), code

  def latent_axes(self) -> dict:
    return _flat_code_axes(self.code_norm)


class FaderAutoencoder(nn.Module):
  """Fader-Networks-style conditional autoencoder (docs/method.md part B).

  Encoder: k4 s2 p1 convs (BatchNorm after all but the first, LeakyReLU 0.2)
  from the image down to a 2x2 grid; the innermost conv outputs
  `num_attributes + nuisance` channels. The first `num_attributes` channels,
  averaged over the grid, are the attribute scores y; the rest are the nuisance
  code z (upstream puts the attributes last; putting them first keeps their
  indices fixed when z grows, which changes nothing else). The decoder
  (transposed convs, BatchNorm, ReLU, tanh) is fed y broadcast and
  concatenated to its input at every layer.

  The flat code is `[y ; vec(z)]`, shape (B, A + 4 N).

  Attributes:
    image_size: 32, 64, 128 or 256 (any power of two >= 8).
    num_attributes: A.
    nuisance: N, channels of z.
    init_channels, max_channels: widths are min(init * 2^i, max).
    image_channels: C of the images.
  """
  image_size: int = 64
  num_attributes: int = 40
  nuisance: int = 512
  init_channels: int = 32
  max_channels: int = 512
  image_channels: int = 3

  def setup(self):
    n = self.image_size
    if n < 8 or n & (n - 1):
      raise ValueError(f'FaderAutoencoder image_size must be a power of two '
                       f'>= 8, got {n}')
    self.num_layers = int(math.log2(n)) - 1
    widths = [min(self.init_channels * 2 ** i, self.max_channels)
              for i in range(self.num_layers - 1)]
    self.enc = [layers.DownConv(ch, name=f'enc_conv_{i}')
                for i, ch in enumerate(widths)]
    self.enc_bn = [nn.BatchNorm(momentum=0.9, name=f'enc_bn_{i}')
                   for i in range(1, len(widths))]
    self.enc_out = layers.DownConv(self.code_channels, name='enc_out')
    dec_widths = list(reversed(widths))
    self.dec_in = layers.UpConv(dec_widths[0], name='dec_in')
    self.dec = [layers.UpConv(ch, name=f'dec_conv_{i}')
                for i, ch in enumerate(dec_widths[1:] + [self.image_channels])]
    self.dec_bn = [nn.BatchNorm(momentum=0.9, name=f'dec_bn_{i}')
                   for i in range(len(dec_widths))]

  @property
  def code_channels(self) -> int:
    """Channels of the innermost conv: the scores', then the nuisance's."""
    return self.num_attributes + self.nuisance

  @property
  def code_size(self) -> int:
    return self.num_attributes + 4 * self.nuisance

  @property
  def factor_size(self) -> int:
    return self.num_attributes

  def grid(self, x, train: bool = False):
    """The innermost conv's output, (B, 2, 2, code_channels)."""
    h = nn.leaky_relu(self.enc[0](x), 0.2)
    for conv, bn in zip(self.enc[1:], self.enc_bn):
      h = nn.leaky_relu(bn(conv(h), use_running_average=not train), 0.2)
    return self.enc_out(h)

  def encode(self, x, train: bool = False):
    c = self.grid(x, train)  # (B, 2, 2, A + N)
    y = jnp.mean(c[..., :self.num_attributes], axis=(1, 2))
    z = c[..., self.num_attributes:].reshape(c.shape[0], -1)
    return jnp.concatenate([y, z], axis=-1)

  def decode(self, code, train: bool = False):
    a = self.num_attributes
    y = code[:, :a]
    z = code[:, a:].reshape(code.shape[0], 2, 2, self.nuisance)
    # Every up-conv sees y broadcast to its input's grid and concatenated in
    # front of its channels (`layers.UpConv`'s `cond`).
    h = nn.relu(self.dec_bn[0](self.dec_in(z, y), use_running_average=not train))
    for conv, bn in zip(self.dec[:-1], self.dec_bn[1:]):
      h = nn.relu(bn(conv(h, y), use_running_average=not train))
    return jnp.tanh(self.dec[-1](h, y))

  def __call__(self, x, train: bool = False):
    code = self.encode(x, train)
    return self.decode(code, train), code

  def latent_axes(self) -> dict:
    # The attribute channels come first on both sides, so appending nuisance
    # channels at the end leaves every attribute index where it was.
    return {('params', 'enc_out', 'kernel'): (3, ENCODER),
            ('params', 'enc_out', 'bias'): (0, ENCODER),
            ('params', 'dec_in', 'kernel'): (2, DECODER)}


class FaderNetwork(FaderAutoencoder):
  """Fader Networks (Lample et al. 2017) on `FaderAutoencoder`'s layers.

  The attributes are not in the code: the encoder gives the nuisance z
  alone (its innermost conv has `nuisance` channels), and the decoder,
  `FaderAutoencoder.decode`'s, is fed the image's attributes in their place.
  The decoder's input `[y ; vec(z)]` (B, A + 4 N) is this model's code for
  evaluation and edits: y the attributes given with the image (+-1), so an
  edit sets the decoder's attribute input. A latent discriminator
  (`LatentDiscriminator`) trained beside it (`jacdistill/fader.py`) predicts
  y from z; the encoder learns to fool it.
  """

  @property
  def code_channels(self) -> int:
    return self.nuisance

  def encode(self, x, train: bool = False):
    """The nuisance code vec(z), (B, 4 N)."""
    c = self.grid(x, train)
    return c.reshape(c.shape[0], -1)

  def __call__(self, x, attributes, train: bool = False):
    """(x_hat, code): `x` reconstructed under `attributes` (B, A), and the
    decoder's input `[attributes ; vec(z)]`."""
    code = jnp.concatenate([attributes.astype(jnp.float32),
                            self.encode(x, train)], axis=-1)
    return self.decode(code, train), code


class LatentDiscriminator(nn.Module):
  """Fader Networks' latent discriminator: attribute logits from vec(z).

  An MLP (LeakyReLU 0.2) on the flat nuisance code; upstream's first layer,
  a 4x4 stride-2 conv of the 2x2 grid to 1x1, is a dense layer on vec(z)
  too. Upstream's BatchNorm and dropout are left out, so it keeps no state
  and is deterministic.

  Attributes:
    num_attributes: A, one logit each (attribute present iff > 0).
    hidden: widths of its hidden layers.
  """
  num_attributes: int
  hidden: Sequence[int] = (512, 512)

  @nn.compact
  def __call__(self, z):
    h = z
    for i, width in enumerate(self.hidden):
      h = nn.leaky_relu(nn.Dense(width, name=f'hidden_{i}')(h), 0.2)
    return nn.Dense(self.num_attributes, name='logits')(h)


def example_input(model: nn.Module, batch: int = 2) -> jnp.ndarray:
  """A zero image batch of the shape `model` takes, for `model.init`."""
  if isinstance(model, FaderAutoencoder):
    shape = (model.image_size, model.image_size, model.image_channels)
  else:
    shape = tuple(model.image_shape)
  return jnp.zeros((batch, *shape), jnp.float32)


def example_inputs(model: nn.Module, batch: int = 2) -> tuple:
  """Every input of `model.__call__`, zeros: the images, and the attributes
  of a `FaderNetwork`."""
  x = example_input(model, batch)
  if isinstance(model, FaderNetwork):
    return x, jnp.zeros((batch, model.num_attributes), jnp.float32)
  return (x,)
