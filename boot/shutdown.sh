#!/bin/sh
# slate shutdown (busybox init "shutdown" action): flush and unmount the
# writable filesystems so a reboot never leaves them dirty.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
sync
umount /efi 2>/dev/null
umount /data 2>/dev/null || mount -o remount,ro /data 2>/dev/null
sync
exit 0
