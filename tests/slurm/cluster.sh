#!/usr/bin/env bash
# A throwaway single-node SLURM cluster on 127.0.0.1 for the profile test (tests/test_slurm.py).
#
#   tests/slurm/cluster.sh start   install slurm-wlm + munge if missing, write /etc/slurm/{slurm,gres}.conf,
#                                  start munged, slurmctld, slurmd; wait until the node is idle
#   tests/slurm/cluster.sh stop    kill exactly the daemons `start` launched (by PID), restore /etc/slurm
#
# Partitions `cpu` (default) and `gpu`, one node with one fake A100 (gres.conf File=/dev/null, so slurmd
# accepts a GPU it cannot see). The config has to live in /etc/slurm: the job-step plugin strips SLURM_CONF
# from the job's environment before its inner srun. Exit codes: 0 ok, 2 usage, 3 cannot run here (not root, or
# slurm missing and no apt-get), 1 anything else (logs under $STATE/log).
set -euo pipefail

STATE=${TUNEBENCH_SLURM_STATE:-/tmp/tunebench-slurm}
ETC=/etc/slurm
export PATH="$PATH:/usr/sbin:/sbin"
OURS="# written by tunebench tests/slurm/cluster.sh"

die() { echo "cluster.sh: $*" >&2; exit 1; }

install_slurm() {
    local tools=(munged slurmctld slurmd sbatch squeue scontrol sinfo)
    local missing=0 tool
    for tool in "${tools[@]}"; do
        command -v "$tool" >/dev/null 2>&1 || missing=1
    done
    [ "$missing" = 0 ] && return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "cluster.sh: slurm/munge missing and cannot be installed (no apt-get)" >&2
        exit 3
    fi
    echo "cluster.sh: installing slurmctld slurmd slurm-client munge" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

write_config() {
    local host
    host=$(hostname -s)
    mkdir -p "$ETC"
    local f
    for f in slurm.conf gres.conf; do
        if [ -f "$ETC/$f" ] && ! grep -qF "$OURS" "$ETC/$f" && [ ! -f "$STATE/backup/$f" ]; then
            mkdir -p "$STATE/backup"
            cp -p "$ETC/$f" "$STATE/backup/$f"
        fi
    done
    cat >"$ETC/slurm.conf" <<EOF
$OURS
ClusterName=tunebench
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE/munge/munge.socket
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
MpiDefault=none
# Jobs are not requeued unless they ask (sbatch --requeue), so the test sees that the profile asks.
JobRequeue=0
ReturnToService=2
# Finished jobs stay visible to squeue / scontrol for 5 minutes: the executor's status checks and the test
# read them there, as there is no accounting database.
MinJobAge=300
MailProg=/bin/true
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# The node claims the size of a typical A100 node (config_overrides: slurmd does not drain a node smaller than
# its configuration), so the profile's real requests (8 CPUs and 32-64 GB per GPU job) are accepted unchanged.
SlurmdParameters=config_overrides
NodeName=$host NodeAddr=127.0.0.1 Sockets=2 CoresPerSocket=16 ThreadsPerCore=1 RealMemory=256000 Gres=gpu:a100:1
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL MaxTime=INFINITE State=UP
EOF
    cat >"$ETC/gres.conf" <<EOF
$OURS
AutoDetect=off
NodeName=$host Name=gpu Type=a100 File=/dev/null Count=1
EOF
}

start_munge() {
    mkdir -p "$STATE/munge"
    chmod 711 "$STATE/munge"
    if [ ! -f "$STATE/munge/munge.key" ]; then
        head -c 1024 /dev/urandom >"$STATE/munge/munge.key"
        chmod 400 "$STATE/munge/munge.key"
    fi
    munged -f --key-file="$STATE/munge/munge.key" --socket="$STATE/munge/munge.socket" \
        --pid-file="$STATE/run/munged.pid" --log-file="$STATE/log/munged.log" \
        --seed-file="$STATE/munge/munge.seed"
}

wait_idle() {
    local host state i
    host=$(hostname -s)
    for i in $(seq 1 60); do
        state=$(sinfo -h -n "$host" -o %T 2>/dev/null | head -n 1 || true)
        case "$state" in
            idle) return 0 ;;
            down*|drain*|inval*) scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    scontrol show node "$host" >&2 || true
    die "node did not become idle (state: ${state:-none}); see $STATE/log"
}

start() {
    [ "$(id -u)" = 0 ] || { echo "cluster.sh: needs root (daemons, /etc/slurm)" >&2; exit 3; }
    install_slurm
    if alive "$STATE/run/slurmctld.pid" && alive "$STATE/run/slurmd.pid"; then
        echo "cluster.sh: already running" >&2
        wait_idle
        return 0
    fi
    if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
        die "another slurmctld/slurmd is running on this machine; not touching it"
    fi
    # A fresh state each time: no leftover jobs or node states from an earlier run.
    rm -rf "$STATE/ctld" "$STATE/slurmd" "$STATE/run" "$STATE/log"
    mkdir -p "$STATE/ctld" "$STATE/slurmd" "$STATE/run" "$STATE/log"
    # Whatever fails from here on, leave no daemon behind.
    trap 'stop >/dev/null 2>&1' EXIT
    write_config
    start_munge
    slurmctld
    slurmd
    for i in $(seq 1 20); do
        alive "$STATE/run/slurmctld.pid" && alive "$STATE/run/slurmd.pid" && break
        sleep 0.25
    done
    alive "$STATE/run/slurmctld.pid" || die "slurmctld did not start; see $STATE/log/slurmctld.log"
    alive "$STATE/run/slurmd.pid" || die "slurmd did not start; see $STATE/log/slurmd.log"
    wait_idle
    trap - EXIT
    echo "cluster.sh: node $(hostname -s) idle; partitions cpu (default) and gpu" >&2
}

stop_daemon() {
    local pidfile=$1 pid i
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for i in $(seq 1 40); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$pidfile"
}

stop() {
    # Jobs still running belong to this cluster only: cancel them before the daemons go.
    if alive "$STATE/run/slurmctld.pid"; then
        squeue -h -t PENDING,RUNNING -o %A 2>/dev/null | xargs -r scancel >/dev/null 2>&1 || true
    fi
    stop_daemon "$STATE/run/slurmd.pid"
    stop_daemon "$STATE/run/slurmctld.pid"
    stop_daemon "$STATE/run/munged.pid"
    local f
    for f in slurm.conf gres.conf; do
        if [ -f "$STATE/backup/$f" ]; then
            mv "$STATE/backup/$f" "$ETC/$f"
        elif [ -f "$ETC/$f" ] && grep -qF "$OURS" "$ETC/$f"; then
            rm -f "$ETC/$f"
        fi
    done
    echo "cluster.sh: stopped (logs kept in $STATE/log)" >&2
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
