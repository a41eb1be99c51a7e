"""The explorer at three depths: its handlers as plain functions, HTTP
against a server on an ephemeral port, and the page in headless chromium.

Tiny smoke-config runs (a growth chain of 2 stages, an attribute chain of
teacher and student8) in a temporary directory are the models.
"""

import http.client
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request

import numpy as np
from PIL import Image
import pytest

from configs import fashion_attr
from configs import fashion_grow
from jacdistill import attr_chain
from jacdistill import attributes
from jacdistill import chain
from jacdistill import editing
from jacdistill import explore
from jacdistill import explore_server
from jacdistill import export
from jacdistill import pretrained

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = '/usr/bin/chromium'


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """(growth workdir, attribute workdir) of finished smoke runs."""
  root = tmp_path_factory.mktemp('explore_runs')
  grow, attr = str(root / 'grow'), str(root / 'attr')
  chain.train_and_evaluate(fashion_grow.get_config('smoke'), grow)
  config = fashion_attr.get_config('smoke')
  config.stage_order = ('teacher', 'student8')
  attr_chain.train_and_evaluate(config, attr)
  return grow, attr


@pytest.fixture(scope='module')
def grow_explorer(runs):
  return explore.Explorer.from_workdir(runs[0])


@pytest.fixture(scope='module')
def attr_explorer(runs):
  return explore.Explorer.from_workdir(runs[1], 'student8')


@pytest.fixture(scope='module')
def server(grow_explorer):
  """A running server for the growth explorer: (explorer, 'host:port')."""
  srv = explore_server.make_server(grow_explorer, '127.0.0.1', 0)
  thread = threading.Thread(target=srv.serve_forever, daemon=True)
  thread.start()
  host, port = srv.server_address[:2]
  yield grow_explorer, f'{host}:{port}'
  srv.shutdown()
  srv.server_close()


def _png(array, fmt='PNG') -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format=fmt)
  return buffer.getvalue()


# ------------------------------------------------------------- handlers


def test_growth_info_labels_teacher_dims_and_uses_test_percentiles(
    grow_explorer):
  info = grow_explorer.info()
  assert info['kind'] == 'growth'
  assert [s['name'] for s in info['stages']] == ['0', '1']
  assert (info['primary'], info['compare']) == ('1', '0')
  student = info['stages'][1]
  assert [s['label'] for s in student['sliders']] == [
      'dim 0 (teacher)', 'dim 1 (teacher)', 'dim 2']
  assert student['set_names'] == ['dim0', 'dim1', 'dim2']
  assert student['manipulate'].endswith('--stage=1')
  stage = grow_explorer.stages['1']
  codes = stage.test_codes(grow_explorer.test_images)
  lo, hi = np.percentile(codes, [2, 98], axis=0)
  np.testing.assert_allclose([s['lo'] for s in student['sliders']], lo,
                             rtol=1e-6)
  np.testing.assert_allclose([s['hi'] for s in student['sliders']], hi,
                             rtol=1e-6)
  json.dumps(info)  # Plain JSON all through.


def test_encode_and_decode_agree_with_the_model(grow_explorer):
  reply = grow_explorer.encode_test({'test': 3})
  image = grow_explorer.test_images[3]
  np.testing.assert_array_equal(editing.decode_data_url(reply['original']),
                                image)
  stage = grow_explorer.stages['1']
  code = reply['stages']['1']['code']
  np.testing.assert_allclose(code, stage.encode(image), rtol=0, atol=0)
  # An edit of dim 2 reaches the student and passes the 2-dim teacher by.
  out = grow_explorer.decode({'stages': {'1': code,
                                         '0': reply['stages']['0']['code']},
                              'edits': [[2, 1.5], [0, -0.25]]})
  edited = np.array(code, np.float32)
  edited[2], edited[0] = 1.5, -0.25
  assert out['stages']['1']['code'] == [float(v) for v in edited]
  np.testing.assert_array_equal(
      editing.decode_data_url(out['stages']['1']['image']),
      stage.decode(edited))
  teacher = out['stages']['0']['code']
  assert teacher[0] == -0.25
  assert teacher[1] == pytest.approx(reply['stages']['0']['code'][1])
  recon = editing.decode_data_url(reply['stages']['1']['reconstruction'])
  assert np.abs(recon.astype(int) -
                editing.decode_data_url(out['stages']['1']['image'])).max() > 0


def test_attribute_sliders_are_named_and_edits_follow_edit_codes(
    attr_explorer):
  info = attr_explorer.info()
  assert info['kind'] == 'attribute' and info['primary'] == 'student8'
  student = info['stages'][1]
  names = list(fashion_attr.get_config('smoke').data.attributes)
  assert [s['label'] for s in student['sliders']] == names
  assert all((s['lo'], s['hi']) == (-3.0, 3.0) for s in student['sliders'])
  reply = attr_explorer.encode_test({'test': 0})
  code = np.array(reply['stages']['student8']['code'], np.float32)
  # Far past the slider's range: a number box may send any finite value.
  edits = [[7, 2.0], [9, -7.5]]
  out = attr_explorer.decode({'stages': {'student8': code.tolist()},
                              'edits': edits})
  expected = attributes.edit_codes(code[None], 10, 7, 2.0, one_hot=True)
  expected = attributes.edit_codes(expected, 10, 9, -7.5, one_hot=True)[0]
  np.testing.assert_array_equal(out['stages']['student8']['code'], expected)
  stage = attr_explorer.stages['student8']
  np.testing.assert_array_equal(
      editing.decode_data_url(out['stages']['student8']['image']),
      stage.decode(expected))
  assert editing.decode_data_url(reply['original']).shape == (32, 32, 1)


@pytest.mark.parametrize('request_, match', [
    ({'test': -1}, 'test index'), ({'test': 10 ** 9}, 'test index'),
    ({'test': 1.5}, 'test index'), ({'test': True}, 'test index'),
    ([], 'send'),
])
def test_bad_encode_requests_are_refused(grow_explorer, request_, match):
  with pytest.raises(explore.ExploreError, match=match):
    grow_explorer.encode_test(request_)


@pytest.mark.parametrize('request_, match', [
    ({'stages': {'9': [0.0] * 3}}, "no stage '9'"),
    ({'stages': {'1': [0.0] * 2}}, 'must be 3 finite'),
    ({'stages': {'1': [0.0, 0.0, float('nan')]}}, 'must be 3 finite'),
    ({'stages': {'1': ['a', 0, 0]}}, 'not a list of numbers|must be 3'),
    ({'stages': {'1': [0.0] * 3}, 'edits': [[0, float('inf')]]},
     'not a finite'),
    # Finite Python floats past float32's range: float32 infinity.
    ({'stages': {'1': [0.0] * 3}, 'edits': [[0, 1e39]]}, 'not a finite'),
    ({'stages': {'1': [0.0] * 3}, 'edits': [[0, -1e308]]}, 'not a finite'),
    ({'stages': {'1': [0.0, 1e39, 0.0]}}, 'must be 3 finite'),
    ({'stages': {'1': [0.0] * 3}, 'edits': [[3, 1.0]]}, 'not in'),
    ({'stages': {'1': [0.0] * 3}, 'edits': [[0]]}, 'not \\[index, value\\]'),
    ({'stages': {'1': [0.0] * 3}, 'edits': 'x'}, 'must be a list'),
    ({'edits': []}, 'send'),
])
def test_bad_decode_requests_are_refused(grow_explorer, request_, match):
  with pytest.raises(explore.ExploreError, match=match):
    grow_explorer.decode(request_)


def test_uploads_are_prepared_as_training_images(grow_explorer):
  rgb = np.random.default_rng(0).integers(0, 256, (40, 60, 3), np.uint8)
  reply = grow_explorer.encode_upload(_png(rgb))
  prepared = editing.prepare_image(Image.fromarray(rgb), 28, 28, 1)
  np.testing.assert_array_equal(editing.decode_data_url(reply['original']),
                                prepared)
  jpeg = grow_explorer.encode_upload(_png(rgb, 'JPEG'))
  assert editing.decode_data_url(jpeg['original']).shape == (28, 28, 1)


def test_a_16_bit_grey_png_is_scaled_not_clipped():
  ramp = np.array([[0, 257 * 64, 257 * 128, 65535]] * 4, np.uint16)
  buffer = io.BytesIO()
  Image.fromarray(ramp).save(buffer, format='PNG')
  img = editing.read_upload(buffer.getvalue())
  assert img.mode.startswith('I')
  out = editing.prepare_image(img, 4, 4, 1)[..., 0]
  np.testing.assert_array_equal(out[0], [0, 64, 128, 255])


def _bad_uploads():
  png = _png(np.zeros((64, 64, 3), np.uint8))
  huge = io.BytesIO()
  # One colour compresses well: a 20000x20000 PNG is a few hundred KB.
  Image.new('L', (20000, 20000)).save(huge, format='PNG')
  return {'random bytes': np.random.default_rng(0).bytes(5000),
          'truncated png': png[:len(png) // 2],
          'empty': b'',
          'a gif': _gif(),
          '20000x20000 png': huge.getvalue()}


def _gif():
  buffer = io.BytesIO()
  Image.new('L', (8, 8)).save(buffer, format='GIF')
  return buffer.getvalue()


BAD_UPLOADS = _bad_uploads()


@pytest.mark.parametrize('name', sorted(BAD_UPLOADS))
def test_bad_uploads_are_refused_as_plain_functions(grow_explorer, name):
  with pytest.raises(explore.ExploreError) as e:
    grow_explorer.encode_upload(BAD_UPLOADS[name])
  assert e.value.status == 400
  assert 'UploadError' not in str(e.value)
  assert ' at 0x' not in str(e.value)  # No object repr (`<_io.BytesIO ...>`).


def test_an_upload_over_the_pixel_limit_says_its_size():
  big = io.BytesIO()
  # Over editing.MAX_PIXELS (4096^2), under PIL's own decompression-bomb limit.
  Image.new('L', (5000, 5000)).save(big, format='PNG')
  with pytest.raises(editing.UploadError, match='^the image is 5000x5000 '):
    editing.read_upload(big.getvalue())


def test_routes_and_methods(grow_explorer):
  status, ctype, body = grow_explorer.handle('GET', '/')
  assert status == 200 and ctype.startswith('text/html')
  assert b'<script>' in body and b'src="http' not in body  # Self-contained.
  assert grow_explorer.handle('GET', '/api/info?x=1')[0] == 200
  assert grow_explorer.handle('GET', '/etc/passwd')[0] == 404
  assert grow_explorer.handle('GET', '/api/decode')[0] == 405
  assert grow_explorer.handle('POST', '/api/decode', b'{no json')[0] == 400
  # Malformed or absurd JSON of any depth is a 400, never a 500.
  for depth in (1000, 100_000):
    deep = b'[' * depth + b']' * depth
    assert grow_explorer.handle('POST', '/api/decode', deep)[0] == 400
    assert grow_explorer.handle('POST', '/api/encode', deep)[0] == 400


def test_the_copy_command_draws_the_same_edit(runs, grow_explorer):
  from launch import manipulate  # pylint: disable=g-import-not-at-top
  reply = grow_explorer.encode_test({'test': 5})
  edits = [[2, 0.75], [0, -1.25]]
  out = grow_explorer.decode({'stages': {'1': reply['stages']['1']['code']},
                              'edits': edits})
  grid = manipulate.manipulate(runs[0], '1', [], ['dim2=0.75', 'dim0=-1.25'],
                               test_indices=[5])
  # Columns: input, reconstruction, dim2 alone, dim0 alone, all edits.
  tile = grid[1:29, 1 + 4 * 29:5 * 29]
  np.testing.assert_array_equal(
      tile[..., :1], editing.decode_data_url(out['stages']['1']['image']))


def test_from_pretrained_groups_a_chain(runs, tmp_path):
  directory = str(tmp_path)
  for stage in (0, 1):
    export.export_stage(runs[0], f'g{stage}', stage, directory,
                        command='python launch/main.py x',
                        chain_name='g')
  explorer = explore.Explorer.from_pretrained(['g1'], directory)
  assert list(explorer.stages) == ['g0', 'g1']
  assert (explorer.primary, explorer.compare) == ('g1', 'g0')
  assert explorer.stages['g1'].manipulate_args == '--pretrained=g1'
  with pytest.raises(pretrained.PretrainedError, match='no model'):
    explore.Explorer.from_pretrained(['nope'], directory)


# ------------------------------------------------------------------ HTTP


def _request(address, method, path, body=None, headers=None):
  conn = http.client.HTTPConnection(address, timeout=60)
  try:
    conn.request(method, path, body=body, headers=headers or {})
    reply = conn.getresponse()
    return reply.status, reply.read()
  finally:
    conn.close()


def _still_serving(address):
  status, body = _request(address, 'GET', '/api/info')
  assert status == 200 and json.loads(body)['kind'] == 'growth'


def test_http_round_trip(server):
  explorer, address = server
  status, page = _request(address, 'GET', '/')
  assert status == 200 and b'explorerState' in page
  status, body = _request(address, 'POST', '/api/encode',
                          json.dumps({'test': 2}))
  assert status == 200
  code = json.loads(body)['stages']['1']['code']
  status, body = _request(address, 'POST', '/api/decode', json.dumps(
      {'stages': {'1': code}, 'edits': [[1, 0.5]]}))
  assert status == 200
  edited = np.array(code, np.float32)
  edited[1] = 0.5
  np.testing.assert_array_equal(
      editing.decode_data_url(json.loads(body)['stages']['1']['image']),
      explorer.stages['1'].decode(edited))


@pytest.mark.parametrize('name', sorted(BAD_UPLOADS))
def test_bad_uploads_get_400_and_the_server_goes_on(server, name):
  _, address = server
  status, body = _request(address, 'POST', '/api/upload', BAD_UPLOADS[name],
                          {'Content-Type': 'application/octet-stream'})
  assert status == 400, body
  assert json.loads(body)['error']
  _still_serving(address)


def test_a_50_mb_body_gets_413_and_the_server_goes_on(server):
  _, address = server
  status, body = _request(address, 'POST', '/api/upload',
                          b'\0' * (50 << 20))
  assert status == 413 and b'allowed' in body
  status, _ = _request(address, 'POST', '/api/decode', b'[' * (2 << 20))
  assert status == 413
  _still_serving(address)


def test_a_foreign_host_header_is_refused(server):
  _, address = server
  status, _ = _request(address, 'GET', '/api/info',
                       headers={'Host': 'evil.example:80'})
  assert status == 403
  _still_serving(address)


def test_two_clients_at_once_get_their_own_images(server):
  explorer, address = server
  codes = {k: json.loads(_request(address, 'POST', '/api/encode',
                                  json.dumps({'test': k}))[1])
           for k in (0, 1)}
  results, errors = {}, []

  def client(k):
    try:
      for v in np.linspace(-1, 1, 8):
        body = json.dumps({'stages': {'1': codes[k]['stages']['1']['code']},
                           'edits': [[2, float(v) + k]]})
        status, reply = _request(address, 'POST', '/api/decode', body)
        assert status == 200
        results[(k, float(v))] = json.loads(reply)['stages']['1']['code']
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  threads = [threading.Thread(target=client, args=(k,)) for k in (0, 1)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors
  for (k, v), code in results.items():
    expected = list(codes[k]['stages']['1']['code'])
    expected[2] = v + k
    np.testing.assert_allclose(code, expected, rtol=1e-6)


def test_cli_serves_on_loopback_and_stops_on_ctrl_c(runs):
  proc = subprocess.Popen(
      [sys.executable, os.path.join(ROOT, 'launch', 'explore.py'),
       f'--workdir={runs[0]}', '--port=0'],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    line = proc.stdout.readline()
    assert 'http://127.0.0.1:' in line, (line, proc.stderr.read())
    url = line[line.index('http://'):].split()[0]
    with urllib.request.urlopen(url + 'api/info', timeout=60) as reply:
      assert json.load(reply)['num_test'] > 0
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 0, err
  assert out.strip().endswith('stopped')
  assert 'warning' not in err


def test_cli_errors_are_one_line(tmp_path):
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'launch', 'explore.py'),
       f'--workdir={tmp_path}', '--port=0'],
      capture_output=True, text=True, timeout=120)
  assert out.returncode != 0
  assert out.stderr.strip().splitlines()[-1].startswith('error: ')
  assert 'Traceback' not in out.stderr


def test_a_host_other_than_loopback_warns():
  assert explore_server.host_warning('127.0.0.1') is None
  assert explore_server.host_warning('localhost') is None
  assert explore_server.host_warning('::1') is None
  assert 'anyone' in explore_server.host_warning('0.0.0.0')


# --------------------------------------------------------------- browser


def _playwright():
  if not os.path.exists(CHROMIUM):
    pytest.skip(f'{CHROMIUM} is not installed (apt-get install chromium); '
                '.ci/run installs it')
  try:
    from playwright.sync_api import sync_playwright  # pylint: disable=g-import-not-at-top
  except ImportError:
    pytest.skip('Playwright is not installed (pip install playwright)')
  return sync_playwright


def test_the_page_in_a_browser(server, tmp_path):
  sync_playwright = _playwright()
  explorer, address = server
  with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM,
                                args=list(explore_server.CHROMIUM_ARGS))
    try:
      page = browser.new_page(viewport={'width': 1000, 'height': 800})
      errors = []
      page.on('pageerror', lambda e: errors.append(str(e)))
      page.goto(f'http://{address}/')
      page.wait_for_function('window.explorerState.decodes >= 1 && '
                             '!window.explorerState.inflight')
      sliders = page.locator('#sliders input[type=range]')
      assert sliders.count() == 3
      assert page.locator('#sliders label').first.inner_text() == (
          'dim 0 (teacher)')
      before = page.get_attribute('#edited-primary', 'src')
      assert before == page.get_attribute('#reconstruction-primary', 'src')
      count = page.evaluate('window.explorerState.decodes')
      box = sliders.nth(2).bounding_box()
      page.mouse.click(box['x'] + 0.9 * box['width'],
                       box['y'] + box['height'] / 2)
      page.wait_for_function(
          f'window.explorerState.decodes > {count} && '
          '!window.explorerState.inflight && !window.explorerState.pending')
      after = page.get_attribute('#edited-primary', 'src')
      assert after != before
      state = page.evaluate('window.explorerState.last')
      code = np.array(state['reply']['stages']['1']['code'], np.float32)
      edit = state['request']['edits'][-1]
      assert edit[0] == 2 and code[2] == np.float32(edit[1])
      np.testing.assert_array_equal(editing.decode_data_url(after),
                                    explorer.stages['1'].decode(code))
      # The teacher beside it, on the same edit (dim 2 is not its).
      assert page.get_attribute('#edited-compare', 'src')
      command = page.input_value('#command')
      assert command.startswith('python launch/manipulate.py --workdir=')
      assert '--test_index=0' in command and f'--set dim2={edit[1]:g}' in (
          command.replace(f'={edit[1]}', f'={edit[1]:g}'))
      # Reset gives the reconstruction back.
      count = page.evaluate('window.explorerState.decodes')
      page.click('#reset')
      page.wait_for_function(f'window.explorerState.decodes > {count} && '
                             '!window.explorerState.inflight')
      assert page.get_attribute('#edited-primary', 'src') == before
      shot = str(tmp_path / 'explore.png')
      page.screenshot(path=shot, full_page=True)
      assert Image.open(shot).size[0] >= 800
      assert not errors, errors
    finally:
      browser.close()
  if os.environ.get('JACDISTILL_EXPLORE_SCREENSHOT'):
    shutil.copy(shot, os.environ['JACDISTILL_EXPLORE_SCREENSHOT'])


def test_bench_explore_case_times_the_decode_handler():
  from launch import bench  # pylint: disable=g-import-not-at-top
  result = bench.time_explore(steps=3, warmup=1, seed=0)
  assert set(result) == {'mlp', 'attr_student'}
  for stats in result.values():
    assert 0 < stats['ms_min'] <= stats['ms_median'] <= stats['ms_max']
  assert result['attr_student']['code_size'] == 10 + 4 * 32
