#!/usr/bin/env bash
# Benchmark at scale: three months of six backups a day on a server of a
# million files, coffer side by side with restic, locally and on S3 over TLS.
#
# usage: scripts/bench-scale.sh      (from anywhere; all settings via env)
#
#   FILES          small files in the tree (default 1000000); plus LARGE_MIB
#                  (default FILES/1000) in large files of 8 to 64 MiB and a log
#   SNAPSHOTS      snapshots in the history (default 540: 90 days x 6)
#   CHECKPOINTS    snapshots after which everything is measured (default
#                  "1 90 270 540"; each at most SNAPSHOTS)
#   CHURN          fraction of the small files changed before each snapshot
#                  (default 0.002 = 0.2 %): modified, renamed, deleted, created
#   BENCH_ONLY     both | coffer | restic   (default both)
#   BENCH_LOCAL    0 = no local-directory repositories (default 1)
#   BENCH_S3       0 = no S3 repositories (default 1). S3 is one local server
#                  over TLS (examples/s3_server: s3s-fs behind rustls, counting
#                  requests), at BENCH_S3_SERVER, else <COFFER_BIN dir>/examples/s3_server,
#                  else <repo root>/target/release/examples/s3_server
#   BENCH_DIR      work dir (default /tmp/coffer-scale-bench): tree, repositories,
#                  catalogs and caches, restores, results (scale-results.md)
#   BENCH_DROP_CACHES  1 = drop the page cache for the cold stat floor (default
#                  1 when root; it drops the whole machine's cache)
#   COFFER_BIN     a prebuilt coffer binary (default: cargo build --release);
#                  COFFER_REV: what to call it in the report
#
# What it does:
#   1. checks free disk against an estimate and refuses if short; builds the
#      tree with scripts/scale-tree.py (cached in BENCH_DIR/tree-*, reused
#      while FILES and LARGE_MIB are the same), copies it to BENCH_DIR/data
#   2. the history: snapshot k (1..SNAPSHOTS) is backdated to END - (SNAPSHOTS
#      - k) * 4 h, END two hours before the run began (coffer `backup --time`,
#      restic `backup --time` under TZ=UTC); before every snapshot but the
#      first, `scale-tree.py mutate` applies one round of CHURN, counting the
#      bytes it writes. Every backup of every tool and target is timed (and its
#      S3 requests counted), so the table shows whether backups stay flat as
#      history grows
#   3. at each checkpoint, after its snapshot, for each target and tool (which
#      goes first alternates): the stat floor (`find DATA -printf '%s %T@\n'`,
#      cold and warm); a no-change backup (dated 1 h after the snapshot);
#      `snapshots` with the warm catalog / cache and a cold (empty) one; a
#      one-file restore, warm and cold, compared byte for byte; `find` of that
#      file's name across the history; `diff` of the oldest and newest
#      snapshot; `check` (structure); expiry: forget + prune; a full restore of
#      the latest snapshot, compared with the tree (diff -r, and type, mode,
#      size and mtime of every file). Each step: wall time, peak RSS (GNU time
#      %M), S3 requests; then the repository and catalog / cache sizes
#   4. the tables, printed and written to BENCH_DIR/scale-results.md
#
# Expiry: 540 snapshots 4 h apart span 89.8 days, so `--keep-within 90d`
# would remove nothing until the window slides past the end. Each checkpoint
# instead expires the history's oldest day, as the agent does at steady state:
# the window is min(KEEP_DAYS (90), from the newest snapshot back to 22 h after
# the oldest), the boundary half-way between two snapshots. restic measures
# --keep-within from its newest snapshot (given in whole hours), coffer from
# now (given in seconds, computed just before the call): both are handed the
# same boundary, and both must remove the snapshots expected. coffer prunes
# with `--grace 0s` (every pack here was written within the run).
#
# Any failed command, a restore that differs, or tools that disagree on what
# expiry removed: the script stops at once with BENCH FAILED and exit status 1.
set -euo pipefail
export LC_ALL=C TZ=UTC   # TZ: restic's --time is local time; the history is in UTC

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GEN=$ROOT/scripts/scale-tree.py
W=${BENCH_DIR:-/tmp/coffer-scale-bench}
FILES=${FILES:-1000000}
LARGE_MIB=${LARGE_MIB:-$((FILES / 1000))}
SNAPSHOTS=${SNAPSHOTS:-540}
CHECKPOINTS=${CHECKPOINTS:-"1 90 270 540"}
CHURN=${CHURN:-0.002}
KEEP_DAYS=${KEEP_DAYS:-90}
ONLY=${BENCH_ONLY:-both}
log() { printf '\n== [%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf '\nBENCH FAILED: %s\n' "$*" >&2; exit 1; }
case $ONLY in both) TOOLS=(coffer restic) ;; coffer|restic) TOOLS=("$ONLY") ;; *) die "BENCH_ONLY must be both, coffer or restic" ;; esac
TARGETS=(); [ "${BENCH_LOCAL:-1}" = 1 ] && TARGETS+=(local); [ "${BENCH_S3:-1}" = 1 ] && TARGETS+=(s3)
[ ${#TARGETS[@]} -gt 0 ] || die "BENCH_LOCAL=0 and BENCH_S3=0: nothing to measure"
[[ $FILES =~ ^[0-9]+$ && $SNAPSHOTS =~ ^[0-9]+$ && $FILES -ge 100 && $SNAPSHOTS -ge 1 ]] || die "FILES (>= 100) and SNAPSHOTS (>= 1) must be numbers"
for c in $CHECKPOINTS; do
  [[ $c =~ ^[0-9]+$ && $c -ge 1 && $c -le $SNAPSHOTS ]] || die "checkpoint $c is not a snapshot number in 1..$SNAPSHOTS"
done
LAST_CP=$(tr ' ' '\n' <<< "$CHECKPOINTS" | grep . | sort -n | tail -n1)
FIRST_CP=$(tr ' ' '\n' <<< "$CHECKPOINTS" | grep . | sort -n | sed -n 1p)
. "$ROOT/scripts/bench-s3.sh"
. "$ROOT/scripts/bench-fs.sh"

# --- 0. tools ------------------------------------------------------------------------
missing=()
[[ " ${TOOLS[*]} " == *" restic "* ]] && ! command -v restic >/dev/null && missing+=(restic)
[ -x /usr/bin/time ] || missing+=(time)
command -v jq >/dev/null || missing+=(jq)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  log "installing ${missing[*]}"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "${missing[@]}"
fi
if [ -n "${COFFER_BIN:-}" ]; then
  COFFER=$(readlink -f "$COFFER_BIN"); REV=${COFFER_REV:-prebuilt $COFFER}
else
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release && cargo build --release --example s3_server)
  COFFER=$ROOT/target/release/coffer
  REV=$(git -C "$ROOT" log -1 --format='%h' | tr -d '\n')
fi
[ -x "$COFFER" ] || die "no coffer binary at $COFFER"
if [ "${BENCH_S3:-1}" = 1 ]; then
  S3SERVER=${BENCH_S3_SERVER:-$(dirname "$COFFER")/examples/s3_server}
  [ -x "$S3SERVER" ] || S3SERVER=$ROOT/target/release/examples/s3_server
  [ -x "$S3SERVER" ] || die "no S3 server binary (looked beside COFFER_BIN and in $ROOT/target/release/examples): set BENCH_S3_SERVER, or BENCH_S3=0 for local repositories only"
fi

# --- 1. disk, tree -------------------------------------------------------------------
mkdir -p "$W"; W=$(cd "$W" && pwd)
# Estimate, in KiB: the tree on disk (5 KiB a small file: most take one 4 KiB
# block; the log grows every round), once more for a restore, and per
# repository about half the tree's data plus 60 % of what every round writes.
GROW_KIB=$(awk -v f="$FILES" -v c="$CHURN" 'BEGIN{ l = int(f / 4000); if (l < 16) l = 16; printf "%d", f * c * 0.6 * 2 + l + 32 }')
TREE_KIB=$((FILES * 5 + LARGE_MIB * 1024 + SNAPSHOTS * GROW_KIB))
REPO_KIB=$(((FILES * 2 + LARGE_MIB * 1024) / 2 + SNAPSHOTS * GROW_KIB * 6 / 10))
NEED_KIB=$((2 * TREE_KIB + ${#TOOLS[@]} * ${#TARGETS[@]} * REPO_KIB + 1048576))
HAVE_KIB=$(df -Pk "$W" | awk 'NR == 2 {print $4}')
for d in "$W"/data "$W"/tree-* "$W"/coffer "$W"/restic "$W"/s3srv; do   # what a rerun frees or reuses
  [ -e "$d" ] && HAVE_KIB=$((HAVE_KIB + $(du -sk "$d" | cut -f1)))
done
if [ "$HAVE_KIB" -lt "$NEED_KIB" ]; then
  die "$W has $((HAVE_KIB >> 20)) GiB free (counting this benchmark's earlier files), about $((NEED_KIB >> 20)) GiB needed for FILES=$FILES SNAPSHOTS=$SNAPSHOTS, ${#TOOLS[@]} tool(s), ${#TARGETS[@]} target(s) (tree, a restore, the repositories): free space, set BENCH_DIR elsewhere, lower FILES, or run the targets apart (BENCH_S3=0; BENCH_LOCAL=0)"
fi
log "disk: about $((NEED_KIB >> 20)) GiB needed, $((HAVE_KIB >> 20)) GiB free"

TREE=$W/tree-$FILES-$LARGE_MIB
if [ ! -f "$TREE.made" ]; then
  log "building the tree: $FILES small files, $LARGE_MIB MiB of large ones"
  rm -rf "$W"/tree-*
  python3 "$GEN" make "$TREE" "$FILES" "$LARGE_MIB" > "$TREE.made.tmp" || die "scale-tree.py make failed"
  mv "$TREE.made.tmp" "$TREE.made"   # written last: marks a complete tree
fi
DATA=$W/data
RAW=$W/raw
restore_fs_choose   # unmounts an earlier run's restore targets first
for d in "$W"/restore-*; do rm -rf "$d"; done
rm -rf "$DATA" "$DATA".* "$W/coffer" "$W/restic" "$W/s3srv" "$RAW"
mkdir -p "$RAW" "$W/coffer" "$W/restic"
log "copying the tree to $DATA"
cp -a "$TREE" "$DATA"
for f in files dirs corpus; do cp "$TREE.$f" "$DATA.$f"; done
NFILES0=$(find "$DATA" -type f | wc -l); NBYTES0=$(du -sb "$DATA" | cut -f1)
DROP=${BENCH_DROP_CACHES:-0}
[ -w /proc/sys/vm/drop_caches ] && [ -z "${BENCH_DROP_CACHES:-}" ] && DROP=1
LOAD0=$(cut -d' ' -f1 /proc/loadavg)
T_START=$(date +%s)

# --- measuring -----------------------------------------------------------------------
declare -A T=() M=() Q=()   # [target.tool.step.cp]: wall seconds, peak RSS KiB, S3 requests
declare -A SIZE=()          # [target.tool.what.cp]: repo / catalog bytes
STEPNO=0
if [ "${BENCH_S3:-1}" = 1 ]; then
  s3start "$S3SERVER" "$W/s3srv"
  export AWS_ENDPOINT_URL=$EP AWS_CA_BUNDLE=$S3CA   # coffer's; restic takes --cacert
fi
# measure TARGET TOOL STEP CP CMD...: CMD under GNU time, its S3 requests
# counted on target s3; the figures land in T, M, Q and raw/measure.tsv. A
# failure ends the benchmark.
measure() {
  local target=$1 tool=$2 step=$3 cp=$4 r0=0 r1=0 _b; shift 4
  local key=$target.$tool.$step.$cp out=$RAW/$target.$tool.$step.$cp
  [ "$target" = s3 ] && read -r r0 _b < <(s3counters)
  sync   # earlier writes are flushed here, not billed to this step
  if ! /usr/bin/time -f '%e %M' -o "$out.time" "$@" > "$out.out" 2> "$out.err"; then
    die "$tool ($target) failed in step '$step' at snapshot $cp ($(grep -m1 -o 'exit.*status [0-9]*' "$out.time" || echo killed)): $* -- stderr: $(tail -c 2000 "$out.err")"
  fi
  read -r T[$key] M[$key] < <(tail -n1 "$out.time")
  if [ "$target" = s3 ]; then read -r r1 _b < <(s3counters); Q[$key]=$((r1 - r0)); fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$tool" "$step" "$cp" "${T[$key]}" "${M[$key]}" "${Q[$key]:-}" >> "$RAW/measure.tsv"
  printf '   %-6s %-6s %-16s @%-4s %8.2f s %6d MiB%s\n' "$target" "$tool" "$step" "$cp" "${T[$key]}" $((M[$key] / 1024)) \
    "${Q[$key]:+  ${Q[$key]} requests}" >&2
}
# both FN ARGS...: FN TOOL ARGS... for each tool, which goes first alternating
both() {
  local order=("${TOOLS[@]}") t
  [ "${#TOOLS[@]}" -eq 2 ] && [ "$((STEPNO++ % 2))" -eq 1 ] && order=("${TOOLS[1]}" "${TOOLS[0]}")
  for t in "${order[@]}"; do "${t}_$1" "${@:2}"; done
}

# coffer: operator identity (reads) + one agent key per target (writes)
C=$W/coffer
export COFFER_CACHE_DIR=$C/cache   # nothing goes to ~/.cache
"$COFFER" key generate --output "$C/operator.key" > /dev/null 2>&1 || die "coffer key generate"
RECIPIENT=$("$COFFER" key recipient --identity "$C/operator.key")
crepo() { [ "$1" = s3 ] && echo s3://bench/coffer || echo "$C/repo-local"; }
ccat() { echo "$C/catalog-$1.sqlite"; }
cagent() { echo "$C/agent-$1.key"; }
# restic: repository format 2, cache inside $W; on S3 its s3legacy layout
# (s3s-fs takes minio-go's empty "delimiter=" as a delimiter: restic's
# default layout would list no packs)
R=$W/restic
export RESTIC_PASSWORD=coffer-bench
rrepo() {   # rrepo TARGET [CACHE]: the restic command line for TARGET
  local cache=${2:-$R/cache-$1}
  if [ "$1" = s3 ]; then RR=(restic --repo "s3:$EP/bench/restic" --cacert "$S3CA" -o s3.layout=s3legacy --cache-dir "$cache" --compression auto)
  else RR=(restic --repo "$R/repo-local" --cache-dir "$cache" --compression auto); fi
}
for tg in "${TARGETS[@]}"; do
  if [[ " ${TOOLS[*]} " == *" coffer "* ]]; then
    "$COFFER" init --repo "$(crepo "$tg")" --recipient "$RECIPIENT" --agent-key "$(cagent "$tg")" > "$RAW/coffer.init.$tg" 2>&1 ||
      die "coffer init ($tg): $(cat "$RAW/coffer.init.$tg")"
  fi
  if [[ " ${TOOLS[*]} " == *" restic "* ]]; then
    rrepo "$tg"; "${RR[@]}" init --repository-version 2 > "$RAW/restic.init.$tg" 2>&1 || die "restic init ($tg): $(cat "$RAW/restic.init.$tg")"
  fi
done

coffer_backup() {   # coffer_backup TARGET STEP CP EPOCH
  measure "$1" coffer "$2" "$3" "$COFFER" backup --repo "$(crepo "$1")" --agent-key "$(cagent "$1")" --catalog "$(ccat "$1")" \
    --time "$(date -u -d @"$4" +%Y-%m-%dT%H:%M:%SZ)" -q "$DATA"
}
restic_backup() {
  rrepo "$1"; measure "$1" restic "$2" "$3" "${RR[@]}" backup --quiet --time "$(date -u -d @"$4" '+%Y-%m-%d %H:%M:%S')" "$DATA"
}
# coffer's operator commands: coffer_op TARGET STEP CP CATALOG SUBCOMMAND ARGS...
coffer_op() {
  local tg=$1 step=$2 cp=$3 cat=$4 sub=$5; shift 5
  measure "$tg" coffer "$step" "$cp" "$COFFER" "$sub" "$@" --repo "$(crepo "$tg")" --identity "$C/operator.key" --catalog "$cat"
}
coffer_snapshots() {
  coffer_op "$1" snapshots.warm "$2" "$(ccat "$1")" snapshots
  rm -f "$C/cold.sqlite"*; coffer_op "$1" snapshots.cold "$2" "$C/cold.sqlite" snapshots; rm -f "$C/cold.sqlite"*
}
restic_snapshots() {
  rrepo "$1"; measure "$1" restic snapshots.warm "$2" "${RR[@]}" snapshots
  rm -rf "$R/cold"; rrepo "$1" "$R/cold"; measure "$1" restic snapshots.cold "$2" "${RR[@]}" snapshots; rm -rf "$R/cold"
}
# one-file restore, warm then cold (an empty catalog / cache), compared byte for byte
same_file() { cmp -s "$DATA/$ONE" "$1$DATA/$ONE" || die "$2: the restored $ONE differs from the tree (or is missing: $1$DATA/$ONE)"; }
coffer_file() {
  local c cat
  for c in warm cold; do
    cat=$(ccat "$1"); [ "$c" = warm ] || { rm -f "$C/cold.sqlite"*; cat=$C/cold.sqlite; }
    rm -rf "$W/restore-one"
    coffer_op "$1" "file.$c" "$2" "$cat" restore latest --target "$W/restore-one" --include "$DATA/$ONE" -q
    same_file "$W/restore-one" "coffer ($1) one-file restore, $c"
  done
  rm -rf "$W/restore-one" "$C/cold.sqlite"*
}
restic_file() {
  local c
  for c in warm cold; do
    rrepo "$1"; [ "$c" = warm ] || { rm -rf "$R/cold"; rrepo "$1" "$R/cold"; }
    rm -rf "$W/restore-one"
    measure "$1" restic "file.$c" "$2" "${RR[@]}" restore latest --target "$W/restore-one" --include "$DATA/$ONE" --quiet
    same_file "$W/restore-one" "restic ($1) one-file restore, $c"
  done
  rm -rf "$W/restore-one" "$R/cold"
}
coffer_find() { coffer_op "$1" find "$2" "$(ccat "$1")" find "$(basename "$ONE")"; }
restic_find() { rrepo "$1"; measure "$1" restic find "$2" "${RR[@]}" find "$(basename "$ONE")"; }
# diff of the oldest and the newest snapshot (ids listed untimed)
coffer_diff() {
  local ids
  ids=$("$COFFER" snapshots --repo "$(crepo "$1")" --identity "$C/operator.key" --catalog "$(ccat "$1")" --json |
    jq -r 'sort_by(.time) | .[0].id, .[-1].id') || die "coffer ($1) snapshots --json"
  coffer_op "$1" diff "$2" "$(ccat "$1")" diff $ids
}
restic_diff() {
  local ids
  rrepo "$1"; ids=$("${RR[@]}" snapshots --json | jq -r 'sort_by(.time) | .[0].id, .[-1].id') || die "restic ($1) snapshots --json"
  measure "$1" restic diff "$2" "${RR[@]}" diff $ids
}
coffer_check() { coffer_op "$1" check "$2" "$(ccat "$1")" check; }
restic_check() { rrepo "$1"; measure "$1" restic check "$2" "${RR[@]}" check; }
# expiry: the boundary $BOUNDARY (epoch) and $EXPECT_LEFT snapshots set by expire_plan
coffer_expire() {
  local now; now=$(date +%s)
  measure "$1" coffer forget "$2" "$COFFER" forget --repo "$(crepo "$1")" --agent-key "$(cagent "$1")" --catalog "$(ccat "$1")" \
    --keep-within "$((now - BOUNDARY))s" --json
  measure "$1" coffer prune "$2" "$COFFER" prune --repo "$(crepo "$1")" --agent-key "$(cagent "$1")" --catalog "$(ccat "$1")" --grace 0s --json
  local n; n=$("$COFFER" snapshots --repo "$(crepo "$1")" --identity "$C/operator.key" --catalog "$(ccat "$1")" --json | jq length)
  [ "$n" = "$EXPECT_LEFT" ] || die "coffer ($1): $n snapshots left after expiry at snapshot $2, expected $EXPECT_LEFT"
}
restic_expire() {
  rrepo "$1"
  measure "$1" restic forget "$2" "${RR[@]}" forget --keep-within "$(((NEWEST - BOUNDARY) / 3600))h" --prune
  local n; n=$("${RR[@]}" snapshots --json | jq length)
  [ "$n" = "$EXPECT_LEFT" ] || die "restic ($1): $n snapshots left after expiry at snapshot $2, expected $EXPECT_LEFT"
}
# full restore of the latest snapshot, compared with the tree (not changed since)
verify_tree() {   # verify_tree DIR WHAT
  local got=$1$DATA
  [ -d "$got" ] || die "$2: the restore has no $got"
  diff -rq "$DATA" "$got" > "$RAW/restore.diff" 2>&1 || die "$2: restored content differs (diff -rq, $(wc -l < "$RAW/restore.diff") lines: $RAW/restore.diff)"
  meta() { (cd "$1" && find . ! -type d -printf '%y %P %m %s %T@\n' | sed -E 's/\.[0-9]+$//' | sort); }
  diff <(meta "$DATA") <(meta "$got") > "$RAW/restore.meta.diff" || die "$2: restored type/mode/size/mtime differ ($RAW/restore.meta.diff)"
  drop_target "$1"
}
coffer_restore() {
  fresh_target "$W/restore-full" "$(du -sb "$DATA" | cut -f1)" || die "no fresh restore target ($RFS)"
  coffer_op "$1" restore "$2" "$(ccat "$1")" restore latest --target "$W/restore-full" -q
  verify_tree "$W/restore-full" "coffer ($1) full restore at snapshot $2"
}
restic_restore() {
  fresh_target "$W/restore-full" "$(du -sb "$DATA" | cut -f1)" || die "no fresh restore target ($RFS)"; rrepo "$1"
  measure "$1" restic restore "$2" "${RR[@]}" restore latest --target "$W/restore-full" --quiet
  verify_tree "$W/restore-full" "restic ($1) full restore at snapshot $2"
}
sizes() {   # sizes TARGET CP: repository and catalog / cache bytes
  local tg=$1 cp=$2 repo
  for t in "${TOOLS[@]}"; do
    if [ "$tg" = s3 ]; then repo=$S3DIR/s3/bench/$t; elif [ "$t" = coffer ]; then repo=$C/repo-local; else repo=$R/repo-local; fi
    SIZE[$tg.$t.repo.$cp]=$(du -sb "$repo" | cut -f1)
    if [ "$t" = coffer ]; then SIZE[$tg.$t.cat.$cp]=$(find "$C" -maxdepth 1 \( -name "catalog-$tg.sqlite" -o -name "catalog-$tg.sqlite-wal" \) -printf '%s\n' | awk '{s += $1} END{print s + 0}')
    else SIZE[$tg.$t.cat.$cp]=$(du -sb "$R/cache-$tg" | cut -f1); fi
  done
}

# stat floor: what walking the tree and reading every file's metadata costs
floor() {   # floor CP
  if [ "$DROP" = 1 ]; then
    sync; { echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null || die "cannot drop the page cache (BENCH_DROP_CACHES=0 measures the warm floor only)"
    measure fs find floor.cold "$1" find "$DATA" -printf '%s %T@\n'
  fi
  measure fs find floor.warm "$1" find "$DATA" -printf '%s %T@\n'
}

# --- 2./3. history and checkpoints -------------------------------------------------------
STEP_S=14400
END=$(( $(date +%s) / 3600 * 3600 - 7200 ))   # the newest snapshot's no-change twin (+1 h) stays in the past
snap_time() { echo $((END - (SNAPSHOTS - $1) * STEP_S)); }
TIMES=()          # the time of every snapshot the repositories hold (the same for every tool and target)
CHANGED=0         # bytes the generator wrote since the first snapshot
declare -A CHANGED_AT=() FILES_AT=() BYTES_AT=() SNAPS_AT=() EXPIRED_AT=() WINDOW_AT=()
: > "$RAW/history.tsv"
log "history: $SNAPSHOTS snapshots 4 h apart, the last at $(date -u -d @"$(snap_time "$SNAPSHOTS")" '+%F %T') UTC; checkpoints $CHECKPOINTS; targets ${TARGETS[*]}; tools ${TOOLS[*]}"
for ((k = 1; k <= SNAPSHOTS; k++)); do
  t=$(snap_time "$k")
  if [ "$k" -gt 1 ]; then
    out=$(python3 "$GEN" mutate "$DATA" "$k" "$CHURN") || die "scale-tree.py mutate $k failed"
    CHANGED=$((CHANGED + $(jq .changed_bytes <<< "$out")))
    echo "$out" >> "$RAW/mutations.jsonl"
  fi
  cp=0; for c in $CHECKPOINTS; do [ "$c" = "$k" ] && cp=1; done
  [ "$cp" = 1 ] && log "checkpoint: snapshot $k" || log "snapshot $k/$SNAPSHOTS"
  for tg in "${TARGETS[@]}"; do both backup "$tg" backup "$k" "$t"; done
  for tg in "${TARGETS[@]}"; do for tool in "${TOOLS[@]}"; do
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$k" "$tg" "$tool" "${T[$tg.$tool.backup.$k]}" "${M[$tg.$tool.backup.$k]}" "${Q[$tg.$tool.backup.$k]:-}" >> "$RAW/history.tsv"
    [ "$cp" = 1 ] || { unset "T[$tg.$tool.backup.$k]" "M[$tg.$tool.backup.$k]" "Q[$tg.$tool.backup.$k]"; rm -f "$RAW/$tg.$tool.backup.$k".*; }
  done; done
  TIMES+=("$t")
  [ "$cp" = 1 ] || continue

  # --- a checkpoint
  CHANGED_AT[$k]=$CHANGED
  FILES_AT[$k]=$(find "$DATA" -type f | wc -l); BYTES_AT[$k]=$(du -sb "$DATA" | cut -f1)
  floor "$k"
  for tg in "${TARGETS[@]}"; do both backup "$tg" nochange "$k" $((t + 3600)); done
  TIMES+=($((t + 3600)))
  NEWEST=$((t + 3600))
  # the file restored and looked for: one of the small files, a different one each checkpoint
  nf=$(wc -l < "$DATA.files")
  ONE=$(sed -n "$(( (k * 7919) % nf + 1 ))p" "$DATA.files")
  for tg in "${TARGETS[@]}"; do
    both snapshots "$tg" "$k"
    both file "$tg" "$k"
    both find "$tg" "$k"
    both diff "$tg" "$k"
    both check "$tg" "$k"
  done
  # expiry: the oldest day goes (see the header); none while the history is shorter
  OLDEST=$(printf '%s\n' "${TIMES[@]}" | sort -n | sed -n 1p)   # sed reads it all: head would end sort with SIGPIPE, which pipefail turns into an exit
  WIN=$((NEWEST - OLDEST - 22 * 3600)); [ "$WIN" -le $((KEEP_DAYS * 86400)) ] || WIN=$((KEEP_DAYS * 86400))
  if [ "$WIN" -gt 0 ]; then
    BOUNDARY=$((NEWEST - WIN))
    keep=(); for x in "${TIMES[@]}"; do [ "$x" -lt "$BOUNDARY" ] || keep+=("$x"); done
    EXPIRED_AT[$k]=$(( ${#TIMES[@]} - ${#keep[@]} )); TIMES=("${keep[@]}"); EXPECT_LEFT=${#TIMES[@]}
    WINDOW_AT[$k]=$((WIN / 3600))
    for tg in "${TARGETS[@]}"; do both expire "$tg" "$k"; done
  fi
  SNAPS_AT[$k]=${#TIMES[@]}
  for tg in "${TARGETS[@]}"; do
    both restore "$tg" "$k"
    sizes "$tg" "$k"
  done
done
[ "${BENCH_S3:-1}" = 1 ] && s3stop
T_ALL=$(( $(date +%s) - T_START ))

# --- 4. report ---------------------------------------------------------------------------
v() { local -n a=$1; echo "${a[$2]:-}"; }
mib() { [ -n "${1:-}" ] && awk -v v="$1" 'BEGIN{printf "%.1f", v/1048576}' || echo "-"; }
# cell KIND A B: "A / B (A/B)"; KIND s = seconds, k = KiB as MiB, b = bytes as MiB, n = count
cell() {
  local a=${2:-} b=${3:-} f
  case $1 in s) f='%.2f' ;; k) f='%.0f' ;; b) f='%.1f' ;; n) f='%.0f' ;; esac
  conv() { [ -n "$2" ] || { echo "-"; return; }; awk -v v="$2" -v k="$1" -v f="$f" 'BEGIN{ if (k == "k") v /= 1024; if (k == "b") v /= 1048576; printf f, v }'; }
  if [ "${#TOOLS[@]}" -eq 1 ]; then conv "$1" "$a"; return; fi
  printf '%s / %s' "$(conv "$1" "$a")" "$(conv "$1" "$b")"
  [ -n "$a" ] && [ -n "$b" ] && awk -v a="$a" -v b="$b" 'BEGIN{ if (b > 0) printf " (%.2f)", a/b }'
  return 0
}
sum2() { [ -n "${1:-}" ] && [ -n "${2:-}" ] && awk -v a="$1" -v b="$2" 'BEGIN{print a + b}' || true; }
max2() { [ -n "${1:-}" ] && [ -n "${2:-}" ] && awk -v a="$1" -v b="$2" 'BEGIN{print (a > b) ? a : b}' || true; }
# coffer's expiry is two commands: their sum (time, requests) and max (RSS)
for key in "${!T[@]}"; do
  [[ $key == *.coffer.forget.* ]] || continue
  p=${key/.forget./.prune.}; e=${key/.forget./.expire.}
  T[$e]=$(sum2 "${T[$key]}" "${T[$p]:-}"); M[$e]=$(max2 "${M[$key]}" "${M[$p]:-}")
  [ -n "${Q[$key]:-}" ] && Q[$e]=$((Q[$key] + Q[$p]))
done
for key in "${!T[@]}"; do [[ $key == *.restic.forget.* ]] && { e=${key/.forget./.expire.}; T[$e]=${T[$key]}; M[$e]=${M[$key]}; Q[$e]=${Q[$key]:-}; }; done
STEPS="backup nochange snapshots.warm snapshots.cold file.warm file.cold find diff check expire restore"
label() {
  case $1 in
    backup) echo "backup, changed (the snapshot)" ;; nochange) echo "backup, no change" ;;
    snapshots.warm) echo "snapshots, warm" ;; snapshots.cold) echo "snapshots, cold (empty catalog / cache)" ;;
    file.warm) echo "one-file restore, warm" ;; file.cold) echo "one-file restore, cold" ;;
    find) echo "find a name, all history" ;; diff) echo "diff oldest / newest" ;; check) echo "check (structure)" ;;
    expire) echo "forget + prune (oldest day)" ;; restore) echo "full restore, latest" ;;
  esac
}
CPS=$(tr ' ' '\n' <<< "$CHECKPOINTS" | grep . | sort -n | uniq | paste -sd' ')
hdr() { printf '| %s |' "$1"; for c in $CPS; do printf ' @%s |' "$c"; done; echo; printf '|---|'; for _ in $CPS; do printf -- '---|'; done; echo; }
# history segments: backups between checkpoints, per target and tool
hist_seg() {   # hist_seg TARGET TOOL FROM TO: "mean / max s, max MiB[, mean requests]"
  awk -F'\t' -v tg="$1" -v t="$2" -v a="$3" -v b="$4" '$2 == tg && $3 == t && $1 > a && $1 <= b {
      n++; s += $4; if ($4 > m) m = $4; if ($5 > r) r = $5; q += $6 }
    END { if (!n) { print "-"; exit } printf "%.2f / %.2f s, %d MiB", s/n, m, r/1024; if (tg == "s3") printf ", %.0f req", q/n }' "$RAW/history.tsv"
}
ratio_met() {   # ratio_met VALUE REFERENCE LIMIT: "0.08 | ≤ 0.1 | yes" (judged unrounded)
  if [ -z "${1:-}" ] || [ -z "${2:-}" ]; then echo "- | ≤ $3 | -"; return; fi
  awk -v a="$1" -v b="$2" -v l="$3" 'BEGIN{ if (b <= 0) { printf "inf | ≤ %s | **no**", l; exit } printf "%.3f | ≤ %s | %s", a/b, l, (a/b <= l) ? "yes" : "**no**" }'
}

{
  echo "# Scale: coffer vs restic — $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores"
  echo
  echo "coffer \`$REV\`; restic $(restic version | cut -d' ' -f2) (\`--compression auto\`, repository format 2). Targets: ${TARGETS[*]} (S3: the local s3s-fs server over TLS)."
  echo "Tree (scripts/scale-tree.py): $NFILES0 files, $(mib "$NBYTES0") MiB at snapshot 1 ($FILES small, $LARGE_MIB MiB large, one growing log); $SNAPSHOTS snapshots 4 h apart, CHURN=$CHURN of the small files a round."
  echo "The whole run took $T_ALL s. Load average (1 min) at start $LOAD0, at end $(cut -d' ' -f1 /proc/loadavg)."
  echo
  echo "Times in seconds, each cell \`coffer / restic (ratio)\`, at each checkpoint (@N: after snapshot N)."
  for tg in "${TARGETS[@]}"; do
    echo
    hdr "$tg: step"
    for s in $STEPS; do
      printf '| %s |' "$(label "$s")"
      for c in $CPS; do printf ' %s |' "$(cell s "$(v T "$tg.coffer.$s.$c")" "$(v T "$tg.restic.$s.$c")")"; done; echo
    done
    echo
    hdr "$tg: peak RSS, MiB"
    for s in $STEPS; do
      printf '| %s |' "$(label "$s")"
      for c in $CPS; do printf ' %s |' "$(cell k "$(v M "$tg.coffer.$s.$c")" "$(v M "$tg.restic.$s.$c")")"; done; echo
    done
    if [ "$tg" = s3 ]; then
      echo
      hdr "s3: requests"
      for s in $STEPS; do
        printf '| %s |' "$(label "$s")"
        for c in $CPS; do printf ' %s |' "$(cell n "$(v Q "s3.coffer.$s.$c")" "$(v Q "s3.restic.$s.$c")")"; done; echo
      done
    fi
    echo
    hdr "$tg: storage, MiB"
    printf '| repository |'; for c in $CPS; do printf ' %s |' "$(cell b "$(v SIZE "$tg.coffer.repo.$c")" "$(v SIZE "$tg.restic.repo.$c")")"; done; echo
    printf '| catalog + WAL / cache folder |'; for c in $CPS; do printf ' %s |' "$(cell b "$(v SIZE "$tg.coffer.cat.$c")" "$(v SIZE "$tg.restic.cat.$c")")"; done; echo
    printf '| snapshot 1 repository + bytes changed since (raw) |'
    for c in $CPS; do printf ' %s |' "$(cell b "$(sum2 "$(v SIZE "$tg.coffer.repo.$FIRST_CP")" "${CHANGED_AT[$c]}")" "$(sum2 "$(v SIZE "$tg.restic.repo.$FIRST_CP")" "${CHANGED_AT[$c]}")")"; done; echo
    echo
    hdr "$tg: history backups since the last checkpoint, mean / max"
    for t in "${TOOLS[@]}"; do
      printf '| %s |' "$t"; prev=0
      for c in $CPS; do printf ' %s |' "$(hist_seg "$tg" "$t" "$prev" "$c")"; prev=$c; done; echo
    done
  done
  echo
  hdr "tree and history"
  printf '| files / MiB in the tree |'; for c in $CPS; do printf ' %s / %s |' "${FILES_AT[$c]}" "$(mib "${BYTES_AT[$c]}")"; done; echo
  printf '| bytes written by the churn since snapshot 1, MiB |'; for c in $CPS; do printf ' %s |' "$(mib "${CHANGED_AT[$c]}")"; done; echo
  printf '| stat floor, cold / warm, s |'; for c in $CPS; do printf ' %s / %s |' "$(v T "fs.find.floor.cold.$c" | sed 's/^$/-/')" "$(v T "fs.find.floor.warm.$c")"; done; echo
  printf '| expiry: window (h) / snapshots removed / left |'
  for c in $CPS; do printf ' %s / %s / %s |' "${WINDOW_AT[$c]:--}" "${EXPIRED_AT[$c]:-0}" "${SNAPS_AT[$c]}"; done; echo
  if [[ " ${TARGETS[*]} " == *" s3 "* ]]; then
    printf '| S3 requests a day, six backups (coffer / restic) |'
    prev=0
    for c in $CPS; do
      printf ' %s |' "$(awk -F'\t' -v a="$prev" -v b="$c" '$2 == "s3" && $1 > a && $1 <= b { n[$3]++; q[$3] += $6 }
        END { printf "%s / %s", n["coffer"] ? sprintf("%.0f", 6 * q["coffer"] / n["coffer"]) : "-", n["restic"] ? sprintf("%.0f", 6 * q["restic"] / n["restic"]) : "-" }' "$RAW/history.tsv")"
      prev=$c
    done; echo
  fi
  # targets at the last checkpoint: the local figures where there are some, else S3's
  L=$LAST_CP; F=$FIRST_CP; tg=${TARGETS[0]}
  echo
  echo "Targets at snapshot $L (the first four rows from the $tg figures):"
  echo
  echo "| target | value | against | ratio | limit | met |"
  echo "|---|---|---|---|---|---|"
  echo "| no-change backup ≤ 0.1× restic | $(v T "$tg.coffer.nochange.$L") s | $(v T "$tg.restic.nochange.$L") s | $(ratio_met "$(v T "$tg.coffer.nochange.$L")" "$(v T "$tg.restic.nochange.$L")" 0.1) |"
  echo "| no-change backup ≤ 2× the stat floor (warm) | $(v T "$tg.coffer.nochange.$L") s | $(v T "fs.find.floor.warm.$L") s | $(ratio_met "$(v T "$tg.coffer.nochange.$L")" "$(v T "fs.find.floor.warm.$L")" 2) |"
  echo "| find ≤ 0.2× restic | $(v T "$tg.coffer.find.$L") s | $(v T "$tg.restic.find.$L") s | $(ratio_met "$(v T "$tg.coffer.find.$L")" "$(v T "$tg.restic.find.$L")" 0.2) |"
  echo "| find peak memory ≤ 256 MiB | $(mib "$(( $(v M "$tg.coffer.find.$L" | sed 's/^$/0/') * 1024 ))") MiB | 256 MiB | $(ratio_met "$(v M "$tg.coffer.find.$L")" 262144 1) |"
  if [[ " ${TARGETS[*]} " == *" s3 "* ]]; then
    echo "| S3 forget + prune ≤ 0.2× restic's forget --prune | $(v T "s3.coffer.expire.$L") s | $(v T "s3.restic.expire.$L") s | $(ratio_met "$(v T "s3.coffer.expire.$L")" "$(v T "s3.restic.expire.$L")" 0.2) |"
    echo "| S3 one-file restore, cold ≤ 0.05× restic | $(v T "s3.coffer.file.cold.$L") s | $(v T "s3.restic.file.cold.$L") s | $(ratio_met "$(v T "s3.coffer.file.cold.$L")" "$(v T "s3.restic.file.cold.$L")" 0.05) |"
  fi
  echo
  echo "coffer's peak memory per command at snapshot $L: ≤ 256 MiB, and ≤ 1.2× its value at snapshot $F:"
  echo
  echo "| target | command | @$F MiB | @$L MiB | ≤ 256 MiB | growth | limit | met |"
  echo "|---|---|---|---|---|---|---|---|"
  for t in "${TARGETS[@]}"; do
    for s in $STEPS; do
      a=$(v M "$t.coffer.$s.$F"); b=$(v M "$t.coffer.$s.$L")
      [ -n "$b" ] || continue
      echo "| $t | $(label "$s") | $([ -n "$a" ] && echo $((a / 1024)) || echo -) | $((b / 1024)) | $([ "$b" -le 262144 ] && echo yes || echo '**no**') | $(ratio_met "$b" "$a" 1.2) |"
    done
  done
  echo
  echo "Every restore verified: one-file restores byte for byte, full restores by diff -r and each file's type, mode, size and mtime; both tools removed the same snapshots at every expiry."
  if [ "$RFS" = ext4 ]; then echo "Full restores each write to a fresh ext4 (loop-mounted sparse image)."
  else echo "Full restores write to a folder of the work disk (BENCH_RESTORE_FS=dir or no loop mount here)."; fi
} | tee "$W/scale-results.md"
