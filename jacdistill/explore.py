"""The explorer: edit a code with sliders and see the decoded image at once.

`Explorer` holds the stages of one chain (from a workdir or from shipped
models, `from_workdir` / `from_pretrained`) with their encoders and
decoders compiled once, for one image at a time, and the chain's test
images. Its request handlers are plain functions of plain values, each
returning JSON-ready dicts; `Explorer.handle(method, path, body)` routes a
request to them and `make_server` serves that over HTTP on 127.0.0.1
(launch/explore.py is the command line).

Protocol (JSON bodies; images are PNG as `data:image/png;base64,...`):

  GET  /             the page (one self-contained HTML file, inline JS).
  GET  /api/info     the chain: its kind, stages (name, label, code size,
                     sliders with their ranges, the launch/manipulate.py
                     arguments that name it), the number of test images.
  POST /api/encode   {"test": i} -> {"original": png, "stages": {name:
                     {"code": [...], "reconstruction": png}}} for every stage.
  POST /api/upload   the bytes of a PNG or JPEG -> the same. The image is
                     centre-cropped and resized as training data was
                     (`prepare_image`).
  POST /api/decode   {"stages": {name: code}, "edits": [[i, v], ...]} ->
                     {"stages": {name: {"image": png, "code": edited code}}}.

The server keeps no state between requests: the client holds each stage's
code and the list of edits, so two browsers never see each other's images,
and nothing a request names is ever opened as a file (a test image is an
index, an upload is its bytes). An edit (i, v) sets growth dim i to v
(stages shorter than i + 1 ignore it) or attribute i's score to v, by
`apply_edits`, the rule launch/manipulate.py's `--set` applies, in order.
"""

import base64
import dataclasses
import http.server
import io
import ipaddress
import json
import math
import os
import shlex
import socketserver
import urllib.parse
from typing import Any, Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jacdistill import attr_chain
from jacdistill import attributes
from jacdistill import chain
from jacdistill import input_pipeline
from jacdistill import pictures
from jacdistill import pretrained
from jacdistill import train

MAX_UPLOAD_BYTES = 8 << 20  # An upload larger than this gets 413.
MAX_JSON_BYTES = 1 << 20  # A JSON request larger than this gets 413.
# An oversized body is read and dropped up to this many bytes before the
# 413, so that a client still sending it reads the answer instead of a
# reset connection; beyond it the connection is closed.
DRAIN_BYTES = 64 << 20
MAX_PIXELS = 4096 * 4096  # An upload of more pixels gets 400, before decoding.
UPLOAD_FORMATS = ('PNG', 'JPEG')
ATTRIBUTE_RANGE = 3.0  # Attribute sliders span +-3 (a number box goes further).
PERCENTILES = (2, 98)  # Growth sliders span these test percentiles of a dim.
ENCODE_BATCH = 500  # Test images encoded at once for the slider ranges.
REQUEST_TIMEOUT_S = 30  # A client that sends nothing this long is dropped.


class ExploreError(ValueError):
  """A request the explorer refuses; `status` is its HTTP status code."""

  def __init__(self, message: str, status: int = 400):
    super().__init__(message)
    self.status = status


# ------------------------------------------------------------------ images


def image_geometry(kind: str, config, model) -> tuple[int, int, int]:
  """(native side, model side, channels) of a chain's images: an upload is
  resized to the dataset's native side, then padded to the model's
  (`input_pipeline.resize`), as the training images were."""
  if kind == 'attribute':
    native = input_pipeline.IMAGE_SHAPES.get(config.data.name,
                                             (config.data.image_size,))[0]
    return native, int(config.data.image_size), int(model.image_channels)
  h, _, c = input_pipeline.IMAGE_SHAPES[config.data.name]
  return h, h, c


def prepare_image(img: Image.Image, native: int, size: int,
                  channels: int) -> np.ndarray:
  """A PIL image as the model takes it: uint8 (size, size, channels).

  Converted to grey or RGB, centre-cropped to a square, resized (bilinear)
  to `native` x `native`, then padded (or resized) to `size`.
  """
  img = img.convert('L' if channels == 1 else 'RGB')
  side = min(img.size)
  left, top = (img.width - side) // 2, (img.height - side) // 2
  img = img.crop((left, top, left + side, top + side)).resize(
      (native, native), Image.Resampling.BILINEAR)
  out = np.asarray(img, np.uint8).reshape(1, native, native, channels)
  return input_pipeline.resize(out, size)[0]


def read_upload(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
  """The decoded (loaded) image in `data`, a PNG or JPEG.

  Raises:
    ExploreError (400): not a PNG or JPEG, truncated or corrupt, or more
      than `max_pixels` pixels (checked from the header, before the pixels
      are decoded, so a small file that would expand to gigabytes is
      refused cheaply).
  """
  if not data:
    raise ExploreError('the upload is empty; send the bytes of a PNG or JPEG')
  try:
    img = Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS)
    width, height = img.size
    if width * height > max_pixels:
      raise ExploreError(f'the image is {width}x{height} pixels, more than '
                         f'the {max_pixels} allowed; send a smaller one')
    img.load()
  except Image.DecompressionBombError as e:
    raise ExploreError(f'the image is too large to decode ({e})') from None
  except (OSError, SyntaxError, ValueError, EOFError) as e:
    # PIL's errors for unknown formats, truncated and corrupt files.
    raise ExploreError(f'the upload is not a readable PNG or JPEG image '
                       f'({type(e).__name__}: {e})') from None
  return img


def png_data_url(image_HxWxC: np.ndarray) -> str:
  """A uint8 image as a `data:image/png;base64,...` URL."""
  return ('data:image/png;base64,' +
          base64.b64encode(pictures.png_bytes(image_HxWxC)).decode('ascii'))


def decode_data_url(url: str) -> np.ndarray:
  """The uint8 (H, W, C) pixels of a `png_data_url` (for tests)."""
  _, _, payload = url.partition('base64,')
  arr = np.asarray(Image.open(io.BytesIO(base64.b64decode(payload))))
  return arr[..., None] if arr.ndim == 2 else arr


# ------------------------------------------------------------------- edits


def apply_edits(codes: np.ndarray, edits: Sequence[tuple[int, float]],
                kind: str, num_attributes: int = 0,
                one_hot: bool = False) -> np.ndarray:
  """`codes` (N, K) with `edits` [(index, value), ...] applied in order.

  Growth: dim `index` is set to `value` (an index >= K is skipped, so one
  list of edits applies to a teacher and its longer students alike).
  Attribute: `attributes.edit_codes` sets score `index` (with `one_hot`,
  classes as attributes, a positive value also turns the active class
  off). Returns float32 (N, K), a new array.
  """
  out = np.array(codes, np.float32, copy=True)
  for index, value in edits:
    if kind == 'attribute':
      out = attributes.edit_codes(out, num_attributes, index, value,
                                  one_hot=one_hot)
    elif index < out.shape[1]:
      out[:, index] = value
  return out


def edit_names(kind: str, config, code_size: int) -> list[str]:
  """What `--set NAME=V` calls each editable index: the attribute names, or
  'dim0', 'dim1', ... for a growth code."""
  if kind == 'attribute':
    return list(config.data.attributes)
  return [f'dim{j}' for j in range(code_size)]


# ------------------------------------------------------------------ stages


@dataclasses.dataclass
class Stage:
  """One model the explorer shows, with its jitted encode and decode.

  Attributes:
    name: its key in requests ('6', 'student32', 'fashion_grow_k8').
    label: what the page calls it ('stage 6 (k=8)').
    kind: 'growth' or 'attribute'.
    config, model, variables: as `chain.load_stage` returns them.
    manipulate_args: the launch/manipulate.py flags that load it.
    code_size: K.
    sliders: one per editable index: {'index', 'label', 'lo', 'hi'}.
  """
  name: str
  label: str
  kind: str
  config: Any
  model: Any
  variables: Any
  manipulate_args: str
  code_size: int = 0
  sliders: list = dataclasses.field(default_factory=list)
  value_range: str = '01'
  _encode: Any = None
  _decode: Any = None

  def compile(self, image_shape: tuple[int, ...]) -> None:
    """Compiles encode and decode for one image, once (ahead of time: a
    request never waits for a compilation)."""
    model = self.model
    self.variables = jax.tree.map(jnp.asarray, self.variables)
    self.value_range = train.value_range_of(model)
    enc = jax.jit(lambda v, x: model.apply(v, x, method=model.encode))
    dec = jax.jit(lambda v, c: model.apply(v, c, method=model.decode))
    self.code_size = int(model.code_size)
    self._encode = enc.lower(self.variables, jax.ShapeDtypeStruct(
        (1, *image_shape), jnp.float32)).compile()
    self._decode = dec.lower(self.variables, jax.ShapeDtypeStruct(
        (1, self.code_size), jnp.float32)).compile()
    self._encode_many = enc

  def encode(self, image_uint8: np.ndarray) -> np.ndarray:
    """uint8 (H, W, C) -> float32 code (K,)."""
    x = train.to_float(jnp.asarray(image_uint8[None]), self.value_range)
    return np.asarray(self._encode(self.variables, x))[0]

  def decode(self, code: np.ndarray) -> np.ndarray:
    """float32 code (K,) -> uint8 image (H, W, C)."""
    out = self._decode(self.variables, jnp.asarray(code, jnp.float32)[None])
    return pictures.to_uint8(np.asarray(out)[0], self.value_range)

  def test_codes(self, images_uint8: np.ndarray) -> np.ndarray:
    """Codes (N, K) of `images_uint8` (N, H, W, C), ENCODE_BATCH at a time
    (the last batch padded, so one compilation serves them all)."""
    n = len(images_uint8)
    b = min(ENCODE_BATCH, n)
    out = []
    for start in range(0, n, b):
      chunk = images_uint8[start:start + b]
      pad = b - len(chunk)
      if pad:
        chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]),
                                                chunk.dtype)])
      x = train.to_float(jnp.asarray(chunk), self.value_range)
      out.append(np.asarray(self._encode_many(self.variables, x))[:b - pad])
    return np.concatenate(out)


def _growth_sliders(stage: Stage, test_images: np.ndarray) -> list:
  codes = stage.test_codes(test_images)
  lo, hi = np.percentile(codes, PERCENTILES, axis=0)
  teacher = int(stage.config.growth.start_dim)
  return [{'index': j, 'label': f'dim {j}' + (' (teacher)' if j < teacher
                                               else ''),
           'lo': float(lo[j]), 'hi': float(max(hi[j], lo[j] + 1e-6))}
          for j in range(stage.code_size)]


def _attribute_sliders(stage: Stage) -> list:
  return [{'index': a, 'label': name, 'lo': -ATTRIBUTE_RANGE,
           'hi': ATTRIBUTE_RANGE}
          for a, name in enumerate(stage.config.data.attributes)]


# ---------------------------------------------------------------- explorer


class Explorer:
  """The stages of one chain, its test images, and the request handlers.

  Args:
    stages: `Stage`s of one chain (one kind, one dataset, one image shape),
      teacher first; compiled and given their sliders here.
    test_images: uint8 (N, S, S, C) test images as the models take them.
    primary: the stage whose sliders the page opens with (default the last).
    compare: the stage shown beside it (default the first, if there are
      two or more; None for none).
    title: the page's heading.
  """

  def __init__(self, stages: Sequence[Stage], test_images: np.ndarray,
               primary: Optional[str] = None, compare: Optional[str] = None,
               title: str = 'jacdistill explorer'):
    if not stages:
      raise ExploreError('no stage to explore')
    kinds = {s.kind for s in stages}
    datasets = {s.config.data.name for s in stages}
    if len(kinds) > 1 or len(datasets) > 1:
      raise ExploreError(f'the stages are of several chains ({sorted(kinds)}, '
                         f'{sorted(datasets)}); explore one chain at a time')
    self.stages = {s.name: s for s in stages}
    if len(self.stages) != len(stages):
      raise ExploreError('two stages have one name')
    first = stages[0]
    self.kind = first.kind
    self.config = first.config
    self.native, self.size, self.channels = image_geometry(
        self.kind, first.config, first.model)
    self.test_images = np.asarray(test_images, np.uint8)
    if self.test_images.shape[1:] != (self.size, self.size, self.channels):
      raise ExploreError(f'test images are {self.test_images.shape[1:]}, the '
                         f'models take {(self.size, self.size, self.channels)}')
    self.num_attributes = (int(first.config.model.num_attributes)
                           if self.kind == 'attribute' else 0)
    self.one_hot = (self.kind == 'attribute' and
                    attr_chain.classes_are_attributes(first.config))
    for s in stages:
      s.compile(self.test_images.shape[1:])
      s.sliders = (_attribute_sliders(s) if self.kind == 'attribute' else
                   _growth_sliders(s, self.test_images))
    names = list(self.stages)
    self.primary = primary or names[-1]
    if self.primary not in self.stages:
      raise ExploreError(f'stage {self.primary!r} is not one of {names}')
    if compare is None and len(names) > 1:
      compare = names[0] if names[0] != self.primary else names[-1]
    self.compare = compare
    self.title = title

  # -------------------------------------------------- constructors

  @classmethod
  def from_workdir(cls, workdir: str, stage: Optional[str] = None
                   ) -> 'Explorer':
    """Every finished stage of the run in `workdir`; `stage` (an index or
    a name; default the last) opens first.

    Raises:
      chain.ConfigError, checkpoint.CheckpointError: no run, no such
        stage, unreadable checkpoints.
    """
    path = os.path.join(workdir, 'config.json')
    if not os.path.exists(path):
      raise chain.ConfigError(f'{workdir} has no config.json; pass the '
                              '--workdir of a launch/main.py run')
    with open(path) as f:
      kind = pretrained.kind_of(json.load(f))
    summary_path = os.path.join(workdir, 'summary.json')
    finished = []
    if os.path.exists(summary_path):
      with open(summary_path) as f:
        finished = json.load(f)['stages']
    if not finished:
      raise chain.ConfigError(f'{workdir} has no finished stage yet; run '
                              'launch/main.py on it first')
    quoted = shlex.quote(workdir)
    stages = []
    for entry in finished:
      if kind == 'growth':
        index = entry['stage']
        config, model, variables = chain.load_stage(workdir, index)
        name = str(index)
        label = (f'stage {index} (k={model.code_size}'
                 f'{", teacher" if index == 0 else ""})')
      else:
        name = entry['name']
        config, model, variables = attr_chain.load_stage(workdir, name)
        label = f'{name} (code {model.code_size})'
      stages.append(Stage(name, label, kind, config, model, variables,
                          f'--workdir={quoted} --stage={name}'))
    if stage is not None and str(stage) not in {s.name for s in stages}:
      raise chain.ConfigError(f'stage {stage!r} of {workdir} is not finished; '
                              f'its finished stages are '
                              f'{[s.name for s in stages]}')
    images = pretrained.test_images(kind, stages[0].config)
    return cls(stages, images, primary=None if stage is None else str(stage),
               title=f'{os.path.basename(os.path.normpath(workdir))} '
                     f'({kind} chain)')

  @classmethod
  def from_pretrained(cls, names: Sequence[str],
                      directory: str = pretrained.DEFAULT_DIR) -> 'Explorer':
    """The shipped models `names` and every other shipped model of the
    first one's chain (its manifest `chain`), in stage order; `names[0]`
    opens first.

    Raises:
      pretrained.PretrainedError: an unknown, missing or damaged model.
      ExploreError: a classifier, or models of several chains.
    """
    if not names:
      raise ExploreError('name at least one shipped model')
    members = pretrained.chain_members(names[0], directory)
    members += [n for n in names if n not in members]
    stages = []
    for name in members:
      config, model, variables, entry = pretrained.load(name, directory)
      if entry['kind'] == 'classifier':
        raise ExploreError(f'{name!r} is a classifier; explore an autoencoder '
                           '(growth or attribute chain)')
      if entry['kind'] == 'growth':
        label = (f'{name} (stage {entry["stage"]}, k={model.code_size}'
                 f'{", teacher" if entry["stage"] == 0 else ""})')
      else:
        label = f'{name} ({entry["stage"]}, code {model.code_size})'
      stages.append(Stage(name, label, entry['kind'], config, model,
                          variables, f'--pretrained={name}'))
    images = pretrained.test_images(stages[0].kind, stages[0].config)
    return cls(stages, images, primary=names[0],
               title=f'{pretrained.entry(names[0], directory)["chain"]} '
                     f'({stages[0].kind} chain, shipped)')

  # ------------------------------------------------------ handlers

  def info(self) -> dict:
    """GET /api/info: what the page needs to lay itself out."""
    return {
        'title': self.title, 'kind': self.kind,
        'num_test': int(len(self.test_images)),
        'primary': self.primary, 'compare': self.compare,
        'image_size': self.size, 'max_upload_bytes': MAX_UPLOAD_BYTES,
        'stages': [{'name': s.name, 'label': s.label,
                    'code_size': s.code_size, 'sliders': s.sliders,
                    'set_names': edit_names(self.kind, s.config, s.code_size),
                    'manipulate': s.manipulate_args}
                   for s in self.stages.values()]}

  def encode_image(self, image_uint8: np.ndarray) -> dict:
    """Codes and reconstructions of one prepared image by every stage."""
    out = {}
    for s in self.stages.values():
      code = s.encode(image_uint8)
      out[s.name] = {'code': [float(v) for v in code],
                     'reconstruction': png_data_url(s.decode(code))}
    return {'original': png_data_url(image_uint8), 'stages': out}

  def encode_test(self, request: Any) -> dict:
    """POST /api/encode {"test": i}: test image i (0 <= i < N)."""
    if not isinstance(request, dict) or 'test' not in request:
      raise ExploreError('send {"test": index}')
    index = request['test']
    if (isinstance(index, bool) or not isinstance(index, int) or
        not 0 <= index < len(self.test_images)):
      raise ExploreError(f'test index {index!r} is not an integer in [0, '
                         f'{len(self.test_images)})')
    return dict(self.encode_image(self.test_images[index]), test=index)

  def encode_upload(self, data: bytes) -> dict:
    """POST /api/upload: a PNG or JPEG's bytes (`read_upload` checks)."""
    if len(data) > MAX_UPLOAD_BYTES:
      raise ExploreError(f'the upload is {len(data)} bytes, more than the '
                         f'{MAX_UPLOAD_BYTES} allowed', status=413)
    img = read_upload(data)
    return self.encode_image(prepare_image(img, self.native, self.size,
                                           self.channels))

  def _edits(self, raw: Any) -> list[tuple[int, float]]:
    limit = (self.num_attributes if self.kind == 'attribute' else
             max(s.code_size for s in self.stages.values()))
    if not isinstance(raw, list):
      raise ExploreError('"edits" must be a list of [index, value] pairs')
    out = []
    for pair in raw:
      if (not isinstance(pair, list) or len(pair) != 2 or
          isinstance(pair[0], bool) or not isinstance(pair[0], int) or
          isinstance(pair[1], bool) or
          not isinstance(pair[1], (int, float))):
        raise ExploreError(f'edit {pair!r} is not [index, value]')
      index, value = pair
      if not 0 <= index < limit:
        raise ExploreError(f'edit index {index} is not in [0, {limit})')
      if not math.isfinite(value):
        raise ExploreError(f'edit value {value!r} of index {index} is not a '
                           'finite number')
      out.append((index, float(value)))
    return out

  def decode(self, request: Any) -> dict:
    """POST /api/decode: each stage's code with the edits applied, decoded.

    Request: {"stages": {name: [K floats]}, "edits": [[index, value], ...]}.
    Response: {"stages": {name: {"image": png, "code": [K floats]}}}, the
    code being the edited one the image decodes.
    """
    if not isinstance(request, dict) or not isinstance(
        request.get('stages'), dict):
      raise ExploreError('send {"stages": {name: code}, "edits": [...]}')
    edits = self._edits(request.get('edits', []))
    out = {}
    for name, code in request['stages'].items():
      stage = self.stages.get(name)
      if stage is None:
        raise ExploreError(f'no stage {name!r}; stages: {list(self.stages)}')
      try:
        code = np.asarray(code, np.float64)
      except (TypeError, ValueError):
        raise ExploreError(f'the code of {name!r} is not a list of numbers'
                           ) from None
      if code.shape != (stage.code_size,) or not np.isfinite(code).all():
        raise ExploreError(f'the code of {name!r} must be {stage.code_size} '
                           'finite numbers')
      edited = apply_edits(code[None].astype(np.float32), edits, self.kind,
                           self.num_attributes, self.one_hot)[0]
      out[name] = {'image': png_data_url(stage.decode(edited)),
                   'code': [float(v) for v in edited]}
    return {'stages': out}

  def page(self) -> bytes:
    """GET /: the page (PAGE_HTML; it reads everything else from /api)."""
    return PAGE_HTML.encode()

  def handle(self, method: str, path: str, body: bytes = b''
             ) -> tuple[int, str, bytes]:
    """Routes one request: returns (status, content type, body).

    Every refusal is a JSON {"error": message} with a 4xx status; the
    explorer's state is never changed by a request.
    """
    route = urllib.parse.urlsplit(path).path
    try:
      if route in ('/', '/index.html'):
        self._method(method, 'GET')
        return 200, 'text/html; charset=utf-8', self.page()
      if route == '/api/info':
        self._method(method, 'GET')
        return _json(200, self.info())
      if route == '/api/upload':
        self._method(method, 'POST')
        return _json(200, self.encode_upload(body))
      handlers = {'/api/encode': self.encode_test, '/api/decode': self.decode}
      if route in handlers:
        self._method(method, 'POST')
        try:
          request = json.loads(body or b'null')
        except (ValueError, UnicodeDecodeError) as e:
          raise ExploreError(f'the body is not JSON ({e})') from None
        return _json(200, handlers[route](request))
      raise ExploreError(f'no such page: {route}', status=404)
    except ExploreError as e:
      return _json(e.status, {'error': str(e)})

  @staticmethod
  def _method(method: str, allowed: str) -> None:
    if method != allowed:
      raise ExploreError(f'use {allowed} here, not {method}', status=405)


def _json(status: int, payload: dict) -> tuple[int, str, bytes]:
  return status, 'application/json', json.dumps(payload).encode()


# ------------------------------------------------------------------ server


def body_limit(path: str) -> int:
  """The largest body a request to `path` may send."""
  route = urllib.parse.urlsplit(path).path
  return MAX_UPLOAD_BYTES if route == '/api/upload' else MAX_JSON_BYTES


class _Handler(http.server.BaseHTTPRequestHandler):
  """HTTP for `Explorer.handle`: size limits, then one handler call."""

  explorer: Explorer = None  # Set on the subclass `make_server` makes.
  allowed_hosts: frozenset = frozenset()  # Empty: any Host header.
  timeout = REQUEST_TIMEOUT_S
  server_version = 'jacdistill-explore'

  def do_GET(self):  # pylint: disable=invalid-name
    self._serve('GET', b'')

  def do_POST(self):  # pylint: disable=invalid-name
    length = self.headers.get('Content-Length')
    if length is None:
      self._reply(411, *_json(411, {'error': 'send a Content-Length'})[1:])
      return
    try:
      n = int(length)
      if n < 0:
        raise ValueError(length)
    except ValueError:
      self._reply(400, *_json(400, {'error': f'bad Content-Length {length!r}'}
                              )[1:], close=True)
      return
    limit = body_limit(self.path)
    if n > limit:
      self._drain(n)
      self._reply(413, *_json(413, {
          'error': f'the body is {n} bytes, more than the {limit} allowed'})
                  [1:], close=True)
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
      self._reply(*_json(403, {'error': f'host {host!r} is not served'}))
      return
    try:
      status, ctype, payload = self.explorer.handle(method, self.path, body)
    except Exception as e:  # pylint: disable=broad-except
      # A bug in one request must not stop the server.
      logging.exception('explore: %s %s failed', method, self.path)
      status, ctype, payload = _json(500, {'error': f'{type(e).__name__}: '
                                                    f'{e}'})
    self._reply(status, ctype, payload)

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


def make_server(explorer: Explorer, host: str = '127.0.0.1',
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



# The page: no external asset, no build step. State lives here, in the
# browser: `S.base` (each stage's code of the current image), `S.edits`
# (index -> value, in the order they were last set). While a decode is in
# flight a new slider value only marks the state `pending`; when the reply
# arrives one more request goes out with the newest values, so at most one
# request is in flight and the latest value wins.
PAGE_HTML = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>jacdistill explorer</title>
<style>
 body { font: 14px system-ui, sans-serif; margin: 16px; color: #222; }
 h1 { font-size: 18px; margin: 0 0 8px; }
 .bar { display: flex; flex-wrap: wrap; gap: 8px 16px; align-items: center;
        margin: 6px 0; }
 .views td, .views th { padding: 2px 6px; text-align: center; }
 .views th { font-weight: 600; }
 .views td.label { text-align: right; font-weight: 600; max-width: 16em; }
 .views img { width: 168px; height: 168px; image-rendering: pixelated;
              image-rendering: crisp-edges; background: #eee;
              border: 1px solid #ccc; }
 #sliders { display: grid; grid-template-columns: max-content 320px 7em;
            gap: 4px 10px; align-items: center; margin-top: 10px; }
 #sliders label { text-align: right; }
 #sliders input[type=number] { width: 7em; }
 #sliders input.bad { background: #fcc; }
 #status { min-height: 1.3em; color: #a00; }
 #command { width: min(90vw, 70em); font: 12px monospace; }
</style></head>
<body>
<h1 id="title">jacdistill explorer</h1>
<div class="bar">
 <span>Test image <input id="index" type="number" min="0" value="0"
   style="width:6em"> <button id="load">Show</button>
   <button id="random">Random</button></span>
 <span>or upload a PNG/JPEG <input id="upload" type="file"
   accept="image/png,image/jpeg"></span>
</div>
<div class="bar">
 <span>Stage (sliders) <select id="primary"></select></span>
 <span>beside it <select id="compare"></select></span>
 <button id="reset">Reset</button>
 <button id="copy">Copy command</button>
</div>
<div class="bar"><input id="command" readonly
  title="the launch/manipulate.py call that draws the edited image"></div>
<div id="status"></div>
<table class="views"><thead><tr><th></th><th>original</th>
 <th>reconstruction</th><th>edited</th></tr></thead>
 <tbody id="rows"></tbody></table>
<div id="sliders"></div>
<script>
"use strict";
const S = {info: null, stages: {}, base: {}, recon: {}, original: null,
           source: null, edits: new Map(), effective: {}, inflight: false,
           pending: false, decodes: 0, last: null, active: null};
window.explorerState = S;  // For tests and curious users.
const $ = (id) => document.getElementById(id);
const status = (text) => { $('status').textContent = text || ''; };

async function call(path, body, type) {
  const init = body === undefined ? {} :
      {method: 'POST', body: body, headers: {'Content-Type': type}};
  const reply = await fetch(path, init);
  let data;
  try { data = await reply.json(); } catch (e) { data = {}; }
  if (!reply.ok) throw new Error(data.error || ('HTTP ' + reply.status));
  return data;
}

function option(select, value, text) {
  const o = document.createElement('option');
  o.value = value; o.textContent = text; select.appendChild(o);
}

async function init() {
  S.info = await call('/api/info');
  document.title = $('title').textContent = S.info.title;
  for (const st of S.info.stages) {
    S.stages[st.name] = st;
    option($('primary'), st.name, st.label);
  }
  option($('compare'), '', '(none)');
  for (const st of S.info.stages) option($('compare'), st.name, st.label);
  $('primary').value = S.info.primary;
  $('compare').value = S.info.compare || '';
  $('index').max = S.info.num_test - 1;
  await showTest(0);
}

function shown() {
  const p = $('primary').value, c = $('compare').value;
  return c && c !== p ? [p, c] : [p];
}

async function showTest(i) {
  i = Math.max(0, Math.min(S.info.num_test - 1, Math.floor(Number(i)) || 0));
  $('index').value = i;
  try {
    setSource(await call('/api/encode', JSON.stringify({test: i}),
                         'application/json'), {test: i});
  } catch (e) { status(e.message); }
}

async function upload(file) {
  if (!file) return;
  if (file.size > S.info.max_upload_bytes) {
    status(file.name + ' is larger than ' + S.info.max_upload_bytes +
           ' bytes'); return;
  }
  try {
    setSource(await call('/api/upload', file, file.type ||
                         'application/octet-stream'), {upload: file.name});
  } catch (e) { status(file.name + ': ' + e.message); }
}

function setSource(reply, source) {
  status('');
  S.source = source; S.original = reply.original;
  S.base = {}; S.recon = {}; S.effective = {};
  for (const [name, r] of Object.entries(reply.stages)) {
    S.base[name] = r.code; S.recon[name] = r.reconstruction;
    S.effective[name] = r.code;
  }
  S.edits.clear();
  rebuild();
}

function rebuild() {
  renderRows(); buildSliders(); updateCommand(); requestDecode();
}

function renderRows() {
  const rows = $('rows'); rows.textContent = '';
  shown().forEach((name, k) => {
    const tr = document.createElement('tr');
    const role = k === 0 ? 'primary' : 'compare';
    const label = document.createElement('td');
    label.className = 'label'; label.textContent = S.stages[name].label;
    tr.appendChild(label);
    for (const [what, src] of [['original', S.original],
                               ['reconstruction', S.recon[name]],
                               ['edited', null]]) {
      const td = document.createElement('td');
      const img = document.createElement('img');
      img.id = what + '-' + role; img.alt = what + ' (' + name + ')';
      if (src) img.src = src;
      td.appendChild(img); tr.appendChild(td);
    }
    rows.appendChild(tr);
  });
}

const round = (v) => Number(Number(v).toPrecision(5));

function buildSliders() {
  const box = $('sliders'); box.textContent = '';
  const stage = S.stages[$('primary').value];
  const code = S.effective[stage.name] || S.base[stage.name];
  for (const sl of stage.sliders) {
    const label = document.createElement('label');
    label.textContent = sl.label;
    const range = document.createElement('input');
    range.type = 'range'; range.dataset.index = sl.index;
    const value = code[sl.index];
    range.min = Math.min(sl.lo, value); range.max = Math.max(sl.hi, value);
    range.step = 'any'; range.value = value;
    const number = document.createElement('input');
    number.type = 'number'; number.step = 'any';
    number.dataset.index = sl.index;
    number.value = round(value);
    label.htmlFor = range.id = 'slider-' + sl.index;
    range.addEventListener('input', () => {
      S.active = sl.index;
      const v = round(range.value);
      number.value = v; number.classList.remove('bad');
      setEdit(sl.index, v);
    });
    number.addEventListener('input', () => {
      const v = Number(number.value);
      if (number.value.trim() === '' || !Number.isFinite(v)) {
        number.classList.add('bad'); return;  // Only finite values decode.
      }
      number.classList.remove('bad'); S.active = sl.index;
      // Past the slider's range: widen it, so the thumb still shows it.
      if (v < Number(range.min)) range.min = v;
      if (v > Number(range.max)) range.max = v;
      range.value = v;
      setEdit(sl.index, round(v));
    });
    box.append(label, range, number);
  }
}

function setEdit(index, value) {
  S.edits.delete(index);  // The last one set goes last, as --set order.
  S.edits.set(index, value);
  updateCommand(); requestDecode();
}

function syncSliders() {
  // Other scores may move with an edit (classes as attributes: turning one
  // class on turns the active one off); show what the image decodes.
  const code = S.effective[$('primary').value];
  if (!code) return;
  for (const el of document.querySelectorAll('#sliders input')) {
    const i = Number(el.dataset.index);
    if (i === S.active || document.activeElement === el) continue;
    if (el.type === 'range') {
      if (code[i] < Number(el.min)) el.min = code[i];
      if (code[i] > Number(el.max)) el.max = code[i];
      el.value = code[i];
    } else {
      el.value = round(code[i]); el.classList.remove('bad');
    }
  }
}

function requestDecode() {
  if (!S.original) return;
  if (S.inflight) { S.pending = true; return; }
  S.inflight = true;
  const names = shown();
  const body = {stages: {}, edits: Array.from(S.edits.entries())};
  for (const n of names) body.stages[n] = S.base[n];
  call('/api/decode', JSON.stringify(body), 'application/json')
    .then((reply) => {
      S.last = {request: body, reply: reply}; S.decodes += 1;
      names.forEach((n, k) => {
        const img = $('edited-' + (k === 0 ? 'primary' : 'compare'));
        if (img && reply.stages[n]) img.src = reply.stages[n].image;
        if (reply.stages[n]) S.effective[n] = reply.stages[n].code;
      });
      syncSliders(); status('');
    })
    .catch((e) => status(e.message))
    .finally(() => {
      S.inflight = false;
      if (S.pending) { S.pending = false; requestDecode(); }
    });
}

function shellQuote(s) {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : "'" + s.replace(/'/g, "'\\''") + "'";
}

function updateCommand() {
  const stage = S.stages[$('primary').value];
  if (!stage || !S.source) return;
  const parts = ['python launch/manipulate.py', stage.manipulate];
  if ('test' in S.source) parts.push('--test_index=' + S.source.test);
  else parts.push('--image=' + shellQuote(S.source.upload));
  for (const [i, v] of S.edits)
    parts.push('--set ' + shellQuote(stage.set_names[i] + '=' + v));
  parts.push('--out=edited.png');
  $('command').value = parts.join(' ');
}

async function copyCommand() {
  const box = $('command');
  try { await navigator.clipboard.writeText(box.value); status('copied'); }
  catch (e) { box.select(); document.execCommand('copy'); status('copied'); }
}

$('load').addEventListener('click', () => showTest($('index').value));
$('index').addEventListener('change', () => showTest($('index').value));
$('random').addEventListener('click',
    () => showTest(Math.floor(Math.random() * S.info.num_test)));
$('upload').addEventListener('change', (e) => upload(e.target.files[0]));
$('primary').addEventListener('change', () => { S.active = null; rebuild(); });
$('compare').addEventListener('change',
    () => { renderRows(); requestDecode(); });
$('reset').addEventListener('click', () => {
  S.edits.clear(); S.active = null;
  for (const n in S.base) S.effective[n] = S.base[n];
  rebuild();
});
$('copy').addEventListener('click', copyCommand);
init().catch((e) => status('cannot start: ' + e.message));
</script>
</body></html>
"""
