"""Writes the Markdown table and plots of one or more growth-chain workdirs.

  python launch/report.py --out=results/fashion_grow workdirs/sweep/*

Writes OUT/report.md (tables), OUT/tradeoff.png (swap accuracy against MSE,
one curve per variant), OUT/reconstructions.png and OUT/traversals.png (the
last stage of each variant's first seed, side by side).
"""

import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jacdistill import report  # pylint: disable=g-import-not-at-top

_OUT = flags.DEFINE_string('out', None, 'Output directory.')
_REFERENCE = flags.DEFINE_string('reference', 'upstream',
                                 'Variant whose MSEs are the matched points.')


def main(argv):
  workdirs = argv[1:]
  data = report.load(workdirs)
  if not data:
    sys.exit('error: none of the given workdirs has a summary.json')
  os.makedirs(_OUT.value, exist_ok=True)
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
