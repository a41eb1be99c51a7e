#!/usr/bin/env bash
# Runs a jacdistill config on a Cloud TPU VM: one host (v4-8, v5litepod-8,
# v6e-8, ...) or a multi-host pod slice (v4-32, v5litepod-16, ...), from a
# machine with `gcloud`. `launch/tpu_vm.sh help` prints the usage below.
#
# Every worker gets the same layout: the repository in ~/jacdistill, a
# Python >= 3.11 virtual environment in ~/jacdistill-venv (the images' own
# Python is 3.10, below what jax 0.10, flax 0.12 and orbax 0.12 support, and
# pip would quietly pick older, untested releases for it), one log per run in
# ~/jacdistill-logs. The venv is made by uv (installed from PyPI with the
# image's pip), which downloads a standalone CPython build, so every worker
# runs the very same interpreter whatever the image ships.
set -euo pipefail

prog=$0

# The releases the test suite passes with; a TPU VM gets exactly these
# (tests/test_tpu_vm.py checks them against the machine the tests run on).
# Update them together, then `install` again.
PYTHON_VERSION=3.11
UV_VERSION=0.13.8
PINNED=(
  'jax[tpu]==0.10.2' 'jaxlib==0.10.2' 'flax==0.12.8' 'optax==0.2.8'
  'orbax-checkpoint==0.12.8' 'tensorflow-cpu==2.21.0'
  'tensorflow-datasets==4.9.10' 'tensorboard==2.21.0' 'clu==0.0.12'
  'ml_collections==1.1.0' 'etils==1.15.0' 'numpy==2.4.6' 'absl-py==2.5.1'
  'fsspec==2026.9.0' 'gcsfs==2026.10.1'
)

# launch/main.py as `run` starts it (or by hand as `python launch/main.py`),
# and nothing else: the workers' bash that looks for it has this text in its
# own command line, which starts with `bash`, so it cannot match itself.
MAIN_PATTERN='^([^ ]*/)?python[0-9.]* launch/main\.py( |$)'

usage() {
  cat <<EOF
usage: $prog COMMAND NAME ZONE [ARGS...]

  create  NAME ZONE ACCELERATOR   create the TPU VM, e.g. v4-32, v5litepod-8,
                                  v5p-8, v6e-8 (runtime chosen from it below)
  install NAME ZONE               copy this repository to every worker and
                                  make ~/jacdistill-venv there (Python $PYTHON_VERSION,
                                  pinned jax[tpu], flax, orbax...); again
                                  after edits
  run     NAME ZONE WORKDIR CONFIG [OVERRIDES...]
                                  start launch/main.py on every worker at once,
                                  each logging to a fresh
                                  ~/jacdistill-logs/run-<UTC time>.log
  stop    NAME ZONE               SIGTERM to launch/main.py on every worker,
                                  which checkpoints and exits; waits for that
  logs    NAME ZONE [WORKER]      follow the newest run's log (worker 0)
  delete  NAME ZONE               delete the TPU VM

Runtime (create's --version) by TPU generation: v2, v3, v4:
tpu-ubuntu2204-base; v5e (v5litepod-N): v2-alpha-tpuv5-lite; v5p:
v2-alpha-tpuv5; v6e: v2-alpha-tpuv6e. TPU_SOFTWARE_VERSION=... overrides it.

WORKDIR: on a pod (several workers) a gs://BUCKET/path that every worker reads
and writes (orbax checkpoints, TensorBoard events, summary.json); a local path
would give each worker a separate, partial copy, so run refuses one there
(TPU_VM_SHARED_WORKDIR=1 accepts a filesystem every worker mounts). A single
host may use a local path: absolute, or relative to ~/jacdistill.

Data: the program never downloads. Prepare the tfds data once on a machine
with network, e.g. python -c "import tensorflow_datasets as tfds;
tfds.builder('svhn_cropped', data_dir='DIR').download_and_prepare()", copy it
to a bucket (gcloud storage cp -r DIR/svhn_cropped gs://BUCKET/tfds/) and pass
  --config.data.tfds_data_dir=gs://BUCKET/tfds
among the overrides; every worker reads its slice of each batch from there.

Resume after a preemption or a stop: the same run command again; each stage
goes on from its last checkpoint in WORKDIR.

Example:
  $prog create  my-tpu us-central2-b v4-32
  $prog install my-tpu us-central2-b
  $prog run     my-tpu us-central2-b gs://my-bucket/svhn configs/svhn_grow.py \\
      --config.data.tfds_data_dir=gs://my-bucket/tfds \\
      --config.train.batch_size=512
  $prog logs    my-tpu us-central2-b
  $prog stop    my-tpu us-central2-b
  $prog delete  my-tpu us-central2-b
EOF
}

die() { echo "$prog: $*" >&2; exit 2; }
usage_error() { echo "$prog: $*" >&2; usage >&2; exit 2; }

# Shell-quoted words for the workers' bash, each after a space; nothing at all
# for no words (printf ' %q' with no arguments prints an empty-string word).
quote() {
  local word out=''
  for word in "$@"; do
    printf -v word '%q' "$word"
    out+=" $word"
  done
  printf '%s' "$out"
}

# A script for the workers' bash: `set --` with ARGV (a quote'd string), the
# NAME=VALUE pairs as quoted assignments, then BODY. The bodies below are
# quoted here-documents, so nothing in them expands on this side.
remote() {
  local argv=$1 body=$2 pair value out
  shift 2
  out="set --$argv"$'\n'
  for pair in "$@"; do
    printf -v value '%q' "${pair#*=}"
    out+="${pair%%=*}=$value"$'\n'
  done
  printf '%s%s' "$out" "$body"
}

install_body() {
  cat <<'EOF'
set -euo pipefail
mkdir -p ~/jacdistill
# A tree from an earlier install loses the files removed since; a local
# workdirs/ beside them stays.
rm -rf ~/jacdistill/jacdistill ~/jacdistill/configs ~/jacdistill/launch
tar -C ~/jacdistill -xzf ~/jacdistill.tgz
python3 -m pip install -q --user "uv==$uv_version" ||
  python3 -m pip install -q --user --break-system-packages "uv==$uv_version"
python3 -m uv venv -q --clear --managed-python --python "$python_version" \
  ~/jacdistill-venv
python3 -m uv pip install -q --python ~/jacdistill-venv/bin/python "$@" \
  -e ~/jacdistill
~/jacdistill-venv/bin/python -c '
import socket, sys
from importlib.metadata import version
print(socket.gethostname() + ": Python", sys.version.split()[0], *(
    p + " " + version(p)
    for p in ("jax", "libtpu", "flax", "orbax-checkpoint")))'
EOF
}

run_body() {
  cat <<'EOF'
cd ~/jacdistill || exit 1
if pgrep -u "$(id -u)" -f "$main_pattern" >/dev/null; then
  echo "$(hostname): launch/main.py is still running; stop it first" >&2
  exit 1
fi
mkdir -p ~/jacdistill-logs
log=~/jacdistill-logs/run-$stamp.log n=1
while [ -e "$log" ]; do  # a second run within the same second
  log=~/jacdistill-logs/run-$stamp.$n.log n=$((n + 1))
done
nohup ~/jacdistill-venv/bin/python launch/main.py "$@" >"$log" 2>&1 </dev/null &
ln -sfn "$log" ~/jacdistill-logs/latest.log
echo "$(hostname): pid $! log $log"
EOF
}

signal_body() {
  cat <<'EOF'
pids=$(pgrep -u "$(id -u)" -f "$main_pattern" | tr '\n' ' ')
if [ -n "$pids" ]; then
  # $pids unquoted: one word per process.
  kill -TERM $pids && echo "$(hostname): SIGTERM to launch/main.py, pid $pids"
else
  echo "$(hostname): launch/main.py is not running"
fi
EOF
}

wait_body() {
  cat <<'EOF'
for _ in $(seq "$wait_s"); do
  pgrep -u "$(id -u)" -f "$main_pattern" >/dev/null || exit 0
  sleep 1
done
echo "$(hostname): launch/main.py still running after ${wait_s}s" >&2
exit 1
EOF
}

logs_body() {
  cat <<'EOF'
if [ ! -e ~/jacdistill-logs/latest.log ]; then
  echo "$(hostname): no run log yet" >&2
  exit 1
fi
log=$(readlink -f ~/jacdistill-logs/latest.log)
echo "== $log"
exec tail -n 200 -F "$log"
EOF
}

runtime_for() {
  case "$1" in
    v2-*|v3-*|v4-*) echo tpu-ubuntu2204-base ;;
    v5litepod-*|v5e-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) return 1 ;;
  esac
}

case "${1:-}" in
  help|-h|--help) usage; exit 0 ;;
  create|install|run|stop|logs|delete) ;;
  '') usage_error 'no command given' ;;
  *) usage_error "unknown command '$1'" ;;
esac
[[ $# -ge 3 ]] || usage_error "$1 needs NAME and ZONE"
cmd=$1 name=$2 zone=$3
shift 3

tpu() { gcloud compute tpus tpu-vm "$@"; }
ssh_all() { tpu ssh "$name" --zone="$zone" --worker=all --command="$1"; }

num_workers() {
  local json
  json=$(tpu describe "$name" --zone="$zone" --format=json) ||
    die "cannot describe TPU VM $name in $zone"
  grep -o '"ipAddress"' <<<"$json" | wc -l
}

case "$cmd" in
  create)
    [[ $# -eq 1 ]] || usage_error 'create needs one ACCELERATOR, e.g. v4-8'
    accel=$1
    if [[ -n ${TPU_SOFTWARE_VERSION:-} ]]; then
      version=$TPU_SOFTWARE_VERSION
    elif ! version=$(runtime_for "$accel"); then
      die "no runtime known for accelerator '$accel' (known: v2-N, v3-N," \
        "v4-N, v5litepod-N or v5e-N, v5p-N, v6e-N);" \
        "set TPU_SOFTWARE_VERSION to choose one"
    fi
    tpu create "$name" --zone="$zone" --accelerator-type="$accel" \
      --version="$version"
    ;;

  install)
    [[ $# -eq 0 ]] || usage_error 'install takes no arguments after ZONE'
    repo=$(cd "$(dirname "$0")/.." && pwd)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    tar -C "$repo" --exclude=.git --exclude=./workdirs --exclude=__pycache__ \
      --exclude='*.egg-info' --exclude=.pytest_cache --exclude=.benchmarks \
      -czf "$tmp/jacdistill.tgz" .
    tpu scp "$tmp/jacdistill.tgz" "$name:~/jacdistill.tgz" --zone="$zone" \
      --worker=all
    ssh_all "$(remote "$(quote "${PINNED[@]}")" "$(install_body)" \
      uv_version="$UV_VERSION" python_version="$PYTHON_VERSION")"
    ;;

  run)
    [[ $# -ge 2 ]] || usage_error 'run needs WORKDIR and CONFIG'
    workdir=$1 config=$2
    shift 2
    if [[ $workdir != gs://* && -z ${TPU_VM_SHARED_WORKDIR:-} ]]; then
      workers=$(num_workers)
      if (( workers > 1 )); then
        die "$name has $workers workers: WORKDIR must be a gs:// path all of" \
          "them see, not '$workdir' (TPU_VM_SHARED_WORKDIR=1 if it is a" \
          "filesystem every worker mounts)"
      fi
    fi
    # One stamp for all workers: the same log name on each.
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    # main.py's argv reaches the workers' bash word for word through `set --`.
    ssh_all "$(remote "$(quote --config="$config" --workdir="$workdir" "$@")" \
      "$(run_body)" stamp="$stamp" main_pattern="$MAIN_PATTERN")"
    echo "started on every worker; follow with: $prog logs $name $zone [WORKER]"
    ;;

  stop)
    [[ $# -eq 0 ]] || usage_error 'stop takes no arguments after ZONE'
    # Signal every worker first, then wait: on a pod the final checkpoint is
    # written by all workers together, so none finishes before the last one
    # has its signal.
    ssh_all "$(remote '' "$(signal_body)" main_pattern="$MAIN_PATTERN")"
    ssh_all "$(remote '' "$(wait_body)" main_pattern="$MAIN_PATTERN" \
      wait_s="${TPU_VM_STOP_WAIT_S:-600}")"
    echo "stopped; the same run command resumes from the checkpoints"
    ;;

  logs)
    [[ $# -le 1 ]] || usage_error 'logs takes at most one WORKER'
    tpu ssh "$name" --zone="$zone" --worker="${1:-0}" --command="$(logs_body)"
    ;;

  delete)
    [[ $# -eq 0 ]] || usage_error 'delete takes no arguments after ZONE'
    tpu delete "$name" --zone="$zone" --quiet
    ;;
esac
