#!/usr/bin/env bash
# Installs what Aether needs from Debian, idempotently: a C compiler (aetherd builds its process
# shim on first start), QEMU and qemu-img (VMs), genisoimage (cloud-init seeds), the parts the test
# guest is built from (busybox-static, qemu-guest-agent, cpio; syslinux, mtools and dosfstools for
# its bootable disk), iproute2 (TAP devices and bridges),
# openssl and curl (the mutual-TLS tests), and zfs-fuse (real ZFS datasets, snapshots and clones for
# the ZFS storage driver's tests; skipped where a zfs command, e.g. ZFS on Linux, is there already,
# since the two packages conflict), etcd-server (the aggregator's highly-available store; the
# tests start their own etcd on loopback) and prometheus (the metrics test starts its own on loopback
# to scrape aetherd and the aggregator), and chromium (the web console's browser tests drive it
# through playwright-core; no browser is downloaded), and haproxy (the traffic layer: aetherd runs
# one per service endpoint; Debian's own haproxy service stays as the package leaves it, aetherd does
# not use it). Node.js 20+ and npm must exist.
set -euo pipefail

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "setup-host: Node.js 20 or newer is required (found: $(node --version 2>/dev/null || echo none))." >&2
  exit 1
fi

need=()
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
command -v genisoimage >/dev/null 2>&1 || need+=(genisoimage)
command -v busybox >/dev/null 2>&1 || need+=(busybox-static)
test -x /usr/sbin/qemu-ga || need+=(qemu-guest-agent)
command -v cpio >/dev/null 2>&1 || need+=(cpio)
command -v syslinux >/dev/null 2>&1 || need+=(syslinux)
command -v mcopy >/dev/null 2>&1 || need+=(mtools)
command -v mkfs.fat >/dev/null 2>&1 || need+=(dosfstools)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
test -x /usr/sbin/zfs || test -x /sbin/zfs || need+=(zfs-fuse)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
# The aggregator backs the cluster's state up with the real git binary ([backup] repository).
command -v git >/dev/null 2>&1 || need+=(git)
# The web console's tests (test/ui.test.ts) run in Debian's Chromium, at /usr/bin/chromium.
test -x /usr/bin/chromium || need+=(chromium)
# Service endpoints (aether.traffic.v1): aetherd runs one HAProxy per endpoint.
test -x /usr/sbin/haproxy || need+=(haproxy)

if [ ${#need[@]} -eq 0 ]; then
  echo "setup-host: host packages present."
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "setup-host: missing ${need[*]}; run this as root or install them with apt-get." >&2
  exit 1
fi
echo "setup-host: installing ${need[*]} from Debian"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
