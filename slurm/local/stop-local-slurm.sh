#!/usr/bin/env bash
# Stop the daemons that slurm/local/start-local-slurm.sh started, using only its PID files
# (/run/slurm-local/*.pid). Jobs still queued/running are cancelled first
# (SLURM_LOCAL_KEEP_JOBS=1 skips that). Never kills anything by name.
set -euo pipefail
RUN_DIR=/run/slurm-local
log() { echo "[stop-local-slurm] $*" >&2; }

pid_of() {   # pid_of NAME -> prints pid if $RUN_DIR/NAME.pid names a live NAME process
    local f="$RUN_DIR/$1.pid" pid
    [ -s "$f" ] || return 1
    pid=$(tr -dc '0-9' <"$f")
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$1" ] && echo "$pid"
}

if [ "${SLURM_LOCAL_KEEP_JOBS:-0}" != 1 ] && pid_of slurmctld >/dev/null \
    && scontrol ping >/dev/null 2>&1; then
    jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
        log "cancelling jobs: $jobs"
        # shellcheck disable=SC2086
        scancel $jobs || true
        for _ in $(seq 60); do
            [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
fi

for d in slurmd slurmctld slurmdbd mariadbd munged; do
    if pid=$(pid_of "$d"); then
        log "stopping $d (pid $pid)"
        kill -TERM "$pid"
        for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        if kill -0 "$pid" 2>/dev/null; then
            log "$d still alive after 30 s, sending SIGKILL to pid $pid"
            kill -KILL "$pid" || true
        fi
    else
        log "$d: not started by start-local-slurm.sh or not running"
    fi
    rm -f "$RUN_DIR/$d.pid"
done
