#!/usr/bin/env bash
# Train on several GPU hosts: one training process per host, all local GPUs each, joined by
# jax.distributed. Two ways to start the processes:
#
#   --hosts h0,h1,...   plain ssh to each host (needs passwordless ssh and this checkout, with its
#                       venv, at --remote-dir on every host); host 0 is the coordinator. Each
#                       process gets JAX_COORDINATOR_ADDRESS=h0:PORT, JAX_NUM_PROCESSES=N and
#                       JAX_PROCESS_ID=i; logs come back to --log-dir (one file per process).
#   --slurm             srun, one task per node (inside an salloc/sbatch allocation or with
#                       --nodes): JAX reads the coordinator (first node of the step), process count
#                       and id from SLURM; the launcher sets JAX_COORDINATOR_PORT, makes all
#                       --gpus-per-node GPUs visible to the one process (JAX_LOCAL_DEVICE_IDS;
#                       otherwise JAX would give it only GPU SLURM_LOCALID) and exports
#                       JAX_NUM_PROCESSES/JAX_PROCESS_ID from SLURM_NTASKS/SLURM_PROCID.
#
#   launch/gpu_multinode.sh --hosts gpu-a,gpu-b --config configs/wildactor_wan22_5b.py:8xh100 \
#     --workdir /shared/runs/wa1 --config.train.steps=1000
#
# Contract with wildactor_jax/train_lib/distributed.py (ssh mode): JAX 0.10.2 itself reads only
# JAX_COORDINATOR_ADDRESS from the environment (plus JAX_COORDINATOR_PORT/JAX_LOCAL_DEVICE_IDS);
# without a detected cluster the process count and id must be passed to
# jax.distributed.initialize(), i.e. from JAX_NUM_PROCESSES and JAX_PROCESS_ID.
#
# The workdir must be visible to every host (a shared filesystem or gs://): Orbax writes one
# checkpoint from all processes.
set -euo pipefail

PROG=$(basename "$0")
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=launch/common.sh
source "$REPO_ROOT/launch/common.sh"

usage() {
  cat <<EOF
Usage: $PROG (--hosts H0,H1,... | --slurm [--nodes N]) --config configs/X.py[:ARG] --workdir DIR
              [options] [--config.KEY=VALUE ...] [-- TRAIN_ARGS ...]

Processes:
  --hosts H0,H1,...        ssh to these hosts ([user@]host), one process each; H0 coordinates
  --slurm                  start the processes with srun, one task per node
  --nodes N                (--slurm) number of nodes (default: \$SLURM_JOB_NUM_NODES)
  --srun-arg ARG           (--slurm) extra srun argument, repeatable (e.g. --srun-arg=--partition=gpu)
  --ssh-opt OPT            (--hosts) extra ssh option, repeatable (e.g. --ssh-opt=-p2222)
  --coordinator HOST       coordinator host as the other hosts reach it (default: H0's host name;
                           with --slurm: the step's first node, chosen by JAX)
  --port PORT              coordinator port (default 8476)
  --gpus-per-node G        GPUs per host, all visible to its one process (default 8)
  --remote-dir DIR         checkout on each host (default: this checkout's path)
  --python PY              interpreter, relative to --remote-dir or absolute (default .venv/bin/python)
  --log-dir DIR            (--hosts) local directory for per-process logs (default logs/gpu_multinode-TIME)
  --env KEY=VALUE          environment for the training processes, repeatable (e.g. NCCL_DEBUG=WARN)
  --dry-run                print the commands, run nothing

Training (python -m wildactor_jax.train, the same on every host):
  --config PATH[:ARG]      config file relative to the repo root, with optional :ARG
  --workdir DIR            run directory, shared by all hosts (shared filesystem or gs://)
  --config.KEY=VALUE       config overrides, passed through unchanged (repeatable)
  -- ARGS                  anything after -- is passed to the training command as is
EOF
}


HOSTS_ARG="" SLURM=0 NODES="" COORDINATOR="" PORT=8476 GPUS=8 REMOTE_DIR="$REPO_ROOT"
PYTHON=.venv/bin/python LOG_DIR="" DRY_RUN=0
SRUN_ARGS=() SSH_OPTS=() ENVS=() EXTRA=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --hosts) need "$@"; HOSTS_ARG=$2; shift 2 ;;
    --slurm) SLURM=1; shift ;;
    --nodes) need "$@"; NODES=$2; shift 2 ;;
    --srun-arg=*) SRUN_ARGS+=("${1#--srun-arg=}"); shift ;;
    --srun-arg) [[ $# -ge 2 ]] || die "--srun-arg needs a value"; SRUN_ARGS+=("$2"); shift 2 ;;
    --ssh-opt=*) SSH_OPTS+=("${1#--ssh-opt=}"); shift ;;
    --ssh-opt) [[ $# -ge 2 ]] || die "--ssh-opt needs a value"; SSH_OPTS+=("$2"); shift 2 ;;
    --coordinator) need "$@"; COORDINATOR=$2; shift 2 ;;
    --port) need "$@"; PORT=$2; shift 2 ;;
    --gpus-per-node) need "$@"; GPUS=$2; shift 2 ;;
    --remote-dir) need "$@"; REMOTE_DIR=$2; shift 2 ;;
    --python) need "$@"; PYTHON=$2; shift 2 ;;
    --log-dir) need "$@"; LOG_DIR=$2; shift 2 ;;
    --env) need "$@"; ENVS+=("$2"); shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; EXTRA+=("$@"); break ;;
    *) train_arg "$@" || die "unknown argument: $1 (see --help)"; shift "$TRAIN_SHIFT" ;;
  esac
done

# --- validation (one line each, exit 2) ---
if [[ $SLURM == 1 ]]; then
  [[ -z $HOSTS_ARG ]] || die "--hosts and --slurm exclude each other"
  [[ -n $NODES ]] || NODES=${SLURM_JOB_NUM_NODES:-}
  [[ -n $NODES ]] || die "--slurm needs --nodes N (or run inside an salloc/sbatch allocation)"
  [[ $NODES =~ ^[1-9][0-9]*$ ]] || die "--nodes $NODES: expected a positive integer"
  [[ ${#SSH_OPTS[@]} -eq 0 && -z $LOG_DIR ]] || die "--ssh-opt/--log-dir apply to --hosts only (srun collects the output)"
else
  [[ -n $HOSTS_ARG ]] || die "give --hosts H0,H1,... (ssh) or --slurm (srun)"
  [[ -z $NODES && ${#SRUN_ARGS[@]} -eq 0 ]] || die "--nodes/--srun-arg apply to --slurm only"
  IFS=, read -r -a HOSTS <<<"$HOSTS_ARG"
  [[ ${#HOSTS[@]} -ge 1 ]] || die "--hosts $HOSTS_ARG: no host given"
  SEEN=","
  for h in "${HOSTS[@]}"; do
    [[ $h =~ ^([A-Za-z0-9_.-]+@)?[A-Za-z0-9_.-]+$ ]] || die "--hosts: bad host name '$h' (expected [user@]host, comma-separated)"
    [[ $SEEN != *",${h#*@},"* ]] || die "--hosts: ${h#*@} appears twice (one process per host uses all its GPUs)"
    SEEN+="${h#*@},"
  done
  [[ -n $COORDINATOR ]] || COORDINATOR=${HOSTS[0]#*@}
fi
[[ -z $COORDINATOR || $COORDINATOR =~ ^[A-Za-z0-9_.-]+$ ]] || die "--coordinator $COORDINATOR: expected a host name or IP (no port: see --port)"
[[ $PORT =~ ^[0-9]+$ ]] && (( PORT >= 1 && PORT <= 65535 )) || die "--port $PORT: expected 1-65535"
[[ $GPUS =~ ^[1-9][0-9]*$ ]] || die "--gpus-per-node $GPUS: expected a positive integer"
for kv in ${ENVS[@]+"${ENVS[@]}"}; do
  [[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env $kv: expected KEY=VALUE"
done
check_config configs/wildactor_wan22_5b.py:8xh100
[[ ${#MOUNTS[@]} -eq 0 ]] || die "--mount-bucket: not done by this launcher; mount the bucket with gcsfuse on every host (or copy the records to the shared filesystem) and pass that path"
[[ -n $WORKDIR ]] || die "--workdir is required (a directory every host sees, or gs://...)"

TRAIN=("$PYTHON" -m wildactor_jax.train --config "$CONFIG" --workdir "$WORKDIR"
       ${OVERRIDES[@]+"${OVERRIDES[@]}"} ${EXTRA[@]+"${EXTRA[@]}"})

# --- SLURM: one srun step; JAX's SLURM detection supplies coordinator, count and id ---
if [[ $SLURM == 1 ]]; then
  DEVICE_IDS=0
  for ((g = 1; g < GPUS; g++)); do DEVICE_IDS+=",$g"; done
  JAX_ENV=(JAX_COORDINATOR_PORT="$PORT" JAX_LOCAL_DEVICE_IDS="$DEVICE_IDS")
  [[ -z $COORDINATOR ]] || JAX_ENV+=(JAX_COORDINATOR_ADDRESS="$COORDINATOR:$PORT")
  # Single quotes on purpose: SLURM_* expand in each task, not here.
  PER_TASK='export JAX_NUM_PROCESSES="$SLURM_NTASKS" JAX_PROCESS_ID="$SLURM_PROCID"; exec "$@"'
  CMD=(srun --nodes="$NODES" --ntasks-per-node=1 --chdir="$REMOTE_DIR" ${SRUN_ARGS[@]+"${SRUN_ARGS[@]}"}
       bash -c "$PER_TASK" wildactor_task env "${JAX_ENV[@]}" ${ENVS[@]+"${ENVS[@]}"} "${TRAIN[@]}")
  echo "# $NODES processes (one per node, $GPUS GPUs each) under srun"
  show "${CMD[@]}"
  [[ $DRY_RUN == 1 ]] || exec "${CMD[@]}"
  exit 0
fi

# --- ssh: one background ssh per host, each with its own process id ---
N=${#HOSTS[@]}
[[ -n $LOG_DIR ]] || LOG_DIR="logs/gpu_multinode-$(date +%Y%m%d-%H%M%S)"
[[ $WORKDIR == gs://* || $N == 1 ]] || echo "# note: $WORKDIR must be the same shared directory on all $N hosts"
echo "# $N processes, coordinator $COORDINATOR:$PORT; logs in $LOG_DIR/process-<id>-<host>.log"
show mkdir -p "$LOG_DIR"
[[ $DRY_RUN == 1 ]] || mkdir -p "$LOG_DIR"

PIDS=()
stop_all() {
  local pid
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill "$pid" 2>/dev/null || true; done
}
trap 'echo "$PROG: interrupted; stopping the ssh sessions (remote processes may need a manual kill)" >&2; stop_all; exit 130' INT TERM

for i in "${!HOSTS[@]}"; do
  host=${HOSTS[$i]}
  JAX_ENV=(JAX_COORDINATOR_ADDRESS="$COORDINATOR:$PORT" JAX_NUM_PROCESSES="$N" JAX_PROCESS_ID="$i")
  REMOTE="cd $(printf '%q' "$REMOTE_DIR") && exec $(printf '%q ' env "${JAX_ENV[@]}" ${ENVS[@]+"${ENVS[@]}"} "${TRAIN[@]}")"
  REMOTE=${REMOTE% }
  LOG="$LOG_DIR/process-$i-${host#*@}.log"
  CMD=(ssh -o BatchMode=yes ${SSH_OPTS[@]+"${SSH_OPTS[@]}"} "$host" "$REMOTE")
  echo "# process $i on $host: $REMOTE"
  echo "$(show "${CMD[@]}") > $(printf '%q' "$LOG") 2>&1 &"
  if [[ $DRY_RUN == 0 ]]; then
    "${CMD[@]}" </dev/null >"$LOG" 2>&1 &
    PIDS+=($!)
  fi
done
[[ $DRY_RUN == 0 ]] || { echo "+ wait  # for all $N processes; exit status non-zero if any failed"; exit 0; }

# Poll rather than wait in order: when one process fails the others would block in a collective,
# so stop them (the ssh sessions; see the trap note) and report.
FAILED=0 LEFT=$N DONE=()
while [[ $LEFT -gt 0 ]]; do
  for i in "${!PIDS[@]}"; do
    [[ -z ${DONE[$i]:-} ]] || continue
    kill -0 "${PIDS[$i]}" 2>/dev/null && continue
    rc=0; wait "${PIDS[$i]}" || rc=$?
    DONE[$i]=1; LEFT=$((LEFT - 1))
    if [[ $rc == 0 ]]; then
      echo "# process $i (${HOSTS[$i]}) finished"
    else
      echo "$PROG: process $i (${HOSTS[$i]}) exited with $rc; see $LOG_DIR/process-$i-${HOSTS[$i]#*@}.log" >&2
      if [[ $FAILED == 0 && $LEFT -gt 0 ]]; then
        echo "$PROG: stopping the other $LEFT ssh session(s)" >&2
        stop_all
      fi
      FAILED=1
    fi
  done
  [[ $LEFT == 0 ]] || sleep 1
done
exit "$FAILED"
