#!/usr/bin/env bash
# A single-node SLURM cluster for tests, all state in one folder (README, "Running on a cluster").
#   tests/cluster/slurm.sh install        Debian packages (slurm-wlm munge slurmdbd mariadb-server)
#   tests/cluster/slurm.sh start DIR      munged, mariadbd, slurmdbd, slurmctld, slurmd; prints `export SLURM_CONF=…`
#   tests/cluster/slurm.sh stop DIR       cancels jobs, stops the daemons by their pid files
set -euo pipefail
cmd=${1:?install|start|stop}
if [ "$cmd" = install ]; then
  command -v slurmctld >/dev/null && command -v mariadbd >/dev/null && exit 0
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge slurmdbd mariadb-server >/dev/null
  exit 0
fi
D=$(realpath -m "${2:?state folder}")
host=$(hostname -s)
export SLURM_CONF=$D/slurm.conf

wait_for() {  # wait_for SECONDS CMD...
  local limit=$1; shift
  for _ in $(seq $((limit * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "timed out waiting for: $*" >&2; return 1
}

stop_pid() {  # stop_pid FILE: SIGTERM, then SIGKILL; a zombie counts as gone
  local f=$1 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    state=$(ps -o stat= -p "$pid" 2>/dev/null || true)
    { [ -z "$state" ] || [[ $state == Z* ]]; } && { rm -f "$f"; return 0; }
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$f"
}

if [ "$cmd" = stop ]; then
  scancel --full --signal=KILL -u root 2>/dev/null || true
  for d in slurmd slurmctld slurmdbd mariadb munged; do stop_pid "$D/$d.pid"; done
  pkill -9 -f "slurmstepd.*" 2>/dev/null || true
  exit 0
fi

mkdir -p "$D"/{state,spool,db,log}
mem=$(awk '/MemAvailable/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
sock=$D/munge.sock
dd if=/dev/urandom bs=1 count=1024 of="$D/munge.key" status=none
chmod 400 "$D/munge.key"
munged --force --socket="$sock" --key-file="$D/munge.key" --pid-file="$D/munged.pid" --log-file="$D/log/munged.log" \
  --seed-file="$D/munge.seed"

mariadb-install-db --no-defaults --datadir="$D/db" --auth-root-authentication-method=normal --user=root >"$D/log/mariadb-install.log" 2>&1
mariadbd --no-defaults --datadir="$D/db" --socket="$D/mysql.sock" --port=13306 --bind-address=127.0.0.1 \
  --pid-file="$D/mariadb.pid" --user=root --log-error="$D/log/mariadb.log" &
wait_for 30 mariadb-admin --no-defaults --socket="$D/mysql.sock" -uroot ping

cat >"$D/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$sock
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=16819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=13306
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=$D/slurmdbd.pid
LogFile=$D/log/slurmdbd.log
CONF
chmod 600 "$D/slurmdbd.conf"

cat >"$D/slurm.conf" <<CONF
ClusterName=ci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$sock,cred_expire=5
CredType=cred/munge
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=16819
AccountingStoragePass=$sock
JobAcctGatherType=jobacct_gather/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SchedulerParameters=sched_interval=1
MpiDefault=none
MinJobAge=3600
KillWait=5
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF

slurmdbd
wait_for 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/16819"
slurmctld
wait_for 30 scontrol ping
slurmd
wait_for 30 bash -c "sinfo -h -o %t | grep -qx idle"
echo "export SLURM_CONF=$SLURM_CONF"
