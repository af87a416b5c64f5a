#!/usr/bin/env bash
# Runs every test: unit, property, golden, in-process and the namespace end-to-end tests.
# The e2e tests need root; they fail (never skip) without it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
# No two modules of a crate may import each other (directly or round a circle).
python3 scripts/check-module-cycles.py --self-test
python3 scripts/check-module-cycles.py
cargo build --workspace --bins
cargo test --workspace
