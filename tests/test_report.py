"""The reports' aggregation, matched-MSE interpolation and paired differences,
on summaries with known numbers."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jacdistill import attr_report
from jacdistill import report


def _stage(k, mse, swap, split='test', **extra):
  return {'latent_dim': k, 'wall_time_s': 1.0,
          split: {'mse': mse, 'psnr': -10 * np.log10(mse), 'swap_acc': swap},
          **extra}


def _write(root, name, summary):
  os.makedirs(root / name)
  with open(root / name / 'summary.json', 'w') as f:
    json.dump(summary, f)
  return str(root / name)


def test_variant_of():
  assert report.variant_of('/a/b/upstream_s2') == ('upstream', 2)
  assert report.variant_of('/a/jac_only_0.1_s0/') == ('jac_only_0.1', 0)
  assert report.variant_of('plain') == ('plain', 0)


def test_stats_and_format():
  mean, std, n = report.stats([0.5, 0.7, float('nan')])
  assert (mean, n) == (pytest.approx(0.6), 2)
  assert std == pytest.approx(np.sqrt(0.02))  # Sample std, ddof 1.
  assert report.fmt([0.5, 0.7]) == '0.600 ± 0.141'
  assert report.fmt([0.25]) == '0.250'
  assert report.fmt([float('nan')]) == '-'
  assert report.fmt([0.01, 0.03], signed=True) == '+0.020 ± 0.014'


def test_swap_at_mse_uses_student_stages_only_and_never_extrapolates(
    monkeypatch):
  # Wide gaps here; the gap rule has a test of its own.
  monkeypatch.setattr(report, 'MAX_LOG_MSE_GAP', np.inf)
  # The teacher (k=2) has swap accuracy 1 by construction; it must not be an
  # interpolation end point.
  chain = [_stage(2, 0.04, 1.0), _stage(3, 0.02, 0.8), _stage(4, 0.01, 0.6)]
  assert [s['latent_dim'] for s in report.students(chain)] == [3, 4]
  # log(0.02 * 0.01) / 2: halfway in log MSE between k=3 and k=4.
  assert report.swap_at_mse(chain, np.sqrt(0.02 * 0.01)) == pytest.approx(0.7)
  assert report.swap_at_mse(chain, 0.02) == pytest.approx(0.8)
  # Between the teacher and the first student: outside the student range.
  assert np.isnan(report.swap_at_mse(chain, 0.03))
  assert np.isnan(report.swap_at_mse(chain, 0.005))


def test_matched_table_pairs_seeds_and_excludes_the_teacher(tmp_path,
                                                           monkeypatch):
  monkeypatch.setattr(report, 'MAX_LOG_MSE_GAP', np.inf)  # As above.
  # Two seeds of the reference and of a variant. The variant's chain of
  # seed s is interpolated at seed s's reference MSE.
  runs = {
      'upstream_s0': [_stage(2, 0.04, 1.0), _stage(3, 0.02, 0.80),
                      _stage(4, 0.01, 0.70)],
      'upstream_s1': [_stage(2, 0.04, 1.0), _stage(3, 0.02, 0.76),
                      _stage(4, 0.01, 0.66)],
      # Seed 0 of b1 passes MSE 0.02 halfway (in log MSE) between its
      # students 0.04 (0.9) and 0.01 (0.5): 0.7. Seed 1 has its students at
      # 0.02 (0.6) and 0.01 (0.4).
      'b1_s0': [_stage(2, 0.08, 1.0), _stage(3, 0.04, 0.9),
                _stage(4, 0.01, 0.5)],
      'b1_s1': [_stage(2, 0.04, 1.0), _stage(3, 0.02, 0.6),
                _stage(4, 0.01, 0.4)],
      # A chain whose teacher is at the reference's MSE 0.02 with swap 1.0 and
      # whose students lie below 0.015: it has no matched value at k=3.
      'flatter_s0': [_stage(2, 0.02, 1.0), _stage(3, 0.015, 0.5),
                     _stage(4, 0.005, 0.3)],
  }
  workdirs = [_write(tmp_path, name, {'stages': st})
              for name, st in runs.items()]
  data = report.load(workdirs)
  rows = report.matched(data, 'upstream')
  assert [r['k'] for r in rows] == [3, 4]
  k3, k4 = rows
  np.testing.assert_allclose(k3['swap']['b1'], [0.7, 0.6])
  np.testing.assert_allclose(k3['diff']['b1'], [0.7 - 0.80, 0.6 - 0.76])
  np.testing.assert_allclose(k4['swap']['b1'], [0.5, 0.4])
  assert np.isnan(k3['swap']['flatter'][0])  # Not the teacher's 1.0.
  assert np.isnan(k3['swap']['flatter'][1])  # No seed 1.
  # log(0.01) lies between log(0.015) and log(0.005) at fraction
  # log(1.5) / log(3).
  t = np.log(1.5) / np.log(3)
  np.testing.assert_allclose(k4['swap']['flatter'][0], 0.5 + t * (0.3 - 0.5))
  np.testing.assert_allclose(k3['swap']['upstream'], [0.80, 0.76])
  np.testing.assert_allclose(k3['diff']['upstream'], [0, 0], atol=1e-12)

  text = report.markdown(data, 'upstream')
  assert 'the **test** split' in text
  # Per stage: the teacher's swap accuracy is labelled, not averaged in.
  assert '| upstream | 2 | 2 | 0.04000 ± 0.00000 |' in text
  assert '1 (by construction)' in text
  # Matched: columns b1, flatter, upstream (variants in name order).
  assert ('| 3 | 0.02000 ± 0.00000 | 0.650 ± 0.071 | - | 0.780 ± 0.028 |'
          in text)
  assert '| 4 | 0.01000 ± 0.00000 | 0.450 ± 0.071 | 0.426 (1) |' in text
  # Paired differences: b1 - upstream per seed, (-0.10, -0.16).
  assert ('| 3 | 0.02000 ± 0.00000 | -0.130 ± 0.042 | - | +0.000 ± 0.000 |'
          in text)
  report.plot_tradeoff(data, str(tmp_path / 'tradeoff.png'))
  report.plot_against_k(data, str(tmp_path / 'k.png'), ['upstream', 'b1'])
  assert os.path.getsize(tmp_path / 'tradeoff.png') > 1000
  assert os.path.getsize(tmp_path / 'k.png') > 1000


def test_no_value_is_interpolated_across_a_wide_gap():
  pts = [(0.0, 0.0), (1.0, 1.0), (3.0, 3.0)]
  assert np.isnan(report.interpolate(pts, 2.0, max_gap=1.5))  # 3 - 1 > 1.5.
  assert report.interpolate(pts, 0.5, max_gap=1.5) == 0.5
  assert report.interpolate(pts, 1.0, max_gap=0.5) == 1.0  # A measured point.
  assert report.interpolate(pts, 2.0) == 2.0  # No limit by default.
  # Growth: students 0.02 and 0.01 are ln 2 = 0.69 apart, more than 0.15;
  # 0.020 and 0.018 are 0.105 apart.
  assert report.MAX_LOG_MSE_GAP == 0.15
  wide = [_stage(2, 0.04, 1.0), _stage(3, 0.02, 0.8), _stage(4, 0.01, 0.6)]
  assert np.isnan(report.swap_at_mse(wide, np.sqrt(0.02 * 0.01)))
  assert report.swap_at_mse(wide, 0.01) == pytest.approx(0.6)
  near = [_stage(2, 0.04, 1.0), _stage(3, 0.02, 0.8), _stage(4, 0.018, 0.6)]
  assert report.swap_at_mse(near, np.sqrt(0.02 * 0.018)) == pytest.approx(0.7)


def test_paired_tests_and_holm_by_hand():
  from scipy import stats as scipy_stats  # pylint: disable=g-import-not-at-top
  d = [0.1, 0.05, 0.08, -0.01, 0.12, float('nan')]
  got = report.paired_tests(d)
  assert (got['n'], got['positive']) == (5, 4)
  assert got['mean'] == pytest.approx(0.068)
  assert got['t_p'] == pytest.approx(
      scipy_stats.ttest_1samp(d[:5], 0.0).pvalue, rel=1e-9)
  # Sign test: 4 of 5 positive, 2 * (C(5,0) + C(5,1)) / 2^5 = 0.375.
  assert got['sign_p'] == pytest.approx(0.375)
  # Three seeds of one sign: 2 / 8 = 0.25, the smallest possible.
  assert report.paired_tests([-0.1, -0.2, -0.3])['sign_p'] == 0.25
  assert np.isnan(report.paired_tests([0.1])['t_p'])
  assert np.isnan(report.paired_tests([])['sign_p'])
  # Holm: sorted 0.01, 0.03, 0.04 times 3, 2, 1 -> 0.03, 0.06, 0.04, made
  # non-decreasing: 0.03, 0.06, 0.06. NaN is not counted.
  np.testing.assert_allclose(report.holm([0.01, 0.04, 0.03, np.nan]),
                             [0.03, 0.06, 0.06, np.nan])
  assert report.holm([0.5, 0.9]) == [1.0, 1.0]
  lines = report.tests_markdown([('a', [0.1, 0.2, 0.3]), ('b', [1.0])])
  assert lines[2].startswith('| a | 3 | +0.200 ± 0.100 | +0.100 / +0.200 / '
                             '+0.300 | 3/3 |')
  assert lines[3].startswith('| b | 1 | +1.000 | +1.000 | 1/1 | - | - | 1 |')


def test_growth_report_tests_its_listed_contrasts(tmp_path):
  workdirs = []
  for seed, (up, b1) in enumerate([(0.8, 0.7), (0.7, 0.65), (0.75, 0.6)]):
    workdirs.append(_write(tmp_path, f'upstream_s{seed}', {'stages': [
        _stage(2, 0.04, 1.0), _stage(3, 0.020, up)]}))
    workdirs.append(_write(tmp_path, f'b1_s{seed}', {'stages': [
        _stage(2, 0.04, 1.0), _stage(3, 0.020, b1)]}))
  data = report.load(workdirs)
  text = report.markdown(data, 'upstream', tests=[('b1', 3)])
  # b1 - upstream: -0.10, -0.05, -0.15; one row, so Holm changes nothing.
  assert ('| b1 at k=3 | 3 | -0.100 ± 0.050 | -0.100 / -0.050 / -0.150 | '
          '0/3 |') in text
  with pytest.raises(ValueError, match='b1@4'):
    report.markdown(data, 'upstream', tests=[('b1', 4)])


def test_disentanglement_columns_and_any_metric_on_the_tradeoff_plot(tmp_path):
  def stage(k, mse, mig):
    st = _stage(k, mse, 0.5)
    st['test'].update(mig=mig, sap=mig / 2)
    return st
  workdirs = [_write(tmp_path, f'upstream_s{seed}',
                     {'stages': [stage(2, 0.04, 0.1 + seed / 10),
                                 stage(3, 0.02, 0.3 + seed / 10)]})
              for seed in (0, 1)]
  # A chain scored before the metrics existed shows "-".
  workdirs.append(_write(tmp_path, 'old_s0', {'stages': [
      _stage(2, 0.04, 1.0), _stage(3, 0.02, 0.5)]}))
  data = report.load(workdirs)
  text = report.markdown(data, 'upstream')
  # MIG 0.3, 0.4 -> 0.350 +- 0.071; SAP half of it.
  assert '| 0.350 ± 0.071 | 0.175 ± 0.035 |' in text
  assert text.count('| - | - |') >= 2  # The old chain's two stages.
  report.plot_tradeoff(data, str(tmp_path / 'mig.png'), metric='mig')
  assert os.path.getsize(tmp_path / 'mig.png') > 1000
  with pytest.raises(ValueError, match='plottable'):
    report.plot_tradeoff(data, str(tmp_path / 'x.png'), metric='psnr')


def test_mse_falls_every_stage_and_the_split_is_read():
  runs = {0: [_stage(2, 0.04, 1.0, 'validation'),
              _stage(3, 0.03, 0.8, 'validation')]}
  assert report.mse_falls_every_stage(runs, 'validation')
  runs[0].append(_stage(4, 0.05, 0.5, 'validation'))
  assert not report.mse_falls_every_stage(runs, 'validation')
  assert np.isnan(report.value(runs[0][0], 'mse', 'test'))


def _attr_stage(name, code, psnr, pos, neg, **extra):
  return {'name': name, 'code_size': code, 'steps': 10, 'wall_time_s': 12.3,
          'test': {'psnr': psnr, 'mse': 10 ** (-psnr / 10),
                   'flip_acc_pos': pos, 'flip_acc_neg': neg,
                   'flip_acc_pos_mean': float(np.mean(pos)),
                   'flip_acc_neg_mean': float(np.mean(neg)),
                   'flip_acc': float(np.mean(pos + neg))}, **extra}


def test_attribute_report_over_seeds(tmp_path):
  config = {'stage_order': ['teacher', 'student'],
            'data': {'attributes': ['smile', 'glasses']}}
  runs = {
      0: {'config': config, 'stages': [
          _attr_stage('teacher', 74, 20.0, [0.5, 0.7], [1.0, 0.9]),
          _attr_stage('student', 138, 23.0, [0.25, 0.75], [1.0, 1.0],
                      init='teacher', teacher='teacher')]},
      1: {'config': config, 'stages': [
          _attr_stage('teacher', 74, 21.0, [0.7, 0.9], [1.0, 0.9]),
          _attr_stage('student', 138, 23.5, [0.55, 0.85], [1.0, 0.8],
                      init='teacher', teacher='teacher')]}}
  assert attr_report.is_attribute_chain(runs[0])
  assert not attr_report.is_attribute_chain({'config': {}, 'stages': []})
  text = attr_report.attribute_markdown(runs, reference='teacher')
  # PSNR 20.5 ± 0.71; flip +1 means 0.6 and 0.8 -> 0.700 ± 0.141.
  assert ('| teacher | 74 | - | - | 10 | 2 | 20.50 ± 0.71 | '
          in text)
  assert '| 0.700 ± 0.141 | 0.950 ± 0.000 |' in text
  # Student - teacher, per seed: PSNR +3.0, +2.5; flip +1 -0.1, -0.1.
  assert '| student | 2 | +2.75 ± 0.35 |' in text
  assert '| -0.100 ± 0.000 |' in text
  # Per attribute, mean over seeds: glasses +1 (0.75 + 0.85) / 2.
  assert '| glasses | 0.800 / 0.900 | 0.800 / 0.900 |' in text
  attr_report.plot_flip_vs_psnr(runs, str(tmp_path / 'flip.png'))
  assert os.path.getsize(tmp_path / 'flip.png') > 1000


def test_a_stage_of_its_own_workdir_joins_its_seeds_chain():
  config = {'stage_order': ['teacher'], 'data': {'attributes': ['a']}}
  fader_config = {'stage_order': ['fader32'], 'data': {'attributes': ['a']}}

  def run(config, name, psnr):
    return {'config': config,
            'stages': [_attr_stage(name, 74, psnr, [0.5], [1.0])]}
  groups = {'chain': {0: run(config, 'teacher', 20.0),
                      1: run(config, 'teacher', 21.0)},
            'fader32': {1: run(fader_config, 'fader32', 24.0),
                        0: run(fader_config, 'fader32', 23.0)}}
  runs = attr_report.merge_seeds(groups)
  assert sorted(runs) == [0, 1]
  for seed in (0, 1):
    assert [s['name'] for s in runs[seed]['stages']] == ['teacher', 'fader32']
    assert runs[seed]['config'] is groups['chain'][seed]['config']
  # fader32 - teacher, per seed: PSNR +3.0 both.
  text = attr_report.attribute_markdown(runs, reference='teacher')
  assert '| fader32 | 2 | +3.00 ± 0.00 |' in text
  groups['again'] = {0: run(config, 'teacher', 20.0)}
  with pytest.raises(ValueError, match='stage teacher of seed 0'):
    attr_report.merge_seeds(groups)


def test_a_front_is_read_at_the_references_psnr_of_each_seed(tmp_path):
  config = {'stage_order': ['student', 'fa', 'fb', 'wa', 'wb'],
            'data': {'attributes': ['a', 'b']}}
  # Seed 0: the front runs (21.8 dB, 0.8) -> (22.2 dB, 0.4), so at the
  # student's 22 dB it is 0.6; seed 1: (22.8, 0.9) -> (23.2, 0.5), at 23 dB
  # 0.7. The student's own +1 flips: 0.5 and 0.7, so the differences are
  # +0.1, 0. Every -1 flip is 1. The front wa, wb spans 4 dB, more than
  # the 0.5 dB a value is interpolated across.
  def seed(psnr, pos, front):
    return {'config': config, 'stages': [
        _attr_stage('student', 138, psnr, pos, [1.0, 1.0]),
        _attr_stage('fa', 138, psnr - 0.2, [front[0]] * 2, [1.0, 1.0]),
        _attr_stage('fb', 138, psnr + 0.2, [front[1]] * 2, [1.0, 1.0]),
        _attr_stage('wa', 138, psnr - 2.0, [front[0]] * 2, [1.0, 1.0]),
        _attr_stage('wb', 138, psnr + 2.0, [front[1]] * 2, [1.0, 1.0])]}
  runs = {0: seed(22.0, [0.25, 0.75], (0.8, 0.4)),
          1: seed(23.0, [0.55, 0.85], (0.9, 0.5))}
  assert attr_report.MAX_PSNR_GAP == 0.5
  assert attr_report.flip_at_psnr(runs[0]['stages'][1:3], 22.0) == (
      pytest.approx(0.6, abs=1e-12))
  assert np.isnan(attr_report.flip_at_psnr(runs[0]['stages'][1:3], 22.5))
  assert np.isnan(attr_report.flip_at_psnr(runs[0]['stages'][3:], 22.0))
  # One attribute's list entry, along the same front.
  assert attr_report.flip_at_psnr(runs[0]['stages'][1:3], 22.0,
                                  metric='flip_acc_neg', attribute=1) == 1.0
  text = attr_report.attribute_markdown(
      runs, reference='student',
      fronts={'f': ['fa', 'fb'], 'g': ['fb'], 'w': ['wa', 'wb']},
      tests=['f', 'fa'])
  assert '(22.50 ± 0.71 dB)' in text
  # +1, -1 and their mean: at 22 dB the front's mean flip is (0.6 + 1) / 2
  # = 0.8 against the student's 0.75; at 23 dB 0.85 against 0.85.
  assert ('| f | fa, fb | 2 | 0.20 | 0.650 ± 0.071 | +0.050 ± 0.071 | 1.000 ± 0.000 '
          '| +0.000 ± 0.000 | 0.825 ± 0.035 | +0.025 ± 0.035 |') in text
  # A front of one stage at another PSNR, and one across a wide gap, are out
  # of range in every seed.
  assert '| g | fb | 0 | 0.20 | - | - |' in text
  assert '| w | wa, wb | 0 | 2.00 | - | - |' in text
  # The listed tests, one Holm family of 6 rows; a stage is compared raw,
  # with its PSNR difference named.
  assert '| f front, +1 | 2 | +0.050 ± 0.071 | +0.100 / +0.000 | 1/2 |' in text
  assert '| fa (raw; PSNR -0.20 ± 0.00 dB), +1 | 2 |' in text
  # Per attribute at the student's PSNR: attribute a, +1: student 0.40,
  # front 0.65, so the front wins.
  assert '| a | 0.400 / 1.000 | 0.650 / 1.000 | - / - | - / - | f | ' in text
  with pytest.raises(ValueError, match='tests name nothere'):
    attr_report.attribute_markdown(runs, reference='student',
                                   fronts={'f': ['fa', 'fb']},
                                   tests=['nothere'])
  attr_report.plot_flip_vs_psnr(runs, str(tmp_path / 'flip.png'),
                                fronts={'f': ['fa', 'fb']})
  assert os.path.getsize(tmp_path / 'flip.png') > 1000
  # The same through launch/report.py, the front's stages in workdirs of
  # their own; a front naming a stage no workdir holds is refused.
  workdirs = []
  for seed, run in runs.items():
    workdirs.append(_write(tmp_path, f'chain_s{seed}', {
        'config': config, 'stages': run['stages'][:1]}))
    workdirs.append(_write(tmp_path, f'front_s{seed}', {
        'config': config, 'stages': run['stages'][1:]}))
  script = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'launch',
                        'report.py')

  def launch(*flags):
    return subprocess.run(
        [sys.executable, script, f'--out={tmp_path / "out"}',
         '--reference=student', *flags, *workdirs], capture_output=True,
        text=True, timeout=300)
  assert launch('--front=f=fa,fb').returncode == 0
  assert '| f | fa, fb | 2 | 0.20 | 0.650 ± 0.071 |' in (
      tmp_path / 'out' / 'report.md').read_text()
  assert launch('--front=f=fa,fb', '--test=f').returncode == 0
  assert '| f front, mean | 2 |' in (tmp_path / 'out' / 'report.md').read_text()
  bad = launch('--front=f=fa,fc')
  assert bad.returncode != 0
  assert bad.stderr.strip().splitlines()[-1] == (
      'error: --front=f=fa,fc names fc, which no workdir holds (stages: fa, '
      'fb, student, wa, wb)')
