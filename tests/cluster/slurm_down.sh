#!/usr/bin/env bash
# Stop the test cluster started by slurm_up.sh: slurmd, slurmctld and (if slurm_up.sh
# started it) munged, each by the PID in its pid file, never by name.
#   CRYOMTD_SLURM_DIR  the same directory slurm_up.sh used (default /tmp/cryomtd-slurm)
set -uo pipefail

DIR="${CRYOMTD_SLURM_DIR:-/tmp/cryomtd-slurm}"

log() { echo "[slurm_down] $*" >&2; }

stop_pidfile() {  # name pidfile
    local name="$1" file="$2" pid
    [ -s "$file" ] || { log "$name: no pid file $file"; return 0; }
    pid="$(cat "$file")"
    if ! kill -0 "$pid" 2>/dev/null; then
        log "$name: pid $pid not running"; rm -f "$file"; return 0
    fi
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || { log "$name: stopped (pid $pid)"; rm -f "$file"; return 0; }
        sleep 0.2
    done
    log "$name: pid $pid ignored SIGTERM for 10 s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null
    rm -f "$file"
}

stop_pidfile slurmd "$DIR/slurmd.pid"
stop_pidfile slurmctld "$DIR/slurmctld.pid"
if [ -s "$DIR/munged.pid.ours" ]; then
    # munged removes its own pid file on exit; the copy says we started it
    if [ "$(cat "$DIR/munged.pid.ours")" = "$(cat /run/munge/munged.pid 2>/dev/null)" ]; then
        stop_pidfile munged /run/munge/munged.pid
    else
        log "munged: pid changed since slurm_up.sh, leaving it alone"
    fi
    rm -f "$DIR/munged.pid.ours"
fi
exit 0
