#!/bin/sh
# slate rootfs early setup, run by busybox init (sysinit) before services and
# the agent. The root filesystem is read-only; /run, /tmp and /data were
# mounted by the initramfs.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p /dev/pts /dev/shm /run/slate
mount -t devpts -o gid=5,mode=620 devpts /dev/pts 2>/dev/null
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm 2>/dev/null
# A builtin read and write, not a fork of hostname(1).
[ -r /etc/hostname ] && read -r name < /etc/hostname && [ -n "$name" ] \
    && echo "$name" > /proc/sys/kernel/hostname
ip link set lo up 2>/dev/null
exit 0
