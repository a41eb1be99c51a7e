"""Fader Networks' training (Lample et al. 2017), the attribute chain's
adversarial baseline: a `models.FaderNetwork` whose decoder is fed the
attributes, and a `models.LatentDiscriminator` that predicts them from the
code, each updated by its own optimiser inside one jitted step.

Step s on a batch (x, t), t the attributes in {-1, +1} (`make_train_step`):

  1. discriminator: `z = stop_grad(E(x))` (encoder in evaluation mode, as
     upstream's `lat_dis_step`), one step of its optimiser on
     `dis = attribute_logistic(D(z), t)`;
  2. autoencoder: the discriminator as step 1 left it, frozen; one step of
     the autoencoder's optimiser on

       rec_w * rec(x, Dec([t ; E(x)])) + lambda_s * adv,
       adv = attribute_logistic(D(E(x)), -t),

     the encoder in training mode, `lambda_s = adv_max * min(1, s / ramp)`
     (upstream's linear schedule: the code first learns to reconstruct).

Neither update reaches the other's parameters: the discriminator sees a
stop-gradient code, the autoencoder a stop-gradient discriminator. The
discriminator's parameters and optimiser state are part of the train state,
so they are checkpointed and a resumed stage continues them bit for bit.
Upstream draws a separate batch for each update and regularises the
discriminator with dropout; here both updates use the step's batch and the
discriminator is deterministic, so a step is a function of (state, batch).
"""

import dataclasses
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jacdistill import losses
from jacdistill import models
from jacdistill import rng
from jacdistill import train


@dataclasses.dataclass(frozen=True)
class Adversary:
  """The latent discriminator and its schedule.

  Attributes:
    discriminator: the module (its `num_attributes` the model's).
    tx: its optimiser.
    weight: the adversarial term's weight once the ramp is over.
    ramp_steps: steps over which the weight grows linearly from 0 (0: at
      full weight from the first step).
    init_key: the discriminator's initialisation key.
  """
  discriminator: nn.Module
  tx: optax.GradientTransformation
  weight: float
  ramp_steps: int
  init_key: jax.Array

  def __post_init__(self):
    if not self.weight >= 0 or self.ramp_steps < 0:
      raise ValueError(f'adversary weight={self.weight} and ramp_steps='
                       f'{self.ramp_steps} must be >= 0')


@flax.struct.dataclass
class FaderState:
  """The autoencoder's train state and the discriminator's."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  dis_params: Any
  dis_opt_state: Any


def adversarial_weight(weight: float, ramp_steps: int,
                       step: jax.Array) -> jax.Array:
  """`weight * min(1, step / ramp_steps)` (`weight` when ramp_steps = 0)."""
  if ramp_steps == 0:
    return jnp.asarray(weight, jnp.float32)
  return weight * jnp.minimum(1.0, step.astype(jnp.float32) / ramp_steps)


@rng.draws
def create_state(adversary: Adversary, model: models.FaderNetwork,
                 variables: Any, tx: optax.GradientTransformation
                 ) -> FaderState:
  """The state at step 0: `variables` (the model's) and a fresh
  discriminator from `adversary.init_key`."""
  z = jnp.zeros((1, 4 * model.nuisance), jnp.float32)
  dis_params = jax.jit(adversary.discriminator.init)(adversary.init_key,
                                                     z)['params']
  ae = train.create_train_state(variables, tx)
  return FaderState(step=ae.step, params=ae.params, batch_stats=ae.batch_stats,
                    opt_state=ae.opt_state, dis_params=dis_params,
                    dis_opt_state=adversary.tx.init(dis_params))


def variables_of(state: FaderState) -> dict:
  """The autoencoder's linen variables (what the stage is scored on)."""
  return {'params': state.params, 'batch_stats': state.batch_stats}


def make_discriminator_loss(model: models.FaderNetwork,
                            discriminator: nn.Module) -> Callable:
  """`loss(dis_params, variables, batch) -> (dis, accuracy)`: the
  discriminator's logistic loss on the attributes of the frozen encoder's
  code (evaluation mode), and the fraction of attributes it gets right."""
  value_range = train.value_range_of(model)

  def loss(dis_params, variables, batch):
    x = train.to_float(batch['image'], value_range)
    z = model.apply(jax.lax.stop_gradient(variables), x, train=False,
                    method=model.encode)
    logits = discriminator.apply({'params': dis_params}, z)
    t = batch['attributes']
    accuracy = jnp.mean((logits > 0) == (t > 0), dtype=jnp.float32)
    return losses.attribute_logistic(logits, t), accuracy

  return loss


def make_autoencoder_loss(model: models.FaderNetwork,
                          discriminator: nn.Module, rec_weight: float
                          ) -> Callable:
  """`loss(params, batch_stats, dis_params, batch, adv_weight)` ->
  `(total, (terms, new_batch_stats))`: `rec_weight * rec + adv_weight *
  adv`, `adv` the frozen discriminator's logistic loss against the flipped
  attributes. `adv` is reported at any weight."""
  value_range = train.value_range_of(model)

  def loss(params, batch_stats, dis_params, batch, adv_weight):
    x = train.to_float(batch['image'], value_range)
    t = batch['attributes']
    (x_hat, code), updates = model.apply(
        {'params': params, 'batch_stats': batch_stats}, x, t, train=True,
        mutable=['batch_stats'])
    logits = discriminator.apply(
        {'params': jax.lax.stop_gradient(dis_params)},
        code[:, model.num_attributes:])
    terms = {'rec': losses.reconstruction(x, x_hat),
             'adv': losses.attribute_logistic(logits, -t)}
    total = rec_weight * terms['rec'] + adv_weight * terms['adv']
    return total, (terms, updates['batch_stats'])

  return loss


def make_train_step(adversary: Adversary, model: models.FaderNetwork,
                    tx: optax.GradientTransformation,
                    weights: train.LossWeights, learning_rate: float = 0.0,
                    jit: bool = True) -> Callable:
  """Returns `step(state, teacher_vars, batch, rng) -> (state, metrics)`,
  the module doc's two updates; `teacher_vars` and `rng` are unused (no
  teacher, nothing random), kept for the stage loop's one signature. Only
  `weights.rec` counts. The state is donated."""
  dis_loss = make_discriminator_loss(model, adversary.discriminator)
  ae_loss = make_autoencoder_loss(model, adversary.discriminator, weights.rec)

  def step(state: FaderState, teacher_vars, batch, rng):
    del teacher_vars, rng
    (dis, dis_acc), dis_grads = jax.value_and_grad(dis_loss, has_aux=True)(
        state.dis_params, variables_of(state), batch)
    dis_updates, dis_opt_state = adversary.tx.update(
        dis_grads, state.dis_opt_state, state.dis_params)
    dis_params = optax.apply_updates(state.dis_params, dis_updates)

    adv_weight = adversarial_weight(adversary.weight, adversary.ramp_steps,
                                    state.step)
    (total, (terms, batch_stats)), grads = jax.value_and_grad(
        ae_loss, has_aux=True)(state.params, state.batch_stats, dis_params,
                               batch, adv_weight)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(terms, total=total, dis=dis, dis_acc=dis_acc,
                   adv_weight=adv_weight, grad_norm=optax.tree.norm(grads),
                   param_norm=optax.tree.norm(params),
                   dis_grad_norm=optax.tree.norm(dis_grads),
                   learning_rate=jnp.asarray(learning_rate, jnp.float32))
    return FaderState(step=state.step + 1, params=params,
                      batch_stats=batch_stats, opt_state=opt_state,
                      dis_params=dis_params,
                      dis_opt_state=dis_opt_state), metrics

  if not jit:
    return step
  return train.jit_step(step)
