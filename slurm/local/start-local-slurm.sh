#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine without systemd (for tests and CI:
# tests/test_slurm_cluster.py and .ci/run use it; slurm/README.md "A local single-node cluster").
# Idempotent: installs what is missing, (re)writes the config, starts only the
# daemons that are not already running, waits until the node is idle, and prints
# the default partition name on stdout (all other output goes to stderr).
#
# Env knobs (all optional):
#   SLURM_LOCAL_PARTITION   default partition name              (default: debug)
#   SLURM_LOCAL_ACCOUNTING  1 = MariaDB + slurmdbd so `sacct` works, which
#                           submitit needs to see job states   (default: 1)
#   SLURM_LOCAL_TIMEOUT     seconds to wait for the idle node    (default: 90)
set -euo pipefail

PARTITION="${SLURM_LOCAL_PARTITION:-debug}"
URGENT_PARTITION="urgent"          # higher PriorityTier: submitting there preempts $PARTITION
ACCOUNTING="${SLURM_LOCAL_ACCOUNTING:-1}"
WAIT_S="${SLURM_LOCAL_TIMEOUT:-90}"
CLUSTER="localci"
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
RUN_DIR=/run/slurm-local           # PID files of what we started (read by stop script)
SPOOL=/var/spool/slurm-local
LOG_DIR=/var/log/slurm-local

log() { echo "[start-local-slurm] $*" >&2; }
die() {
    echo "[start-local-slurm] ERROR: $*" >&2
    for f in "$LOG_DIR"/*.log /var/log/munge/munged.log; do
        [ -f "$f" ] && { echo "--- tail $f" >&2; tail -n 12 "$f" >&2; }
    done
    exit 1
}
[ "$(id -u)" -eq 0 ] || die "must run as root"

# pid_alive NAME -> true if $RUN_DIR/NAME.pid holds a live process whose comm is NAME
pid_alive() {
    local f="$RUN_DIR/$1.pid" pid
    [ -s "$f" ] || return 1
    pid=$(tr -dc '0-9' <"$f")
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$1" ]
}
# wait_for SECONDS CMD... -> poll CMD every 0.5 s until it succeeds
wait_for() {
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}
# stop_ours NAME -> SIGTERM a daemon we started and wait for it to exit
stop_ours() {
    local pid
    pid_alive "$1" || return 0
    pid=$(cat "$RUN_DIR/$1.pid")
    log "config changed: restarting $1"
    kill -TERM "$pid"
    wait_for 30 sh -c "! kill -0 $pid" || die "$1 (pid $pid) did not stop"
    rm -f "$RUN_DIR/$1.pid"
}

# ------------------------------------------------------------------ packages
pkgs=()
command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
    || pkgs+=(slurm-wlm)
command -v munged >/dev/null || pkgs+=(munge)
if [ "$ACCOUNTING" = 1 ]; then
    command -v slurmdbd >/dev/null || pkgs+=(slurmdbd)
    command -v mariadbd >/dev/null || pkgs+=(mariadb-server)
fi
if [ "${#pkgs[@]}" -gt 0 ]; then
    log "installing: ${pkgs[*]} (apt, no recommends)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2
fi
log "$(slurmctld -V)"

# ------------------------------------------------------------------ config
mkdir -p "$RUN_DIR" "$SPOOL/ctld" "$SPOOL/d" "$LOG_DIR" /etc/slurm
NODE=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) * 9 / 10240 ))   # 90% of RAM
if [ "$ACCOUNTING" = 1 ]; then
    ACCT_LINES="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost"
else
    ACCT_LINES="AccountingStorageType=accounting_storage/none"
fi

new_conf=$(cat <<EOF
# Written by start-local-slurm.sh: single-node CI cluster, no cgroups, no systemd.
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
$ACCT_LINES
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# re-test pending jobs every 5 s (defaults: 60 s main loop, 30 s backfill)
SchedulerParameters=sched_interval=5,bf_interval=5
# reject requests the partition can never satisfy instead of pending forever
EnforcePartLimits=ALL
ReturnToService=2
JobRequeue=1
KillWait=10
# a requeued job may restart only cred_expire s later (default 120 s)
AuthInfo=cred_expire=10
# Preemption: a job in '$URGENT_PARTITION' requeues jobs in '$PARTITION'; the victim
# first gets its --signal (submitit: USR2), then GraceTime s before the kill.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=60
PartitionName=$URGENT_PARTITION Nodes=ALL Default=NO MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
EOF
)
conf_changed=0
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$new_conf" ]; then
    printf '%s\n' "$new_conf" >"$CONF"
    conf_changed=1
    log "wrote $CONF (node $NODE, $CPUS CPUs, ${MEM_MB} MB, accounting=$ACCOUNTING)"
fi

# ------------------------------------------------------------------ munge
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "munged already answering"
else
    if [ ! -s /etc/munge/munge.key ]; then
        mungekey --create --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    runuser -u munge -- /usr/sbin/munged          # forks; writes /run/munge/munged.pid
    wait_for 15 test -s /run/munge/munged.pid || die "munged wrote no pid file"
    cp /run/munge/munged.pid "$RUN_DIR/munged.pid"  # marks it as ours for the stop script
    wait_for 15 sh -c 'munge -n | unmunge' || die "munged does not answer"
    log "started munged (pid $(cat "$RUN_DIR/munged.pid"))"
fi

# ------------------------------------------------------------------ accounting
if [ "$ACCOUNTING" = 1 ]; then
    if mariadb-admin ping >/dev/null 2>&1; then
        log "mariadb already answering"
    else
        install -d -o mysql -g root -m 0755 /run/mysqld
        [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >&2
        nohup /usr/sbin/mariadbd --user=mysql --skip-networking \
            --pid-file=/run/mysqld/mysqld.pid >>"$LOG_DIR/mariadb.log" 2>&1 </dev/null &
        echo "$!" >"$RUN_DIR/mariadbd.pid"
        wait_for 60 mariadb-admin ping || die "mariadbd did not come up"
        log "started mariadbd (pid $(cat "$RUN_DIR/mariadbd.pid"))"
    fi
    mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
        CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm-local';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';" || die "mariadb setup failed"
    new_dbd=$(cat <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$LOG_DIR/slurmdbd.log
PidFile=$RUN_DIR/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm-local
StorageLoc=slurm_acct_db
EOF
)
    if [ ! -f "$DBD_CONF" ] || [ "$(cat "$DBD_CONF")" != "$new_dbd" ]; then
        (umask 077; printf '%s\n' "$new_dbd" >"$DBD_CONF")
        stop_ours slurmdbd
    fi
    chmod 600 "$DBD_CONF"
    if pid_alive slurmdbd; then
        log "slurmdbd already running (pid $(cat "$RUN_DIR/slurmdbd.pid"))"
    else
        /usr/sbin/slurmdbd                         # forks; writes its PidFile
        wait_for 60 sacctmgr -n list cluster || die "slurmdbd did not come up"
        log "started slurmdbd (pid $(cat "$RUN_DIR/slurmdbd.pid"))"
    fi
    if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
        sacctmgr -i add cluster "$CLUSTER" >&2
    fi
fi

# ------------------------------------------------------------------ slurm daemons
if [ "$conf_changed" -eq 1 ]; then       # node/partition changes need a restart
    stop_ours slurmd
    stop_ours slurmctld
fi
if pid_alive slurmctld; then
    log "slurmctld already running (pid $(cat "$RUN_DIR/slurmctld.pid"))"
else
    rm -f "$RUN_DIR/slurmctld.pid"
    /usr/sbin/slurmctld                        # forks; writes SlurmctldPidFile
    wait_for 30 scontrol ping || die "slurmctld did not come up"
    log "started slurmctld (pid $(cat "$RUN_DIR/slurmctld.pid"))"
fi
if pid_alive slurmd; then
    log "slurmd already running (pid $(cat "$RUN_DIR/slurmd.pid"))"
else
    rm -f "$RUN_DIR/slurmd.pid"
    /usr/sbin/slurmd                           # forks; writes SlurmdPidFile
    wait_for 30 pid_alive slurmd || die "slurmd did not start"
    log "started slurmd (pid $(cat "$RUN_DIR/slurmd.pid"))"
fi

# ------------------------------------------------------------------ wait for idle
deadline=$((SECONDS + WAIT_S)); resumed=0; st=""
while :; do
    st=$(sinfo -h -N -n "$NODE" -p "$PARTITION" -o %t 2>/dev/null | head -n1 || true)
    case "$st" in
        idle|mix|alloc) break ;;       # mix/alloc: jobs survived a restart
        drain*|drng|down*|fail*)
            if [ "$resumed" -eq 0 ]; then
                log "node is '$st', resuming it"
                scontrol update NodeName="$NODE" State=RESUME >&2 || true
                resumed=1
            fi ;;
    esac
    [ "$SECONDS" -lt "$deadline" ] || die "node $NODE not idle after ${WAIT_S}s (state '${st:-?}'), see $LOG_DIR"
    sleep 0.5
done
log "node $NODE is $st; partitions: $(sinfo -h -o %P | tr '\n' ' ')"
echo "$PARTITION"
