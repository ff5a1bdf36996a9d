#!/usr/bin/env bash
# slurm_cluster.sh - install, configure and start a single-node SLURM cluster
# for the integration test (Debian 12 bookworm, SLURM 22.05, run as root, no
# systemd). Adapted from the team's recipe in ../shared/slurm/setup_slurm.sh,
# without accounting: the profile asks squeue for job status, not sacct.
#
# Idempotent: safe to re-run. Installs missing packages, (re)writes the
# config, restarts slurmctld/slurmd only if the config changed (or RESTART=1),
# starts whatever is not running, and waits until the node is idle.
# `slurm_cluster.sh stop` stops the daemons again (same environment variables).
#
# Knobs (environment variables):
#   SLURM_STATE_DIR  state, spool, logs and PID files (default /tmp/slurm-test/state)
#   SLURM_CONF       slurm.conf to write (default /etc/slurm/slurm.conf: every
#                    SLURM command finds it without any environment). Keep the
#                    default for Snakemake: its slurm-jobstep plugin strips all
#                    SLURM_* variables (SLURM_CONF too) before the in-job srun,
#                    which then reads /etc/slurm/slurm.conf.
#   SLURM_NODE_CPUS  CPUs of the node (default: nproc)
#   SLURM_NODE_MEM   RealMemory in MB (default: 3/4 of MemTotal minus 512)
#   SLURM_FAKE_GPUS  N>0: advertise N fake GPUs (GRES backed by empty files),
#                    so --gpus=N / --gres=gpu:N jobs are accepted (default 0)
#   SLURM_PORT_BASE  slurmctld port; slurmd uses +1 (default 6817)
#   SKIP_APT=1       never run apt-get
#   RESTART=1        restart slurmctld/slurmd even if the config is unchanged
set -euo pipefail

STATE=${SLURM_STATE_DIR:-/tmp/slurm-test/state}
CONF=${SLURM_CONF:-/etc/slurm/slurm.conf}
CONF_DIR=$(dirname "$CONF")
CPUS=${SLURM_NODE_CPUS:-$(nproc)}
MEM_TOTAL_MB=$(awk '/^MemTotal:/ {print int($2/1024)}' /proc/meminfo)
MEM=${SLURM_NODE_MEM:-$(( MEM_TOTAL_MB * 3 / 4 - 512 ))}
FAKE_GPUS=${SLURM_FAKE_GPUS:-0}
CLUSTER=snaketest
NODE=localhost
PORT=${SLURM_PORT_BASE:-6817}
export SLURM_CONF="$CONF"

log() { printf '[slurm_cluster %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { echo "slurm_cluster: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root"

# ------------------------------------------------------------------ helpers
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop_pidfile() {  # TERM, wait up to 15 s, then KILL
  local pid
  [ -s "$1" ] || return 0
  pid=$(cat "$1")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
  fi
  rm -f "$1"
}
wait_for() {  # wait_for SECONDS CMD...: retry CMD every 0.2 s
  local n=$(( $1 * 5 )); shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  "$@"
}

if [ "${1:-}" = stop ]; then  # slurmd, slurmctld, then munged
  stop_pidfile "$STATE/slurmd.pid"
  stop_pidfile "$STATE/slurmctld.pid"
  stop_pidfile /run/munge/munged.pid
  exit 0
fi

if [ -s "$CONF" ] && ! grep -q "^# single-node test cluster written by" "$CONF"; then
  die "$CONF belongs to a real SLURM installation; this test harness will not overwrite it"
fi
[ "$CONF" = /etc/slurm/slurm.conf ] || log "WARNING: SLURM_CONF=$CONF is not the default; srun inside Snakemake jobs will not find it"

# ---------------------------------------------------------------- packages
pkgs=(munge slurmctld slurmd slurm-client)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  [ "${SKIP_APT:-0}" = 1 ] && die "missing packages: ${missing[*]}"
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends keeps mail servers etc. out
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --------------------------------------------------------------- directories
mkdir -p "$STATE"/{slurmctld,slurmd,log} "$CONF_DIR"
mkdir -p /run/munge /var/lib/munge /var/log/munge /etc/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge /etc/munge
chmod 0755 /run/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then   # Debian's postinst normally makes one
  log "creating munge key"
  mungekey --create --keyfile=/etc/munge/munge.key --force
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key

# ------------------------------------------------------------------- config
gres_types="" ; gres_node="" ; gres_conf=""
if [ "$FAKE_GPUS" -gt 0 ]; then
  # slurmd drops file-less GPUs ("Removing file-less GPU"), so each fake GPU
  # is an empty regular file. Jobs see SLURM_GPUS_ON_NODE, no CUDA device.
  gres_types="GresTypes=gpu"
  gres_node="Gres=gpu:$FAKE_GPUS"
  for i in $(seq 0 $((FAKE_GPUS - 1))); do : > "$STATE/fakegpu$i"; done
  if [ "$FAKE_GPUS" -eq 1 ]; then gres_conf="Name=gpu File=$STATE/fakegpu0"
  else gres_conf="Name=gpu File=$STATE/fakegpu[0-$((FAKE_GPUS - 1))]"; fi
fi
# no slurmdbd: sacct fails ("accounting storage is disabled"), so the
# profile sets slurm-status-command: squeue
accounting="AccountingStorageType=accounting_storage/none"

new_conf=$(mktemp)
cat > "$new_conf" <<EOF
# single-node test cluster written by slurm_cluster.sh
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
# no cgroups/systemd in containers: /proc based process tracking
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
$accounting
JobCompType=jobcomp/none
# finished jobs stay visible to "squeue --states=all" for this many seconds;
# the Snakemake plugin wants >= 3 x init-seconds-before-status-checks
MinJobAge=600
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerParameters=sched_interval=5
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
$gres_types
DefMemPerCPU=$(( MEM / CPUS ))
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM $gres_node State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
conf_changed=0
if ! cmp -s "$new_conf" "$CONF"; then
  log "writing $CONF"
  install -m 0644 "$new_conf" "$CONF"
  conf_changed=1
fi
rm -f "$new_conf"
if [ -n "$gres_conf" ]; then
  if [ "$(cat "$CONF_DIR/gres.conf" 2>/dev/null)" != "$gres_conf" ]; then
    echo "$gres_conf" > "$CONF_DIR/gres.conf"; conf_changed=1
  fi
elif [ -e "$CONF_DIR/gres.conf" ]; then
  rm -f "$CONF_DIR/gres.conf"; conf_changed=1
fi

if [ "${RESTART:-0}" = 1 ] || [ "$conf_changed" = 1 ]; then
  # node definitions (CPUs, memory, GRES) need a restart, not "scontrol reconfigure"
  if alive "$STATE/slurmd.pid" || alive "$STATE/slurmctld.pid"; then
    log "restarting slurmctld/slurmd"
  fi
  stop_pidfile "$STATE/slurmd.pid"
  stop_pidfile "$STATE/slurmctld.pid"
fi

# ------------------------------------------------------------------- munged
MUNGE_PID=/run/munge/munged.pid
if ! alive "$MUNGE_PID"; then
  log "starting munged"
  rm -f /run/munge/munge.socket.2*
  runuser -u munge -- /usr/sbin/munged --pid-file="$MUNGE_PID"
fi
munge_ok() { munge -n </dev/null | unmunge; }
wait_for 10 munge_ok >/dev/null || die "munge does not work"

# ------------------------------------------------------- slurmctld + slurmd
if ! alive "$STATE/slurmctld.pid"; then
  log "starting slurmctld"
  /usr/sbin/slurmctld
fi
ctld_up() { scontrol ping | grep -q UP; }
wait_for 20 ctld_up || die "slurmctld not up; see $STATE/log/slurmctld.log"

if ! alive "$STATE/slurmd.pid"; then
  log "starting slurmd"
  # -N: node name from slurm.conf, independent of the machine's hostname
  /usr/sbin/slurmd -N "$NODE"
fi

node_state() { sinfo -h -N -n "$NODE" -o %t 2>/dev/null; }
for _ in $(seq 150); do
  case "$(node_state)" in
    idle*|mix*|alloc*) break ;;
    down*|drain*) scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
  esac
  sleep 0.2
done
st=$(node_state || true)
case "$st" in
  idle*|mix*|alloc*) log "node $NODE is $st ($(sinfo -V), CPUs=$CPUS RealMemory=$MEM FakeGPUs=$FAKE_GPUS)" ;;
  *) sinfo -R >&2; die "node $NODE is '$st'; see $STATE/log/" ;;
esac
