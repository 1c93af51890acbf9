#!/usr/bin/env bash
# Start a single-node SLURM test cluster on localhost (Debian's slurm-wlm + munge).
#
# Usage: tests/cluster/slurm_up.sh            (as root; idempotent)
#   CRYOMTD_SLURM_DIR  state/spool/log/pid directory (default /tmp/cryomtd-slurm)
#   CRYOMTD_SLURM_NO_INSTALL=1  fail instead of running apt-get when packages are missing
#
# Installs the packages if missing, writes slurm.conf (state under CRYOMTD_SLURM_DIR,
# job-completion log at $CRYOMTD_SLURM_DIR/jobcomp.txt), starts munged, slurmctld and
# slurmd, and waits until the node is idle. Stop everything with slurm_down.sh, which
# kills the daemons by the PIDs recorded here (never by name).
# Facts behind each setting: ../shared/notes/slurm-test-cluster.md and docs/cluster.md.
set -euo pipefail

DIR="${CRYOMTD_SLURM_DIR:-/tmp/cryomtd-slurm}"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"

log() { echo "[slurm_up] $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (starts munged/slurmctld/slurmd)"; exit 2
fi

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid" \
        && sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    log "cluster already up (state in $DIR)"; exit 0
fi

# --- packages -------------------------------------------------------------------
need=()
for exe in slurmctld slurmd sbatch munged; do
    command -v "$exe" >/dev/null || need+=("$exe")
done
if [ ${#need[@]} -gt 0 ]; then
    if [ "${CRYOMTD_SLURM_NO_INSTALL:-0}" = 1 ]; then
        log "missing ${need[*]} and CRYOMTD_SLURM_NO_INSTALL=1"; exit 3
    fi
    log "installing slurm-wlm slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends \
        slurm-wlm slurmctld slurmd slurm-client munge >/dev/null
fi

# --- munge ----------------------------------------------------------------------
mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    log "creating munge key"
    mungekey --create --keyfile /etc/munge/munge.key 2>/dev/null \
        || dd if=/dev/urandom of=/etc/munge/munge.key bs=128 count=1 status=none
    chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
fi
if alive /run/munge/munged.pid; then
    log "munged already running (pid $(cat /run/munge/munged.pid))"
    # keep the marker only if that munged is the one we started earlier
    [ "$(cat "$DIR/munged.pid.ours" 2>/dev/null)" = "$(cat /run/munge/munged.pid)" ] \
        || rm -f "$DIR/munged.pid.ours"
else
    runuser -u munge -- munged --pid-file=/run/munge/munged.pid
    cp /run/munge/munged.pid "$DIR/munged.pid.ours"  # slurm_down.sh stops only what we started
fi

# --- slurm.conf -----------------------------------------------------------------
NODE="$(hostname -s)"
CPUS="$(nproc)"
MEM_MB=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))
mkdir -p "$CONF_DIR"
if [ -f "$CONF" ] && ! grep -q '^# cryomtd test cluster' "$CONF"; then
    cp "$CONF" "$DIR/slurm.conf.before-cryomtd"
    log "existing $CONF saved to $DIR/slurm.conf.before-cryomtd"
fi
cat > "$CONF" <<EOF
# cryomtd test cluster (written by tests/cluster/slurm_up.sh; state in $DIR)
ClusterName=cryomtd
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=300
DefMemPerCPU=500
SchedulerType=sched/backfill
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:1 State=UNKNOWN
# partition names match profiles/slurm/config.yaml (slurm_partition "main" and "gpu")
PartitionName=main Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE MaxTime=INFINITE State=UP
EOF
# One *declared* GPU (no device file): lets the profile's GPU requests (--gpus/--gres) be
# scheduled and tested on a machine without a GPU; the job itself sees no device.
printf 'NodeName=%s Name=gpu File=/dev/null\n' "$NODE" > "$CONF_DIR/gres.conf"

# --- daemons ---
# A fresh controller starts from an empty state (old jobs may name old partitions).
alive "$DIR/slurmctld.pid" || rm -rf "${DIR:?}/state" "${DIR:?}/spool"
mkdir -p "$DIR/state" "$DIR/spool"
alive "$DIR/slurmctld.pid" || slurmctld
alive "$DIR/slurmd.pid" || slurmd

for _ in $(seq 1 60); do
    state="$(sinfo -h -o %T 2>/dev/null | sort -u | head -n 1 || true)"
    case "$state" in
        idle|mixed|allocated) log "node $NODE is $state ($CPUS CPUs, ${MEM_MB} MB); state in $DIR"; exit 0 ;;
        *drain*|*down*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.5
done
log "cluster did not become idle; sinfo says '${state:-nothing}'. Logs:"
tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
exit 1
