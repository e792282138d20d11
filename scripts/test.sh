#!/usr/bin/env bash
# Runs every check CI runs: installs what is missing, then formatting, clippy and all tests
# (including the ones that start real nats-server processes on 127.0.0.1 with random ports).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh

# One clean build per run: incremental compilation only adds work.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo nextest"
cargo nextest run --workspace --all-targets --locked --profile ci
