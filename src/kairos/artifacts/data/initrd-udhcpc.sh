#!/bin/sh
# udhcpc's event script in the kairos initrd (netboot): apply the lease to the interface,
# the default route and /etc/resolv.conf. udhcpc passes the lease in the environment.
resolv="${KAIROS_RESOLV_CONF:-/etc/resolv.conf}"  # another file only in tests
case "$1" in
    deconfig)
        ifconfig "$interface" 0.0.0.0
        ;;
    bound|renew)
        ifconfig "$interface" "$ip" ${subnet:+netmask "$subnet"} ${broadcast:+broadcast "$broadcast"}
        for gw in $router; do
            route add default gw "$gw" dev "$interface" 2>/dev/null && break
        done
        : > "$resolv"
        [ -n "$domain" ] && echo "search $domain" >> "$resolv"
        for ns in $dns; do
            echo "nameserver $ns" >> "$resolv"
        done
        ;;
esac
exit 0
