"""The explorer: edit a code with sliders and see the decoded image at once.

`Explorer` holds the stages of one chain (from a workdir or from shipped
models, `from_workdir` / `from_pretrained`) with their encoders and
decoders compiled once, for one image at a time, and the chain's test
images. Its request handlers are plain functions of plain values, each
returning JSON-ready dicts; `Explorer.handle(method, path, body)` routes a
request to them and `explore_server.make_server` serves that over HTTP on
127.0.0.1 (launch/explore.py is the command line). The page is the package
file jacdistill/explore.html; images are prepared and codes edited by
`jacdistill.editing`, as launch/manipulate.py does.

Protocol (JSON bodies; images are PNG as `data:image/png;base64,...`):

  GET  /             the page (one self-contained HTML file, inline JS).
  GET  /api/info     the chain: its kind, stages (name, label, code size,
                     sliders with their ranges, the launch/manipulate.py
                     arguments that name it), the number of test images.
  POST /api/encode   {"test": i} -> {"original": png, "stages": {name:
                     {"code": [...], "reconstruction": png}}} for every stage.
  POST /api/upload   the bytes of a PNG or JPEG -> the same. The image is
                     centre-cropped and resized as training data was
                     (`editing.prepare_image`).
  POST /api/decode   {"stages": {name: code}, "edits": [[i, v], ...]} ->
                     {"stages": {name: {"image": png, "code": edited code}}}.

The server keeps no state between requests: the client holds each stage's
code and the list of edits, so two browsers never see each other's images,
and nothing a request names is ever opened as a file (a test image is an
index, an upload is its bytes). An edit (i, v) sets growth dim i to v
(stages shorter than i + 1 ignore it) or attribute i's score to v, by
`editing.apply_edits`, the rule launch/manipulate.py's `--set` applies, in
order.
"""

import dataclasses
import importlib.resources
import json
import shlex
import urllib.parse
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jacdistill import attr_chain
from jacdistill import attr_config
from jacdistill import chain
from jacdistill import editing
from jacdistill import paths
from jacdistill import pictures
from jacdistill import pretrained
from jacdistill import train
from jacdistill import workdir_files

PAGE = 'explore.html'  # The page, a file of this package.
MAX_UPLOAD_BYTES = 8 << 20  # An upload larger than this gets 413.
ATTRIBUTE_RANGE = 3.0  # Attribute sliders span +-3 (a number box goes further).
PERCENTILES = (2, 98)  # Growth sliders span these test percentiles of a dim.
ENCODE_BATCH = 500  # Test images encoded at once for the slider ranges.


class ExploreError(ValueError):
  """A request the explorer refuses; `status` is its HTTP status code."""

  def __init__(self, message: str, status: int = 400):
    super().__init__(message)
    self.status = status


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
    self.native, self.size, self.channels = editing.image_geometry(
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
    """Every finished stage of the run in `workdir` that the explorer can
    edit; `stage` (an index or a name; default the last, or an attribute
    run's default stage, `attr_config.default_stage`) opens first. Fader
    Networks stages are left out: their decoder takes an image's
    attributes beside its code, which the explorer does not supply.

    Raises:
      chain.ConfigError, checkpoint.CheckpointError: no run, no such
        stage, unreadable checkpoints.
    """
    kind = pretrained.kind_of(workdir_files.load_config(workdir))
    finished = workdir_files.load_summary(workdir)['stages']
    if not finished:
      raise chain.ConfigError(f'{workdir} has no finished stage yet; run '
                              'launch/main.py on it first')
    quoted = shlex.quote(workdir)
    stages, faders = [], []
    for entry in finished:
      if entry.get('kind') == 'fader':
        faders.append(entry['name'])
        continue
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
    if stage is not None and str(stage) in faders:
      raise chain.ConfigError(f'stage {stage!r} of {workdir} is a Fader '
                              'Networks stage, which the explorer cannot '
                              'edit yet; open a student or the teacher')
    if stage is not None and str(stage) not in {s.name for s in stages}:
      raise chain.ConfigError(f'stage {stage!r} of {workdir} is not finished; '
                              f'its finished stages are '
                              f'{[s.name for s in stages]}')
    if not stages:
      raise chain.ConfigError(f'{workdir} has only Fader Networks stages '
                              f'({faders}), which the explorer cannot edit yet')
    if stage is None and kind == 'attribute':
      default = attr_config.default_stage(stages[0].config)
      stage = default if default in {s.name for s in stages} else None
    images = pretrained.test_images(kind, stages[0].config)
    return cls(stages, images, primary=None if stage is None else str(stage),
               title=f'{paths.basename(workdir)} '
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
                    'set_names': editing.edit_names(self.kind, s.config,
                                                    s.code_size),
                    'manipulate': s.manipulate_args}
                   for s in self.stages.values()]}

  def encode_image(self, image_uint8: np.ndarray) -> dict:
    """Codes and reconstructions of one prepared image by every stage."""
    out = {}
    for s in self.stages.values():
      code = s.encode(image_uint8)
      out[s.name] = {'code': [float(v) for v in code],
                     'reconstruction': editing.png_data_url(s.decode(code))}
    return {'original': editing.png_data_url(image_uint8), 'stages': out}

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
    """POST /api/upload: a PNG or JPEG's bytes (`editing.read_upload` checks;
    what it refuses gets 400)."""
    if len(data) > MAX_UPLOAD_BYTES:
      raise ExploreError(f'the upload is {len(data)} bytes, more than the '
                         f'{MAX_UPLOAD_BYTES} allowed', status=413)
    try:
      img = editing.read_upload(data)
    except editing.UploadError as e:
      raise ExploreError(str(e)) from None
    return self.encode_image(editing.prepare_image(img, self.native,
                                                   self.size, self.channels))

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
      if not editing.finite_float32(value):
        raise ExploreError(f'edit value {value!r} of index {index} is not a '
                           'finite float32 number')
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
      if code.shape != (stage.code_size,) or not all(
          editing.finite_float32(v) for v in code):
        raise ExploreError(f'the code of {name!r} must be {stage.code_size} '
                           'finite float32 numbers')
      edited = editing.apply_edits(code[None].astype(np.float32), edits,
                                   self.kind, self.num_attributes,
                                   self.one_hot)[0]
      out[name] = {'image': editing.png_data_url(stage.decode(edited)),
                   'code': [float(v) for v in edited]}
    return {'stages': out}

  def page(self) -> bytes:
    """GET /: the page, jacdistill/explore.html (one self-contained file,
    shipped as package data; it reads everything else from /api)."""
    return importlib.resources.files(__package__).joinpath(PAGE).read_bytes()

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
        return json_reply(200, self.info())
      if route == '/api/upload':
        self._method(method, 'POST')
        return json_reply(200, self.encode_upload(body))
      handlers = {'/api/encode': self.encode_test, '/api/decode': self.decode}
      if route in handlers:
        self._method(method, 'POST')
        try:
          request = json.loads(body or b'null')
        except (ValueError, UnicodeDecodeError) as e:
          raise ExploreError(f'the body is not JSON ({e})') from None
        except RecursionError:
          raise ExploreError('the body nests deeper than any request of '
                             'this page') from None
        return json_reply(200, handlers[route](request))
      raise ExploreError(f'no such page: {route}', status=404)
    except ExploreError as e:
      return json_reply(e.status, {'error': str(e)})

  @staticmethod
  def _method(method: str, allowed: str) -> None:
    if method != allowed:
      raise ExploreError(f'use {allowed} here, not {method}', status=405)


def json_reply(status: int, payload: dict) -> tuple[int, str, bytes]:
  """(status, content type, body) of a JSON reply, as `handle` returns."""
  return status, 'application/json', json.dumps(payload).encode()
