"""Train state, optimiser and the one jitted train step of every stage.

The step is `(state, teacher_variables_or_None, batch, rng) -> (state, metrics)`.
The teacher's variables are a separate argument: never differentiated, never
donated, never in the optimiser state. A teacher stage (no teacher) and a
student stage run the same code; the loss weights decide which terms count.
"""

import dataclasses
import functools
from typing import Any, Callable, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jacdistill import input_pipeline
from jacdistill import losses
from jacdistill import models
from jacdistill import rng

JACOBIAN_FORMS = ('swap', 'jvp')
# What a stage's optimiser updates: every parameter, or the decoder's alone
# (models.decoder_mask). A decoder-only stage keeps the encoder's parameters
# and its BatchNorm running statistics exactly; the encoder still normalises
# with batch statistics in training, as in any stage.
TRAINABLE = ('all', 'decoder')


@dataclasses.dataclass(frozen=True)
class LossWeights:
  """Weights of the loss terms; a zero weight removes the term from the total.

  rec: reconstruction MSE. lat: latent match of the factor dims to the
  teacher's code. jac: Jacobian supervision (form given by `jacobian`). xcov:
  cross-covariance between the free dims and the factor dims. attr: attribute
  hinge on the factor dims (needs `attributes` in the batch). cycle_attr,
  cycle_z: upstream's cycle losses (`losses.cycle_consistency`): the code
  with the factor dims of the permuted batch is decoded and re-encoded by the
  frozen encoder; the re-encoded scores are hinged towards the signs of the
  requested ones, the re-encoded free dims matched to the given ones. Their
  gradient reaches only the decoder.
  """
  rec: float = 1.0
  lat: float = 0.0
  jac: float = 0.0
  xcov: float = 0.0
  attr: float = 0.0
  cycle_attr: float = 0.0
  cycle_z: float = 0.0
  jacobian: str = 'swap'

  def __post_init__(self):
    for name in [f.name for f in dataclasses.fields(self)
                 if f.name != 'jacobian']:
      value = getattr(self, name)
      if not value >= 0:  # Also refuses NaN.
        raise ValueError(f'loss weight {name}={value} must be >= 0')
    if self.jacobian not in JACOBIAN_FORMS:
      raise ValueError(f'loss.jacobian={self.jacobian!r} is not one of '
                       f'{JACOBIAN_FORMS}')

  @classmethod
  def from_config(cls, cfg) -> 'LossWeights':
    return cls(**{f.name: cfg[f.name] for f in dataclasses.fields(cls)
                  if f.name in cfg})


@flax.struct.dataclass
class TrainState:
  """What a stage trains and checkpoints. The teacher is not in here."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def _check_trainable(trainable: str) -> None:
  if trainable not in TRAINABLE:
    raise ValueError(f'trainable={trainable!r} is not one of {TRAINABLE}')


def trainable_mask(collection: Any, trainable: str) -> Any:
  """Per leaf of a linen collection (params or batch_stats), whether a stage
  with this `trainable` (TRAINABLE) updates it."""
  _check_trainable(trainable)
  if trainable == 'all':
    return jax.tree.map(lambda _: True, collection)
  return models.decoder_mask(collection)


def make_optimizer(learning_rate: float, weight_decay: float = 0.0,
                   b1: float = 0.9, b2: float = 0.999,
                   clip_norm: float = 0.0,
                   trainable: str = 'all') -> optax.GradientTransformation:
  """Adam with PyTorch-style L2 weight decay (added to the gradient).

  Order as upstream: clip the raw gradient's global norm (if `clip_norm` > 0),
  add `weight_decay * param`, then Adam. With `trainable='decoder'` all that
  applies to the decoder's parameters alone (the clip sees their norm only);
  every other parameter gets a zero update and no Adam moments.
  """
  _check_trainable(trainable)
  parts = []
  if clip_norm > 0:
    parts.append(optax.clip_by_global_norm(clip_norm))
  if weight_decay > 0:
    parts.append(optax.add_decayed_weights(weight_decay))
  parts += [optax.scale_by_adam(b1=b1, b2=b2), optax.scale(-learning_rate)]
  tx = optax.chain(*parts)
  if trainable == 'all':
    return tx
  labels = lambda p: jax.tree.map(lambda t: 'train' if t else 'freeze',
                                  trainable_mask(p, trainable))
  return optax.partition({'train': tx, 'freeze': optax.set_to_zero()}, labels)


def create_train_state(variables: Any, tx: optax.GradientTransformation
                       ) -> TrainState:
  params = variables['params']
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get('batch_stats', {}),
                    opt_state=tx.init(params))


def variables_of(state: TrainState) -> dict:
  """The linen variables of a train state (what a student passes on)."""
  out = {'params': state.params}
  if state.batch_stats:
    out['batch_stats'] = state.batch_stats
  return out


@flax.struct.dataclass
class StageKeys:
  """A stage's independent random streams.

  init: the fresh initialisation (a teacher, or a stage without parent).
  growth: the fresh entries of a grown model.
  steps: the train step's base key; step s draws from `fold_in(steps, s)`.
  """
  init: jax.Array
  growth: jax.Array
  steps: jax.Array


@rng.draws
def stage_keys(seed: int, stage: int) -> StageKeys:
  """The streams of stage `stage` of a run seeded `seed`.

  Split, not folded with small integers: `fold_in(stage_key, 0)` as the
  initialisation key would also be step 0's key.
  """
  init, grow, steps = jax.random.split(
      jax.random.fold_in(jax.random.key(seed), stage), 3)
  return StageKeys(init=init, growth=grow, steps=steps)


def factor_size(model: nn.Module, teacher: Optional[nn.Module]) -> int:
  """How many leading code dims are factor dims for this stage.

  The Fader model fixes them (its attribute scores); for the flat models they
  are the teacher's whole code, or the model's own code when it is the teacher.
  """
  fixed = getattr(model, 'factor_size', None)
  if fixed is not None:
    return fixed
  return (teacher or model).code_size


def to_float(images: jax.Array, value_range: str) -> jax.Array:
  """Batches travel as uint8 and are scaled on the device; float batches
  (streamed CelebA) arrive already in the model's range."""
  if images.dtype != jnp.uint8:
    return images.astype(jnp.float32)
  return input_pipeline.to_float(images, value_range)


def value_range_of(model: nn.Module) -> str:
  return models.OUTPUT_RANGES[getattr(model, 'output', 'tanh')]


def swap_factors(code: jax.Array, perm: jax.Array, k: int) -> jax.Array:
  """`code` with its first k dims taken from the permuted batch."""
  return code.at[:, :k].set(code[perm, :k])


def decodes_each_example_alone(collection: Any) -> bool:
  """Whether a train-mode decode treats every example on its own.

  True when the model's decoder keeps no batch statistics (`collection` is
  its `batch_stats`): then decoding two batches of codes as one batch of
  twice the size gives the same rows, and a stage can run its plain and
  swapped decodes as one pass (bigger matmuls, half the kernel launches).
  """
  return not any(jax.tree.leaves(models.decoder_mask(collection)))


def _decode_both(decode: Callable, code: jax.Array, swapped: jax.Array):
  """`decode` of `code` and of `swapped` as one batch; returns both parts."""
  both = decode(jnp.concatenate([code, swapped]))
  return both[:code.shape[0]], both[code.shape[0]:]


def _rows(images: jax.Array) -> jax.Array:
  """(B, ...) as (B, -1). The swap term gathers and slices decoded images;
  on image-shaped (B, 28, 28, 1) arrays XLA:CPU gave those transposed
  layouts and three strided copies (~0.1 ms of the MLP student step)."""
  return images.reshape(images.shape[0], -1)


def make_loss_fn(model: nn.Module, teacher: Optional[nn.Module],
                 weights: LossWeights) -> Callable:
  """Builds `loss_fn(params, batch_stats, teacher_vars, batch, rng)`.

  Returns `(total, (terms, new_batch_stats))`, where `terms` holds every loss
  term this stage can compute, weighted in or not (weight 0 terms are reported
  but add nothing, so a student with all supervision weights at zero takes the
  very step a plain autoencoder takes). The cycle terms, which cost a decode
  and an encode, are computed only where one of their weights is > 0; their
  re-encoding uses the encoder's running BatchNorm statistics, as evaluation
  does and as a frozen teacher encodes for its students (upstream re-encodes
  with batch statistics).

  The swap form decodes the plain and the swapped codes of the frozen teacher
  (evaluation mode) as one batch, and those of the student too when its
  decoder has no batch statistics (`decodes_each_example_alone`) and the
  Jacobian term is weighted in; the rows are those of separate decodes.
  """
  k = factor_size(model, teacher)
  value_range = value_range_of(model)

  def loss_fn(params, batch_stats, teacher_vars, batch, rng):
    x = to_float(batch['image'], value_range)
    variables = {'params': params, **({'batch_stats': batch_stats}
                                      if batch_stats else {})}
    mutable = ['batch_stats'] if batch_stats else False

    def student_apply(*args, **kwargs):
      out = model.apply(variables, *args, train=True, mutable=mutable, **kwargs)
      return out if mutable else (out, {})

    def student_decode(c):
      return student_apply(c, method=model.decode)[0]

    perm = jax.random.permutation(rng, x.shape[0])
    swap = teacher is not None and weights.jacobian == 'swap'
    if swap and weights.jac > 0 and decodes_each_example_alone(batch_stats):
      code, updates = student_apply(x, method=model.encode)
      x_hat, s_swapped = _decode_both(student_decode, code,
                                      swap_factors(code, perm, k))
    else:
      (x_hat, code), updates = student_apply(x)
      if swap:
        s_swapped = student_decode(swap_factors(code, perm, k))
    y_s, w = code[:, :k], code[:, k:]
    terms = {'rec': losses.reconstruction(x, x_hat)}
    if w.shape[1] > 0:
      terms['xcov'] = losses.xcov(w, y_s)
    if 'attributes' in batch:
      terms['attr'] = losses.attribute_hinge(y_s, batch['attributes'])
    if weights.cycle_attr > 0 or weights.cycle_z > 0:
      # Only the decoder learns from the cycle: its input code and the
      # re-encoding encoder are constants. Train-mode decode, its batch
      # statistics discarded as the swapped decode's are.
      c_in = jax.lax.stop_gradient(swap_factors(code, perm, k))
      x_cycle = student_decode(c_in)
      frozen = jax.lax.stop_gradient(variables)
      c_re = model.apply(frozen, x_cycle, train=False, method=model.encode)
      terms['cycle_attr'], terms['cycle_z'] = losses.cycle_consistency(
          c_re, c_in, k)
    if teacher is not None:
      def teacher_decode(c):
        return teacher.apply(teacher_vars, c, method=teacher.decode)

      t_code = teacher.apply(teacher_vars, x, train=False,
                             method=teacher.encode)
      y_t = t_code[:, :k]
      terms['lat'] = losses.latent_match(y_s, y_t)
      if swap:
        # A teacher whose code is all factor dims decodes the swapped code to
        # a permutation of its plain output; no second teacher pass needed.
        if t_code.shape[1] == k:
          t_out = _rows(teacher_decode(t_code))
          t_swapped = t_out[perm]
        else:
          t_out, t_swapped = map(_rows, _decode_both(
              teacher_decode, t_code, swap_factors(t_code, perm, k)))
        terms['jac'] = losses.swap_jacobian(_rows(x_hat), _rows(s_swapped),
                                            t_out, t_swapped)
      else:
        def teacher_decode_factors(y):
          return teacher_decode(t_code.at[:, :k].set(y))

        terms['jac'] = losses.jvp_jacobian(teacher_decode_factors,
                                           student_decode, y_t, code,
                                           y_t[perm] - y_t)
    total = sum(getattr(weights, name) * value for name, value in terms.items()
                if getattr(weights, name) > 0)
    return total, (terms, updates.get('batch_stats', batch_stats))

  return loss_fn


# XLA:CPU (jaxlib 0.10) hands every dot to YNNPACK by default. On the MLP
# student step (batch 128, widths 7-784) XLA's own (Eigen) dots are faster:
# 6.94-9.45 ms against 7.68-10.54 ms median per step in six runs, each
# alternating both in one process on a 2-core AMD EPYC (`launch/bench.py`'s
# case); the 64x64 conv student is the same within noise (888 against 924 ms,
# 1,019 against 988 ms). YNNPACK keeps the reductions, the other half of its
# default list.
_CPU_COMPILER_OPTIONS = {
    'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_REDUCE'}


@functools.cache
def step_compiler_options() -> dict:
  """The XLA options train steps compile with on this backend (maybe none).

  None off the CPU, and none with an XLA that lacks the option (it is
  experimental): compiling with an unknown option is an error.
  """
  if jax.default_backend() != 'cpu':
    return {}
  try:
    jax.jit(lambda x: x + 1).lower(jnp.float32(0)).compile(
        _CPU_COMPILER_OPTIONS)
  except jax.errors.JaxRuntimeError:
    return {}
  return dict(_CPU_COMPILER_OPTIONS)


def make_train_step(model: nn.Module, teacher: Optional[nn.Module],
                    tx: optax.GradientTransformation, weights: LossWeights,
                    learning_rate: float = 0.0, jit: bool = True,
                    trainable: str = 'all') -> Callable:
  """Returns `step(state, teacher_vars, batch, rng) -> (state, metrics)`.

  `rng` is the stage's base key; the step folds in its own step number, so a
  resumed run draws exactly the keys an uninterrupted one would. The state is
  donated; the teacher's variables are not. `trainable` (TRAINABLE) is the
  one `tx` was made with: the step differentiates only those parameters (the
  others' gradients are zero and not computed) and keeps the others'
  BatchNorm statistics.
  """
  loss_fn = make_loss_fn(model, teacher, weights)

  def stop_frozen(tree, mask):
    return jax.tree.map(lambda leaf, train: leaf if train else
                        jax.lax.stop_gradient(leaf), tree, mask)

  def step(state: TrainState, teacher_vars, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    teacher_vars = jax.lax.stop_gradient(teacher_vars)
    mask = trainable_mask(state.params, trainable)
    grad_fn = jax.value_and_grad(
        lambda p, *args: loss_fn(stop_frozen(p, mask), *args), has_aux=True)
    (total, (terms, batch_stats)), grads = grad_fn(
        state.params, state.batch_stats, teacher_vars, batch, rng)
    batch_stats = jax.tree.map(
        lambda new, old, train: new if train else old, batch_stats,
        state.batch_stats, trainable_mask(state.batch_stats, trainable))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    # Each global norm reads every parameter once; on the MLP student a third
    # norm (of the update) cost ~0.3 ms of a ~8 ms step, so there are two.
    grad_norm = optax.tree.norm(grads)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(terms, total=total, grad_norm=grad_norm,
                   param_norm=optax.tree.norm(params),
                   learning_rate=jnp.asarray(learning_rate, jnp.float32))
    new_state = TrainState(step=state.step + 1, params=params,
                           batch_stats=batch_stats, opt_state=opt_state)
    return new_state, metrics

  return jit_step(step) if jit else step


def jit_step(step: Callable) -> Callable:
  """A train step `step(state, ...) -> (state, metrics)` jitted as every
  chain's is: the state donated, the backend's step compiler options, drawn
  under the library's random scheme. The plain function stays reachable as
  `.unjitted`, for a caller that jits it inside a larger function
  (`device_loop`): compiler options apply to a top-level jit only."""
  jitted = rng.draws(jax.jit(step, donate_argnums=(0,),
                             compiler_options=step_compiler_options()))
  jitted.unjitted = step
  return jitted


def make_eval_step(model: nn.Module) -> Callable:
  """Returns jitted `eval(variables, images) -> (x_hat, code, per-image MSE)`."""
  value_range = value_range_of(model)

  @jax.jit
  def evaluate(variables, images):
    x = to_float(images, value_range)
    x_hat, code = model.apply(variables, x, train=False)
    mse = jnp.mean(jnp.square(x - x_hat).reshape(x.shape[0], -1), axis=1)
    return x_hat, code, mse

  return evaluate


def encode_split(model: nn.Module, variables: Any, images: np.ndarray,
                 batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """A split's codes (N, K) and per-image MSEs (N,) in [0, 1] pixel units
  (a tanh model's [-1, 1] MSE divided by 4), `make_eval_step` in batches."""
  eval_fn = make_eval_step(model)
  parts = [eval_fn(variables, images[i:i + batch_size])
           for i in range(0, len(images), batch_size)]
  scale = 4.0 if value_range_of(model) == '-11' else 1.0
  return (np.concatenate([np.asarray(p[1]) for p in parts]),
          np.concatenate([np.asarray(p[2]) for p in parts]) / scale)
