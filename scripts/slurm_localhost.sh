#!/usr/bin/env bash
# A one-node Slurm "cluster" on this machine, for the Slurm backend's tests (no systemd: daemons by hand, as root).
#
#   sudo bash scripts/slurm_localhost.sh start        # install if needed, start munged/slurmctld/slurmd, wait idle
#   export SLURM_CONF=/tmp/xai-slurm/slurm.conf       # what `start` prints: clients read this config
#   sudo bash scripts/slurm_localhost.sh stop         # stop the three daemons (by their pid files)
#   sudo bash scripts/slurm_localhost.sh run -- CMD   # start, run CMD with SLURM_CONF set, stop; CMD's exit code
#
# One node, NodeAddr 127.0.0.1, CPUs=2 (XAI_SLURM_CPUS overrides), SlurmUser root, proctrack/linuxproc,
# task/none, no accounting (sacct does not work here, on purpose: the backend must not need it).
# XAI_SLURM_DIR (default /tmp/xai-slurm) holds the config, state, logs and pid files.
set -euo pipefail

DIR=${XAI_SLURM_DIR:-/tmp/xai-slurm}
CPUS=${XAI_SLURM_CPUS:-2}
BUDGET_S=120 # the node must be idle within two minutes of starting the daemons

install() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
    && command -v munged >/dev/null; then
    return
  fi
  if ! command -v apt-get >/dev/null; then
    echo "slurm_localhost: no apt-get here; install slurmctld slurmd slurm-client munge yourself" >&2
    exit 3
  fi
  local started=$SECONDS
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
  echo "slurm_localhost: installed slurmctld slurmd slurm-client munge in $((SECONDS - started)) s"
}

write_config() {
  mkdir -p "$DIR/state" "$DIR/spool"
  local memory
  memory=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
  cat >"$DIR/slurm.conf" <<EOF
ClusterName=xai-localhost
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SlurmdTimeout=30
InactiveLimit=0
KillWait=10
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
  install
  write_config
  export SLURM_CONF=$DIR/slurm.conf
  local started=$SECONDS
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  if ! munge -n >/dev/null 2>&1; then
    munged --force --pid-file="$DIR/munged.pid"
  fi
  # -c: forget a previous run's jobs (each start is a fresh cluster)
  slurmctld -c -f "$SLURM_CONF"
  slurmd -N localhost -f "$SLURM_CONF"
  local state=""
  until [ $((SECONDS - started)) -ge $BUDGET_S ]; do
    state=$(sinfo -h -N -o '%T' 2>/dev/null | head -1 || true)
    [ "$state" = "idle" ] && break
    sleep 0.5
  done
  if [ "$state" != "idle" ]; then
    echo "slurm_localhost: node not idle after ${BUDGET_S} s (state '$state'); logs in $DIR" >&2
    tail -5 "$DIR/slurmctld.log" "$DIR/slurmd.log" >&2 || true
    stop
    exit 4
  fi
  echo "slurm_localhost: node idle $((SECONDS - started)) s after starting munged/slurmctld/slurmd"
  echo "export SLURM_CONF=$SLURM_CONF"
}

stop_pid_file() {
  local file=$1
  [ -f "$file" ] || return 0
  local pid
  pid=$(cat "$file")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

stop() {
  # by pid file, never by name: other slurm or munge daemons on the machine are left alone
  stop_pid_file "$DIR/slurmd.pid"
  stop_pid_file "$DIR/slurmctld.pid"
  stop_pid_file "$DIR/munged.pid"
  echo "slurm_localhost: stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  run)
    shift
    [ "${1:-}" = "--" ] && shift
    start
    export SLURM_CONF=$DIR/slurm.conf
    trap stop EXIT
    status=0
    "$@" || status=$?
    exit "$status"
    ;;
  *)
    echo "usage: $0 start|stop|run -- COMMAND" >&2
    exit 2
    ;;
esac
