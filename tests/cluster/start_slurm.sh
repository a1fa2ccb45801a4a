#!/usr/bin/env bash
# Start a real single-node Slurm (Debian's slurmctld, slurmd and munge) for the cluster tests.
#
# The node has the machine's cores and memory and two fake GPUs (a `gpu` GRES backed by harmless
# character devices), so `sbatch --gpus=1` is accepted and Slurm sets CUDA_VISIBLE_DEVICES in the
# job. Two partitions, `cpu` and `gpu`, share the node so the profile's partition routing is
# exercised. No accounting daemon: the test's copy of the profile drops the account and reads job
# states from squeue (MinJobAge keeps finished jobs visible for an hour).
#
# Needs root (installs packages, writes /etc/slurm, starts daemons). Idempotent: a second call
# with daemons up only waits for the node. Used by .ci/run; developers can run it by hand.
set -euo pipefail

STATE=/var/lib/latentmech-slurm
NODE=latentmech-node

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

mkdir -p "$STATE"/{ctld,d,gpu} /etc/slurm /var/log/slurm /run/munge
# slurmd accepts only character or block devices as GPU files: two that do nothing (the minor
# numbers of /dev/null and /dev/zero), so Slurm binds them and sets CUDA_VISIBLE_DEVICES.
for i in 0 1; do
  if [ ! -c "$STATE/gpu/$i" ]; then
    rm -f "$STATE/gpu/$i"
    mknod "$STATE/gpu/$i" c 1 $((3 + 2 * i))
  fi
done

if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 0700 /etc/munge
chmod 0400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null; then
  runuser -u munge -- /usr/sbin/munged
fi

CPUS=$(nproc)
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
HOST=$(hostname -s)

cat >/etc/slurm/slurm.conf <<EOF
ClusterName=latentmech-ci
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=${STATE}/ctld
SlurmdSpoolDir=${STATE}/d
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
ReturnToService=2
MinJobAge=3600
KillWait=30
SchedulerType=sched/backfill
MpiDefault=none
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM_MB} Gres=gpu:2 State=UNKNOWN
PartitionName=cpu Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
PartitionName=gpu Nodes=${NODE} MaxTime=INFINITE State=UP OverSubscribe=YES
EOF

cat >/etc/slurm/gres.conf <<EOF
NodeName=${NODE} Name=gpu File=${STATE}/gpu/[0-1]
EOF

if ! pgrep -x slurmctld >/dev/null; then
  /usr/sbin/slurmctld
fi
if ! pgrep -x slurmd >/dev/null; then
  /usr/sbin/slurmd -N "$NODE"
fi

for _ in $(seq 60); do
  if sinfo -h -n "$NODE" -o %t 2>/dev/null | grep -Eq '^(idle|mix|alloc)'; then
    sinfo
    exit 0
  fi
  sleep 1
done
echo "start_slurm.sh: the node did not come up; logs follow" >&2
sinfo >&2 || true
tail -n 30 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
