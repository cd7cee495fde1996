#!/bin/busybox sh
# The test guest's init: busybox, Debian's virtio modules (loaded in dependency order, since busybox
# insmod resolves none), the NoCloud seed's first-boot script, qemu-guest-agent, and a console shell.
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /run /tmp /var/lib/aether /mnt/seed
ln -s /run /var/run
mount -t devpts devpts /dev/pts
for m in virtio_ring virtio virtio_mmio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_console failover net_failover virtio_net virtio_blk cdrom isofs; do
  [ -f "/lib/modules/$m.ko" ] && insmod "/lib/modules/$m.ko" 2>/dev/null
done

arg() { for w in $(cat /proc/cmdline); do case "$w" in "$1="*) echo "${w#*=}"; return;; esac; done; }
name="$(arg aether.hostname)"; [ -n "$name" ] && hostname "$name"
ip link set lo up
ip="$(arg aether.ip)"
if [ -n "$ip" ]; then
  ip link set eth0 up && ip addr add "$ip" dev eth0
  gw="$(arg aether.gw)"; [ -n "$gw" ] && ip route add default via "$gw"
fi
echo "aether-guest: up as $(hostname), kernel $(uname -r)"

# cloud-init NoCloud: a disk labelled cidata with meta-data and user-data.
for dev in /dev/vd[b-z] /dev/vda; do
  [ -b "$dev" ] || continue
  if mount -t iso9660 -o ro "$dev" /mnt/seed 2>/dev/null; then
    if [ -f /mnt/seed/meta-data ]; then
      id="$(sed -n 's/^instance-id: *//p' /mnt/seed/meta-data)"
      host="$(sed -n 's/^local-hostname: *//p' /mnt/seed/meta-data)"; [ -n "$host" ] && hostname "$host"
      echo "aether-guest: cloud-init seed for instance ${id:-unknown}"
      marker="/var/lib/aether/first-boot-${id:-unknown}"
      if [ -f /mnt/seed/user-data ] && head -c 2 /mnt/seed/user-data | grep -q '^#!' && [ ! -f "$marker" ]; then
        cp /mnt/seed/user-data /run/first-boot && chmod +x /run/first-boot
        /run/first-boot > /run/first-boot.log 2>&1; echo "$?" > /run/first-boot.status
        touch "$marker"
        echo "aether-guest: first-boot script exited with $(cat /run/first-boot.status)"
      fi
      break
    fi
    umount /mnt/seed
  fi
done

# The guest agent answers on the virtio-serial port; without udev it is /dev/vport0p1 (or p2...).
for port in /dev/vport*p*; do
  [ -c "$port" ] && /usr/sbin/qemu-ga -m virtio-serial -p "$port" -d -t /run && echo "aether-guest: agent on $port" && break
done
echo "aether-guest: ready"
while :; do setsid cttyhack /bin/sh -l; done
