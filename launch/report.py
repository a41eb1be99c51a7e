"""Writes the Markdown tables and plots of finished runs.

  python launch/report.py --out=results/fashion_grow workdirs/sweep/*
  python launch/report.py --out=results/fashion_attr workdirs/fashion_attr_quick

Growth chains (one or more workdirs): OUT/report.md (tables),
OUT/tradeoff.png (swap accuracy against MSE, one curve per variant),
OUT/reconstructions.png and OUT/traversals.png (the last stage of each
variant's first seed, side by side).

An attribute chain (one workdir): OUT/report.md (PSNR and flip accuracy per
stage and per attribute), OUT/flip_vs_psnr.png and OUT/edits.png (every
stage's edit grid, stacked).
"""

import json
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jacdistill import report  # pylint: disable=g-import-not-at-top

_OUT = flags.DEFINE_string('out', None, 'Output directory.')
_REFERENCE = flags.DEFINE_string('reference', 'upstream',
                                 'Variant whose MSEs are the matched points.')


def _attribute_report(workdir: str, summary: dict, out: str) -> None:
  with open(os.path.join(out, 'report.md'), 'w') as f:
    f.write(report.attribute_markdown(summary))
  report.plot_flip_vs_psnr(summary, os.path.join(out, 'flip_vs_psnr.png'))
  report.stack_pictures(
      [(f"{s['name']} (code {s['code_size']}): input, reconstruction, then "
        'each attribute set to +1', os.path.join(workdir, s['name'],
                                                 'edits.png'))
       for s in summary['stages']], os.path.join(out, 'edits.png'))
  print(f'wrote {out}/report.md, flip_vs_psnr.png, edits.png')


def main(argv):
  workdirs = argv[1:]
  summaries = {}
  for wd in workdirs:
    path = os.path.join(wd, 'summary.json')
    if os.path.exists(path):
      with open(path) as f:
        summaries[wd] = json.load(f)
  if not summaries:
    sys.exit('error: none of the given workdirs has a summary.json')
  os.makedirs(_OUT.value, exist_ok=True)
  attribute = [wd for wd, s in summaries.items()
               if report.is_attribute_chain(s)]
  if attribute:
    if len(summaries) > 1:
      sys.exit('error: give one attribute-chain workdir at a time (got '
               f'{len(summaries)} workdirs with a summary.json)')
    _attribute_report(attribute[0], summaries[attribute[0]], _OUT.value)
    return
  data = report.load(workdirs)
  with open(os.path.join(_OUT.value, 'report.md'), 'w') as f:
    f.write(report.markdown(data, _REFERENCE.value))
  report.plot_tradeoff(data, os.path.join(_OUT.value, 'tradeoff.png'))
  first = {}
  for wd in sorted(workdirs):
    variant, _ = report.variant_of(wd)
    first.setdefault(variant, wd)
  for picture in ('reconstructions.png', 'traversals.png'):
    report.strips(first, picture, os.path.join(_OUT.value, picture))
  print(f'wrote {_OUT.value}/report.md, tradeoff.png, reconstructions.png, '
        'traversals.png')


if __name__ == '__main__':
  flags.mark_flags_as_required(['out'])
  app.run(main)
