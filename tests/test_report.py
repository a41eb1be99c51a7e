"""The report's aggregation and matched-MSE interpolation."""

import json
import os

import numpy as np
import pytest

from jacdistill import report


def _stage(k, mse, swap, **extra):
  return {'latent_dim': k, 'test_mse': mse, 'test_psnr': -10 * np.log10(mse),
          'swap_acc': swap, 'wall_time_s': 1.0, **extra}


def test_variant_of():
  assert report.variant_of('/a/b/upstream_s2') == ('upstream', 2)
  assert report.variant_of('/a/jac_swap_0.1_s0/') == ('jac_swap_0.1', 0)
  assert report.variant_of('plain') == ('plain', 0)


def test_aggregate_mean_and_seed_spread():
  runs = {0: [_stage(2, 0.04, 1.0), _stage(3, 0.03, 0.8)],
          1: [_stage(2, 0.06, 1.0), _stage(3, 0.01, 0.6)]}
  rows = report.aggregate(runs)
  assert [r['k'] for r in rows] == [2, 3]
  assert rows[1]['test_mse'] == pytest.approx(0.02)
  assert rows[1]['test_mse_spread'] == pytest.approx(0.01)
  assert rows[1]['swap_acc'] == pytest.approx(0.7)
  assert rows[1]['swap_acc_spread'] == pytest.approx(0.1)
  assert report.mse_falls_every_stage(runs)
  runs[1].append(_stage(4, 0.02, 0.5))
  assert not report.mse_falls_every_stage(runs)


def test_swap_at_mse_interpolates_in_log_mse_and_never_extrapolates():
  rows = [{'test_mse': 0.04, 'swap_acc': 1.0}, {'test_mse': 0.01, 'swap_acc': 0.5}]
  # log(0.02) lies halfway between log(0.04) and log(0.01).
  assert report.swap_at_mse(rows, 0.02) == pytest.approx(0.75)
  assert report.swap_at_mse(rows, 0.04) == pytest.approx(1.0)
  assert np.isnan(report.swap_at_mse(rows, 0.05))
  assert np.isnan(report.swap_at_mse(rows, 0.005))


def test_markdown_from_workdirs(tmp_path):
  for name, stages in {
      'upstream_s0': [_stage(2, 0.04, 1.0), _stage(3, 0.02, 0.8)],
      'b2_no_supervision_s0': [_stage(2, 0.04, 1.0), _stage(3, 0.01, 0.4)]}.items():
    os.makedirs(tmp_path / name)
    with open(tmp_path / name / 'summary.json', 'w') as f:
      json.dump({'stages': stages}, f)
  data = report.load([str(tmp_path / n) for n in os.listdir(tmp_path)])
  text = report.markdown(data, 'upstream')
  assert '| upstream | 3 | 1 | 0.02000 |' in text
  # At upstream's k=3 MSE 0.02, b2 is halfway (in log MSE) between its
  # stages: 1.0 + (0.4 - 1.0) * 0.5 = 0.7.
  assert '| 3 | 0.02000 | 0.700 | 0.800 |' in text or (
      '| 3 | 0.02000 | 0.800 | 0.700 |' in text)
  report.plot_tradeoff(data, str(tmp_path / 'plot.png'))
  assert os.path.getsize(tmp_path / 'plot.png') > 1000


def _attr_stage(name, code, psnr, pos, neg, **extra):
  return {'name': name, 'code_size': code, 'steps': 10, 'wall_time_s': 12.3,
          'test_psnr': psnr, 'test_mse': 10 ** (-psnr / 10),
          'flip_acc_pos': pos, 'flip_acc_neg': neg,
          'flip_acc': float(np.mean(pos + neg)), **extra}


def test_attribute_report(tmp_path):
  summary = {
      'config': {'stage_order': ['teacher', 'student'],
                 'data': {'attributes': ['smile', 'glasses']}},
      'stages': [_attr_stage('teacher', 74, 20.0, [0.5, 0.7], [1.0, 0.9]),
                 _attr_stage('student', 138, 23.0, [0.25, 0.75], [1.0, 1.0],
                             init='teacher', teacher='teacher')]}
  assert report.is_attribute_chain(summary)
  assert not report.is_attribute_chain({'config': {}, 'stages': []})
  text = report.attribute_markdown(summary)
  # flip acc = mean of the four fractions; +1 / -1 columns their halves.
  assert ('| teacher | 74 | - | - | 10 | 12 | 20.00 | 0.01000 | 0.775 | '
          '0.600 | 0.950 |') in text
  assert ('| student | 138 | teacher | teacher | 10 | 12 | 23.00 | 0.00501 | '
          '0.750 | 0.500 | 1.000 |') in text
  assert '| glasses | 0.700 / 0.900 | 0.750 / 1.000 |' in text
  report.plot_flip_vs_psnr(summary, str(tmp_path / 'flip.png'))
  assert os.path.getsize(tmp_path / 'flip.png') > 1000
