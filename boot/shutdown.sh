#!/bin/sh
# slate shutdown (busybox init "shutdown" action): flush and unmount the
# writable filesystems so a reboot never leaves them dirty.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
sync
# Writable paths bind-mounted from /data ([state]) first, so that /data's
# own unmount releases the filesystem.
if [ -r /etc/slate/state ]; then
    while read -r kind path type; do
        [ "$kind" = data ] && umount "$path" 2>/dev/null
    done < /etc/slate/state
fi
umount /efi 2>/dev/null
umount /data 2>/dev/null || mount -o remount,ro /data 2>/dev/null
sync
exit 0
