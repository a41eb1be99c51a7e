"""Rebuild a model's variables for a longer latent code.

`grow` is generic: it reads which leaves carry the latent dimension from the
new model's `latent_axes()` and never names a layer. The old dims keep their
indices and values bit for bit; new dims are appended along the latent axis.
With `init='zero'` (ours) the new decoder-side weights are zero, so the grown
model computes exactly what its parent did, and the new encoder-side weights
keep the fresh initialisation of `new_model.init` (were both sides zero, no
gradient would ever reach the new dims). `init='random'` keeps the fresh
initialisation on both sides, as upstream does (upstream also prepends the new
dim; we always append so that the teacher's dims keep their indices).

A parent with a code BatchNorm grown into a model without one (upstream's
first teacher and its students) first has the BatchNorm's running statistics
folded into its encoder's output layer (`fold_code_norm`), so the student's
factor dims start equal to the teacher's normalised code in inference mode.
(Upstream drops the statistics, so its first student starts from the pre-BN
code.)
"""

from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from jacdistill import models
from jacdistill import rng

GROWTH_INITS = ('zero', 'random')


def _path_key(path) -> tuple[str, ...]:
  return tuple(getattr(k, 'key', getattr(k, 'name', str(k))) for k in path)


_NORM = ('batch_stats', 'code_norm')


def fold_code_norm(variables: Any,
                   epsilon: float = models.CODE_NORM_EPSILON) -> Any:
  """The variables of the same flat-code model without its code BatchNorm.

  The normalised code `(h W - mu) / sigma`, `sigma = sqrt(var + epsilon)`
  (inference mode: the running mean `mu` and variance `var`), is computed by
  an output layer with kernel `W / sigma` and bias `-mu / sigma`.

  Args:
    variables: linen variables of an `MLPAutoencoder` or `ConvAutoencoder`
      with `code_norm=True`: `params/enc_out/kernel` (H, k) and no bias,
      `batch_stats/code_norm/{mean, var}` (k,).
    epsilon: the BatchNorm's epsilon.
  Returns:
    Variables for `code_norm=False`: `params/enc_out/{kernel, bias}` and no
    `code_norm` statistics (no `batch_stats` at all if none are left).
  """
  stats = variables['batch_stats']['code_norm']
  inv_sigma = jax.lax.rsqrt(jnp.asarray(stats['var']) + epsilon)
  params = dict(variables['params'])
  enc_out = dict(params['enc_out'])
  if 'bias' in enc_out:
    raise ValueError('enc_out has a bias: a normalised code has none')
  enc_out['kernel'] = jnp.asarray(enc_out['kernel']) * inv_sigma
  enc_out['bias'] = -jnp.asarray(stats['mean']) * inv_sigma
  params['enc_out'] = enc_out
  out = {k: v for k, v in variables.items() if k not in ('params',
                                                         'batch_stats')}
  out['params'] = params
  rest = {k: v for k, v in variables['batch_stats'].items() if k != 'code_norm'}
  if rest:
    out['batch_stats'] = rest
  return out


def _has_code_norm(variables: Any) -> bool:
  return _NORM[1] in dict(variables).get(_NORM[0], {})


@rng.draws
def grow(old_variables: Any, new_model: nn.Module, rng: jax.Array,
         init: str = 'zero') -> Any:
  """Returns `new_model`'s variables holding `old_variables` in the old dims.

  Args:
    old_variables: the parent's linen variables ({'params': ..., ...}); a
      code BatchNorm that `new_model` lacks is folded in (module doc).
    new_model: the grown model (same architecture, longer code).
    rng: key for the fresh initialisation of the new entries.
    init: 'zero' (new decoder-side entries zero) or 'random' (upstream).
  Returns:
    A variables pytree with `new_model`'s structure and shapes.
  Raises:
    ValueError: on an unknown `init`, or when a leaf differs in shape but is
      not declared as latent by `new_model.latent_axes()`, or shrinks.
  """
  if init not in GROWTH_INITS:
    raise ValueError(f'growth init {init!r} is not one of {GROWTH_INITS}')
  fresh = jax.jit(new_model.init)(rng, models.example_input(new_model))
  fresh = jax.tree.map(jnp.asarray, dict(fresh))
  if _has_code_norm(old_variables) and not _has_code_norm(fresh):
    old_variables = fold_code_norm(old_variables)
  old_flat = {_path_key(p): v for p, v in
              jax.tree_util.tree_flatten_with_path(dict(old_variables))[0]}
  axes = new_model.latent_axes()

  def place(path, new_leaf):
    key = _path_key(path)
    if key not in old_flat:
      raise ValueError(f'variable {"/".join(key)} of the grown model has no '
                       'counterpart in the parent: the architectures differ')
    old_leaf = jnp.asarray(old_flat[key])
    if old_leaf.shape == new_leaf.shape:
      # A copy, not an alias: the student's buffers are donated to its train
      # step while the parent's live on as its frozen teacher.
      return jnp.array(old_leaf, copy=True)
    if key not in axes:
      raise ValueError(
          f'variable {"/".join(key)} changes shape {old_leaf.shape} -> '
          f'{new_leaf.shape} but is not a latent leaf of '
          f'{type(new_model).__name__}; only the code size may change')
    axis, role = axes[key]
    same = [o == n for i, (o, n) in enumerate(zip(old_leaf.shape, new_leaf.shape))
            if i != axis]
    if old_leaf.ndim != new_leaf.ndim or not all(same) or (
        old_leaf.shape[axis] > new_leaf.shape[axis]):
      raise ValueError(f'variable {"/".join(key)} cannot grow from '
                       f'{old_leaf.shape} to {new_leaf.shape} along axis {axis}')
    base = new_leaf
    if role == models.DECODER and init == 'zero':
      base = jnp.zeros_like(new_leaf)
    index = [slice(None)] * new_leaf.ndim
    index[axis] = slice(0, old_leaf.shape[axis])
    return base.at[tuple(index)].set(old_leaf.astype(new_leaf.dtype))

  return jax.tree_util.tree_map_with_path(place, fresh)
