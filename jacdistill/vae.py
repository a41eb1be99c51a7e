"""beta-VAE (Higgins et al. 2017), the growth task's unsupervised baseline:
`models.GaussianMLPAutoencoder` trained on

    bernoulli_nll(x, Dec(c)) + beta * gaussian_kl(mean, log_var),
    c = mean + exp(log_var / 2) * eps,  eps ~ N(0, I) drawn per step,

one jitted step (`make_train_step`) with train.py's state. At evaluation
the code is the mean. A VAE's code dims are exchangeable under its prior,
so before the growth chain's swap protocol (which swaps the first dims)
`sort_dims` orders them by their mean KL on the training images, most
informative first: the swapped dims are then the VAE's counterpart of a
growth student's teacher dims, the ones that carry most of the image.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jacdistill import losses
from jacdistill import models
from jacdistill import train


def make_loss_fn(model: models.GaussianMLPAutoencoder,
                 beta: float) -> Callable:
  """`loss(params, batch, rng) -> (total, terms)`: the module doc's loss;
  `terms` are 'nll', 'kl' and 'rec' (the MSE of the sampled code's decode,
  reported, not weighted in)."""

  def loss(params, batch, rng):
    x = train.to_float(batch['image'], '01')
    variables = {'params': params}
    mean, log_var = model.apply(variables, x, method=model.posterior)
    code = mean + jnp.exp(0.5 * log_var) * jax.random.normal(rng, mean.shape)
    logits = model.apply(variables, code, method=model.decode_logits)
    terms = {'nll': losses.bernoulli_nll(x, logits),
             'kl': losses.gaussian_kl(mean, log_var),
             'rec': losses.reconstruction(x, jax.nn.sigmoid(logits))}
    return terms['nll'] + beta * terms['kl'], terms

  return loss


def make_train_step(model: models.GaussianMLPAutoencoder,
                    tx: optax.GradientTransformation, beta: float,
                    learning_rate: float = 0.0, jit: bool = True) -> Callable:
  """Returns `step(state, teacher_vars, batch, rng) -> (state, metrics)`
  (train.TrainState; `teacher_vars` unused). Step s draws its noise from
  `fold_in(rng, s)`, so a resumed run draws what an uninterrupted one
  would. The state is donated."""
  loss_fn = make_loss_fn(model, beta)

  def step(state: train.TrainState, teacher_vars, batch, rng):
    del teacher_vars
    rng = jax.random.fold_in(rng, state.step)
    (total, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, batch, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(terms, total=total, grad_norm=optax.tree.norm(grads),
                   param_norm=optax.tree.norm(params),
                   learning_rate=jnp.asarray(learning_rate, jnp.float32))
    return state.replace(step=state.step + 1, params=params,
                         opt_state=opt_state), metrics

  if not jit:
    return step
  return train.jit_step(step)


def kl_per_dim(model: models.GaussianMLPAutoencoder, variables: Any,
               images: np.ndarray, batch_size: int) -> np.ndarray:
  """Mean over `images` (uint8 (N, H, W, C)) of each code dim's KL from the
  prior, (k,) nats."""
  @jax.jit
  def per_dim(x):
    mean, log_var = model.apply(variables, train.to_float(x, '01'),
                                method=model.posterior)
    return jnp.sum(0.5 * (jnp.square(mean) + jnp.exp(log_var) - 1.0
                          - log_var), axis=0)

  total = sum(np.asarray(per_dim(images[i:i + batch_size]), np.float64)
              for i in range(0, len(images), batch_size))
  return total / len(images)


def sort_dims(model: models.GaussianMLPAutoencoder, variables: Any,
              order: np.ndarray) -> Any:
  """`variables` with code dim `order[j]` moved to position j: the same
  function of the image, its code permuted."""
  order = np.asarray(order)
  out = jax.tree.map(lambda a: a, variables)
  for (collection, module, name), (axis, _) in model.latent_axes().items():
    leaf = variables[collection][module][name]
    out[collection][module][name] = jnp.take(leaf, order, axis=axis)
  return out
