#!/usr/bin/env bash
# Installs what building and testing Tessera needs, skipping whatever is already there:
# Debian packages (nats-server; m4, which the GMP build behind cggmp24 needs; g++, which the
# tests' Bitcoin Core script interpreter (bitcoinconsensus) is built with; postgresql, whose
# initdb/postgres the coordinator's tests run in temp dirs) and cargo-nextest. Safe to run again.
set -euo pipefail

packages=(nats-server m4)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# A C++ compiler counts as present whatever package brought it.
command -v g++ >/dev/null || command -v c++ >/dev/null || missing+=(g++)

# PostgreSQL counts as present when an initdb is found where the coordinator's tests look for it:
# Debian's /usr/lib/postgresql/<version>/bin, or the PATH.
pg_initdb() {
  local found
  found=$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -n1) || true
  [[ -n "$found" ]] || found=$(command -v initdb) || true
  echo "$found"
}
[[ -n "$(pg_initdb)" ]] || missing+=(postgresql)

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

initdb=$(pg_initdb)
echo "setup: nats-server $(nats-server --version | awk '{print $NF}'), PostgreSQL $("$initdb" --version | awk '{print $3}'), $(cargo nextest --version | head -n1)"
