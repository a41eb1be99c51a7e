r"""Times one jitted train step, or the input pipeline, on this machine.

  python launch/bench.py --case mlp_student --batch 128 --steps 200 \
      --warmup 10 --json

Cases:
  mlp_teacher   MLPAutoencoder(2), reconstruction only (stage 0).
  mlp_student   MLPAutoencoder(8) grown from a 7-dim teacher, full student loss
                at upstream weights (--jacobian swap|jvp).
  conv_student  FaderAutoencoder 64x64, nuisance 256 -> 512, SPEC B's student
                loss and optimiser.
  data          Fashion-MNIST (idx) through `Batcher` and `jax.device_put`,
                against the mlp_student step it would feed: `ratio` is step
                time / batch time and should be >= 10.
  loop          the stage loop's two ways of feeding --loop_case's step (an
                in-memory dataset the size of --loop_examples): per step
                (host batch, shard, dispatch, metrics fetched every
                --chunk steps) and the device loop (`train.device_loop`:
                --chunk steps per dispatch), against the bare step on a
                batch already on the device, all pipelined (synchronised
                once per --chunk steps, as the loop is). `host_share` is the
                part of the per-step loop's time the bare step does not
                account for.
  explore       launch/explore.py's decode handler (`Explorer.decode`: JSON
                request in, edit applied, one image decoded, PNG encoded,
                JSON-ready reply out), --steps calls with a new slider value
                each, for the MLP of configs/fashion_grow.py:quick at k=8
                and the Fader student32 of configs/fashion_attr.py:quick
                (random weights: the time does not depend on them). Targets:
                median < 50 ms (MLP) and < 150 ms (attribute student).

Train-step cases feed one fixed random uint8 batch already on the device, so
they measure the step, not the data. Each timed step is synchronised with
`jax.block_until_ready`; `ms_per_step` is the median. FLOPs are XLA's own count
for the compiled step (`cost_analysis`), so `gflop_per_s` is comparable across
machines and flags (set XLA_FLAGS in the environment; it is echoed back, as
are the options `train.step_compiler_options` compiles train steps with).
On a shared machine read `cpu_ms_per_step` and `load_avg_1min` beside the wall
times: other processes' work inflates the latter. `matmul_gflop_per_s` is the
rate of a 1024^3 float32 matmul on the same device just before the timed
steps: the machine's speed at that minute, to read the step times against.
With `--dots`, every dot of the compiled step is also timed on its own and
`dots_ms` is their sum: how much of `ms_per_step` the matmuls alone take.
"""

import json
import math
import os
import re
import statistics
import time

import jax

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
import jax.numpy as jnp
import ml_collections
import numpy as np

from jacdistill import growth
from jacdistill import input_pipeline
from jacdistill import models
from jacdistill import train

CASES = ('mlp_teacher', 'mlp_student', 'conv_student', 'data', 'loop',
         'explore')
STEP_CASES = ('mlp_teacher', 'mlp_student', 'conv_student')
DEFAULT_BATCH = {'mlp_teacher': 128, 'mlp_student': 128, 'conv_student': 64,
                 'data': 128, 'loop': 128, 'explore': 1}

_CASE = flags.DEFINE_enum('case', 'mlp_student', CASES, 'What to time.')
_BATCH = flags.DEFINE_integer(
    'batch', None, 'Batch size; default 128, or 64 for conv_student.')
_STEPS = flags.DEFINE_integer('steps', 100, 'Timed steps (or batches).')
_WARMUP = flags.DEFINE_integer('warmup', 5, 'Untimed steps after compiling.')
_JACOBIAN = flags.DEFINE_enum('jacobian', 'swap', train.JACOBIAN_FORMS,
                              'Form of the Jacobian loss of student cases.')
_IDX_DIR = flags.DEFINE_string('idx_dir', input_pipeline.DEFAULT_IDX_DIR,
                               'Fashion-MNIST idx files, for --case data.')
_SEED = flags.DEFINE_integer('seed', 0, 'Initialisation and data seed.')
_JSON = flags.DEFINE_bool('json', False, 'Print one JSON object.')
_LOOP_CASE = flags.DEFINE_enum('loop_case', 'mlp_student', STEP_CASES,
                               'The step --case loop feeds.')
_CHUNK = flags.DEFINE_integer('chunk', 100, '--case loop: steps per '
                              'dispatch of the device loop, and per metrics '
                              'fetch of both loops (log.every_steps).')
_EXAMPLES = flags.DEFINE_integer('loop_examples', 60000, '--case loop: '
                                 'images of the in-memory dataset.')
_DOTS = flags.DEFINE_bool(
    'dots', False, 'Train-step cases: also time every dot of the compiled '
    'step on its own (`time_dots`) and report their sum, `dots_ms`.')


def _init(model, seed):
  return jax.jit(model.init)(jax.random.key(seed), models.example_input(model))


def build_case(case, batch_size, jacobian, seed, tiny=False):
  """Returns (step, variables, tx, teacher_vars, batch) of a train-step case.

  The variables are random (the step's cost does not depend on training);
  students are grown from their teacher as a real stage would be. `tiny`:
  the same models a few times narrower and smaller (seconds on a CPU, for
  tests of the scripts that time them).
  """
  rng = np.random.default_rng(seed)
  if case == 'conv_student':
    size, nuisance = (16, 8) if tiny else (64, 256)
    widths = dict(init_channels=4, max_channels=16) if tiny else {}
    teacher = models.FaderAutoencoder(image_size=size, num_attributes=40,
                                      nuisance=nuisance, **widths)
    model = models.FaderAutoencoder(image_size=size, num_attributes=40,
                                    nuisance=2 * nuisance, **widths)
    tx = train.make_optimizer(2e-4, b1=0.5, clip_norm=10)
    weights = train.LossWeights(rec=100, xcov=0.01, jac=50, lat=1,
                                jacobian=jacobian)
    shape = (batch_size, size, size, 3)
  else:
    tx = train.make_optimizer(3e-4, weight_decay=1e-6)
    shape = (batch_size, 28, 28, 1)
    hidden = dict(hidden=(32, 16, 8)) if tiny else {}
    if case == 'mlp_teacher':
      teacher, model = None, models.MLPAutoencoder(latent_dim=2, **hidden)
      weights = train.LossWeights(rec=1)
    else:
      teacher = models.MLPAutoencoder(7, **hidden)
      model = models.MLPAutoencoder(8, **hidden)
      weights = train.LossWeights(rec=1, lat=0.25, jac=0.1, xcov=1e-3,
                                  jacobian=jacobian)
  if teacher is None:
    teacher_vars, variables = None, _init(model, seed)
  else:
    teacher_vars = _init(teacher, seed)
    variables = growth.grow(teacher_vars, model, jax.random.key(seed + 1))
  images = rng.integers(0, 256, size=shape, dtype=np.uint8)
  batch = {'image': jax.device_put(images)}
  step = train.make_train_step(model, teacher, tx, weights)
  return step, variables, tx, teacher_vars, batch


def _flops(compiled):
  cost = compiled.cost_analysis()  # A dict in jax >= 0.6; None if unsupported.
  return float(cost.get('flops', np.nan)) if cost else np.nan


def _stats(times_s):
  ms = sorted(1e3 * t for t in times_s)
  return {'ms_median': statistics.median(ms), 'ms_min': ms[0],
          'ms_p90': ms[min(len(ms) - 1, int(0.9 * len(ms)))]}


def time_step(step, variables, tx, teacher_vars, batch, steps, warmup, seed):
  """Compiles `step` once and times `steps` synchronised calls of it.

  Returns the figures and the compiled step (for `compiled_dots`).
  """
  # The step donates its state: build a fresh one and thread the returned one.
  state = train.create_train_state(jax.tree.map(jnp.array, variables), tx)
  rng = jax.random.key(seed)
  start = time.perf_counter()
  lowered = step.lower(state, teacher_vars, batch, rng)
  lowered_at = time.perf_counter()
  compiled = lowered.compile()
  compiled_at = time.perf_counter()
  times, cpu_times = [], []
  for i in range(warmup + steps):
    start_step, start_cpu = time.perf_counter(), time.process_time()
    state, metrics = compiled(state, teacher_vars, batch, rng)
    jax.block_until_ready((state, metrics))
    if i >= warmup:
      times.append(time.perf_counter() - start_step)
      cpu_times.append(time.process_time() - start_cpu)
  stats = _stats(times)
  gflop = _flops(compiled) / 1e9
  return {
      'ms_per_step': stats['ms_median'],
      'ms_min': stats['ms_min'],
      'ms_p90': stats['ms_p90'],
      # CPU time of all this process's threads. It grows much less than the
      # wall time when other processes compete for the cores: on a shared
      # machine compare it, not the wall time, across runs.
      'cpu_ms_per_step': _stats(cpu_times)['ms_median'],
      'images_per_s': batch['image'].shape[0] / (stats['ms_median'] / 1e3),
      'lower_s': lowered_at - start,
      'compile_s': compiled_at - start,
      'gflop_per_step': gflop,
      'gflop_per_s': gflop / (stats['ms_median'] / 1e3),
      'final_loss': float(metrics['total']),
  }, compiled


def time_loop(step, variables, tx, teacher_vars, batch, steps, chunk,
              examples, seed):
  """ms per step of the bare step, the per-step loop and the device loop
  (module docstring), each over `steps` steps after one untimed chunk, in
  the stage loop's code (`device_loop`, `parallel.shard_batch`)."""
  from jacdistill import device_loop, parallel  # pylint: disable=g-import-not-at-top
  mesh = parallel.data_mesh()
  rng = np.random.default_rng(seed)
  split = input_pipeline.Split(
      images=rng.integers(0, 256, (examples, *batch['image'].shape[1:]),
                          dtype=np.uint8),
      labels=np.zeros((examples,), np.int32))
  batcher = input_pipeline.Batcher(split, batch['image'].shape[0], seed)
  source = batcher.device_data()
  key = jax.random.key(seed)
  teacher_vars = parallel.replicate(teacher_vars, mesh)
  batch = parallel.shard_batch({'image': np.asarray(batch['image'])}, mesh)
  data = device_loop.put_data(source, mesh)
  scan = device_loop.make_chunk(step, source.make_batch, ('image',), mesh)

  def bare(state, s):
    history = []
    for _ in range(s, s + chunk):
      state, metrics = step(state, teacher_vars, batch, key)
      history.append(metrics)
    return state, history

  def per_step(state, s):
    history = []
    for t in range(s, s + chunk):
      host = batcher.batch(t)
      b = parallel.shard_batch({'image': host['image']}, mesh)
      state, metrics = step(state, teacher_vars, b, key)
      history.append(metrics)
    return state, history

  def scanned(state, s):
    idx = device_loop.put_indices(source, range(s, s + chunk), mesh)
    state, metrics = scan(state, teacher_vars, data, idx, key)
    return state, [metrics]

  out = {}
  for name, run in (('bare', bare), ('per_step_loop', per_step),
                    ('device_loop', scanned)):
    state = parallel.replicate(
        train.create_train_state(jax.tree.map(jnp.array, variables), tx), mesh)
    state, history = run(state, 0)  # Compiles.
    device_loop.per_step(history)
    chunks = max(1, steps // chunk)
    start = time.perf_counter()
    for c in range(1, chunks + 1):
      state, history = run(state, c * chunk)
      device_loop.per_step(history)  # The loop's one fetch per chunk.
    jax.block_until_ready(state)
    out[f'{name}_ms_per_step'] = (
        1e3 * (time.perf_counter() - start) / (chunks * chunk))
  out['host_share'] = 1 - out['bare_ms_per_step'] / out[
      'per_step_loop_ms_per_step']
  out['device_loop_speedup'] = (out['per_step_loop_ms_per_step'] /
                                out['device_loop_ms_per_step'])
  return out


def _median_call_s(compiled, args, calls):
  """Median seconds of `calls` synchronised calls, after one untimed call."""
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def matmul_rate(repeats=20):
  """GFLOP/s of a jitted 1024^3 float32 matmul (median of `repeats`)."""
  a = jnp.ones((1024, 1024), jnp.float32)
  matmul = jax.jit(jnp.matmul).lower(a, a).compile()
  return 2 * 1024 ** 3 / _median_call_s(matmul, (a, a), repeats) / 1e9


_DOT = re.compile(r'= f32\[[\d,]*\]\S* dot\(%(\S+), %(\S+)\), '
                  r'lhs_contracting_dims=\{(\d+)\}, '
                  r'rhs_contracting_dims=\{(\d+)\}')
_F32 = re.compile(r'%(\S+) = f32\[([\d,]*)\]')


def compiled_dots(hlo_text):
  """The f32 dots of a compiled program's text.

  Returns `(dots, others)`: `dots` lists `(lhs shape, rhs shape, lhs
  contracting dim, rhs contracting dim)` of every dot with one contracting
  dim and no batch dims; `others` counts the dots not of that form (not
  timed). A backend that emits its matmuls as library calls has none.
  """
  shapes = {name: tuple(int(d) for d in dims.split(',') if d)
            for name, dims in _F32.findall(hlo_text)}
  dots, others = [], 0
  for line in hlo_text.splitlines():
    if ' dot(' not in line:
      continue
    match = _DOT.search(line)
    if match is None or 'batch_dims' in line:
      others += 1
      continue
    lhs, rhs, lhs_dim, rhs_dim = match.groups()
    dots.append((shapes[lhs], shapes[rhs], int(lhs_dim), int(rhs_dim)))
  return dots, others


def _dot_chain_ms(lhs, rhs, numbers, length, calls):
  """ms per dot of a jitted chain of `length` dots of `lhs` and `rhs`.

  Each dot's output element [0, 0] is written into `lhs` (in place) before
  the next dot, so each dot waits for the one before and XLA can neither
  merge nor reorder them.
  """
  def chain(lhs, rhs):
    out = jax.lax.dot_general(lhs, rhs, numbers)
    for _ in range(length - 1):
      lhs = jax.lax.dynamic_update_slice(lhs, out[:1, :1], (0, 0))
      out = jax.lax.dot_general(lhs, rhs, numbers)
    return out
  compiled = jax.jit(chain).lower(lhs, rhs).compile(
      train.step_compiler_options())
  return 1e3 * _median_call_s(compiled, (lhs, rhs), calls) / length


def time_dots(dots, length=20, calls=15):
  """Times each dot of `compiled_dots` on its own, in a chain of `length`
  (median of `calls`), with the train steps' compiler options.

  Returns the number of dots, their GFLOP and `dots_ms`, the sum of their
  times: what the step's matmuls alone would take, one after another.
  """
  ms, gflop = {}, 0.0
  for dot in dots:
    lhs_shape, rhs_shape, lhs_dim, rhs_dim = dot
    gflop += 2 * math.prod(lhs_shape) * math.prod(rhs_shape) / (
        rhs_shape[rhs_dim] * 1e9)
    if dot not in ms:
      lhs = jax.random.normal(jax.random.key(0), lhs_shape)
      rhs = jax.random.normal(jax.random.key(1), rhs_shape)
      numbers = (((lhs_dim,), (rhs_dim,)), ((), ()))
      ms[dot] = _dot_chain_ms(lhs, rhs, numbers, length, calls)
  return {'dots': len(dots), 'dot_gflop': gflop,
          'dots_ms': sum(ms[dot] for dot in dots)}


def time_data(batch_size, steps, warmup, seed, idx_dir):
  """Times `Batcher.batch` plus `jax.device_put` of Fashion-MNIST train."""
  config = ml_collections.ConfigDict(
      {'name': 'fashion_mnist', 'source': 'idx', 'idx_dir': idx_dir})
  start = time.perf_counter()
  split = input_pipeline.load_split(config, 'train')
  load_s = time.perf_counter() - start
  batcher = input_pipeline.Batcher(split, batch_size, seed)
  host, total = [], []
  for s in range(warmup + steps):
    start = time.perf_counter()
    batch = batcher.batch(s)
    gathered = time.perf_counter()
    jax.block_until_ready(jax.device_put(batch))
    if s >= warmup:
      host.append(gathered - start)
      total.append(time.perf_counter() - start)
  ms = _stats(total)['ms_median']
  return {
      'ms_per_batch': ms,
      'ms_per_batch_host': _stats(host)['ms_median'],
      'batches_per_s': 1e3 / ms,
      'images_per_s': batch_size * 1e3 / ms,
      'load_s': load_s,
  }


EXPLORE_TARGET_MS = {'mlp': 50.0, 'attr_student': 150.0}


def _explore_stats(times_s):
  ms = sorted(1e3 * t for t in times_s)
  pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]
  return {'ms_median': statistics.median(ms), 'ms_min': ms[0],
          'ms_p90': pick(0.9), 'ms_p99': pick(0.99), 'ms_max': ms[-1]}


def time_explore(steps, warmup, seed):
  """Times `Explorer.decode` for the MLP and the attribute student (the
  module docstring); returns {'mlp': stats, 'attr_student': stats}."""
  from configs import fashion_attr, fashion_grow  # pylint: disable=g-import-not-at-top
  from jacdistill import attr_chain, chain, explore  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  grow = fashion_grow.get_config('quick')
  mlp = chain.build_model(grow.model, 8, (28, 28, 1), stage=6)
  attr = fashion_attr.get_config('quick')
  student = attr_chain.build_model(attr, attr.stages.student32.nuisance)
  cases = {'mlp': ('growth', grow, mlp, (28, 28, 1)),
           'attr_student': ('attribute', attr, student, (32, 32, 1))}
  out = {}
  for name, (kind, config, model, shape) in cases.items():
    stage = explore.Stage(name, name, kind, config, model,
                          _init(model, seed), '')
    images = rng.integers(0, 256, size=(64, *shape), dtype=np.uint8)
    explorer = explore.Explorer([stage], images)
    code = explorer.encode_test({'test': 0})['stages'][name]['code']
    times = []
    for i in range(warmup + steps):
      # A new value each call, as a moving slider sends.
      request = {'stages': {name: code},
                 'edits': [[0, float(-2 + 4 * i / (warmup + steps))]]}
      start = time.perf_counter()
      explorer.decode(request)
      if i >= warmup:
        times.append(time.perf_counter() - start)
    stats = _explore_stats(times)
    stats.update(code_size=stage.code_size,
                 target_ms=EXPLORE_TARGET_MS[name],
                 meets_target=stats['ms_median'] < EXPLORE_TARGET_MS[name])
    out[name] = stats
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  case = _CASE.value
  batch_size = DEFAULT_BATCH[case] if _BATCH.value is None else _BATCH.value
  if _DOTS.value and case not in STEP_CASES:
    raise app.UsageError(f'--dots times a train step\'s dots; --case {case} has '
                         'no step of its own')
  if batch_size < 1 or _STEPS.value < 1 or _WARMUP.value < 0:
    raise app.UsageError(f'need --batch >= 1, --steps >= 1 and --warmup >= 0; '
                         f'got {batch_size}, {_STEPS.value}, {_WARMUP.value}')
  device = jax.devices()[0]
  result = {'case': case, 'batch': batch_size, 'steps': _STEPS.value,
            'warmup': _WARMUP.value, 'jacobian': _JACOBIAN.value,
            'device': f'{device.platform}:{device.device_kind}',
            'device_count': jax.device_count(), 'cpu_count': os.cpu_count(),
            'jax_version': jax.__version__,
            'xla_flags': os.environ.get('XLA_FLAGS', ''),
            'compiler_options': train.step_compiler_options()}
  if case == 'explore':
    result.update(time_explore(_STEPS.value, _WARMUP.value, _SEED.value))
  elif case == 'loop':
    result.update(loop_case=_LOOP_CASE.value, chunk=_CHUNK.value,
                  loop_examples=_EXAMPLES.value)
    result.update(time_loop(
        *build_case(_LOOP_CASE.value, batch_size, _JACOBIAN.value,
                    _SEED.value), _STEPS.value, _CHUNK.value, _EXAMPLES.value,
        _SEED.value))
  elif case == 'data':
    result.update(time_data(batch_size, _STEPS.value, _WARMUP.value,
                            _SEED.value, _IDX_DIR.value))
    parts = build_case('mlp_student', batch_size, _JACOBIAN.value, _SEED.value)
    train_result, _ = time_step(*parts, _STEPS.value, _WARMUP.value,
                                _SEED.value)
    result['train_ms_per_step'] = train_result['ms_per_step']
    result['ratio'] = train_result['ms_per_step'] / result['ms_per_batch']
  else:
    parts = build_case(case, batch_size, _JACOBIAN.value, _SEED.value)
    result['matmul_gflop_per_s'] = matmul_rate()
    figures, compiled = time_step(*parts, _STEPS.value, _WARMUP.value,
                                  _SEED.value)
    result.update(figures)
    if _DOTS.value:
      dots, others = compiled_dots(compiled.as_text())
      result.update(time_dots(dots), untimed_dots=others)
  # Other processes on the cores inflate every wall time: say how busy they were.
  result['load_avg_1min'] = os.getloadavg()[0]
  if _JSON.value:
    print(json.dumps(result))
  elif case == 'explore':
    for name in EXPLORE_TARGET_MS:
      r = result[name]
      print(f'explore decode {name} (code {r["code_size"]}): median '
            f'{r["ms_median"]:.2f} ms, p90 {r["ms_p90"]:.2f}, p99 '
            f'{r["ms_p99"]:.2f}, max {r["ms_max"]:.2f} (target < '
            f'{r["target_ms"]:.0f} ms: {"met" if r["meets_target"] else "MISSED"})')
    print(f'[{result["device"]}, jax {result["jax_version"]}, load average '
          f'{result["load_avg_1min"]:.1f} on {result["cpu_count"]} cores]')
  elif case == 'loop':
    print(f'{result["loop_case"]} batch={batch_size}, {result["chunk"]} steps '
          f'per chunk: bare step {result["bare_ms_per_step"]:.3f} ms, '
          f'per-step loop {result["per_step_loop_ms_per_step"]:.3f} ms '
          f'(host share {result["host_share"]:.0%}), device loop '
          f'{result["device_loop_ms_per_step"]:.3f} ms '
          f'[{result["device"]}, jax {result["jax_version"]}]')
  elif case == 'data':
    print(f'data batch={batch_size}: {result["ms_per_batch"]:.3f} ms/batch '
          f'({result["images_per_s"]:.0f} images/s); mlp_student step '
          f'{result["train_ms_per_step"]:.2f} ms; ratio {result["ratio"]:.1f} '
          f'[{result["device"]}, jax {result["jax_version"]}]')
  else:
    print(f'{case} batch={batch_size}: {result["ms_per_step"]:.2f} ms/step, '
          f'{result["images_per_s"]:.0f} images/s, '
          f'{result["gflop_per_step"]:.3f} GFLOP/step, '
          f'{result["gflop_per_s"]:.1f} GFLOP/s, compile '
          f'{result["compile_s"]:.2f} s [{result["device"]}, '
          f'jax {result["jax_version"]}]')
    if _DOTS.value:
      print(f'its {result["dots"]} dots ({result["dot_gflop"]:.3f} GFLOP), '
            f'each timed alone: {result["dots_ms"]:.2f} ms in all; '
            f'{result["untimed_dots"]} other dots not timed')


if __name__ == '__main__':
  app.run(main)
