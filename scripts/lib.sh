# shellcheck shell=bash
# scripts/lib.sh — helpers shared by the bash scripts in scripts/. Sourced, never run:
#
#   LOG_NAME=stack                               # log and die lines start with [stack]
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# It sets ROOT (the repository root), STATE (the local stack's directory: .stack/, or
# AURORE_STACK_DIR) and LOGS, and defines functions. It sets no shell option and runs nothing.
# What runs inside containers (scripts/images.d/, scripts/postgres-init.sh) cannot source it.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${AURORE_STACK_DIR:-$ROOT/.stack}
LOGS=$STATE/logs

# LOG_NAME names the script in its lines; DIE_LABEL is the word before a fatal message.
log() { printf '[%s] %s\n' "${LOG_NAME:?set LOG_NAME before sourcing scripts/lib.sh}" "$*" >&2; }
die() { printf '[%s] %s: %s\n' "${LOG_NAME:?set LOG_NAME before sourcing scripts/lib.sh}" "${DIE_LABEL:-error}" "$*" >&2; exit 1; }

# Where rustup (cargo) and Go's release tarball install, ahead of PATH.
use_tool_path() { export PATH="$HOME/.cargo/bin:/usr/local/go/bin:$PATH"; }

quietly() { "$@" >/dev/null 2>&1; }

port_open() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; } # host:port — something accepts connections

poll_until() { # seconds interval command... — runs the command until it succeeds; 1 when the time is up first
  local deadline=$((SECONDS + $1)) interval=$2
  shift 2
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep "$interval"
  done
}

wait_for() { # description seconds command... — polls the command (output discarded) every 0.2 s
  local what=$1 secs=$2
  shift 2
  poll_until "$secs" 0.2 quietly "$@" || return 1
  log "$what is ready"
}

apt_install() { # [apt-get install option...] package... — as root on Debian; output appended to $LOGS/apt.log
  local packages=() arg
  for arg in "$@"; do [[ $arg == -* ]] || packages+=("$arg"); done
  log "installing Debian packages: ${packages[*]}"
  mkdir -p "$LOGS"
  apt-get update -q >>"$LOGS/apt.log" 2>&1 || die "apt-get update failed; see $LOGS/apt.log"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >>"$LOGS/apt.log" 2>&1 ||
    die "apt-get install failed; see $LOGS/apt.log"
}

can_apt_install() { [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ] && command -v apt-get >/dev/null; }

kafka_version() { sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$ROOT/kafka/pom.xml"; } # from kafka/pom.xml
