r"""Times what a GPU (or TPU) changes, in one run, and writes one JSON.

  python launch/device_check.py --output=device_check.json

(Flags are named apart from every other launch script's, which tests
import into one process: bench.py's are there too but unused.)

For each train step of launch/bench.py (mlp_teacher, mlp_student,
conv_student): ms per step under `train.matmul_precision` 'highest' and
'default' (TF32 on Ampere/Hopper GPUs), and for the conv model with both
forms of its strided convolutions (`layers.conv_form`: XLA's native convs,
the default off CPU, and the matmul rewrite used on CPU); then the stage
loop fed per step against the device loop (`train.device_loop`) for the MLP
steps, with the host's share of the per-step loop. About 3 minutes on one
H100 with the defaults; `--tiny` runs the same code on tiny models in
seconds (the tests run it on CPU so that it cannot rot). docs/performance.md
says how to read it and holds the GPU table.
"""

import json
import os
import time

from absl import app
from absl import flags
import jax

from jacdistill import layers

try:  # Run as a script (launch/ on sys.path) or imported as launch.device_check.
  import bench  # pylint: disable=g-import-not-at-top
except ImportError:
  from launch import bench  # pylint: disable=g-import-not-at-top

_OUT = flags.DEFINE_string('output', 'device_check.json', 'Where the JSON goes '
                           '(a local path).')
_TINY = flags.DEFINE_bool('tiny', False, 'Tiny models and few steps (tests).')
_STEPS = flags.DEFINE_integer('timed_steps', 0, 'Timed steps per MLP measurement '
                              '(conv: a quarter); 0 = 300, or 4 with --tiny.')

PRECISIONS = ('highest', 'default')


def check(tiny: bool, steps: int) -> dict:
  """Every measurement of the module docstring, as one dict."""
  device = jax.devices()[0]
  result = {'device': f'{device.platform}:{device.device_kind}',
            'device_count': jax.device_count(), 'jax_version': jax.__version__,
            'default_conv_form': layers.conv_form(), 'tiny': tiny,
            'date': time.strftime('%Y-%m-%d'), 'steps': [], 'loops': []}
  for case in bench.STEP_CASES:
    conv = case == 'conv_student'
    n = max(2, steps // 4) if conv else steps
    for form in layers.CONV_FORMS if conv else (layers.conv_form(),):
      for precision in PRECISIONS:
        with layers.forced_conv_form(form), jax.default_matmul_precision(
            precision):
          parts = bench.build_case(case, bench.DEFAULT_BATCH[case], 'swap', 0,
                                   tiny=tiny)
          figures, _ = bench.time_step(*parts, n, 2, 0)
        result['steps'].append(dict(
            case=case, conv_form=form if conv else None, precision=precision,
            steps=n, **{k: figures[k] for k in (
                'ms_per_step', 'ms_p90', 'compile_s', 'gflop_per_step',
                'final_loss')}))
  chunk = 4 if tiny else 100
  for case in ('mlp_teacher', 'mlp_student'):
    parts = bench.build_case(case, bench.DEFAULT_BATCH[case], 'swap', 0,
                             tiny=tiny)
    figures = bench.time_loop(*parts, max(steps, 2 * chunk), chunk,
                              512 if tiny else 60000, 0)
    result['loops'].append(dict(case=case, chunk=chunk, **figures))
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  steps = _STEPS.value or (4 if _TINY.value else 300)
  start = time.perf_counter()
  result = check(_TINY.value, steps)
  result['wall_s'] = time.perf_counter() - start
  with open(_OUT.value, 'w') as f:
    json.dump(result, f, indent=1)
  print(f'{result["device"]} (jax {result["jax_version"]}, convs '
        f'{result["default_conv_form"]} by default), {result["wall_s"]:.0f} s:')
  for r in result['steps']:
    form = f' {r["conv_form"]} convs' if r['conv_form'] else ''
    print(f'  {r["case"]}{form}, precision {r["precision"]}: '
          f'{r["ms_per_step"]:.3f} ms/step (p90 {r["ms_p90"]:.3f}), '
          f'loss {r["final_loss"]:.6g}')
  for r in result['loops']:
    print(f'  {r["case"]} loop, {r["chunk"]} steps per chunk: bare '
          f'{r["bare_ms_per_step"]:.3f}, per step '
          f'{r["per_step_loop_ms_per_step"]:.3f} (host share '
          f'{r["host_share"]:.0%}), device loop '
          f'{r["device_loop_ms_per_step"]:.3f} ms/step')
  print(f'wrote {os.path.abspath(_OUT.value)}')


if __name__ == '__main__':
  app.run(main)
