"""Tables and plots of finished attribute chains' summary.json files.

One workdir per seed; each stage is scored by PSNR and by flip accuracy per
direction: with classes as attributes, +1 (switching a class on) is the
informative direction (a decoder that keeps the class scores (A - 1) / A in
the -1 direction). Paired differences are against a reference stage of the
same chain. Figures over seeds are as in `jacdistill.report`.
"""

import numpy as np

from jacdistill import report
from jacdistill import workdir_files


def is_attribute_chain(summary: dict) -> bool:
  """Whether a summary.json comes from the attribute chain (`stage_order`)."""
  return workdir_files.chain_of(summary.get('config', {})) == 'attribute'


def merge_seeds(groups: dict[str, dict[int, dict]]) -> dict[int, dict]:
  """One run per seed from workdirs of several variants ({variant: {seed:
  summary}}, `report.group`), a seed's stages in variant order: a stage
  trained in a workdir of its own (`fader32_s0`) joins the chain of its
  seed (`chain_s0`). The first variant's config stands for the seed.

  Raises:
    ValueError: two workdirs of one seed hold stages of the same name.
  """
  runs: dict[int, dict] = {}
  for variant, by_seed in sorted(groups.items()):
    for seed, summary in by_seed.items():
      run = runs.setdefault(seed, {'config': summary['config'], 'stages': []})
      clash = ({s['name'] for s in run['stages']} &
               {s['name'] for s in summary['stages']})
      if clash:
        raise ValueError(f'stage {sorted(clash)[0]} of seed {seed} is in '
                         f'more than one workdir (one is {variant}_s{seed})')
      run['stages'] = run['stages'] + summary['stages']
  return runs


def _stage_order(runs: dict[int, dict]) -> list[str]:
  order = []
  for summary in runs.values():
    order += [s['name'] for s in summary['stages'] if s['name'] not in order]
  return order


def _by_name(runs: dict[int, dict]) -> dict[str, dict[int, dict]]:
  """{stage name: {seed: entry}}."""
  out: dict[str, dict[int, dict]] = {}
  for seed, summary in sorted(runs.items()):
    for s in summary['stages']:
      out.setdefault(s['name'], {})[seed] = s
  return out


_ATTR_COLUMNS = (('psnr', 'PSNR (dB)', 2), ('mse', 'MSE', 5),
                 ('flip_acc_pos_mean', 'flip +1', 3),
                 ('flip_acc_neg_mean', 'flip -1', 3),
                 ('flip_acc', 'flip mean', 3), ('mig', 'MIG', 3),
                 ('sap', 'SAP', 3))


def flip_at_psnr(stages: list[dict], psnr: float,
                 split: str = 'test') -> float:
  """+1 flip accuracy of a front of stages (of one seed) at `psnr`,
  interpolated linearly in PSNR between them; NaN outside their PSNR range
  or when a stage has no flip accuracy."""
  pts = [(report.value(s, 'psnr', split),
          report.value(s, 'flip_acc_pos_mean', split)) for s in stages]
  if not np.isfinite(pts).all():
    return float('nan')
  return report.interpolate(pts, psnr)


def _front_lines(by_stage: dict[str, dict[int, dict]], reference: str,
                 fronts: dict[str, list[str]], split: str) -> list[str]:
  """The table of each front's +1 flip accuracy at the reference's PSNR."""
  ref = by_stage[reference]
  psnr = {seed: report.value(s, 'psnr', split) for seed, s in ref.items()}
  lines = ['', f'## +1 flip accuracy at `{reference}`\'s PSNR (same seed)',
           '', f'Each front\'s stages of a seed interpolated linearly in PSNR '
           f'at the PSNR of `{reference}` of that seed '
           f'({report.fmt(list(psnr.values()), 2)} dB); "-": outside the '
           'front\'s PSNR range in every seed; n: the seeds in range.', '',
           '| front | stages | n | flip +1 | paired difference |',
           '|---|---|---|---|---|']
  for name, stages in fronts.items():
    at, diff = [], []
    for seed in sorted(psnr):
      if all(seed in by_stage.get(st, {}) for st in stages):
        got = flip_at_psnr([by_stage[st][seed] for st in stages], psnr[seed],
                           split)
        at.append(got)
        diff.append(got - report.value(ref[seed], 'flip_acc_pos_mean', split))
    n = report.stats(at)[2]
    lines.append(f"| {name} | {', '.join(stages)} | {n} | {report.fmt(at)} | "
                 f'{report.fmt(diff, signed=True)} |')
  return lines


def attribute_markdown(runs: dict[int, dict], reference: str = '',
                       split: str = 'test',
                       fronts: dict[str, list[str]] | None = None) -> str:
  """Per-stage PSNR and flip accuracy of attribute chains (one per seed),
  paired differences against stage `reference`, each of `fronts` ({name:
  stage names}) at the reference's PSNR, and the flip accuracy of every
  attribute and direction, as Markdown."""
  names = list(next(iter(runs.values()))['config']['data']['attributes'])
  by_stage = _by_name(runs)
  order = _stage_order(runs)
  lines = [f'All figures: the **{split}** split. ± is the sample standard '
           'deviation over seeds (n = seeds). flip +1: an attribute switched '
           'on (with classes as attributes, the informative direction); '
           'flip -1: switched off; flip mean: both.', '',
           '## Per stage', '',
           '| stage | code size | grown from | teacher | steps | n | '
           + ' | '.join(c[1] for c in _ATTR_COLUMNS) + ' |',
           '|---|---|---|---|---|---|' + '---|' * len(_ATTR_COLUMNS)]
  for name in order:
    per_seed = by_stage[name]
    first = next(iter(per_seed.values()))
    cells = [report.fmt([report.value(s, m, split) for s in per_seed.values()], digits)
             for m, _, digits in _ATTR_COLUMNS]
    lines.append(
        f"| {name} | {first['code_size']} | {first.get('init') or '-'} | "
        f"{first.get('teacher') or '-'} | {first['steps']} | {len(per_seed)} "
        '| ' + ' | '.join(cells) + ' |')
  if reference in by_stage:
    ref = by_stage[reference]
    lines += ['', f'## Paired difference from `{reference}` (same seed)', '',
              '| stage | n | ' + ' | '.join(c[1] for c in _ATTR_COLUMNS)
              + ' |', '|---|---|' + '---|' * len(_ATTR_COLUMNS)]
    for name in order:
      if name == reference:
        continue
      seeds = [s for s in by_stage[name] if s in ref]
      cells = [report.fmt([report.value(by_stage[name][s], m, split) - report.value(ref[s], m, split)
                    for s in seeds], digits, signed=True)
               for m, _, digits in _ATTR_COLUMNS]
      lines.append(f'| {name} | {len(seeds)} | ' + ' | '.join(cells) + ' |')
    if fronts:
      lines += _front_lines(by_stage, reference, fronts, split)
  scored = [n for n in order if any('flip_acc_pos' in s.get(split, {})
                                    for s in by_stage[n].values())]
  if scored:
    lines += ['', '## Flip accuracy per attribute (+1 / -1, mean over seeds)',
              '', '| attribute | ' + ' | '.join(scored) + ' |',
              '|---|' + '---|' * len(scored)]
    for a, attr in enumerate(names):
      cells = []
      for n in scored:
        pos = [s[split]['flip_acc_pos'][a] for s in by_stage[n].values()]
        neg = [s[split]['flip_acc_neg'][a] for s in by_stage[n].values()]
        cells.append(f'{np.mean(pos):.3f} / {np.mean(neg):.3f}')
      lines.append(f'| {attr} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def plot_flip_vs_psnr(runs: dict[int, dict], path: str, split: str = 'test',
                      fronts: dict[str, list[str]] | None = None) -> None:
  """Flip accuracy of +1 edits (filled) and of both directions (hollow)
  against PSNR, one point per stage, mean over seeds with 1-std bars; each
  of `fronts` ({name: stage names}) a dashed line through its +1 means."""
  plt = report.pyplot()
  fig, ax = plt.subplots(figsize=(9, 6))
  ax.set_prop_cycle(color=plt.get_cmap('tab20').colors)
  by_stage = _by_name(runs)
  # (mean, std, n) over seeds of each stage's PSNR, +1 and mean flips.
  stats = {name: [report.stats([report.value(s, m, split)
                                for s in per_seed.values()])
                  for m in ('psnr', 'flip_acc_pos_mean', 'flip_acc')]
           for name, per_seed in by_stage.items()}
  styles = ('--', ':', '-.', (0, (5, 1, 1, 1, 1, 1)))
  for i, (name, stages) in enumerate((fronts or {}).items()):
    pts = sorted((stats[st][0][0], stats[st][1][0]) for st in stages)
    ax.plot(*zip(*pts), linestyle=styles[i % len(styles)], color='grey',
            lw=1.2, zorder=0, label=f'front: {name}')
  for name, per_seed in by_stage.items():
    entries = list(per_seed.values())
    if not any('flip_acc' in s.get(split, {}) for s in entries):
      continue
    x, pos, both = stats[name]
    bar = lambda st: 0.0 if np.isnan(st[1]) else st[1]
    line = ax.errorbar(x[0], pos[0], xerr=bar(x), yerr=bar(pos), fmt='o',
                       ms=7, capsize=2, label=f'{name} (n={x[2]})')
    ax.errorbar(x[0], both[0], yerr=bar(both), fmt='o', ms=6, mfc='none',
                capsize=2, color=line[0].get_color())
    ax.annotate(f"{name} (code {entries[0]['code_size']})", (x[0], pos[0]),
                textcoords='offset points', xytext=(5, 4), fontsize=8)
  ax.set_xlabel(f'{split} PSNR (dB), better to the right')
  ax.set_ylabel(f'{split} flip accuracy (external classifier)')
  ax.set_title('filled: +1 edits (attribute switched on); hollow: mean of '
               '+1 and -1', fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  report.save_figure(fig, path)
