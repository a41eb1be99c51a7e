"""Tables and plots from the summary.json files of finished growth chains.

Workdirs named `<variant>_s<seed>` are grouped by variant; a figure over
several seeds is their mean and sample standard deviation (ddof 1), with the
number of seeds. Every figure is read from one split's scores (`split`,
'test' unless said) and the tables say which.

Growth chains. Stage 0 (the teacher) swaps its whole code, so its swap
accuracy is 1 by construction; comparisons at matched MSE use the student
stages alone. For each reference seed and each of its student stages, every
variant's swap accuracy is interpolated (linearly in log MSE) between the
measured student stages of that variant's chain of the same seed, at the
reference stage's MSE, and never extrapolated ("-" outside the chain's
range), nor across two stages more than MAX_LOG_MSE_GAP apart in log MSE.
The paired difference subtracts the reference stage's own swap accuracy,
seed by seed (same seed: same teacher, same data order).

Tests (`paired_tests`, `holm`): a contrast's per-seed differences get a
two-sided paired t-test and an exact two-sided sign test, and a family of
contrasts listed in advance is Holm-corrected (results/CONTRASTS.md).

The attribute chains' report is `jacdistill.attr_report`.
"""

import math
import re
from typing import Any, Optional

import numpy as np
from scipy import stats as scipy_stats

from jacdistill import paths


# Per-stage metrics of a growth chain, in table order.
METRICS = ('mse', 'psnr', 'swap_acc', 'swap_acc_gt', 'swap_keep',
           'rec_class_acc', 'mig', 'sap')
# What each metric is called on a plot's axis.
AXIS_NAMES = {'swap_acc': 'swap accuracy (external classifier)',
              'swap_acc_gt': 'swap accuracy against the labels',
              'mig': 'MIG of the code against the class',
              'sap': 'SAP of the code against the class',
              'dci_completeness': 'DCI completeness (class)',
              'dci_informativeness': 'DCI informativeness (class)',
              'gaussian_tc': 'Gaussian total correlation of the code (nats)',
              'rec_class_acc': 'classifier accuracy on reconstructions'}


def variant_of(workdir: str) -> tuple[str, int]:
  """('upstream', 2) for '.../upstream_s2'; seed 0 when there is no suffix."""
  name = paths.basename(workdir)
  m = re.fullmatch(r'(.*)_s(\d+)', name)
  return (m.group(1), int(m.group(2))) if m else (name, 0)


def read_summaries(workdirs: list[str]) -> dict[str, dict]:
  """{workdir: summary} for the workdirs that have a summary.json."""
  out = {}
  for wd in sorted(workdirs):
    path = paths.join(wd, 'summary.json')
    if paths.exists(path):
      out[wd] = paths.read_json(path)
  return out


def group(summaries: dict[str, dict]) -> dict[str, dict[int, Any]]:
  """{variant: {seed: summary}} by the workdirs' names."""
  out: dict[str, dict[int, Any]] = {}
  for wd, summary in summaries.items():
    variant, seed = variant_of(wd)
    out.setdefault(variant, {})[seed] = summary
  return out


def load(workdirs: list[str]) -> dict[str, dict[int, list[dict]]]:
  """{variant: {seed: [stage entries]}} of growth-chain workdirs."""
  return {v: {seed: s['stages'] for seed, s in runs.items()}
          for v, runs in group(read_summaries(workdirs)).items()}


def value(stage: dict, metric: str, split: str = 'test') -> float:
  """A stage's `metric` on `split`; NaN if it was not recorded."""
  return float(stage.get(split, {}).get(metric, float('nan')))


def stats(values) -> tuple[float, float, int]:
  """(mean, sample std or NaN for one value, n) of the finite `values`."""
  v = np.asarray([x for x in values if np.isfinite(x)], np.float64)
  if not len(v):
    return float('nan'), float('nan'), 0
  return (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else
          float('nan'), len(v))


def fmt(values, digits: int = 3, signed: bool = False) -> str:
  """'mean ± std' over seeds ('mean' alone for one seed, '-' for none)."""
  mean, std, n = stats(values)
  if not n:
    return '-'
  sign = '+' if signed else ''
  out = f'{mean:{sign}.{digits}f}'
  return out if n == 1 else f'{out} ± {std:.{digits}f}'


# --------------------------------------------------- growth chains (part A)


def first_dim(stages: list[dict]) -> int:
  """The dims every stage's swap exchanges: the teacher's code size, or the
  count its evaluation recorded (a beta-VAE swaps fewer dims than its code
  has, so its one stage is a student)."""
  recorded = {s.get('eval', {}).get('factor_dims') for s in stages} - {None}
  return min(recorded) if recorded else min(s['latent_dim'] for s in stages)


def students(stages: list[dict]) -> list[dict]:
  """The stages whose swapped dims are not their whole code."""
  k0 = first_dim(stages)
  return [s for s in stages if s['latent_dim'] > k0]


def by_k(runs: dict[int, list[dict]]) -> dict[int, dict[int, dict]]:
  """{k: {seed: stage}} of a variant's chains."""
  out: dict[int, dict[int, dict]] = {}
  for seed, entries in runs.items():
    for s in entries:
      out.setdefault(s['latent_dim'], {})[seed] = s
  return dict(sorted(out.items()))


def mse_falls_every_stage(runs: dict[int, list[dict]],
                          split: str = 'test') -> bool:
  return all(all(value(b, 'mse', split) < value(a, 'mse', split)
                 for a, b in zip(st, st[1:])) for st in runs.values())


# Widest gap in ln(MSE) between two student stages that a matched value is
# interpolated across (adjacent students of the 5-epoch Fashion-MNIST chains
# are 0.05-0.12 apart; results/CONTRASTS.md).
MAX_LOG_MSE_GAP = 0.15


def interpolate(points, x: float, max_gap: float = math.inf) -> float:
  """y at `x`, linear between the (x, y) `points`; NaN when there are none,
  when `x` is outside their x range (never extrapolated), or when the two
  points around `x` are more than `max_gap` apart in x (a point at `x`
  itself needs no neighbour)."""
  pts = sorted(points)
  if not pts or not pts[0][0] <= x <= pts[-1][0]:
    return float('nan')
  xs, ys = zip(*pts)
  right = int(np.searchsorted(xs, x))
  if xs[right] != x and xs[right] - xs[right - 1] > max_gap:
    return float('nan')
  return float(np.interp(x, xs, ys))


def swap_at_mse(stages: list[dict], mse: float, split: str = 'test') -> float:
  """Swap accuracy of one chain at `mse`, interpolated linearly in log MSE
  between two of its measured student stages at most MAX_LOG_MSE_GAP apart;
  NaN outside their MSE range or across a wider gap."""
  pts = [(np.log(value(s, 'mse', split)), value(s, 'swap_acc', split))
         for s in students(stages)]
  return interpolate([p for p in pts if np.isfinite(p[1])], np.log(mse),
                     MAX_LOG_MSE_GAP)


def paired_tests(differences) -> dict:
  """Tests of per-seed paired differences against zero.

  Args:
    differences: one value per seed; NaN values (a seed out of range) are
      left out.
  Returns:
    {'n', 'mean', 'std' (ddof 1), 't_p': two-sided one-sample t-test p on n -
    1 degrees of freedom (NaN for n < 2 or zero spread), 'sign_p': two-sided
    exact binomial sign test p, zeros dropped (1.0 when only zeros, NaN
    when n = 0),
    'positive': how many are > 0}.
  """
  d = np.asarray([x for x in differences if np.isfinite(x)], np.float64)
  mean, std, n = stats(d)
  t_p = float('nan')
  if n > 1 and std > 0:
    t = mean / (std / math.sqrt(n))
    t_p = float(2 * scipy_stats.t.sf(abs(t), n - 1))
  positive, negative = int(np.sum(d > 0)), int(np.sum(d < 0))
  m = positive + negative
  tail = sum(math.comb(m, i) for i in range(min(positive, negative) + 1))
  sign_p = (float('nan') if not n else
            min(1.0, 2 * tail / 2 ** m) if m else 1.0)
  return {'n': n, 'mean': mean, 'std': std, 't_p': t_p, 'sign_p': sign_p,
          'positive': positive}


def holm(p_values) -> list[float]:
  """Holm-Bonferroni adjusted p-values, in the given order: the i-th
  smallest of m is multiplied by m - i (i from 0), made non-decreasing in
  that order and capped at 1. NaN stays NaN and does not count in m."""
  p = np.asarray(p_values, np.float64)
  finite = np.flatnonzero(np.isfinite(p))
  out = np.full(p.shape, np.nan)
  m = len(finite)
  running = 0.0
  for rank, i in enumerate(finite[np.argsort(p[finite], kind='stable')]):
    running = max(running, min(1.0, (m - rank) * p[i]))
    out[i] = running
  return [float(v) for v in out]


def tests_markdown(contrasts: list[tuple[str, list[float]]],
                   digits: int = 3) -> list[str]:
  """A table of `contrasts` ((name, per-seed differences)), each with its
  paired t-test and sign test, both Holm-corrected over the whole list."""
  tested = [paired_tests(d) for _, d in contrasts]
  t_holm = holm([t['t_p'] for t in tested])
  sign_holm = holm([t['sign_p'] for t in tested])
  pfmt = lambda p: '-' if not np.isfinite(p) else f'{p:.3g}'
  lines = ['| contrast | n | mean ± std | per seed | > 0 | t-test p | '
           'Holm | sign test p | Holm |', '|---|---|---|---|---|---|---|---|---|']
  for (name, diffs), t, th, sh in zip(contrasts, tested, t_holm, sign_holm):
    seeds = ' / '.join('-' if not np.isfinite(x) else f'{x:+.{digits}f}'
                       for x in diffs)
    lines.append(f"| {name} | {t['n']} | {fmt(diffs, digits, signed=True)} | "
                 f"{seeds} | {t['positive']}/{t['n']} | {pfmt(t['t_p'])} | "
                 f"{pfmt(th)} | {pfmt(t['sign_p'])} | {pfmt(sh)} |")
  return lines


def matched(data: dict[str, dict[int, list[dict]]], reference: str,
            split: str = 'test') -> list[dict]:
  """Swap accuracy at the reference's MSEs, per reference student k.

  Returns one row per k of the reference's student stages:
  `{'k', 'mse': [per reference seed], 'swap': {variant: [per seed]},
  'diff': {variant: [per seed]}}`, where seed s of a variant is interpolated
  at seed s's reference MSE (NaN when out of range or the seed is missing)
  and `diff` subtracts the reference stage's swap accuracy.
  """
  ref = data[reference]
  rows = []
  for k, per_seed in by_k({s: students(st) for s, st in ref.items()}).items():
    row = {'k': k, 'mse': [], 'swap': {}, 'diff': {}}
    for seed, stage in sorted(per_seed.items()):
      mse = value(stage, 'mse', split)
      row['mse'].append(mse)
      for variant, runs in data.items():
        got = (swap_at_mse(runs[seed], mse, split) if seed in runs
               else float('nan'))
        row['swap'].setdefault(variant, []).append(got)
        row['diff'].setdefault(variant, []).append(
            got - value(stage, 'swap_acc', split))
    rows.append(row)
  return rows


def markdown(data: dict[str, dict[int, list[dict]]], reference: str,
             split: str = 'test',
             tests: Optional[list[tuple[str, int]]] = None) -> str:
  """The growth report's tables as Markdown; `tests` ((variant, k), ...),
  each variant's paired difference from the reference at the reference's
  k-th stage, are tested as one Holm family."""
  lines = [f'All figures: the **{split}** split. ± is the sample standard '
           'deviation over seeds (n = seeds).', '',
           '## Per stage', '',
           '| variant | k | n | MSE | PSNR (dB) | swap acc | swap acc (labels) '
           '| swap keeps class | rec class acc | MIG | SAP |',
           '|---|---|---|---|---|---|---|---|---|---|---|']
  for v, runs in data.items():
    k0 = min(first_dim(st) for st in runs.values())
    for k, per_seed in by_k(runs).items():
      cells = [fmt([value(s, m, split) for s in per_seed.values()],
                   5 if m == 'mse' else 2 if m == 'psnr' else 3)
               for m in METRICS]
      if k == k0:
        cells[2] = '1 (by construction)'
      lines.append(f'| {v} | {k} | {len(per_seed)} | ' + ' | '.join(cells)
                   + ' |')
  lines += ['', '## Does the MSE fall at every stage?', '']
  for v, runs in data.items():
    lines.append(f'- {v}: {"yes" if mse_falls_every_stage(runs, split) else "NO"}'
                 f' ({len(runs)} seed(s))')
  if reference not in data:
    return '\n'.join(lines) + '\n'
  rows = matched(data, reference, split)
  variants = list(data)
  head = '| k of reference | MSE | ' + ' | '.join(variants) + ' |'
  rule = '|---|---|' + '---|' * len(variants)
  lines += ['', '## Swap accuracy at matched MSE (student stages only)', '',
            f'At the MSE of each student stage of `{reference}`, each '
            "variant's swap accuracy interpolated in log MSE between the "
            'student stages of its chain of the same seed (never across '
            f'more than {MAX_LOG_MSE_GAP:g} in ln MSE); "-": outside '
            'every seed\'s range; (n) where fewer seeds than the reference '
            'have a value.', '', head, rule]
  for r in rows:
    lines.append(f"| {r['k']} | {fmt(r['mse'], 5)} | " + ' | '.join(
        _with_n(r['swap'][v], len(r['mse'])) for v in variants) + ' |')
  lines += ['', f'## Paired difference from `{reference}` at matched MSE', '',
            f"Per seed: the variant's matched swap accuracy minus "
            f"`{reference}`'s own at that stage; mean ± std over seeds.", '',
            head, rule]
  for r in rows:
    lines.append(f"| {r['k']} | {fmt(r['mse'], 5)} | " + ' | '.join(
        _with_n(r['diff'][v], len(r['mse']), signed=True)
        for v in variants) + ' |')
  if tests:
    diffs = {r['k']: r['diff'] for r in rows}
    missing = [f'{v}@{k}' for v, k in tests
               if k not in diffs or v not in diffs[k]]
    if missing:
      raise ValueError(f'no paired difference for {", ".join(missing)}; '
                       f'reference k: {sorted(diffs)}, variants: {variants}')
    lines += ['', f'## Tests (paired against `{reference}`, one Holm family)',
              '', 'Two-sided paired t-test and exact sign test over the '
              'seeds in range, each Holm-corrected over the rows below.', '']
    lines += tests_markdown([(f'{v} at k={k}', diffs[k][v]) for v, k in tests])
  return '\n'.join(lines) + '\n'


def _with_n(values, expected: int, signed: bool = False) -> str:
  text = fmt(values, signed=signed)
  n = stats(values)[2]
  return text if text == '-' or n == expected else f'{text} ({n})'


def pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def save_figure(fig, path: str) -> None:
  """Writes a matplotlib figure as a PNG to `path` (a local path or a URL)
  and closes it."""
  with paths.open(path, 'wb') as f:
    fig.savefig(f, format='png', dpi=120)
  pyplot().close(fig)


def _curve(runs: dict[int, list[dict]], metric: str, split: str,
           keep=lambda k: True):
  """(k, mean MSE, mean metric, std metric) per k, over the seeds."""
  out = []
  for k, per_seed in by_k(runs).items():
    if keep(k):
      m = stats([value(s, metric, split) for s in per_seed.values()])
      mse = stats([value(s, 'mse', split) for s in per_seed.values()])
      out.append((k, mse[0], m[0], 0.0 if np.isnan(m[1]) else m[1]))
  return out


def plot_tradeoff(data: dict[str, dict[int, list[dict]]], path: str,
                  split: str = 'test', metric: str = 'swap_acc') -> None:
  """`metric` (a key of AXIS_NAMES) against MSE of the student stages, one
  curve per variant (mean over seeds, error bars one std)."""
  if metric not in AXIS_NAMES:
    raise ValueError(f'metric={metric!r}; plottable: {", ".join(AXIS_NAMES)}')
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(9, 6))
  # Twenty colours, so that a sweep of many variants repeats none.
  ax.set_prop_cycle(color=plt.get_cmap('tab20').colors)
  drawn = 0
  for v, runs in data.items():
    k0 = min(first_dim(st) for st in runs.values())
    pts = [p for p in _curve(runs, metric, split, lambda k: k > k0)
           if np.isfinite(p[2])]
    if not pts:
      continue
    ks, x, y, err = zip(*pts)
    ax.errorbar(x, y, yerr=err, marker='o', ms=3, capsize=2,
                label=f'{v} (n={len(runs)})')
    ax.annotate(f'k={ks[-1]}', (x[-1], y[-1]), fontsize=7)
    drawn += 1
  if not drawn:
    ax.text(0.5, 0.5, f'no student stage has {metric} on {split}',
            ha='center', transform=ax.transAxes)
  ax.set_xscale('log')
  ax.invert_xaxis()
  ax.set_xlabel(f'{split} MSE (log scale, better to the right)')
  ax.set_ylabel(f'{split} {AXIS_NAMES[metric]}')
  ax.set_title('Student stages (k > 2); mean over seeds, bars: 1 std',
               fontsize=9)
  ax.grid(alpha=0.3)
  if drawn:
    ax.legend(fontsize=7)
  fig.tight_layout()
  save_figure(fig, path)


def plot_against_k(data: dict[str, dict[int, list[dict]]], path: str,
                   variants: Optional[list[str]] = None,
                   split: str = 'test') -> None:
  """The paper's figure: MSE and swap accuracy against the code size k."""
  plt = pyplot()
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
  for v in variants or list(data):
    if v not in data:
      continue
    runs = data[v]
    k0 = min(first_dim(st) for st in runs.values())
    mse = _curve(runs, 'mse', split)
    left.errorbar([p[0] for p in mse], [p[2] for p in mse],
                  yerr=[p[3] for p in mse], marker='o', ms=3, capsize=2,
                  label=f'{v} (n={len(runs)})')
    swap = [p for p in _curve(runs, 'swap_acc', split, lambda k: k > k0)
            if np.isfinite(p[2])]
    right.errorbar([p[0] for p in swap], [p[2] for p in swap],
                   yerr=[p[3] for p in swap], marker='o', ms=3, capsize=2,
                   label=v)
  left.set_xlabel('code size k')
  left.set_ylabel(f'{split} reconstruction MSE')
  right.set_xlabel('code size k')
  right.set_ylabel(f'{split} swap accuracy (teacher dims swapped)')
  for ax in (left, right):
    ax.grid(alpha=0.3)
  left.legend(fontsize=7)
  fig.tight_layout()
  save_figure(fig, path)


def strips(workdirs: dict[str, str], picture: str, path: str) -> None:
  """Stacks one stage picture of several workdirs vertically, each labelled."""
  items = []
  for label, wd in workdirs.items():
    stages = [d for d in paths.listdir(wd) if d.startswith('stage_')]
    if stages:
      items.append((f'{label} ({stages[-1]})',
                    paths.join(wd, stages[-1], picture)))
  stack_pictures(items, path)


def stack_pictures(items: list[tuple[str, str]], path: str) -> None:
  """Stacks the PNGs of (label, file) pairs vertically, each labelled; files
  that do not exist are left out, and nothing is written if none does."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  images = []
  for label, p in items:
    if paths.exists(p):
      with paths.open(p, 'rb') as f:
        images.append((label, Image.open(f).convert('RGB')))
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
  with paths.open(path, 'wb') as f:
    out.save(f, format='PNG')
