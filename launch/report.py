"""Writes the Markdown tables and plots of finished runs.

  python launch/report.py --out=results/fashion_grow workdirs/grow/*
  python launch/report.py --out=results/fashion_attr --reference=student32 workdirs/attr/*
  python launch/report.py --out=results/fashion_attr --reference=student32 --front=fader=fader32_adv0p01,fader32_adv0p1,fader32 workdirs/attr/*
  python launch/report.py --out=results/fashion_grow/budget100 --test=b1_latent_only@4 --test=b1_latent_only@6 workdirs/grow100/*

Growth chains (workdirs named `<variant>_s<seed>`): OUT/report.md (tables),
OUT/tradeoff.png (swap accuracy, or the first --tradeoff metric, against MSE
of the student stages, one curve per variant; tradeoff_<metric>.png for the
other --tradeoff metrics), OUT/against_k.png (MSE and swap accuracy against k, the
paper's figure), OUT/reconstructions.png and OUT/traversals.png (the last
stage of each variant's first seed, side by side).

Attribute chains (one workdir per seed, `<name>_s<seed>`; a stage trained
in workdirs of its own, `fader32_s<seed>`, joins its seed's chain): OUT/report.md
(PSNR and flip accuracy per stage, paired differences against
--reference, each --front at the reference's PSNR, flip accuracy per
attribute), OUT/flip_vs_psnr.png (fronts drawn as lines) and
OUT/edits.png (every stage's edit grid of the first seed, stacked).

Every figure comes from the split given by --split (default test).
"""

import sys

from absl import app
from absl import flags

from jacdistill import attr_report
from jacdistill import paths
from jacdistill import report

_OUT = flags.DEFINE_string('out', None, 'Output directory.')
_REFERENCE = flags.DEFINE_string(
    'reference', None, 'Growth: the variant whose MSEs are the matched points '
    '(default upstream). Attribute: the stage the others are compared with '
    '(default: none).')
_SPLIT = flags.DEFINE_enum('split', 'test', ['test', 'validation'],
                           'Split whose scores the report reads.')
_VARIANTS = flags.DEFINE_list(
    'against_k', ['upstream', 'b1_latent_only', 'b2_no_supervision',
                  'jac_only_0.1', 'jac_only_1'],
    'Growth variants drawn in against_k.png.')
_FRONT = flags.DEFINE_multi_string(
    'front', [], 'Attribute: NAME=STAGE,STAGE,... a front of stages whose +1 '
    'flip accuracy is interpolated in PSNR at the --reference\'s PSNR of '
    'each seed (repeatable).')
_TEST = flags.DEFINE_multi_string(
    'test', [], 'A contrast of the Holm family tested against --reference '
    '(repeatable). Growth: VARIANT@K, the variant at the reference\'s k-th '
    'stage\'s MSE. Attribute: a --front name (at the reference\'s PSNR) or '
    'a stage name (raw), each in the +1, -1 and mean flip columns.')
_Y = flags.DEFINE_list(
    'tradeoff', ['swap_acc'],
    'Growth: the metrics plotted against MSE, one tradeoff.png each (the '
    'first) or tradeoff_<metric>.png (the others); any of '
    + ', '.join(report.AXIS_NAMES) + '.')


def _fronts(runs: dict) -> dict[str, list[str]]:
  """--front's {name: stages}, checked against the stages of `runs`."""
  stages = {s['name'] for run in runs.values() for s in run['stages']}
  fronts = {}
  for spec in _FRONT.value:
    name, _, members = spec.partition('=')
    members = [m for m in members.split(',') if m]
    if not name or not members:
      sys.exit(f'error: --front={spec} is not NAME=STAGE,STAGE,...')
    missing = sorted(set(members) - stages)
    if missing:
      sys.exit(f'error: --front={spec} names {", ".join(missing)}, which no '
               f'workdir holds (stages: {", ".join(sorted(stages))})')
    fronts[name] = members
  if fronts and _REFERENCE.value not in stages:
    sys.exit('error: --front needs --reference, a stage of the workdirs, '
             'whose PSNR the fronts are read at')
  return fronts


def _attribute_report(summaries: dict, out: str) -> None:
  try:
    runs = attr_report.merge_seeds(report.group(summaries))
  except ValueError as e:
    sys.exit(f'error: {e}')
  fronts = _fronts(runs)
  if _TEST.value and not _REFERENCE.value:
    sys.exit('error: --test needs --reference, the stage it compares with')
  try:
    text = attr_report.attribute_markdown(
        runs, _REFERENCE.value or '', _SPLIT.value, fronts, _TEST.value)
  except ValueError as e:
    sys.exit(f'error: {e}')
  paths.replace(paths.join(out, 'report.md'), text)
  attr_report.plot_flip_vs_psnr(runs, paths.join(out, 'flip_vs_psnr.png'),
                                _SPLIT.value, fronts)
  # Every stage's edit grid of the first seed, whichever workdir holds it.
  first = [wd for wd in sorted(summaries)
           if report.variant_of(wd)[1] == min(runs)]
  report.stack_pictures(
      [(f"{s['name']} (code {s['code_size']}): input, reconstruction, then "
        'each attribute set to +1', paths.join(wd, s['name'], 'edits.png'))
       for wd in first for s in summaries[wd]['stages']],
      paths.join(out, 'edits.png'))
  print(f'wrote {out}/report.md, flip_vs_psnr.png, edits.png')


def main(argv):
  unknown = [m for m in _Y.value if m not in report.AXIS_NAMES]
  if unknown:
    sys.exit(f'error: --tradeoff={",".join(unknown)} is not a plottable '
             f'metric; choose from {", ".join(report.AXIS_NAMES)}')
  summaries = report.read_summaries(argv[1:])
  if not summaries:
    sys.exit('error: none of the given workdirs has a summary.json')
  paths.makedirs(_OUT.value)
  kinds = {attr_report.is_attribute_chain(s) for s in summaries.values()}
  if len(kinds) > 1:
    sys.exit('error: give growth-chain or attribute-chain workdirs, not both')
  if kinds == {True}:
    _attribute_report(summaries, _OUT.value)
    return
  data = report.load(list(summaries))
  tests = []
  for spec in _TEST.value:
    variant, _, k = spec.rpartition('@')
    if not variant or not k.isdigit():
      sys.exit(f'error: --test={spec} is not VARIANT@K (e.g. b1_latent_only@4)')
    tests.append((variant, int(k)))
  try:
    text = report.markdown(data, _REFERENCE.value or 'upstream', _SPLIT.value,
                           tests)
  except ValueError as e:
    sys.exit(f'error: {e}')
  paths.replace(paths.join(_OUT.value, 'report.md'), text)
  plots = ['tradeoff.png'] + [f'tradeoff_{m}.png' for m in _Y.value[1:]]
  for name, metric in zip(plots, _Y.value):
    report.plot_tradeoff(data, paths.join(_OUT.value, name), _SPLIT.value,
                         metric)
  report.plot_against_k(data, paths.join(_OUT.value, 'against_k.png'),
                        _VARIANTS.value, _SPLIT.value)
  first = {}
  for wd in sorted(summaries):
    first.setdefault(report.variant_of(wd)[0], wd)
  for picture in ('reconstructions.png', 'traversals.png'):
    report.strips(first, picture, paths.join(_OUT.value, picture))
  print(f'wrote {_OUT.value}/report.md, {", ".join(plots)}, against_k.png, '
        'reconstructions.png, traversals.png')


if __name__ == '__main__':
  flags.mark_flags_as_required(['out'])
  app.run(main)
