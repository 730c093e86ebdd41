# Sourced by scripts/bench.sh and scripts/bench-prune.sh: the local S3 server
# over TLS both benchmarks run their tools against (examples/s3_server.rs).
# Needs `die` from the sourcing script.

# s3start SERVER DIR: starts SERVER on DIR with a bucket "bench", serving
# until s3stop (or the script's exit). Sets EP (the https endpoint) and S3CA
# (its certificate), and exports the credentials and region for the tools.
s3start() {
  local server=$1 dir=$2
  mkdir -p "$dir"
  # the server serves until its stdin closes: a fifo this script holds open
  rm -f "$dir.stdin"; mkfifo "$dir.stdin"
  "$server" "$dir" bench < "$dir.stdin" > "$dir.info" 2>&1 &
  S3PID=$!
  exec {S3FD}> "$dir.stdin"
  S3DIR=$dir
  trap s3stop EXIT
  for _ in $(seq 50); do grep -q '^ca=' "$dir.info" 2>/dev/null && break; sleep 0.1; done
  EP=$(sed -n 's/^endpoint=//p' "$dir.info"); S3CA=$(sed -n 's/^ca=//p' "$dir.info")
  [ -n "$EP" ] || die "the S3 server did not start: $(cat "$dir.info")"
  AWS_ACCESS_KEY_ID=$(sed -n 's/^access_key=//p' "$dir.info")
  AWS_SECRET_ACCESS_KEY=$(sed -n 's/^secret_key=//p' "$dir.info")
  export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
}

s3stop() {
  { exec {S3FD}>&-; } 2>/dev/null || true
  kill "$S3PID" 2>/dev/null || true
  wait "$S3PID" 2>/dev/null || true
  trap - EXIT
}

# s3counters: "requests bytes" the server has served so far. It rewrites both
# files every 200 ms, so a read can catch one half written: read until both
# are numbers.
s3counters() {
  local r b; sleep 0.4
  for _ in $(seq 50); do
    r=$(cat "$S3DIR/requests"); b=$(cat "$S3DIR/bytes_out")
    [[ $r =~ ^[0-9]+$ && $b =~ ^[0-9]+$ ]] && { echo "$r $b"; return; }
    sleep 0.05
  done
  die "cannot read the S3 server's counters"
}
