#!/usr/bin/env bash
# Runs a jacdistill config on a Cloud TPU VM (single host or pod slice).
#
#   launch/tpu_vm.sh create  NAME ZONE ACCELERATOR      # e.g. my-tpu us-central2-b v4-32
#   launch/tpu_vm.sh install NAME ZONE                  # copy this repo to every worker, pip install
#   launch/tpu_vm.sh run     NAME ZONE WORKDIR CONFIG [OVERRIDES...]
#   launch/tpu_vm.sh logs    NAME ZONE [WORKER]         # follow one worker's log (default 0)
#   launch/tpu_vm.sh delete  NAME ZONE
#
# `run` starts the same launch/main.py command on all workers at once; JAX's
# multi-controller runtime (jax.distributed.initialize, called by main.py when
# TPU_WORKER_HOSTNAMES lists several hosts) connects them. WORKDIR must be a
# path every worker sees (a gs:// bucket, which orbax and TensorBoard read and
# write directly). To resume after a preemption, run the same `run` command
# again: every stage continues from its last checkpoint in WORKDIR.
set -euo pipefail
cmd=${1:?usage: $0 create|install|run|logs|delete NAME ZONE ...}
name=${2:?TPU VM name}
zone=${3:?zone}
shift 3
version=${TPU_SOFTWARE_VERSION:-tpu-ubuntu2204-base}
ssh_all() { gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" --worker=all --command="$1"; }

case "$cmd" in
  create)
    accel=${1:?accelerator type, e.g. v4-8}
    gcloud compute tpus tpu-vm create "$name" --zone="$zone" \
      --accelerator-type="$accel" --version="$version"
    ;;
  install)
    repo=$(cd "$(dirname "$0")/.." && pwd)
    tar -C "$repo" --exclude=.git --exclude=workdirs -czf /tmp/jacdistill.tgz .
    gcloud compute tpus tpu-vm scp /tmp/jacdistill.tgz "$name":~/ --zone="$zone" --worker=all
    ssh_all 'mkdir -p ~/jacdistill && tar -C ~/jacdistill -xzf ~/jacdistill.tgz &&
      cd ~/jacdistill && pip install -q "jax[tpu]" -e . '
    ;;
  run)
    workdir=${1:?workdir (gs://... for a pod)}
    config=${2:?config, e.g. configs/svhn_grow.py}
    shift 2
    overrides=$(printf ' %q' "$@")
    ssh_all "cd ~/jacdistill && nohup python launch/main.py --config=$config \
      --workdir=$workdir $overrides > ~/jacdistill.log 2>&1 &"
    echo "started on every worker; follow with: $0 logs $name $zone"
    ;;
  logs)
    worker=${1:-0}
    gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" --worker="$worker" \
      --command='tail -f ~/jacdistill.log'
    ;;
  delete)
    gcloud compute tpus tpu-vm delete "$name" --zone="$zone" --quiet
    ;;
  *)
    echo "unknown command $cmd" >&2; exit 2
    ;;
esac
