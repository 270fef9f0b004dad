#!/usr/bin/env bash
# Installs the Debian packages kabar needs to build and test, only those missing (idempotent).
set -euo pipefail
pkgs=(
  build-essential cmake ninja-build pkg-config clang clang-format clang-tidy libclang-rt-14-dev
  libexpat1-dev libssl-dev libsqlite3-dev libboost-dev libfmt-dev libspdlog-dev
  libtomlplusplus-dev libcli11-dev libidn-dev libgtest-dev libgmock-dev libbenchmark-dev
  openssl python3 python3-slixmpp profanity tmux procps
  libncurses-dev prosody ejabberd coturn nftables help2man
  nodejs chromium
  libnice-dev libsrtp2-dev libopus-dev libvpx-dev libasound2-dev
)
# npm: Debian's package only where no npm is there already (a nodejs package that ships its own
# npm, as NodeSource's does, conflicts with Debian's npm).
command -v npm >/dev/null 2>&1 || pkgs+=(npm)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# The web client (Converse.js) kabard serves, playwright-core for its browser tests, and StanzaJS
# with esbuild and the events polyfill (the browser client of the call test, bundled at test
# time), pinned in web/package.json and web/package-lock.json, into web/node_modules (not
# committed); skipped when they are there.
web_deps() {
  local web
  web="$(dirname "$0")/../web"
  if [ -f "$web/node_modules/converse.js/dist/converse.min.js" ] &&
    [ -f "$web/node_modules/playwright-core/package.json" ] &&
    [ -f "$web/node_modules/stanza/package.json" ] &&
    [ -f "$web/node_modules/events/package.json" ] &&
    [ -x "$web/node_modules/.bin/esbuild" ]; then
    return 0
  fi
  echo "install-deps: npm ci in web/ (Converse.js, playwright-core, StanzaJS, esbuild)"
  (cd "$web" && npm ci --no-audit --no-fund --loglevel=error)
}
if [ ${#missing[@]} -eq 0 ]; then
  web_deps
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages and not root; run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Prosody, ejabberd and coturn are test peers only: keep Debian from starting their system services
# (policy-rc.d exiting 101 refuses every start), and disable them; tests start their own.
policy=/usr/sbin/policy-rc.d
had_policy=0
[ -e "$policy" ] && had_policy=1
if [ $had_policy -eq 0 ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  trap 'rm -f "$policy"' EXIT
fi
apt-get install -y -qq "${missing[@]}"
for svc in prosody ejabberd coturn; do
  if command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now "$svc" >/dev/null 2>&1 || true
  fi
done
web_deps
