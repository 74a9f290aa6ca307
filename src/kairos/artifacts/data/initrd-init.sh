#!/bin/sh
# kairos initrd: find the slot image, mount it read-only, switch_root into its early-init.
# Kernel command line (Kairos names): root=LABEL=COS_ACTIVE|COS_PASSIVE|COS_SYSTEM|COS_RECOVERY
# cos-img/filename=/cOS/<image>, rd.immucore.debugrw (rd.cos.debugrw), rd.immucore.sysrootwait=S,
# rd.shell=1 (a shell instead of a reboot on failure).
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

say() { echo "kairos-initrd: $*" > /dev/console; }

fail() {
    say "error: $*"
    if [ "$shell" = 1 ]; then
        say "starting a shell (rd.shell=1)"
        exec sh
    fi
    say "rebooting in 5 seconds (set rd.shell=1 for a shell)"
    sleep 5
    reboot -f
}

label=""; img=""; debugrw=0; wait_s=60; shell=0; init=/usr/lib/kairos/early-init
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        root=LABEL=*) label="${arg#root=LABEL=}" ;;
        cos-img/filename=*) img="${arg#cos-img/filename=}" ;;
        rd.immucore.debugrw|rd.cos.debugrw|rd.immucore.debugrw=1|rd.cos.debugrw=1) debugrw=1 ;;
        rd.immucore.sysrootwait=*) wait_s="${arg#rd.immucore.sysrootwait=}" ;;
        rd.shell=1|rd.shell) shell=1 ;;
        kairos.init=*) init="${arg#kairos.init=}" ;;
    esac
done

while read -r mod; do
    insmod "$mod" 2>/dev/null
done < /etc/modules

case "$label" in
    COS_ACTIVE|COS_PASSIVE) part=COS_STATE ;;
    COS_SYSTEM|COS_RECOVERY) part=COS_RECOVERY ;;
    "") fail "no root=LABEL=... on the kernel command line" ;;
    *) part="$label" ;;
esac
[ -n "$img" ] || fail "no cos-img/filename=... on the kernel command line"

# No udev here: poll until the partition with that filesystem label shows up.
dev=""
tries=$((wait_s * 5))
while [ "$tries" -gt 0 ]; do
    dev=$(findfs "LABEL=$part" 2>/dev/null) && [ -n "$dev" ] && break
    sleep 0.2
    tries=$((tries - 1))
done
[ -n "$dev" ] || fail "no partition labelled $part after ${wait_s}s"

mount -t ext4 -o ro "$dev" /state || fail "cannot mount $dev ($part)"
[ -f "/state$img" ] || fail "slot image $img not found on $part"
if [ "$debugrw" = 1 ]; then
    # Writable root for debugging: a tmpfs overlay over the slot; changes vanish at reboot.
    mount -t squashfs -o loop,ro "/state$img" /lower || fail "cannot mount $img"
    mount -t tmpfs -o mode=755 tmpfs /rw
    mkdir -p /rw/upper /rw/work
    mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /sysroot \
        || fail "cannot mount the debug overlay"
else
    mount -t squashfs -o loop,ro "/state$img" /sysroot || fail "cannot mount $img"
fi
[ -x "/sysroot$init" ] || fail "$img has no $init"

mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /sysroot/run
mkdir -p /sysroot/run/initramfs/cos-state /sysroot/run/cos
mount --move /state /sysroot/run/initramfs/cos-state
echo "$dev" > /sysroot/run/cos/state-device
mount --move /dev /sysroot/dev
mount --move /sys /sysroot/sys
mount --move /proc /sysroot/proc
exec switch_root /sysroot "$init"
