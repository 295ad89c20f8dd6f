# Shared by the launchers (sourced, not run): errors, dry-run display, and the training
# command's own arguments (--config, --workdir, --config.KEY=VALUE overrides). The sourcing
# script sets PROG and REPO_ROOT first, and DRY_RUN before calling `run`.

die() { echo "$PROG: error: $*" >&2; exit 2; }

# Show a command exactly as it will run (printf %q quoting), then run it unless --dry-run.
show() { local s; s=$(printf '%q ' "$@"); echo "+ ${s% }"; }
run() { show "$@"; if [[ $DRY_RUN == 1 ]]; then return 0; fi; "$@"; }

need() { [[ $# -ge 2 && -n $2 && $2 != --* ]] || die "$1 needs a value"; }

CONFIG="" WORKDIR="" OVERRIDES=() TRAIN_SHIFT=0

# train_arg "$@": consumes one training argument (sets TRAIN_SHIFT); returns 1 if "$1" is not one.
train_arg() {
  case "$1" in
    --config) need "$@"; CONFIG=$2; TRAIN_SHIFT=2 ;;
    --config=*) CONFIG=${1#--config=}; TRAIN_SHIFT=1 ;;
    --workdir) need "$@"; WORKDIR=$2; TRAIN_SHIFT=2 ;;
    --workdir=*) WORKDIR=${1#--workdir=}; TRAIN_SHIFT=1 ;;
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
