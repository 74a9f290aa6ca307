#!/bin/sh
# kairos initrd: find the slot image, mount it read-only, switch_root into its early-init.
# Kernel command line (Kairos names): root=LABEL=COS_ACTIVE|COS_PASSIVE|COS_SYSTEM|COS_RECOVERY
# cos-img/filename=/cOS/<image>, rd.immucore.debugrw (rd.cos.debugrw), rd.immucore.sysrootwait=S,
# rd.shell=1 (a shell instead of a reboot on failure), kairos.boot_id=<id> (which boot files
# GRUB loaded: see mount_slot).
# A live boot (the ISO, kairos/boot/live.py): root=live:CDLABEL=<label> (or root=live:LABEL=),
# rd.live.dir=<dir on the medium>, rd.live.squashimg=<slot image file>: the medium is mounted
# read-only at /run/initramfs/live and the slot image on it becomes the read-only root.
# Netboot (kairos/artifacts/netboot.py): root=live:http://HOST[:PORT]/PATH: DHCP on the first
# interface that answers (udhcpc, /etc/udhcpc.script), the image downloaded with wget into a
# tmpfs that becomes /run/initramfs/live (as rootfs.squashfs), then the same live root. The
# address stays configured, as dracut leaves it, so a config_url can be fetched early.

say() { echo "kairos-initrd: $*" > /dev/console; }

# boot_id_of DIR: the id DIR/boot/kairos-boot.cfg states (one line `set kairos_boot_id=<id>`,
# written by the factory), empty when there is none.
boot_id_of() {
    [ -f "$1/boot/kairos-boot.cfg" ] || return 0
    sed -n 's/^set kairos_boot_id=\([0-9a-f]*\)$/\1/p' "$1/boot/kairos-boot.cfg"
}

# mount_slot STATE IMG WANT TARGET: mount slot image STATE/IMG read-only on TARGET and set
# $booted to the image mounted. GRUB reads COS_STATE without replaying its journal and the
# kernel replays it: after a power cut in the middle of an upgrade's renames, GRUB may have
# loaded this kernel and initrd from the file IMG named before a rename, while the mount
# here sees the file it names after. WANT (kairos.boot_id) is the id of the boot files GRUB
# loaded: when IMG's differs, the slot file on the same partition whose id is WANT is
# mounted instead (fixed order), or IMG anyway, with a warning, when none has it.
# One console line tells a mismatch: "kairos-initrd: boot id mismatch: ... booting <image>".
mount_slot() {
    _st="$1"; _img="$2"; _want="$3"; _to="$4"; booted=""; _got="no such file"
    if [ -f "$_st$_img" ]; then
        mount -t squashfs -o loop,ro "$_st$_img" "$_to" || return 1
        booted="$_img"
        [ -n "$_want" ] || return 0
        _got=$(boot_id_of "$_to")
        [ "$_got" = "$_want" ] && return 0
        _got="${_got:-no id}"
    fi
    case "$_img" in
        /cOS/active.img|/cOS/passive.img|/cOS/transition.img)
            _others="/cOS/active.img /cOS/passive.img /cOS/transition.img" ;;
        # COS_RECOVERY: an upgrade exchanges transition.squashfs and recovery.squashfs
        /cOS/recovery.squashfs|/cOS/transition.squashfs)
            _others="/cOS/recovery.squashfs /cOS/transition.squashfs" ;;
        *) _others="" ;;
    esac
    if [ -z "$_want" ] || { [ -n "$booted" ] && [ -z "$_others" ]; }; then
        # nothing to compare, or nothing else to try
        [ -n "$booted" ] || return 1
        say "boot id mismatch: $_img has $_got, the kernel came with $_want; no other" \
            "image to try: booting $_img"
        return 0
    fi
    if [ -n "$booted" ]; then
        umount "$_to" || { say "boot id mismatch: cannot unmount $_img: booting $_img"; return 0; }
        booted=""
    fi
    for _c in $_others; do
        [ "$_c" = "$_img" ] && continue
        [ -f "$_st$_c" ] || continue
        mount -t squashfs -o loop,ro "$_st$_c" "$_to" 2>/dev/null || continue
        if [ "$(boot_id_of "$_to")" = "$_want" ]; then
            booted="$_c"
            say "boot id mismatch: $_img has $_got, the kernel came with $_want from $_c:" \
                "booting $_c"
            return 0
        fi
        umount "$_to" || return 1
    done
    [ -f "$_st$_img" ] || return 1
    say "boot id mismatch: $_img has $_got, the kernel came with $_want and no image here" \
        "has it: warning: booting $_img anyway"
    mount -t squashfs -o loop,ro "$_st$_img" "$_to" || return 1
    booted="$_img"
}

# live_image DIR IMG: the slot image's path below the medium's mount point /live
# (rd.live.dir=/ and rd.live.squashimg=rootfs.squashfs give /live/rootfs.squashfs).
live_image() {
    _d="${1#/}"; _d="${_d%/}"
    echo "/live${_d:+/$_d}/$2"
}

# net_ifaces: the network interfaces the kernel has, loopback left out.
net_ifaces() {
    for _n in /sys/class/net/*; do
        [ -e "$_n" ] || continue
        [ "${_n##*/}" = lo ] || echo "${_n##*/}"
    done
}

# net_up SECONDS: DHCP on every interface in turn until one gets a lease (NICs show up a
# moment after their module is loaded: keep looking for about SECONDS); sets $net_if.
net_up() {
    _t=0; net_if=""
    while [ "$_t" -le "$1" ]; do
        for _if in $(net_ifaces); do
            ifconfig "$_if" up 2>/dev/null || continue
            if udhcpc -i "$_if" -s /etc/udhcpc.script -n -q -t 3 -T 2 >/dev/null 2>&1; then
                net_if="$_if"
                return 0
            fi
            _t=$((_t + 6))
        done
        sleep 1
        _t=$((_t + 1))
    done
    return 1
}

# fetch URL FILE TRIES: download URL to FILE with busybox wget, pausing between tries.
# No -T: Debian 12's static busybox wget crashes (SIGSEGV) with it; its own idle timeout holds.
fetch() {
    _try=1
    while :; do
        wget -q -O "$2" "$1" && [ -s "$2" ] && return 0
        [ "$_try" -ge "$3" ] && return 1
        say "download of $1 failed (try $_try of $3), retrying"
        _try=$((_try + 1))
        sleep 3
    done
}

# read_cmdline ARG...: the kernel command line's keys, into the variables the boot uses.
read_cmdline() {
    label=""; img=""; want=""; debugrw=0; wait_s=60; shell=0; init=/usr/lib/kairos/early-init
    live=""; livefs=""; live_dir=/; live_img=rootfs.squashfs; live_url=""; live_bad=0
    for arg in "$@"; do
        case "$arg" in
            root=LABEL=*) label="${arg#root=LABEL=}" ;;
            root=live:CDLABEL=*) live="${arg#root=live:CDLABEL=}"; livefs=iso9660 ;;
            root=live:LABEL=*) live="${arg#root=live:LABEL=}"; livefs="" ;;
            root=live:http://*) live_url="${arg#root=live:}" ;;
            root=live:*://*) live_url="${arg#root=live:}"; live_bad=1 ;;
            rd.live.dir=*) live_dir="${arg#rd.live.dir=}" ;;
            rd.live.squashimg=*) live_img="${arg#rd.live.squashimg=}" ;;
            cos-img/filename=*) img="${arg#cos-img/filename=}" ;;
            rd.immucore.debugrw|rd.cos.debugrw|rd.immucore.debugrw=1|rd.cos.debugrw=1) debugrw=1 ;;
            rd.immucore.sysrootwait=*) wait_s="${arg#rd.immucore.sysrootwait=}" ;;
            rd.shell=1|rd.shell) shell=1 ;;
            kairos.init=*) init="${arg#kairos.init=}" ;;
            kairos.boot_id=*) want="${arg#kairos.boot_id=}" ;;
        esac
    done
}

# Sourced with KAIROS_INITRD_LIB=1 (tests): the functions above, nothing else.
[ -n "$KAIROS_INITRD_LIB" ] && return 0

export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

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

read_cmdline $(cat /proc/cmdline)

while read -r mod; do
    insmod "$mod" 2>/dev/null
done < /etc/modules

# wait_label LABEL: poll until a device with that filesystem label shows up (no udev here)
# and print it; fails after $wait_s seconds.
wait_label() {
    _tries=$((wait_s * 5))
    while [ "$_tries" -gt 0 ]; do
        _dev=$(findfs "LABEL=$1" 2>/dev/null) && [ -n "$_dev" ] && echo "$_dev" && return 0
        sleep 0.2
        _tries=$((_tries - 1))
    done
    return 1
}

# handover: /sysroot is the root; give it /run (a tmpfs, mount points made by the caller
# under /sysroot/run after this) and the API filesystems, then switch_root into early-init.
run_tmpfs() {
    mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /sysroot/run
    mkdir -p /sysroot/run/cos
}
handover() {
    mount --move /dev /sysroot/dev
    mount --move /sys /sysroot/sys
    mount --move /proc /sysroot/proc
    exec switch_root /sysroot "$init"
}

# live_handover IMG WHAT: slot image IMG (below /live) becomes the read-only root, /live moves
# to /run/initramfs/live; early-init keeps every write in RAM. WHAT names the source in errors.
live_handover() {
    mount -t squashfs -o loop,ro "$1" /sysroot || fail "cannot mount ${1#/live} from $2"
    [ -x "/sysroot$init" ] || fail "${1#/live} from $2 has no $init"
    run_tmpfs
    mkdir -p /sysroot/run/initramfs/live
    mount --move /live /sysroot/run/initramfs/live
    handover
}

# A live boot: the medium (a CD, or a disk the hybrid ISO was written to) read-only at
# /run/initramfs/live, its slot image the read-only root.
if [ -n "$live" ]; then
    dev=$(wait_label "$live") || fail "no device labelled $live after ${wait_s}s"
    mkdir -p /live
    mount ${livefs:+-t $livefs} -o ro "$dev" /live || fail "cannot mount $dev ($live)"
    limg=$(live_image "$live_dir" "$live_img")
    [ -f "$limg" ] || fail "$dev ($live) has no ${limg#/live}"
    live_handover "$limg" "$live"
fi

# Netboot: the image comes over HTTP into RAM (a tmpfs, at most half the memory by default).
if [ -n "$live_url" ]; then
    [ "$live_bad" = 0 ] || fail "cannot fetch $live_url: the initrd downloads over http:// only"
    net_up "$wait_s" || fail "no DHCP lease on any network interface after ${wait_s}s"
    say "network up on $net_if; downloading $live_url"
    mkdir -p /live
    mount -t tmpfs -o mode=755 tmpfs /live || fail "cannot mount a tmpfs for the image"
    fetch "$live_url" /live/rootfs.squashfs 5 \
        || fail "cannot download $live_url after 5 tries (server down, or the image larger than half the RAM?)"
    live_handover /live/rootfs.squashfs "$live_url"
fi

case "$label" in
    COS_ACTIVE|COS_PASSIVE) part=COS_STATE ;;
    COS_SYSTEM|COS_RECOVERY) part=COS_RECOVERY ;;
    "") fail "no root=LABEL=... on the kernel command line" ;;
    *) part="$label" ;;
esac
[ -n "$img" ] || fail "no cos-img/filename=... on the kernel command line"

dev=$(wait_label "$part") || fail "no partition labelled $part after ${wait_s}s"

mount -t ext4 -o ro "$dev" /state || fail "cannot mount $dev ($part)"
if [ "$debugrw" = 1 ]; then
    # Writable root for debugging: a tmpfs overlay over the slot; changes vanish at reboot.
    mount_slot /state "$img" "$want" /lower || fail "cannot mount $img from $part"
    mount -t tmpfs -o mode=755 tmpfs /rw
    mkdir -p /rw/upper /rw/work
    mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /sysroot \
        || fail "cannot mount the debug overlay"
else
    mount_slot /state "$img" "$want" /sysroot || fail "cannot mount $img from $part"
fi
[ -x "/sysroot$init" ] || fail "$booted has no $init"

run_tmpfs
mkdir -p /sysroot/run/initramfs/cos-state
mount --move /state /sysroot/run/initramfs/cos-state
echo "$dev" > /sysroot/run/cos/state-device
# What was mounted, which may not be what the command line named (mount_slot): early-init
# takes the boot mode from it.
echo "$booted" > /sysroot/run/cos/booted-image
handover
