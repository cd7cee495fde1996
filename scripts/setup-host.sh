#!/usr/bin/env bash
# Installs what Aether needs from Debian, idempotently: a C compiler (aetherd builds its process
# shim on first start), openssl and curl (the mutual-TLS tests). Node.js 20+ and npm must exist.
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
