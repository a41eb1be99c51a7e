"""Serves a page that edits codes with sliders and shows the decoded images.

  python launch/explore.py --pretrained=fashion_grow_k8
  python launch/explore.py --workdir=workdirs/fashion_attr_quick --stage=student32
  python launch/explore.py --pretrained=fashion_grow_k8 --port=8000

Open the printed URL. Pick a test image (by index, or at random) or upload a
PNG/JPEG; the page shows original | reconstruction | edited for the stage
whose sliders you move and, beside it, another stage on the same edit
(default: the teacher). Growth chains get one slider per code dim (the
teacher's dims first), spanning that dim's 2nd to 98th test percentile;
attribute chains one per attribute, from the encoder's score, +-3, with a
number box that takes any finite value. "Copy command" gives the
launch/manipulate.py call that draws the same edit.

Stages: with --workdir, every finished stage of the run (--stage opens
first; default the last). With --pretrained=NAME, the shipped models of
NAME's chain (the manifest's `chain` field: e.g. fashion_grow_teacher and
fashion_grow_k8), NAME first; more --pretrained names add models.

The server listens on 127.0.0.1 only, unless --host says otherwise (then
anyone who can reach that address can use it; a warning says so). --port=0
takes any free port. Ctrl-C stops it. --screenshot=PATH starts the server,
opens the page in headless chromium (Playwright), moves a slider, saves a
screenshot to PATH and exits.
"""

import sys
import threading


from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging

from jacdistill import checkpoint
from jacdistill import explore
from jacdistill import explore_server
from jacdistill import input_pipeline
from jacdistill import pretrained
from jacdistill import stages

_PRETRAINED = flags.DEFINE_multi_string('pretrained', [], 'Shipped model(s) (pretrained/MANIFEST.json).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Workdir of a launch/main.py run.')
_STAGE = flags.DEFINE_string('stage', None, 'With --workdir: the stage to open (index or name); default the last.')
_DIRECTORY = flags.DEFINE_string('directory', pretrained.DEFAULT_DIR, 'Where the shipped models are.')
_HOST = flags.DEFINE_string('host', '127.0.0.1', 'Address to listen on.')
_PORT = flags.DEFINE_integer('port', 8765, 'Port; 0 = any free port.')
_SCREENSHOT = flags.DEFINE_string('screenshot', None, 'Save a screenshot of the page here and exit.')
_CHROMIUM = flags.DEFINE_string('chromium', '/usr/bin/chromium', 'Browser for --screenshot.')


def build_explorer() -> explore.Explorer:
  if bool(_PRETRAINED.value) == bool(_WORKDIR.value):
    raise explore.ExploreError('pass --pretrained=NAME or --workdir=W (not '
                               'both)')
  if _PRETRAINED.value:
    if _STAGE.value:
      raise explore.ExploreError('--stage goes with --workdir; with '
                                 '--pretrained name the model to open first')
    return explore.Explorer.from_pretrained(_PRETRAINED.value,
                                            _DIRECTORY.value)
  return explore.Explorer.from_workdir(_WORKDIR.value, _STAGE.value)


def screenshot(url: str, path: str, chromium: str) -> None:
  """Opens `url` in headless chromium, moves the first slider to 80% of its
  track, waits for the edited image and saves a full-page screenshot."""
  from playwright.sync_api import sync_playwright  # pylint: disable=g-import-not-at-top
  with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=chromium,
                                args=list(explore_server.CHROMIUM_ARGS))
    try:
      page = browser.new_page(viewport={'width': 1000, 'height': 760})
      page.goto(url)
      page.wait_for_function('window.explorerState.decodes >= 1')
      box = page.locator('#sliders input[type=range]').first.bounding_box()
      before = page.evaluate('window.explorerState.decodes')
      page.mouse.click(box['x'] + 0.8 * box['width'],
                       box['y'] + box['height'] / 2)
      page.wait_for_function(f'window.explorerState.decodes > {before} && '
                             '!window.explorerState.inflight')
      page.screenshot(path=path, full_page=True)
    finally:
      browser.close()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)  # Orbax logs every read at INFO.
  try:
    explorer = build_explorer()
    server = explore_server.make_server(explorer, _HOST.value, _PORT.value)
  except (explore.ExploreError, pretrained.PretrainedError, stages.ConfigError,
          checkpoint.CheckpointError,
          input_pipeline.DatasetUnavailableError) as e:
    sys.exit(f'error: {(str(e).splitlines() or [repr(e)])[0]}')
  except OSError as e:  # The port is taken, or the address is not ours.
    sys.exit(f'error: cannot listen on {_HOST.value}:{_PORT.value} ({e}); '
             'pick another --port (0 = any free one)')
  warning = explore_server.host_warning(_HOST.value)
  if warning:
    print(warning, file=sys.stderr)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  url = explore_server.url_of(server)
  if _SCREENSHOT.value:
    try:
      screenshot(url, _SCREENSHOT.value, _CHROMIUM.value)
    except ImportError:
      sys.exit('error: --screenshot needs Playwright: pip install playwright')
    finally:
      server.shutdown()
      server.server_close()
    print(f'wrote {_SCREENSHOT.value}')
    return
  print(f'explorer of {len(explorer.stages)} stage(s) at {url}  (Ctrl-C stops '
        'it)', flush=True)
  try:
    while thread.is_alive():
      thread.join(0.5)
  except KeyboardInterrupt:
    server.shutdown()  # Lets the request in progress finish.
    server.server_close()
    print('stopped', flush=True)


if __name__ == '__main__':
  app.run(main)
