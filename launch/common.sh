# Shared by the launchers (sourced, not run): errors, dry-run display, and the training
# command's own arguments (--config, --workdir, --config.KEY=VALUE overrides). The sourcing
# script sets PROG and REPO_ROOT first, and DRY_RUN before calling `run`.

die() { echo "$PROG: error: $*" >&2; exit 2; }

# Show a command exactly as it will run (printf %q quoting), then run it unless --dry-run.
show() { local s; s=$(printf '%q ' "$@"); echo "+ ${s% }"; }
run() { show "$@"; if [[ $DRY_RUN == 1 ]]; then return 0; fi; "$@"; }

need() { [[ $# -ge 2 && -n $2 && $2 != --* ]] || die "$1 needs a value"; }

CONFIG="" WORKDIR="" OVERRIDES=() TRAIN_SHIFT=0 MOUNTS=()
# Buckets are mounted (read-only, gcsfuse) at $GCSFUSE_ROOT/BUCKET on every worker, as MaxText
# does for its datasets: ArrayRecord/Grain read local files only.
GCSFUSE_ROOT=/tmp/gcsfuse

# train_arg "$@": consumes one training argument (sets TRAIN_SHIFT); returns 1 if "$1" is not one.
train_arg() {
  case "$1" in
    --config) need "$@"; CONFIG=$2; TRAIN_SHIFT=2 ;;
    --config=*) CONFIG=${1#--config=}; TRAIN_SHIFT=1 ;;
    --workdir) need "$@"; WORKDIR=$2; TRAIN_SHIFT=2 ;;
    --workdir=*) WORKDIR=${1#--workdir=}; TRAIN_SHIFT=1 ;;
    --mount-bucket) need "$@"; add_mount "$2"; TRAIN_SHIFT=2 ;;
    --mount-bucket=*) add_mount "${1#--mount-bucket=}"; TRAIN_SHIFT=1 ;;
    --config.*=*) OVERRIDES+=("$1"); TRAIN_SHIFT=1 ;;
    --config.*) die "override $1 needs the form --config.KEY=VALUE" ;;
    *) return 1 ;;
  esac
}

# check_config EXAMPLE: --config is given, a .py path relative to the repo root, and exists.
check_config() {
  [[ -n $CONFIG ]] || die "--config is required (configs/X.py[:ARG])"
  local file=${CONFIG%%:*}
  [[ $file == *.py && $file != /* ]] || die "--config $CONFIG: expected a .py path relative to the repo root, e.g. $1"
  [[ -f $REPO_ROOT/$file ]] || die "--config $CONFIG: $file not found in this checkout"
}

# add_mount [gs://]BUCKET: BUCKET will be mounted on every worker (once, whatever the repeats).
add_mount() {
  local b
  set -- "${1#gs://}"
  set -- "${1%/}"
  for b in ${MOUNTS[@]+"${MOUNTS[@]}"}; do [[ $b != "$1" ]] || return 0; done
  MOUNTS+=("$1")
}

# mount_records: a --config.data.records=gs://BUCKET/PATH override becomes the same path in
# BUCKET's gcsfuse mount, and BUCKET is mounted. Every mounted bucket name is checked.
mount_records() {
  local i rest b
  for i in ${OVERRIDES[@]+"${!OVERRIDES[@]}"}; do
    [[ ${OVERRIDES[$i]} == --config.data.records=gs://* ]] || continue
    rest=${OVERRIDES[$i]#--config.data.records=gs://}
    add_mount "${rest%%/*}"
    OVERRIDES[$i]="--config.data.records=$GCSFUSE_ROOT/$rest"
  done
  for b in ${MOUNTS[@]+"${MOUNTS[@]}"}; do
    [[ $b =~ ^[a-z0-9][-a-z0-9_.]{1,220}[a-z0-9]$ ]] || die "bucket '$b': expected a GCS bucket name (lowercase letters, digits, '-', '_', '.')"
  done
}

# mount_command: one shell command that installs gcsfuse where it is missing (Google's apt
# repository, as in gcsfuse's install guide) and mounts each bucket read-only; empty if none.
mount_command() {
  [[ ${#MOUNTS[@]} -gt 0 ]] || return 0
  local b d cmd='s=; [ "$(id -u)" = 0 ] || s=sudo; command -v gcsfuse >/dev/null || { . /etc/os-release'
  cmd+=' && echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-$VERSION_CODENAME main" | $s tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null'
  cmd+=' && curl -fsS https://packages.cloud.google.com/apt/doc/apt-key.gpg | $s tee /usr/share/keyrings/cloud.google.asc >/dev/null'
  cmd+=' && $s apt-get update -q && $s apt-get install -y -q gcsfuse; }'
  for b in "${MOUNTS[@]}"; do
    d=$GCSFUSE_ROOT/$b
    cmd+=" && mkdir -p $d && { mountpoint -q $d || gcsfuse --implicit-dirs -o ro $b $d; }"
  done
  printf '%s' "$cmd"
}
