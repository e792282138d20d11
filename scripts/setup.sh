#!/usr/bin/env bash
# Installs what building and testing Tessera needs, skipping whatever is already there:
# Debian packages (nats-server; m4, which the GMP build behind cggmp24 needs) and cargo-nextest. Safe to run again.
set -euo pipefail

packages=(nats-server m4)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  echo "setup: installing ${missing[*]} from Debian's packages"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

echo "setup: nats-server $(nats-server --version | awk '{print $NF}'), $(cargo nextest --version | head -n1)"
