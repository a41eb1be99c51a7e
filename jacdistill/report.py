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
  items = []
  for label, wd in workdirs.items():
    stages = sorted(d for d in os.listdir(wd) if d.startswith('stage_'))
    if stages:
      items.append((f'{label} ({stages[-1]})',
                    os.path.join(wd, stages[-1], picture)))
  stack_pictures(items, path)


def stack_pictures(items: list[tuple[str, str]], path: str) -> None:
  """Stacks the PNGs of (label, file) pairs vertically, each labelled; files
  that do not exist are left out, and nothing is written if none does."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  images = [(label, Image.open(p).convert('RGB')) for label, p in items
            if os.path.exists(p)]
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


# ------------------------------------------------- attribute chains (part B)


def is_attribute_chain(summary: dict) -> bool:
  """Whether a summary.json comes from the attribute chain (`stage_order`)."""
  return 'stage_order' in summary.get('config', {})


def _mean(values) -> float:
  return float(np.mean(values)) if values else float('nan')


def attribute_markdown(summary: dict) -> str:
  """Per-stage PSNR and flip accuracy of one attribute chain, and the flip
  accuracy of every attribute and direction, as Markdown tables."""
  stages = summary['stages']
  names = list(summary['config']['data']['attributes'])
  lines = ['## Per stage', '',
           '| stage | code size | grown from | teacher | steps | train time (s) '
           '| test PSNR (dB) | test MSE | flip acc | flip +1 | flip -1 |',
           '|---|---|---|---|---|---|---|---|---|---|---|']
  for s in stages:
    flip = (f"{s['flip_acc']:.3f} | {_mean(s['flip_acc_pos']):.3f} | "
            f"{_mean(s['flip_acc_neg']):.3f}" if 'flip_acc' in s
            else '- | - | -')
    lines.append(
        f"| {s['name']} | {s['code_size']} | {s.get('init') or '-'} | "
        f"{s.get('teacher') or '-'} | {s['steps']} | {s['wall_time_s']:.0f} | "
        f"{s['test_psnr']:.2f} | {s['test_mse']:.5f} | {flip} |")
  scored = [s for s in stages if 'flip_acc' in s]
  if scored:
    lines += ['', '## Flip accuracy per attribute (+1 / -1)', '',
              '| attribute | ' + ' | '.join(s['name'] for s in scored) + ' |',
              '|---|' + '---|' * len(scored)]
    for a, name in enumerate(names):
      lines.append(f'| {name} | ' + ' | '.join(
          f"{s['flip_acc_pos'][a]:.3f} / {s['flip_acc_neg'][a]:.3f}"
          for s in scored) + ' |')
  return '\n'.join(lines) + '\n'


def plot_flip_vs_psnr(summary: dict, path: str) -> None:
  """Flip accuracy (and its +1 half) against test PSNR, one point per stage."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  for s in summary['stages']:
    if 'flip_acc' not in s:
      continue
    x = s['test_psnr']
    point = ax.plot(x, s['flip_acc'], 'o', ms=7, label=s['name'])[0]
    ax.plot(x, _mean(s['flip_acc_pos']), '^', ms=6, mfc='none',
            color=point.get_color())
    ax.annotate(f"{s['name']} (code {s['code_size']})", (x, s['flip_acc']),
                textcoords='offset points', xytext=(5, 4), fontsize=8)
  ax.set_xlabel('test PSNR (dB), better to the right')
  ax.set_ylabel('flip accuracy (external classifier)')
  ax.set_title('o: mean over +1 and -1 edits;  ^: +1 edits only', fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
