#!/usr/bin/env bash
# Train on a Cloud TPU VM slice: create it (directly or as a queued resource), copy this checkout
# to every worker, install it in a venv there, run the same training command on all workers
# (one log file per worker comes back), then delete the slice.
#
#   launch/tpu_vm.sh --name wa-v5p --zone us-east5-a --accelerator-type v5p-64 --spot \
#     --config configs/wildactor_wan22_5b.py:v5p-64 --workdir gs://BUCKET/runs/wa1 \
#     --config.train.steps=20000
#
# --dry-run prints every command instead of running it. Run `launch/tpu_vm.sh --help` for all flags.
# Flags were checked against `gcloud ... --help` of Google Cloud SDK 528; the output field
# `networkEndpoints[0].ipAddress` and the queued-resource field `state.state` are from the Cloud TPU
# API reference (not exercised here: no TPU was available when this was written).
set -euo pipefail

PROG=$(basename "$0")
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=launch/common.sh
source "$REPO_ROOT/launch/common.sh"
JAX_COORDINATOR_PORT=8482  # the port JAX itself uses for Cloud TPU clusters

usage() {
  cat <<EOF
Usage: $PROG --name NAME --zone ZONE --accelerator-type TYPE --config configs/X.py[:ARG]
              --workdir gs://BUCKET/PATH [options] [--config.KEY=VALUE ...] [-- TRAIN_ARGS ...]

Slice:
  --name NAME               TPU VM (node) name, lowercase letters, digits and '-'
  --zone ZONE               e.g. us-east5-a, europe-west4-b, us-central2-b
  --accelerator-type TYPE   e.g. v5p-64, v6e-64, v5litepod-16, v4-32
  --version VERSION         TPU runtime (software) version; defaults by family:
                            v5p: v2-alpha-tpuv5, v5litepod: v2-alpha-tpuv5-lite,
                            v6e: v2-alpha-tpuv6e, v4: tpu-ubuntu2204-base
  --project PROJECT         GCP project (default: gcloud's core/project)
  --spot                    Spot capacity (preemptible; training resumes from its checkpoint)
  --queued                  create through a queued resource (waits until it is ACTIVE)
  --existing                use a slice that already exists: no create, no delete
  --keep                    do not delete the slice at the end
  --skip-install            do not copy/install the code (a rerun on an --existing slice)
  --remote-dir DIR          checkout directory on workers, relative to the home (default wildactor_jax)
  --log-dir DIR             local directory for the per-worker logs (default logs/tpu_vm-NAME-TIME)
  --env KEY=VALUE           environment for the training processes (repeatable), e.g. LIBTPU_INIT_ARGS=...
  --dry-run                 print the commands, run nothing

Training (python -m wildactor_jax.train on every worker):
  --config PATH[:ARG]       config file relative to the repo root, with optional :ARG
  --workdir gs://...        run directory; must be on GCS (every worker writes checkpoints there)
  --config.KEY=VALUE        config overrides, passed through unchanged (repeatable), except:
  --config.data.records=gs://BUCKET/PATH
                            ArrayRecord/Grain read local files: BUCKET is mounted read-only with
                            gcsfuse at $GCSFUSE_ROOT/BUCKET on every worker and the override
                            becomes $GCSFUSE_ROOT/BUCKET/PATH
  --mount-bucket BUCKET     also mount BUCKET there (repeatable), e.g. for a config file that
                            names $GCSFUSE_ROOT/BUCKET/... itself
  -- ARGS                   anything after -- is passed to the training command as is

Cleanup: unless --keep/--existing, the slice (or queued resource) is deleted on exit, also when
a step fails or the script is interrupted.
EOF
}



NAME="" ZONE="" ACCEL="" VERSION="" PROJECT="" SPOT=0 QUEUED=0 EXISTING=0 KEEP=0 SKIP_INSTALL=0
REMOTE_DIR="wildactor_jax" LOG_DIR="" DRY_RUN=0
ENVS=() EXTRA=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --name) need "$@"; NAME=$2; shift 2 ;;
    --zone) need "$@"; ZONE=$2; shift 2 ;;
    --accelerator-type) need "$@"; ACCEL=$2; shift 2 ;;
    --version) need "$@"; VERSION=$2; shift 2 ;;
    --project) need "$@"; PROJECT=$2; shift 2 ;;
    --spot) SPOT=1; shift ;;
    --queued) QUEUED=1; shift ;;
    --existing) EXISTING=1; shift ;;
    --keep) KEEP=1; shift ;;
    --skip-install) SKIP_INSTALL=1; shift ;;
    --remote-dir) need "$@"; REMOTE_DIR=$2; shift 2 ;;
    --log-dir) need "$@"; LOG_DIR=$2; shift 2 ;;
    --env) need "$@"; ENVS+=("$2"); shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; EXTRA+=("$@"); break ;;
    *) train_arg "$@" || die "unknown argument: $1 (see --help)"; shift "$TRAIN_SHIFT" ;;
  esac
done

# --- validation (one line each, exit 2) ---
[[ -n $NAME ]] || die "--name is required"
[[ $NAME =~ ^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$ ]] || die "--name $NAME: use lowercase letters, digits and '-' (at most 63, starting with a letter)"
[[ -n $ZONE ]] || die "--zone is required"
[[ $ZONE =~ ^[a-z]+-[a-z]+[0-9]+-[a-z]$ ]] || die "--zone $ZONE: expected a zone such as us-east5-a"
[[ -n $ACCEL ]] || die "--accelerator-type is required"
[[ $ACCEL =~ ^(v2|v3|v4|v5p|v5litepod|v6e|tpu7x)-[0-9]+$ ]] || die "--accelerator-type $ACCEL: expected <v4|v5p|v5litepod|v6e|tpu7x>-<count>, e.g. v5p-64"
if [[ -z $VERSION ]]; then
  case "${ACCEL%%-*}" in
    v5p) VERSION=v2-alpha-tpuv5 ;;
    v5litepod) VERSION=v2-alpha-tpuv5-lite ;;
    v6e) VERSION=v2-alpha-tpuv6e ;;
    v4) VERSION=tpu-ubuntu2204-base ;;
    *) die "--version is required for $ACCEL (no default runtime version known for ${ACCEL%%-*})" ;;
  esac
fi
[[ $QUEUED == 0 || $EXISTING == 0 ]] || die "--queued and --existing exclude each other"
[[ $REMOTE_DIR =~ ^[A-Za-z0-9_.][A-Za-z0-9_./-]*$ && $REMOTE_DIR != *..* ]] || die "--remote-dir $REMOTE_DIR: use a plain path relative to the home directory"
for kv in ${ENVS[@]+"${ENVS[@]}"}; do
  [[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env $kv: expected KEY=VALUE"
done
check_config configs/wildactor_wan22_5b.py:v5p-64
[[ -n $WORKDIR ]] || die "--workdir is required (gs://BUCKET/PATH)"
[[ $WORKDIR =~ ^gs://[^/]+(/.*)?$ ]] || die "--workdir $WORKDIR: must be a gs:// path (all workers of a slice write checkpoints there)"
mount_records

GCLOUD_FLAGS=("--zone=$ZONE")
[[ -z $PROJECT ]] || GCLOUD_FLAGS+=("--project=$PROJECT")
QR_ID="$NAME-qr"
[[ -n $LOG_DIR ]] || LOG_DIR="logs/tpu_vm-$NAME-$(date +%Y%m%d-%H%M%S)"
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/tpu_vm.XXXXXX")
TARBALL="$STAGE/wildactor_jax.tgz"

# --- cleanup: delete the slice whatever happens after it may exist ---
DELETE_ON_EXIT=0
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ $DELETE_ON_EXIT == 1 ]]; then
    echo "# cleanup: deleting the slice (pass --keep to keep it)"
    if [[ $QUEUED == 1 ]]; then
      # --force also deletes the node the queued resource created.
      run gcloud compute tpus queued-resources delete "$QR_ID" "${GCLOUD_FLAGS[@]}" --force --quiet || rc=1
    else
      run gcloud compute tpus tpu-vm delete "$NAME" "${GCLOUD_FLAGS[@]}" --quiet || rc=1
    fi
  fi
  rm -rf "$STAGE"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. create ---
if [[ $EXISTING == 0 ]]; then
  [[ $KEEP == 1 ]] || DELETE_ON_EXIT=1
  CAPACITY=()
  [[ $SPOT == 0 ]] || CAPACITY=(--spot)
  if [[ $QUEUED == 1 ]]; then
    echo "# 1. create the slice through a queued resource and wait until it is ACTIVE"
    run gcloud compute tpus queued-resources create "$QR_ID" "${GCLOUD_FLAGS[@]}" --node-id="$NAME" \
      --accelerator-type="$ACCEL" --runtime-version="$VERSION" ${CAPACITY[@]+"${CAPACITY[@]}"}
    DESCRIBE=(gcloud compute tpus queued-resources describe "$QR_ID" "${GCLOUD_FLAGS[@]}" '--format=value(state.state)')
    show "${DESCRIBE[@]}"
    echo "# (repeated every 60 s until ACTIVE; FAILED or SUSPENDED stops the launch)"
    if [[ $DRY_RUN == 0 ]]; then
      while true; do
        STATE=$("${DESCRIBE[@]}")
        echo "# queued resource $QR_ID: $STATE"
        case "$STATE" in
          ACTIVE) break ;;
          FAILED|SUSPENDED|SUSPENDING) die "queued resource $QR_ID is $STATE" ;;
        esac
        sleep 60
      done
    fi
  else
    echo "# 1. create the slice"
    run gcloud compute tpus tpu-vm create "$NAME" "${GCLOUD_FLAGS[@]}" --accelerator-type="$ACCEL" \
      --version="$VERSION" ${CAPACITY[@]+"${CAPACITY[@]}"}
  fi
fi

# --- 2. copy the code and install it in a venv on every worker ---
if [[ $SKIP_INSTALL == 0 ]]; then
  echo "# 2. copy this checkout (without .venv/.git) to all workers and install it"
  run tar -czf "$TARBALL" --exclude=./.venv --exclude=./.git --exclude=./logs --exclude=./demo_out \
    --exclude=__pycache__ --exclude='*.egg-info' --exclude=.pytest_cache -C "$REPO_ROOT" .
  run gcloud compute tpus tpu-vm scp "$TARBALL" "$NAME:wildactor_jax.tgz" "${GCLOUD_FLAGS[@]}" --worker=all
  # One source of pins: setup.py's `tpu` extra (jax[tpu], jaxlib and the libtpu jax declares).
  D=$(printf '%q' "$REMOTE_DIR")
  INSTALL="set -euo pipefail; mkdir -p $D && tar -xzf wildactor_jax.tgz -C $D && rm -f wildactor_jax.tgz && cd $D"
  INSTALL+=" && { python3 -m venv .venv || { sudo apt-get update -q && sudo apt-get install -y -q python3-venv && python3 -m venv .venv; }; }"
  INSTALL+=" && .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e '.[tpu]'"
  INSTALL+=" && .venv/bin/python -c 'from importlib.metadata import version as v; print(\"jax\", v(\"jax\"), \"libtpu\", v(\"libtpu\"))'"
  echo "# on each worker: $INSTALL"
  run gcloud compute tpus tpu-vm ssh "$NAME" "${GCLOUD_FLAGS[@]}" --worker=all --command="$INSTALL"
fi

# --- 2b. mount the buckets the input pipeline reads (every launch: mounts do not survive reboots) ---
MOUNT=$(mount_command)
if [[ -n $MOUNT ]]; then
  echo "# 2b. mount $(printf 'gs://%s ' "${MOUNTS[@]}")read-only with gcsfuse under $GCSFUSE_ROOT on all workers"
  run gcloud compute tpus tpu-vm ssh "$NAME" "${GCLOUD_FLAGS[@]}" --worker=all --command="set -eo pipefail; $MOUNT"
fi

# --- 3. coordinator address, 4. train: the same command on all workers ---
echo "# 3. look up worker 0's internal IP: the jax.distributed coordinator (port $JAX_COORDINATOR_PORT)"
IP_CMD=(gcloud compute tpus tpu-vm describe "$NAME" "${GCLOUD_FLAGS[@]}" '--format=value(networkEndpoints[0].ipAddress)')
show "${IP_CMD[@]}"
if [[ $DRY_RUN == 1 ]]; then
  WORKER0_IP="WORKER0_IP"
else
  WORKER0_IP=$("${IP_CMD[@]}")
  [[ -n $WORKER0_IP ]] || die "could not read worker 0's IP of $NAME"
fi
TRAIN=(.venv/bin/python -m wildactor_jax.train --config "$CONFIG" --workdir "$WORKDIR"
       ${OVERRIDES[@]+"${OVERRIDES[@]}"} ${EXTRA[@]+"${EXTRA[@]}"})
# JAX_COORDINATOR_ADDRESS makes train_lib/distributed.py call jax.distributed.initialize(), which
# takes the process count and id from the TPU metadata.
ENV_ARGS=("JAX_COORDINATOR_ADDRESS=$WORKER0_IP:$JAX_COORDINATOR_PORT" ${ENVS[@]+"${ENVS[@]}"})
REMOTE="cd $(printf '%q' "$REMOTE_DIR") && $(printf '%q ' env "${ENV_ARGS[@]}" "${TRAIN[@]}")"
REMOTE=${REMOTE% }
echo "# 4. train on all workers; per-worker logs go to $LOG_DIR/<worker>.log"
echo "# on each worker: $REMOTE"
run mkdir -p "$LOG_DIR"
run gcloud compute tpus tpu-vm ssh "$NAME" "${GCLOUD_FLAGS[@]}" --worker=all --command="$REMOTE" \
  --output-directory="$LOG_DIR"
echo "# 4. done; per-worker logs in $LOG_DIR"
