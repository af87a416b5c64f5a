#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks for the testbed, the demo and the benchmarks.
# Idempotent: installs only missing packages. Needs root.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have ip        || need+=(iproute2)
have iptables  || need+=(iptables)
have curl      || need+=(curl)
have setpriv   || need+=(util-linux)
have sysctl    || need+=(procps)
have python3   || need+=(python3)
have wrk       || need+=(wrk)
have nginx     || need+=(nginx-light)
have socat     || need+=(socat)
have openssl   || need+=(openssl)
have ab        || need+=(apache2-utils)
have nghttp    || need+=(nghttp2-client)
# Peers and tools of the load harness (benches/).
have haproxy   || need+=(haproxy)
have iperf3    || need+=(iperf3)
# The compose testbed: the Docker engine, docker-compose, and debootstrap for the local base image.
have dockerd        || need+=(docker.io)
have docker-compose || need+=(docker-compose)
have debootstrap    || need+=(debootstrap)
# Real gRPC and WebSocket peers come from Debian, run with Debian's interpreter.
/usr/bin/python3 -c 'import grpc' 2>/dev/null       || need+=(python3-grpcio)
/usr/bin/python3 -c 'import websockets' 2>/dev/null || need+=(python3-websockets)

if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${need[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Kubernetes schema validation (manifests, patched pods): from PyPI, works offline once installed.
if ! have kubernetes-validate; then
  echo "installing: kubernetes-validate (pip)"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  fi
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore kubernetes-validate \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages kubernetes-validate
fi
have kubernetes-validate || { echo "kubernetes-validate is not on PATH after installing it" >&2; exit 1; }
