#!/usr/bin/env bash
# The demo: builds Portcullis, brings up the namespace testbed (client, pod with
# portcullis-init + proxy as UID 1337, upstream), shows traffic through the proxy, tears it down.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo build --workspace --bins
exec ./target/debug/testbed demo
