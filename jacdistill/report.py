"""Tables and plots from the summary.json files of finished growth chains.

Workdirs named `<variant>_s<seed>` are grouped by variant; figures with
several seeds report the mean and the standard deviation across seeds (ddof
0), otherwise the spread across swap permutations of the single seed.
"""

import json
import os
import re
from typing import Any

import numpy as np

METRICS = ('test_mse', 'test_psnr', 'swap_acc', 'swap_acc_gt', 'swap_keep',
           'rec_class_acc')


def variant_of(workdir: str) -> tuple[str, int]:
  """('upstream', 2) for '.../upstream_s2'; seed 0 when there is no suffix."""
  name = os.path.basename(os.path.normpath(workdir))
  m = re.fullmatch(r'(.*)_s(\d+)', name)
  return (m.group(1), int(m.group(2))) if m else (name, 0)


def load(workdirs: list[str]) -> dict[str, dict[int, list[dict]]]:
  """{variant: {seed: [stage records]}} for workdirs with a summary.json."""
  out: dict[str, dict[int, list[dict]]] = {}
  for wd in sorted(workdirs):
    path = os.path.join(wd, 'summary.json')
    if not os.path.exists(path):
      continue
    with open(path) as f:
      summary = json.load(f)
    variant, seed = variant_of(wd)
    out.setdefault(variant, {})[seed] = summary['stages']
  return out


def aggregate(runs: dict[int, list[dict]]) -> list[dict]:
  """Per latent size: mean and spread of each metric over the seeds."""
  by_k: dict[int, list[dict]] = {}
  for stages in runs.values():
    for s in stages:
      by_k.setdefault(s['latent_dim'], []).append(s)
  rows = []
  for k in sorted(by_k):
    recs = by_k[k]
    row: dict[str, Any] = {'k': k, 'seeds': len(recs),
                           'wall_time_s': float(np.mean([r['wall_time_s']
                                                         for r in recs]))}
    for m in METRICS:
      vals = [r[m] for r in recs if m in r]
      if not vals:
        continue
      row[m] = float(np.mean(vals))
      if len(vals) > 1:
        row[m + '_spread'] = float(np.std(vals))
      elif m + '_std' in recs[0]:
        row[m + '_spread'] = float(recs[0][m + '_std'])
    rows.append(row)
  return rows


def mse_falls_every_stage(runs: dict[int, list[dict]]) -> bool:
  return all(all(b['test_mse'] < a['test_mse'] for a, b in zip(st, st[1:]))
             for st in runs.values())


def swap_at_mse(rows: list[dict], mse: float) -> float:
  """Swap accuracy of a chain interpolated (linearly in log MSE) at `mse`;
  NaN outside the chain's MSE range (never extrapolated)."""
  pts = sorted((np.log(r['test_mse']), r['swap_acc']) for r in rows
               if 'swap_acc' in r)
  if not pts:
    return float('nan')
  x, y = zip(*pts)
  lm = np.log(mse)
  if lm < x[0] or lm > x[-1]:
    return float('nan')
  return float(np.interp(lm, x, y))


def _fmt(row: dict, m: str, digits: int = 4) -> str:
  if m not in row:
    return '-'
  s = f'{row[m]:.{digits}f}'
  if m + '_spread' in row:
    s += f' ± {row[m + "_spread"]:.{digits}f}'
  return s


def markdown(data: dict[str, dict[int, list[dict]]], reference: str) -> str:
  """The report's tables as Markdown."""
  lines = []
  agg = {v: aggregate(runs) for v, runs in data.items()}
  lines += ['## Per stage', '',
            '| variant | k | seeds | test MSE | PSNR (dB) | swap acc | swap acc (labels) | swap keeps class | rec class acc |',
            '|---|---|---|---|---|---|---|---|---|']
  for v, rows in agg.items():
    for r in rows:
      lines.append(
          f"| {v} | {r['k']} | {r['seeds']} | {_fmt(r, 'test_mse', 5)} | "
          f"{_fmt(r, 'test_psnr', 2)} | {_fmt(r, 'swap_acc', 3)} | "
          f"{_fmt(r, 'swap_acc_gt', 3)} | {_fmt(r, 'swap_keep', 3)} | "
          f"{_fmt(r, 'rec_class_acc', 3)} |")
  lines += ['', '## Does the test MSE fall at every stage?', '']
  for v, runs in data.items():
    lines.append(f'- {v}: {"yes" if mse_falls_every_stage(runs) else "NO"} '
                 f'({len(runs)} seed(s))')
  if reference in agg:
    ref_rows = agg[reference]
    lines += ['', f'## Swap accuracy at matched MSE (the MSE of `{reference}` '
              'at each k; interpolated in log MSE along each chain, "-" '
              'outside its range)', '',
              '| k of reference | MSE | ' + ' | '.join(agg) + ' |',
              '|---|---|' + '---|' * len(agg)]
    for r in ref_rows[1:]:
      cells = [swap_at_mse(rows, r['test_mse']) for rows in agg.values()]
      lines.append(f"| {r['k']} | {r['test_mse']:.5f} | " + ' | '.join(
          '-' if np.isnan(c) else f'{c:.3f}' for c in cells) + ' |')
  return '\n'.join(lines) + '\n'


def plot_tradeoff(data: dict[str, dict[int, list[dict]]], path: str) -> None:
  """Swap accuracy against test MSE, one curve per variant (the paper's
  trade-off figure), error bars = spread."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 5))
  for v, runs in data.items():
    rows = [r for r in aggregate(runs) if 'swap_acc' in r]
    if not rows:
      continue
    x = [r['test_mse'] for r in rows]
    y = [r['swap_acc'] for r in rows]
    err = [r.get('swap_acc_spread', 0.0) for r in rows]
    ax.errorbar(x, y, yerr=err, marker='o', ms=3, capsize=2, label=v)
    ax.annotate(f"k={rows[-1]['k']}", (x[-1], y[-1]), fontsize=7)
  ax.set_xscale('log')
  ax.invert_xaxis()
  ax.set_xlabel('test reconstruction MSE (log scale, better to the right)')
  ax.set_ylabel('swap accuracy (external classifier)')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def strips(workdirs: dict[str, str], picture: str, path: str) -> None:
  """Stacks one stage picture of several workdirs vertically, each labelled."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  images = []
  for label, wd in workdirs.items():
    stages = sorted(d for d in os.listdir(wd) if d.startswith('stage_'))
    if not stages:
      continue
    p = os.path.join(wd, stages[-1], picture)
    if os.path.exists(p):
      images.append((f'{label} ({stages[-1]})', Image.open(p).convert('RGB')))
  if not images:
    return
  width = max(im.width for _, im in images)
  height = sum(im.height + 14 for _, im in images)
  out = Image.new('RGB', (width, height), 'white')
  draw = ImageDraw.Draw(out)
  y = 0
  for label, im in images:
    draw.text((2, y), label, fill='black')
    out.paste(im, (0, y + 14))
    y += im.height + 14
  out.save(path)
