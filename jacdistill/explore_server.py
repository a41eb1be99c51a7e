"""The explorer over HTTP: `make_server` serves `Explorer.handle`.

The server checks what a request is before the explorer sees it: a body's
size (`body_limit`: an upload up to explore.MAX_UPLOAD_BYTES, JSON up to
MAX_JSON_BYTES; larger gets 413), its Content-Length, and, bound to a
loopback address, its Host (anything but 127.0.0.1 / localhost gets 403).
Each request runs in a thread of its own; one that fails gets 500 and the
server goes on. Also here: how the tests and launch/explore.py start
chromium on the page (`CHROMIUM_ARGS`) and the URL to open (`url_of`).
"""

import http.server
import ipaddress
import socketserver
import urllib.parse
from typing import Optional

from absl import logging

from jacdistill import explore

MAX_JSON_BYTES = 1 << 20  # A JSON request larger than this gets 413.
# An oversized body is read and dropped up to this many bytes before the
# 413, so that a client still sending it reads the answer instead of a
# reset connection; beyond it the connection is closed.
DRAIN_BYTES = 64 << 20
REQUEST_TIMEOUT_S = 30  # A client that sends nothing this long is dropped.


def body_limit(path: str) -> int:
  """The largest body a request to `path` may send."""
  route = urllib.parse.urlsplit(path).path
  return (explore.MAX_UPLOAD_BYTES if route == '/api/upload' else
          MAX_JSON_BYTES)


class _Handler(http.server.BaseHTTPRequestHandler):
  """HTTP for `Explorer.handle`: size limits, then one handler call."""

  explorer: explore.Explorer = None  # Set on the subclass make_server makes.
  allowed_hosts: frozenset = frozenset()  # Empty: any Host header.
  timeout = REQUEST_TIMEOUT_S
  server_version = 'jacdistill-explore'

  def do_GET(self):  # pylint: disable=invalid-name
    self._serve('GET', b'')

  def do_POST(self):  # pylint: disable=invalid-name
    length = self.headers.get('Content-Length')
    if length is None:
      self._error(411, 'send a Content-Length')
      return
    try:
      n = int(length)
      if n < 0:
        raise ValueError(length)
    except ValueError:
      self._error(400, f'bad Content-Length {length!r}', close=True)
      return
    limit = body_limit(self.path)
    if n > limit:
      self._drain(n)
      self._error(413, f'the body is {n} bytes, more than the {limit} '
                  'allowed', close=True)
      return
    body = self.rfile.read(n)
    if len(body) < n:
      self.close_connection = True  # The client went away mid-body.
      return
    self._serve('POST', body)

  def _drain(self, n: int) -> None:
    """Reads and drops up to DRAIN_BYTES of an oversized body."""
    left = min(n, DRAIN_BYTES)
    while left > 0:
      chunk = self.rfile.read(min(left, 1 << 20))
      if not chunk:
        break
      left -= len(chunk)

  def _serve(self, method: str, body: bytes) -> None:
    host = (self.headers.get('Host') or '').rsplit(':', 1)[0].strip('[]')
    if self.allowed_hosts and host not in self.allowed_hosts:
      # A page of another site that resolves its own name to 127.0.0.1
      # (DNS rebinding) sends its own Host; only ours is served.
      self._error(403, f'host {host!r} is not served')
      return
    try:
      status, ctype, payload = self.explorer.handle(method, self.path, body)
    except Exception as e:  # pylint: disable=broad-except
      # A bug in one request must not stop the server.
      logging.exception('explore: %s %s failed', method, self.path)
      status, ctype, payload = explore.json_reply(
          500, {'error': f'{type(e).__name__}: {e}'})
    self._reply(status, ctype, payload)

  def _error(self, status: int, message: str, close: bool = False) -> None:
    self._reply(*explore.json_reply(status, {'error': message}), close=close)

  def _reply(self, status: int, ctype: str, payload: bytes,
             close: bool = False) -> None:
    self.send_response(status)
    self.send_header('Content-Type', ctype)
    self.send_header('Content-Length', str(len(payload)))
    self.send_header('Cache-Control', 'no-store')
    self.send_header('X-Content-Type-Options', 'nosniff')
    if close:
      self.send_header('Connection', 'close')
      self.close_connection = True
    self.end_headers()
    self.wfile.write(payload)

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    logging.debug('explore: ' + format, *args)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
  """A ThreadingHTTPServer whose request threads die with the program."""
  daemon_threads = True
  allow_reuse_address = True


def is_loopback(host: str) -> bool:
  if host == 'localhost':
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False


def make_server(explorer: explore.Explorer, host: str = '127.0.0.1',
                port: int = 0) -> Server:
  """An HTTP server for `explorer` bound to (host, port) (port 0: any free
  one; read `server.server_address`). Call `serve_forever()` to serve and
  `shutdown()` from another thread to stop. Bound to a loopback address it
  answers only requests addressed to 127.0.0.1 / localhost."""
  allowed = (frozenset({'127.0.0.1', 'localhost', '::1', host})
             if is_loopback(host) else frozenset())
  handler = type('Handler', (_Handler,), {'explorer': explorer,
                                          'allowed_hosts': allowed})
  return Server((host, port), handler)


def host_warning(host: str) -> Optional[str]:
  """The warning for listening on `host`, or None for a loopback address."""
  if is_loopback(host):
    return None
  return (f'warning: listening on {host}, not 127.0.0.1: anyone who can '
          'reach that address can use this explorer')


# How tests and `launch/explore.py --screenshot` start Debian's chromium
# (headless, no sandbox as root, nothing fetched from the network).
CHROMIUM_ARGS = ('--headless', '--no-sandbox', '--disable-gpu',
                 '--disable-background-networking',
                 '--disable-component-update', '--disable-sync',
                 '--no-first-run')


def url_of(server: Server) -> str:
  host, port = server.server_address[:2]
  return f'http://{host}:{port}/'
