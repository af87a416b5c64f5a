#!/usr/bin/env bash
# Builds the local base image `debian:bookworm-slim` (there is no registry to pull it from):
# debootstrap a minimal bookworm with what the images need (iptables and iproute2 for the init
# container; curl and python3 for the compose testbed's application and clients; setcap, which
# gives the proxy binary its file capability for TPROXY) and import it. Skips the work when the
# image already exists with all of them. Needs root and debootstrap.
set -euo pipefail
image=debian:bookworm-slim
if docker image inspect "$image" >/dev/null 2>&1; then
  if docker run --rm --entrypoint /bin/sh "$image" -c 'command -v setcap' >/dev/null 2>&1; then
    echo "base image $image present"
    exit 0
  fi
  echo "base image $image lacks setcap: rebuilding it"
  docker image rm -f "$image" >/dev/null
fi
command -v debootstrap >/dev/null || { echo "debootstrap missing (apt-get install debootstrap)" >&2; exit 1; }
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
root=$(mktemp -d /tmp/portcullis-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "debootstrap bookworm from $mirror (takes a minute or two)"
debootstrap --variant=minbase --include=iptables,iproute2,ca-certificates,curl,python3,libcap2-bin \
  bookworm "$root" "$mirror" >/tmp/portcullis-debootstrap.log 2>&1 \
  || { tail -20 /tmp/portcullis-debootstrap.log >&2; exit 1; }
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import - "$image" >/dev/null
echo "imported $image"
