"""Tables and plots of finished attribute chains' summary.json files.

One workdir per seed; each stage is scored by PSNR and by flip accuracy per
direction: with classes as attributes, +1 (switching a class on) is the
informative direction (a decoder that keeps the class scores (A - 1) / A in
the -1 direction). Paired differences are against a reference stage of the
same chain. Figures over seeds are as in `jacdistill.report`.

A front (a chain's teacher and students, or Fader's adversarial weights) is
read at the reference's PSNR of the same seed by linear interpolation
between two of its stages at most MAX_PSNR_GAP apart, never across a wider
gap and never outside its range ("-"). Every flip figure comes in three
columns, +1, -1 and their mean, at the fixed strength and (`rel_` metrics)
at each model's own score levels (`attributes.attribute_levels`).
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
                 ('flip_acc', 'flip mean', 3),
                 ('rel_flip_acc_pos_mean', 'rel. +1', 3),
                 ('rel_flip_acc_neg_mean', 'rel. -1', 3),
                 ('mig', 'MIG', 3), ('sap', 'SAP', 3))
# The three flip columns of every comparison: metric, heading.
FLIPS = (('flip_acc_pos_mean', '+1'), ('flip_acc_neg_mean', '-1'),
         ('flip_acc', 'mean'))
# Widest PSNR gap (dB) between two stages of a front that a matched value is
# interpolated across (results/CONTRASTS.md).
MAX_PSNR_GAP = 0.5


def _value(stage: dict, metric: str, split: str,
           attribute: int | None = None) -> float:
  """A stage's `metric`, or the `attribute`-th entry of a per-attribute
  list such as 'flip_acc_pos'; NaN if it was not recorded."""
  if attribute is None:
    return report.value(stage, metric, split)
  got = stage.get(split, {}).get(metric)
  return float('nan') if got is None else float(got[attribute])


def flip_at_psnr(stages: list[dict], psnr: float, split: str = 'test',
                 metric: str = 'flip_acc_pos_mean',
                 attribute: int | None = None) -> float:
  """`metric` (or its `attribute`-th entry, for a per-attribute list such as
  'flip_acc_pos') of a front of stages (of one seed) at `psnr`, interpolated
  linearly in PSNR between two of them at most MAX_PSNR_GAP apart; NaN
  outside their PSNR range, across a wider gap, or when a stage lacks it."""
  pts = [(report.value(s, 'psnr', split), _value(s, metric, split, attribute))
         for s in stages]
  if not np.isfinite(pts).all():
    return float('nan')
  return report.interpolate(pts, psnr, MAX_PSNR_GAP)


def _matched(by_stage: dict[str, dict[int, dict]], reference: str,
             stages: list[str], split: str, metric: str,
             attribute: int | None = None) -> tuple[list[float], list[float]]:
  """A front's `metric` at the reference's PSNR and its paired difference
  from the reference, one value per reference seed (NaN where the front
  lacks the seed or is out of range)."""
  ref = by_stage[reference]
  at, diff = [], []
  for seed, r in sorted(ref.items()):
    got = float('nan')
    if all(seed in by_stage.get(st, {}) for st in stages):
      got = flip_at_psnr([by_stage[st][seed] for st in stages],
                         report.value(r, 'psnr', split), split, metric,
                         attribute)
    at.append(got)
    diff.append(got - _value(r, metric, split, attribute))
  return at, diff


def _raw(by_stage: dict[str, dict[int, dict]], reference: str, stage: str,
         split: str, metric: str) -> list[float]:
  """Stage minus reference in `metric`, one value per reference seed."""
  ref = by_stage[reference]
  return [report.value(by_stage[stage][seed], metric, split)
          - report.value(r, metric, split) if seed in by_stage[stage]
          else float('nan') for seed, r in sorted(ref.items())]


def _front_lines(by_stage: dict[str, dict[int, dict]], reference: str,
                 fronts: dict[str, list[str]], split: str,
                 prefix: str = '') -> list[str]:
  """The table of each front's flip accuracy (+1, -1, mean) at the
  reference's PSNR, with its paired difference."""
  psnr = [report.value(s, 'psnr', split) for s in by_stage[reference].values()]
  lines = ['', f'Each front\'s stages of a seed interpolated linearly in PSNR '
           f'at the PSNR of `{reference}` of that seed '
           f'({report.fmt(psnr, 2)} dB), never across more than '
           f'{MAX_PSNR_GAP:g} dB; "-": out of range or across a wider gap '
           'in every seed; n: the seeds in range; nearest: the largest over '
           'seeds of the PSNR distance from the reference to the front\'s '
           'closest measured stage.', '',
           '| front | stages | n | nearest (dB) | ' + ' | '.join(
               f'flip {h} | paired {h}' for _, h in FLIPS) + ' |',
           '|---|---|---|---|' + '---|---|' * len(FLIPS)]
  for name, stages in fronts.items():
    cells, n = [], 0
    for metric, _ in FLIPS:
      at, diff = _matched(by_stage, reference, stages, split, prefix + metric)
      n = max(n, report.stats(at)[2])
      cells += [report.fmt(at), report.fmt(diff, signed=True)]
    lines.append(f"| {name} | {', '.join(stages)} | {n} | "
                 f'{_nearest(by_stage, reference, stages, split)} | '
                 + ' | '.join(cells) + ' |')
  return lines


def _nearest(by_stage: dict[str, dict[int, dict]], reference: str,
             stages: list[str], split: str) -> str:
  """The largest, over the reference's seeds, PSNR distance from the
  reference to the closest stage of the front of that seed ('-' if a seed
  has none)."""
  worst = 0.0
  for seed, r in by_stage[reference].items():
    psnr = report.value(r, 'psnr', split)
    gaps = [abs(report.value(by_stage[st][seed], 'psnr', split) - psnr)
            for st in stages if seed in by_stage.get(st, {})]
    if not gaps:
      return '-'
    worst = max(worst, min(gaps))
  return f'{worst:.2f}'


def _test_lines(by_stage: dict[str, dict[int, dict]], reference: str,
                fronts: dict[str, list[str]], tests: list[str], split: str,
                prefix: str = '') -> list[str]:
  """One Holm family: each of `tests` (a front's name: at the reference's
  PSNR; a stage's name: raw) against the reference, in the three flip
  columns."""
  contrasts = []
  for name in tests:
    for metric, heading in FLIPS:
      if name in fronts:
        diff = _matched(by_stage, reference, fronts[name], split,
                        prefix + metric)[1]
        label = f'{name} front, {heading}'
      else:
        diff = _raw(by_stage, reference, name, split, prefix + metric)
        psnr = report.fmt(_raw(by_stage, reference, name, split, 'psnr'), 2,
                          signed=True)
        label = f'{name} (raw; PSNR {psnr} dB), {heading}'
      contrasts.append((label, diff))
  return report.tests_markdown(contrasts)


def _per_attribute_lines(by_stage: dict[str, dict[int, dict]], reference: str,
                         fronts: dict[str, list[str]], names: list[str],
                         split: str) -> list[str]:
  """Per attribute: the reference's and each front's +1 / -1 flips at the
  reference's PSNR (mean over seeds), and which is highest."""
  columns = [reference] + list(fronts)
  lines = ['', f'## Per attribute at `{reference}`\'s PSNR: who wins', '',
           f'+1 / -1 flip accuracy of `{reference}` and of each front read '
           'at its PSNR (as above), mean over the seeds in range; the last '
           'two columns name the highest.', '',
           '| attribute | ' + ' | '.join(columns) + ' | best +1 | best -1 |',
           '|---|' + '---|' * (len(columns) + 2)]
  for a, attr in enumerate(names):
    cells, means = [], {1: {}, -1: {}}
    for column in columns:
      for d, metric in ((1, 'flip_acc_pos'), (-1, 'flip_acc_neg')):
        if column == reference:
          values = [_value(s, metric, split, a)
                    for s in by_stage[reference].values()]
        else:
          values = _matched(by_stage, reference, fronts[column], split,
                            metric, a)[0]
        means[d][column] = report.stats(values)[0]
      cells.append(' / '.join('-' if np.isnan(means[d][column]) else
                              f'{means[d][column]:.3f}' for d in (1, -1)))
    best = []
    for d in (1, -1):
      finite = {c: v for c, v in means[d].items() if np.isfinite(v)}
      best.append(max(finite, key=finite.get) if finite else '-')
    lines.append(f'| {attr} | ' + ' | '.join(cells) + f' | {best[0]} | '
                 f'{best[1]} |')
  return lines


def attribute_markdown(runs: dict[int, dict], reference: str = '',
                       split: str = 'test',
                       fronts: dict[str, list[str]] | None = None,
                       tests: list[str] | None = None) -> str:
  """Per-stage PSNR and flip accuracy of attribute chains (one per seed),
  paired differences against stage `reference`, each of `fronts` ({name:
  stage names}) at the reference's PSNR (fixed strength and own levels),
  `tests` (front or stage names) tested as one Holm family, the flip
  accuracy of every attribute and direction at the reference's PSNR, and
  per stage, as Markdown."""
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
      lines += ['', f'## Flip accuracy at `{reference}`\'s PSNR (same seed)']
      lines += _front_lines(by_stage, reference, fronts, split)
      lines += ['', f'## The same at each model\'s own score levels', '',
                'Edits set a score to the model\'s own median over training '
                'images that carry the attribute (+1) or do not (-1) instead '
                'of +-1 (`rel_flip_*`).']
      lines += _front_lines(by_stage, reference, fronts, split, 'rel_')
    if tests:
      unknown = [t for t in tests if t not in fronts and t not in by_stage]
      if unknown:
        raise ValueError(f'tests name {", ".join(unknown)}, neither a front '
                         f'({", ".join(fronts)}) nor a stage')
      lines += ['', f'## Tests against `{reference}` (one Holm family)', '',
                'Fronts at the reference\'s PSNR, stages raw (each at its '
                'own PSNR); two-sided paired t-test and exact sign test over '
                'the seeds in range, each Holm-corrected over every row.', '']
      lines += _test_lines(by_stage, reference, fronts, tests, split)
      lines += ['', '### The same contrasts at each model\'s own score '
                'levels (secondary, its own Holm family)', '']
      lines += _test_lines(by_stage, reference, fronts, tests, split, 'rel_')
    if fronts:
      lines += _per_attribute_lines(by_stage, reference, fronts, names, split)
  scored = [n for n in order if any('flip_acc_pos' in s.get(split, {})
                                    for s in by_stage[n].values())]
  if scored:
    lines += ['', '## Flip accuracy per attribute and stage (+1 / -1, mean '
              'over seeds)',
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
