"""launch/tpu_vm.sh against a fake `gcloud` that records its arguments.

With FAKE_GCLOUD_EXEC set, the fake also runs each `ssh --command` in a local
bash with HOME in a temporary directory laid out like a TPU VM worker (a
~/jacdistill-venv/bin/python that records its argv), so the tests see what a
worker's shell makes of the command, quoting included.
"""

import glob
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'launch', 'tpu_vm.sh')

FAKE_GCLOUD = textwrap.dedent(f'''\
    #!{sys.executable}
    import json, os, subprocess, sys
    args = sys.argv[1:]
    with open(os.environ['FAKE_GCLOUD_LOG'], 'a') as f:
      f.write(json.dumps(args) + '\\n')
    if args[3:4] == ['describe']:
      n = int(os.environ.get('FAKE_TPU_WORKERS', '1'))
      print(json.dumps({{'networkEndpoints': [
          {{'ipAddress': f'10.0.0.{{i}}', 'port': 8470}} for i in range(n)]}},
          indent=2))
    if args[3:4] == ['ssh'] and os.environ.get('FAKE_GCLOUD_EXEC'):
      command = next(a for a in args if a.startswith('--command='))
      sys.exit(subprocess.call(['bash', '-c', command[len('--command='):]]))
''')

# A worker's venv python: records the argv main.py would get, then says so
# on stdout (the run's log).
FAKE_PYTHON = textwrap.dedent(f'''\
    #!{sys.executable}
    import json, os, sys
    with open(os.path.join(os.environ['HOME'], 'argv.json'), 'w') as f:
      json.dump(sys.argv[1:], f)
    print('fake main.py ran')
''')

# pgrep on a worker: FAKE_PID while that process lives (a zombie, signalled
# but not yet reaped by the test, counts as gone), else nothing.
FAKE_PGREP = textwrap.dedent('''\
    #!/bin/sh
    [ -n "$FAKE_PID" ] && [ -d "/proc/$FAKE_PID" ] &&
      ! grep -q ') Z' "/proc/$FAKE_PID/stat" && { echo "$FAKE_PID"; exit 0; }
    exit 1
''')


def _write(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    f.write(text)
  os.chmod(path, 0o755)


@pytest.fixture
def tpu(tmp_path):
  """Runs tpu_vm.sh; returns (completed process, recorded gcloud argvs)."""
  bin_dir = tmp_path / 'bin'
  home = tmp_path / 'home'
  _write(str(bin_dir / 'gcloud'), FAKE_GCLOUD)
  _write(str(bin_dir / 'pgrep'), FAKE_PGREP)
  _write(str(home / 'jacdistill-venv' / 'bin' / 'python'), FAKE_PYTHON)
  os.makedirs(home / 'jacdistill')
  log = tmp_path / 'gcloud.log'

  def call(*args, **env):
    log.write_text('')
    full_env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}',
                    HOME=str(home), FAKE_GCLOUD_LOG=str(log))
    for k in ('TPU_SOFTWARE_VERSION', 'TPU_VM_SHARED_WORKDIR'):
      full_env.pop(k, None)
    full_env.update(env)
    out = subprocess.run(['bash', SCRIPT, *args], env=full_env,
                         capture_output=True, text=True, timeout=60)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return out, calls

  call.home = home
  return call


def _ssh_commands(calls):
  return [next(a[len('--command='):] for a in c if a.startswith('--command='))
          for c in calls if c[3] == 'ssh']


def _main_argv(home, timeout=20.0):
  """The argv the backgrounded fake main.py recorded (it runs detached)."""
  path = home / 'argv.json'
  deadline = time.monotonic() + timeout
  while not path.exists() or not path.read_text():
    assert time.monotonic() < deadline, 'main.py never started'
    time.sleep(0.05)
  argv = json.loads(path.read_text())
  path.unlink()
  return argv


def test_run_without_overrides_passes_no_empty_argument(tpu):
  out, calls = tpu('run', 'my-tpu', 'zone-a', 'gs://b/w',
                   'configs/svhn_grow.py', FAKE_GCLOUD_EXEC='1')
  assert out.returncode == 0, out.stderr
  assert _main_argv(tpu.home) == [
      'launch/main.py', '--config=configs/svhn_grow.py', '--workdir=gs://b/w']
  # A gs:// workdir needs no look at the worker count; the one call is the
  # ssh to every worker.
  assert [c[:5] for c in calls] == [
      ['compute', 'tpus', 'tpu-vm', 'ssh', 'my-tpu']]
  assert '--worker=all' in calls[0] and '--zone=zone-a' in calls[0]
  logs = re.findall(r'log (\S+/jacdistill-logs/run-\d{8}T\d{6}Z\.log)',
                    out.stdout)
  assert len(logs) == 1, out.stdout
  first = logs[0]
  # A second run starts a fresh log, and `latest.log` names it; the first
  # log is kept.
  out, _ = tpu('run', 'my-tpu', 'zone-a', 'gs://b/w', 'configs/svhn_grow.py',
               FAKE_GCLOUD_EXEC='1')
  assert out.returncode == 0, out.stderr
  _main_argv(tpu.home)
  second = re.findall(r'log (\S+\.log)', out.stdout)[0]
  assert second != first
  assert sorted(glob.glob(str(tpu.home / 'jacdistill-logs' / 'run-*.log'))
                ) == sorted([first, second])
  assert os.path.realpath(tpu.home / 'jacdistill-logs' / 'latest.log') == second
  deadline = time.monotonic() + 20
  while 'fake main.py ran' not in open(second).read():
    assert time.monotonic() < deadline
    time.sleep(0.05)


def test_overrides_with_spaces_and_quotes_survive(tpu):
  overrides = ['--config.data.tfds_data_dir=gs://b/tf ds',
               """--config.note=it's "quoted" \\ $HOME `id` *""",
               '--config.train.batch_size=512',
               '']  # even an empty word, when the caller gives one
  out, _ = tpu('run', 'my-tpu', 'z', 'gs://b/my run', 'configs/svhn_grow.py',
               *overrides, FAKE_GCLOUD_EXEC='1')
  assert out.returncode == 0, out.stderr
  assert _main_argv(tpu.home) == [
      'launch/main.py', '--config=configs/svhn_grow.py',
      '--workdir=gs://b/my run', *overrides]


def test_run_refuses_to_start_beside_a_running_main_py(tpu):
  running = subprocess.Popen(['sleep', '60'])
  try:
    out, _ = tpu('run', 'my-tpu', 'z', 'gs://b/w', 'configs/svhn_grow.py',
                 FAKE_GCLOUD_EXEC='1', FAKE_PID=str(running.pid))
  finally:
    running.kill()
    running.wait()
  assert out.returncode == 1
  assert 'launch/main.py is still running; stop it first' in out.stderr
  assert not (tpu.home / 'jacdistill-logs').exists()


def test_run_refuses_a_local_workdir_on_a_pod(tpu):
  out, calls = tpu('run', 'my-tpu', 'z', '/tmp/w', 'configs/svhn_grow.py',
                   FAKE_TPU_WORKERS='4')
  assert out.returncode == 2
  assert 'gs://' in out.stderr and '4 workers' in out.stderr
  assert [c[3] for c in calls] == ['describe']  # nothing started
  # One host may use a local path; so may a pod with a shared mount.
  out, calls = tpu('run', 'my-tpu', 'z', '/tmp/w', 'configs/svhn_grow.py',
                   FAKE_TPU_WORKERS='1')
  assert out.returncode == 0, out.stderr
  assert [c[3] for c in calls] == ['describe', 'ssh']
  out, calls = tpu('run', 'my-tpu', 'z', '/mnt/nfs/w', 'configs/svhn_grow.py',
                   FAKE_TPU_WORKERS='4', TPU_VM_SHARED_WORKDIR='1')
  assert out.returncode == 0, out.stderr
  assert [c[3] for c in calls] == ['ssh']


@pytest.mark.parametrize('accelerator, runtime', [
    ('v5litepod-8', 'v2-alpha-tpuv5-lite'),
    ('v5e-16', 'v2-alpha-tpuv5-lite'),
    ('v5p-8', 'v2-alpha-tpuv5'),
    ('v6e-8', 'v2-alpha-tpuv6e'),
    ('v4-32', 'tpu-ubuntu2204-base'),
    ('v3-8', 'tpu-ubuntu2204-base'),
    ('v2-8', 'tpu-ubuntu2204-base'),
])
def test_create_chooses_the_runtime_of_the_generation(tpu, accelerator,
                                                      runtime):
  out, calls = tpu('create', 'my-tpu', 'z', accelerator)
  assert out.returncode == 0, out.stderr
  assert calls == [['compute', 'tpus', 'tpu-vm', 'create', 'my-tpu',
                    '--zone=z', f'--accelerator-type={accelerator}',
                    f'--version={runtime}']]


def test_create_runtime_override_and_unknown_generation(tpu):
  out, calls = tpu('create', 'my-tpu', 'z', 'v6e-8',
                   TPU_SOFTWARE_VERSION='v2-alpha-tpuv6e-next')
  assert out.returncode == 0, out.stderr
  assert calls[0][-1] == '--version=v2-alpha-tpuv6e-next'
  out, calls = tpu('create', 'my-tpu', 'z', 'v9x-8')
  assert out.returncode == 2
  assert "no runtime known for accelerator 'v9x-8'" in out.stderr
  assert 'TPU_SOFTWARE_VERSION' in out.stderr
  assert calls == []


@pytest.mark.parametrize('args', [('frobnicate', 'my-tpu', 'z'), (),
                                  ('run', 'my-tpu'), ('create', 'a', 'z')])
def test_bad_command_lines_exit_2_with_usage(tpu, args):
  out, calls = tpu(*args)
  assert out.returncode == 2
  assert 'usage:' in out.stderr
  assert calls == []


def test_help_prints_usage_and_where_the_data_comes_from(tpu):
  out, _ = tpu('help')
  assert out.returncode == 0
  for text in ('create', 'install', 'run', 'stop', 'logs', 'delete',
               '--config.data.tfds_data_dir=gs://BUCKET/tfds',
               'never downloads'):
    assert text in out.stdout, text


def test_stop_sends_sigterm_on_every_worker_and_waits(tpu):
  victim = subprocess.Popen(['sleep', '60'])
  try:
    out, calls = tpu('stop', 'my-tpu', 'z', FAKE_GCLOUD_EXEC='1',
                     FAKE_PID=str(victim.pid))
    assert out.returncode == 0, out.stderr
    assert victim.wait(timeout=10) == -15  # SIGTERM
  finally:
    if victim.poll() is None:
      victim.kill()
      victim.wait()
  assert [c[3] for c in calls] == ['ssh', 'ssh']  # signal all, then wait
  assert all('--worker=all' in c for c in calls)
  signal_command, wait_command = _ssh_commands(calls)
  assert 'kill -TERM' in signal_command
  assert f'SIGTERM to launch/main.py, pid {victim.pid}' in out.stdout
  assert 'kill' not in wait_command
  # Nothing running: says so and succeeds.
  out, _ = tpu('stop', 'my-tpu', 'z', FAKE_GCLOUD_EXEC='1')
  assert out.returncode == 0, out.stderr
  assert 'launch/main.py is not running' in out.stdout


def test_stop_pattern_matches_main_py_and_not_the_ssh_shell():
  pattern = re.search(r"^MAIN_PATTERN='([^']*)'$", open(SCRIPT).read(),
                      re.M).group(1)
  for cmdline in ('/home/u/jacdistill-venv/bin/python launch/main.py '
                  '--config=configs/svhn_grow.py',
                  'python3.11 launch/main.py --config=x',
                  'python launch/main.py'):
    assert re.search(pattern, cmdline), cmdline
  for cmdline in ("bash -c set -- --config=x\nmain_pattern='^([^ ]*/)?python"
                  " launch/main\\.py' ...",
                  'python launch/main_other.py', 'vim launch/main.py'):
    assert not re.search(pattern, cmdline), cmdline


def test_logs_follows_the_newest_run(tpu):
  out, calls = tpu('logs', 'my-tpu', 'z')
  assert out.returncode == 0, out.stderr
  assert '--worker=0' in calls[0]
  assert 'latest.log' in _ssh_commands(calls)[0]
  _, calls = tpu('logs', 'my-tpu', 'z', '3')
  assert '--worker=3' in calls[0]
  # On a worker with no run yet it says so.
  out, _ = tpu('logs', 'my-tpu', 'z', FAKE_GCLOUD_EXEC='1')
  assert out.returncode == 1 and 'no run log yet' in out.stderr


def test_install_makes_a_python_3_11_venv_with_the_tested_releases(tpu):
  out, calls = tpu('install', 'my-tpu', 'z')
  assert out.returncode == 0, out.stderr
  assert [c[3] for c in calls] == ['scp', 'ssh']
  assert '--worker=all' in calls[0] and '--worker=all' in calls[1]
  command = _ssh_commands(calls)[0]
  assert 'uv venv' in command and '--python "$python_version"' in command
  assert re.search(r"^python_version=3\.11$", command, re.M)
  # Every core package is pinned to one release (those of a tested run;
  # not compared with this machine's, which pip may resolve differently).
  set_line = command.splitlines()[0]
  assert set_line.startswith('set -- ')
  pins = dict(p.split('==') for p in shlex.split(set_line)[2:])
  assert {'jax[tpu]', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint',
          'tensorflow-datasets', 'clu', 'ml_collections'} <= set(pins)
  for package, pinned in pins.items():
    assert re.fullmatch(r'\d+(\.\d+)+', pinned), (package, pinned)
  assert pins['jax[tpu]'] == pins['jaxlib']
