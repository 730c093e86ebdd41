#!/usr/bin/env bash
# scripts/bench-lock.sh: what Object Lock costs a backup and a prune. The same
# data backed up to S3 over TLS onto a bucket with Object Lock (governance) and
# onto one without, side by side, then forgotten but for the last snapshot and
# pruned (on the locked bucket prune also reads the bucket's versions and
# clears those whose lock has ended), on moto (the S3 server here that implements Object
# Lock; s3s-fs does not). Times are the median of BENCH_REPS runs, the order
# of the two alternating; requests are counted from moto's access log. Both
# send upload checksums, as on AWS by default: a locked upload must carry one,
# so the comparison is of the lock alone.
#
#   env: BENCH_DIR   work folder (default /tmp/coffer-lock-bench)
#        BENCH_REPS  runs of each (default 5)
#        REAL_MIB, RAND_MIB, LOG_MIB   the data set (make-dataset.sh; default
#                    200/100/50: moto keeps every object in memory)
#        COFFER_BIN  a prebuilt coffer (default: cargo build --release)
#        COFFER_MOTO_SERVER  moto_server (default: target/moto-venv, as
#                    scripts/test.sh installs it)
#
# Prints a Markdown table and writes it to $BENCH_DIR/results.md.
set -euo pipefail
export LC_ALL=C
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=${COFFER_SHARED:-$ROOT/../shared}/bench
W=${BENCH_DIR:-/tmp/coffer-lock-bench}
REPS=${BENCH_REPS:-5}
MOTO=${COFFER_MOTO_SERVER:-$ROOT/target/moto-venv/bin/moto_server}
die() { printf '\nBENCH FAILED: %s\n' "$*" >&2; exit 1; }
log() { printf '\n== %s\n' "$*" >&2; }
[ -x "$MOTO" ] || die "no moto_server at $MOTO (scripts/test.sh installs it, or set COFFER_MOTO_SERVER)"
command -v openssl >/dev/null || die "openssl is needed for the test certificate"
if [ -n "${COFFER_BIN:-}" ]; then COFFER=$(readlink -f "$COFFER_BIN"); else
  log "cargo build --release"; (cd "$ROOT" && cargo build --release --bin coffer)
  COFFER=${CARGO_TARGET_DIR:-$ROOT/target}/release/coffer
fi

mkdir -p "$W"; W=$(cd "$W" && pwd)
params="REAL_MIB=${REAL_MIB:-200} RAND_MIB=${RAND_MIB:-100} LOG_MIB=${LOG_MIB:-50}"
if [ ! -f "$W/dataset.params" ] || [ "$(cat "$W/dataset.params")" != "$params" ]; then
  log "building data set ($params)"
  rm -rf "$W/dataset" "$W/dataset.params"
  env $params "$BENCH/make-dataset.sh" "$W/dataset" >&2
  echo "$params" > "$W/dataset.params"
fi
rm -rf "$W/run"; mkdir -p "$W/run"; R=$W/run

# A CA and a certificate for 127.0.0.1 signed by it, for moto's TLS.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench-ca \
  -keyout "$R/ca.key" -out "$R/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout "$R/key.pem" -out "$R/leaf.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > "$R/ext"
openssl x509 -req -in "$R/leaf.csr" -CA "$R/ca.pem" -CAkey "$R/ca.key" -CAcreateserial \
  -days 2 -extfile "$R/ext" -out "$R/cert.pem" 2>/dev/null

"$MOTO" -H 127.0.0.1 -p 0 -c "$R/cert.pem" -k "$R/key.pem" 2> "$R/moto.log" > /dev/null &
MOTO_PID=$!
trap 'kill $MOTO_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q 'Running on https://127.0.0.1:' "$R/moto.log" && break; sleep 0.1; done
PORT=$(sed -n 's|.*Running on https://127.0.0.1:\([0-9]*\).*|\1|p' "$R/moto.log" | head -1)
[ -n "$PORT" ] || die "moto did not start: $(cat "$R/moto.log")"
export AWS_ENDPOINT_URL=https://127.0.0.1:$PORT AWS_CA_BUNDLE=$R/ca.pem AWS_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_EC2_METADATA_DISABLED=true \
  AWS_REQUEST_CHECKSUM_CALCULATION=when_supported

requests() { grep -cE '"(GET|PUT|POST|DELETE|HEAD) ' "$R/moto.log" || true; }
"$COFFER" key generate --output "$R/operator.key" > "$R/recipient" 2>/dev/null
declare -A T=() N=()
run() {   # run KIND REP STEP COMMAND...: one coffer command, timed and counted
  local kind=$1 rep=$2 step=$3 r0 r1 t0 t1; shift 3
  r0=$(requests); t0=$(date +%s.%N)
  "$COFFER" "$@" --repo "s3://$kind-$rep/repo" --agent-key "$R/$kind-$rep.key" \
    --catalog "$R/$kind-$rep.sqlite" --quiet >&2 || die "$kind $step failed"
  t1=$(date +%s.%N); sleep 0.3; r1=$(requests)
  T[$kind.$step]+="$(echo "$t1 - $t0" | bc) "; N[$kind.$step]+="$((r1 - r0)) "
}
for rep in $(seq "$REPS"); do
  order="plain locked"; [ $((rep % 2)) = 0 ] && order="locked plain"
  for kind in $order; do
    lock=(); [ "$kind" = locked ] && lock=(--object-lock governance)
    "$COFFER" init --repo "s3://$kind-$rep/repo" --create-bucket "${lock[@]}" \
      --recipient "$(cat "$R/recipient")" --agent-key "$R/$kind-$rep.key" --quiet >&2
    run "$kind" "$rep" first backup "$W/dataset"
    run "$kind" "$rep" nochange backup "$W/dataset"
    "$COFFER" forget --keep-within 0s --keep-last 1 --repo "s3://$kind-$rep/repo" \
      --agent-key "$R/$kind-$rep.key" --catalog "$R/$kind-$rep.sqlite" --quiet >&2
    run "$kind" "$rep" prune prune
  done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
out=$W/results.md
{
  echo "# Object Lock: S3 backups onto a locked bucket and onto a plain one, moto over TLS"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), coffer \`$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')\`, data set $params ($(du -sm "$W/dataset" | cut -f1) MiB), medians of $REPS"
  echo
  echo "| step | plain | locked | ratio locked/plain | requests plain / locked |"
  echo "|---|---|---|---|---|"
  for step in first nochange prune; do
    p=$(echo "${T[plain.$step]}" | median); l=$(echo "${T[locked.$step]}" | median)
    printf '| %s | %.2f s | %.2f s | %.2f | %s / %s |\n' "$step" "$p" "$l" "$(echo "$l / $p" | bc -l)" \
      "$(echo "${N[plain.$step]}" | median)" "$(echo "${N[locked.$step]}" | median)"
  done
  echo
  for k in plain.first locked.first plain.nochange locked.nochange plain.prune locked.prune; do echo "- $k, every run (s): ${T[$k]}; requests: ${N[$k]}"; done
} | tee "$out"
