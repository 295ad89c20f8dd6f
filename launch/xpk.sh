#!/usr/bin/env bash
# Train on a GKE TPU cluster through xpk (https://github.com/AI-Hypercomputer/xpk): one workload of
# --num-slices slices runs the training command on every host; xpk/GKE set the TPU and multislice
# environment (TPU_WORKER_HOSTNAMES, MEGASCALE_*) that jax.distributed.initialize() reads.
#
#   launch/xpk.sh --cluster my-v5p --workload wa-run1 --tpu-type v5p-64 --num-slices 2 \
#     --docker-image gcr.io/PROJECT/wildactor_jax:latest \
#     --config configs/wildactor_wan22_5b.py:v5p-64 --workdir gs://BUCKET/runs/wa1
#
# The code reaches the hosts either in a prebuilt image (--docker-image: this checkout installed
# with `pip install -e .[tpu]`, working directory = the checkout) or by letting xpk build one from
# this checkout (--script-dir, on top of --base-docker-image); the command then installs it first.
#
# Unverified (no xpk available when this was written; from memory of xpk's README): the flags
# --base-docker-image/--script-dir and that xpk copies --script-dir into the image's working
# directory; --priority values; `xpk workload list`/`delete` taking --cluster and --workload.
set -euo pipefail

PROG=$(basename "$0")
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=launch/common.sh
source "$REPO_ROOT/launch/common.sh"

usage() {
  cat <<EOF
Usage: $PROG --cluster CLUSTER --workload NAME --tpu-type TYPE
              (--docker-image IMAGE | --script-dir DIR [--base-docker-image IMAGE])
              --config configs/X.py[:ARG] --workdir gs://BUCKET/PATH
              [options] [--config.KEY=VALUE ...] [-- TRAIN_ARGS ...]
       $PROG --delete --cluster CLUSTER --workload NAME [--project P] [--zone Z] [--dry-run]

Workload:
  --cluster CLUSTER         existing xpk GKE cluster
  --workload NAME           workload name (lowercase letters, digits, '-')
  --tpu-type TYPE           slice type, e.g. v5p-64, v6e-256, v5litepod-16
  --num-slices N            slices joined over DCN (default 1)
  --docker-image IMAGE      image with this checkout installed (pip install -e '.[tpu]')
  --script-dir DIR          let xpk build an image from DIR (this checkout) ...
  --base-docker-image IMG   ... on top of IMG (default python:3.11-slim); installs at start
  --project PROJECT         GCP project (default: gcloud's core/project)
  --zone ZONE               cluster zone (default: gcloud's compute/zone)
  --priority P              very-low|low|medium|high|very-high
  --max-restarts N          restarts of the whole workload after a failure (resumes from checkpoint)
  --env KEY=VALUE           environment for the training processes (repeatable)
  --delete                  delete the workload instead of creating it
  --dry-run                 print the commands, run nothing

Training (python -m wildactor_jax.train on every host):
  --config PATH[:ARG]       config file relative to the repo root, with optional :ARG
  --workdir gs://...        run directory; must be on GCS
  --config.KEY=VALUE        config overrides, passed through unchanged (repeatable), except:
  --config.data.records=gs://BUCKET/PATH
                            ArrayRecord/Grain read local files: BUCKET is mounted read-only with
                            gcsfuse at $GCSFUSE_ROOT/BUCKET in every container and the override
                            becomes $GCSFUSE_ROOT/BUCKET/PATH
  --mount-bucket BUCKET     also mount BUCKET there (repeatable)
  -- ARGS                   anything after -- is passed to the training command as is
EOF
}


CLUSTER="" WORKLOAD="" TPU_TYPE="" NUM_SLICES=1 DOCKER_IMAGE="" SCRIPT_DIR="" BASE_IMAGE=""
PROJECT="" ZONE="" PRIORITY="" MAX_RESTARTS="" DELETE=0 DRY_RUN=0
ENVS=() EXTRA=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --cluster) need "$@"; CLUSTER=$2; shift 2 ;;
    --workload) need "$@"; WORKLOAD=$2; shift 2 ;;
    --tpu-type) need "$@"; TPU_TYPE=$2; shift 2 ;;
    --num-slices) need "$@"; NUM_SLICES=$2; shift 2 ;;
    --docker-image) need "$@"; DOCKER_IMAGE=$2; shift 2 ;;
    --script-dir) need "$@"; SCRIPT_DIR=$2; shift 2 ;;
    --base-docker-image) need "$@"; BASE_IMAGE=$2; shift 2 ;;
    --project) need "$@"; PROJECT=$2; shift 2 ;;
    --zone) need "$@"; ZONE=$2; shift 2 ;;
    --priority) need "$@"; PRIORITY=$2; shift 2 ;;
    --max-restarts) need "$@"; MAX_RESTARTS=$2; shift 2 ;;
    --env) need "$@"; ENVS+=("$2"); shift 2 ;;
    --delete) DELETE=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; EXTRA+=("$@"); break ;;
    *) train_arg "$@" || die "unknown argument: $1 (see --help)"; shift "$TRAIN_SHIFT" ;;
  esac
done

# --- validation (one line each, exit 2) ---
[[ -n $CLUSTER ]] || die "--cluster is required"
[[ $CLUSTER =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] || die "--cluster $CLUSTER: use lowercase letters, digits and '-'"
[[ -n $WORKLOAD ]] || die "--workload is required"
[[ $WORKLOAD =~ ^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$ ]] || die "--workload $WORKLOAD: use lowercase letters, digits and '-' (at most 40, starting with a letter)"
[[ -z $ZONE || $ZONE =~ ^[a-z]+-[a-z]+[0-9]+-[a-z]$ ]] || die "--zone $ZONE: expected a zone such as us-east5-a"
COMMON=(--cluster="$CLUSTER")
[[ -z $PROJECT ]] || COMMON+=(--project="$PROJECT")
[[ -z $ZONE ]] || COMMON+=(--zone="$ZONE")

if [[ $DELETE == 1 ]]; then
  run xpk workload delete --workload="$WORKLOAD" "${COMMON[@]}"
  exit 0
fi

[[ -n $TPU_TYPE ]] || die "--tpu-type is required"
[[ $TPU_TYPE =~ ^(v4|v5p|v5litepod|v6e|tpu7x)-[0-9]+$ ]] || die "--tpu-type $TPU_TYPE: expected <v4|v5p|v5litepod|v6e|tpu7x>-<count>, e.g. v5p-64"
[[ $NUM_SLICES =~ ^[1-9][0-9]*$ ]] || die "--num-slices $NUM_SLICES: expected a positive integer"
[[ -z $MAX_RESTARTS || $MAX_RESTARTS =~ ^[0-9]+$ ]] || die "--max-restarts $MAX_RESTARTS: expected a non-negative integer"
case "$PRIORITY" in ""|very-low|low|medium|high|very-high) ;; *) die "--priority $PRIORITY: expected very-low|low|medium|high|very-high" ;; esac
if [[ -n $DOCKER_IMAGE ]]; then
  [[ -z $SCRIPT_DIR && -z $BASE_IMAGE ]] || die "--docker-image excludes --script-dir/--base-docker-image"
else
  [[ -n $SCRIPT_DIR ]] || die "give --docker-image IMAGE (code installed) or --script-dir DIR (xpk builds the image)"
  [[ -f $SCRIPT_DIR/setup.py ]] || die "--script-dir $SCRIPT_DIR: no setup.py there (expected this checkout)"
  [[ -n $BASE_IMAGE ]] || BASE_IMAGE=python:3.11-slim
fi
for kv in ${ENVS[@]+"${ENVS[@]}"}; do
  [[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env $kv: expected KEY=VALUE"
done
check_config configs/wildactor_wan22_5b.py:v5p-64
[[ -n $WORKDIR ]] || die "--workdir is required (gs://BUCKET/PATH)"
[[ $WORKDIR =~ ^gs://[^/]+(/.*)?$ ]] || die "--workdir $WORKDIR: must be a gs:// path (every host writes checkpoints there)"
mount_records

# The command every host runs (a shell string: xpk runs it with bash -c in the container).
TRAIN=(python -m wildactor_jax.train --config "$CONFIG" --workdir "$WORKDIR"
       ${OVERRIDES[@]+"${OVERRIDES[@]}"} ${EXTRA[@]+"${EXTRA[@]}"})
COMMAND=""
# Buckets for the input pipeline are mounted inside the container first (xpk runs TPU containers
# privileged, which FUSE needs).
MOUNT=$(mount_command)
[[ -z $MOUNT ]] || COMMAND="$MOUNT && "
[[ -n $DOCKER_IMAGE ]] || COMMAND+="pip install -q -e '.[tpu]' && "
if [[ ${#ENVS[@]} -gt 0 ]]; then
  COMMAND+=$(printf '%q ' env "${ENVS[@]}" "${TRAIN[@]}")
else
  COMMAND+=$(printf '%q ' "${TRAIN[@]}")
fi
COMMAND=${COMMAND% }

CREATE=(xpk workload create "${COMMON[@]}" --workload="$WORKLOAD" --tpu-type="$TPU_TYPE"
        --num-slices="$NUM_SLICES")
if [[ -n $DOCKER_IMAGE ]]; then
  CREATE+=(--docker-image="$DOCKER_IMAGE")
else
  CREATE+=(--base-docker-image="$BASE_IMAGE" --script-dir="$SCRIPT_DIR")
fi
[[ -z $PRIORITY ]] || CREATE+=(--priority="$PRIORITY")
[[ -z $MAX_RESTARTS ]] || CREATE+=(--max-restarts="$MAX_RESTARTS")
CREATE+=(--command="$COMMAND")

echo "# on each host: $COMMAND"
run "${CREATE[@]}"
echo "# follow it:   $(show xpk workload list "${COMMON[@]}" | cut -c3-)"
echo "# logs:        Cloud Logging / kubectl logs of the workload's pods (xpk prints the link)"
echo "# delete it:   $(show "$0" --delete --cluster "$CLUSTER" --workload "$WORKLOAD" ${PROJECT:+--project "$PROJECT"} ${ZONE:+--zone "$ZONE"} | cut -c3-)"
