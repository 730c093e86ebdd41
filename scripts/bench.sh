#!/usr/bin/env bash
# Benchmark: coffer vs restic on the same data, in the same run.
#
# usage: scripts/bench.sh            (from anywhere; all settings via env)
#
#   BENCH_DIR      work dir (default /tmp/coffer-bench): data set, repositories,
#                  caches, restores, results.md all live here
#   BENCH_ONLY     both | coffer | restic   (default both)
#   COFFER_SHARED  the project's shared/ dir (default: <repo root>/../shared)
#   REAL_MIB, RAND_MIB, LOG_MIB   passed to make-dataset.sh (small values = quick run)
#   BENCH_KEEP     1 = keep the restored trees (default: deleted once verified)
#   BENCH_S3       0 = skip the S3 part (default 1)
#   BENCH_REPS     runs of each single-file S3 restore, cold and warm; the
#                  median counts (default 5)
#   BENCH_FULL_REPS  runs of each full restore, local and from S3 (there cold
#                  and warm, every cold one with an empty catalog / cache);
#                  the median counts (3)
#   BENCH_FIRST_REPS runs of each first backup, local and S3, every one into
#                  a new repository; the median counts (3)
#   BENCH_PAIR_REPS  pairs of coffer first backups, local and S3 side by side,
#                  for its S3/local throughput; the median ratio counts (3)
#   CARGO_TARGET_DIR  where cargo builds (default <repo root>/target); the
#                  coffer and s3_server binaries are taken from there
#   BENCH_RESTORE_FS  ext4 | dir: where full restores write. ext4 (the default
#                  when root can loop-mount) gives every full restore a fresh
#                  file system of its own (a sparse image, inode tables made
#                  up front, attached with direct I/O so no page is cached
#                  twice), so no run pays for an earlier run's deleted tree,
#                  journal or lazy init; dir restores into a folder of BENCH_DIR
#   COFFER_BIN     a prebuilt coffer binary: no cargo build; the S3 server is
#                  expected at <its dir>/examples/s3_server (COFFER_REV: what
#                  to call it in the report)
#
# What it does, in order:
#   0. installs restic and GNU time if missing; builds coffer (cargo build --release)
#   1. builds the pristine data set once ($BENCH_DIR/dataset, reused while the
#      generator parameters are the same: its real/ part depends on /usr, so it
#      must not be rebuilt between runs), then copies it to $BENCH_DIR/data,
#      which this run backs up and mutates
#   2. measures the machine bound: tar | zstd -3 -T2 (this also warms the page
#      cache), then copies the data set once, untimed, into a fresh restore
#      target (the first file-creating run pays a kernel warm-up otherwise)
#   3. coffer and restic, alternately on the same data state:
#      first backup (BENCH_FIRST_REPS times, each into a new repository; the
#      median counts), unchanged re-backup, mutate-dataset.sh round 1, backup,
#      full restore of the latest snapshot (verified with diff -r + metadata)
#   3b. S3: both tools back up the same (unmutated) data to one local S3
#      server over TLS (cargo run --example s3_server: s3s-fs behind rustls),
#      counting the requests each sends and the bytes it is sent; then, from
#      S3 (issue 5), each restores one small file deep in the tree (coffer
#      `restore --include` and `cat`, restic `restore --include` and `dump`)
#      and the whole latest snapshot (verified like the local restore). Every
#      S3 restore runs twice with the same cache: first with an empty one
#      (cold: a fresh catalog / restic cache dir, as after a disaster), then
#      with what that first run left (warm); single-file restores run
#      BENCH_REPS times (default 5) each way, and their median counts
#   3c. coffer's S3 throughput against its local one: BENCH_PAIR_REPS (3)
#      pairs of first backups, one local and one to S3, run side by side; the
#      median of the pairs' ratios counts
#   4. prints a Markdown table and writes it to $BENCH_DIR/results.md
#
# Fairness notes: page caches are never dropped (both tools see warm data);
# every run starts with empty repositories and empty caches (restic's
# --cache-dir and coffer's --catalog both live inside $BENCH_DIR); the tool
# that goes first alternates from step to step.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${COFFER_SHARED:-$ROOT/../shared}
BENCH=$SHARED/bench
W=${BENCH_DIR:-/tmp/coffer-bench}
ONLY=${BENCH_ONLY:-both}
case $ONLY in both|coffer|restic) ;; *) echo "BENCH_ONLY must be both, coffer or restic" >&2; exit 2 ;; esac
want() { [ "$ONLY" = both ] || [ "$ONLY" = "$1" ]; }
log() { printf '\n== %s\n' "$*" >&2; }
die() { printf '\nBENCH FAILED: %s\n' "$*" >&2; exit 1; }

. "$ROOT/scripts/bench-s3.sh"
. "$ROOT/scripts/bench-fs.sh"
[ -x "$BENCH/make-dataset.sh" ] || die "no $BENCH/make-dataset.sh (set COFFER_SHARED)"

# --- 0. tools ----------------------------------------------------------------
missing=()
want restic && ! command -v restic >/dev/null && missing+=(restic)
[ -x /usr/bin/time ] || missing+=(time)          # GNU time for wall + peak RSS
command -v zstd >/dev/null || missing+=(zstd)    # machine bound
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  log "installing ${missing[*]}"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "${missing[@]}"
fi

if [ -n "${COFFER_BIN:-}" ]; then
  COFFER=$(readlink -f "$COFFER_BIN")
else
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release && cargo build --release --example s3_server)
  COFFER=${CARGO_TARGET_DIR:-$ROOT/target}/release/coffer
fi
S3SERVER=$(dirname "$COFFER")/examples/s3_server
want coffer && { [ -x "$COFFER" ] || die "no coffer binary at $COFFER"; }

# --- 1. data set ---------------------------------------------------------------
mkdir -p "$W"
W=$(cd "$W" && pwd)
params="REAL_MIB=${REAL_MIB:-1536} RAND_MIB=${RAND_MIB:-300} LOG_MIB=${LOG_MIB:-500}"
if [ ! -f "$W/dataset.params" ] || [ "$(cat "$W/dataset.params")" != "$params" ]; then
  log "building data set ($params); this takes a while"
  rm -rf "$W/dataset" "$W/dataset.manifest" "$W/dataset.filelist" "$W/dataset.params"
  env $params "$BENCH/make-dataset.sh" "$W/dataset" >&2
  echo "$params" > "$W/dataset.params"   # written last: marks a complete data set
fi

# Fresh state for this run: the working copy, repositories, caches, restores.
DATA=$W/data
restore_fs_choose   # also unmounts an earlier run's restore targets
rm -rf "$DATA" "$W/coffer" "$W/restic" "$W"/restore-* "$W/raw"
log "copying data set to $DATA"
cp -a "$W/dataset" "$DATA"
mkdir -p "$W/coffer" "$W/restic" "$W/raw"
nfiles=$(find "$DATA" -type f | wc -l)
nbytes=$(du -sb "$DATA" | cut -f1)

LOAD0=$(cut -d' ' -f1 /proc/loadavg)

# --- 2. machine bound ------------------------------------------------------------
log "machine bound: tar | zstd -3 -T2"
sync   # flush the copy's dirty pages now, not during a measurement
# warm the page cache, so both tools start equal ("| cat": GNU tar reads nothing when writing to /dev/null)
tar -cf - -C "$W" data | cat > /dev/null
/usr/bin/time -f '%e' -o "$W/raw/zstd.time" bash -c "tar -cf - -C '$W' data | zstd -q -3 -T2 > /dev/null"
ZSTD_S=$(tail -n1 "$W/raw/zstd.time")

# Kernel warm-up for restores: the first restore of a run to a fresh target
# (always coffer's cold S3 restore) took 0.9-1.7 s longer than the same
# restore a minute later, even with an empty catalog again. An untimed copy
# of the data set into a fresh target pays that cost here, outside every
# measurement.
log "warm-up: one untimed copy of the data set into a fresh restore target"
fresh_target "$W/restore-warmup" "$nbytes" && cp -a "$DATA" "$W/restore-warmup/" && sync
drop_target "$W/restore-warmup"

# --- measuring -------------------------------------------------------------------
declare -A T=() M=()   # T[tool.step] = wall seconds, M[tool.step] = peak RSS KiB
declare -A ALLT=()     # ALLT[tool.step] = the wall seconds of each run of a repeated step
declare -A FAILED=()   # FAILED[tool] = the step it failed in + its stderr; it then sits out
# run TOOL STEP CMD...: times CMD with GNU time. A failure is recorded, not fatal,
# so the other tool's figures are still reported; the script exits 1 at the end.
run() {
  local tool=$1 step=$2; shift 2
  local out=$W/raw/$tool.$step
  [ -z "${FAILED[$tool]:-}" ] || return 1
  log "$tool: $step"
  sync   # the previous step's writes are flushed here, not billed to this one
  if ! /usr/bin/time -f '%e %M' -o "$out.time" "$@" > "$out.out" 2> "$out.err"; then
    FAILED[$tool]="step '$step' failed ($(grep -m1 -o 'exit.*status [0-9]*' "$out.time" || echo killed)): $* -- stderr: $(tail -c 2000 "$out.err")"
    printf '\n!!! %s FAILED in step %s: %s\n' "$tool" "$step" "$*" >&2
    cat "$out.err" >&2
    return 1
  fi
  read -r T[$tool.$step] M[$tool.$step] < <(tail -n1 "$out.time")
  ALLT[$tool.$step]+="${T[$tool.$step]} "
  echo "   ${T[$tool.$step]} s, $((M[$tool.$step] / 1024)) MiB peak RSS" >&2
}

# median_of: the median of the numbers on stdin, one a line
median_of() {
  grep . | sort -g | awk '{a[NR]=$1} END{print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}
# median TOOL.STEP: T[TOOL.STEP] becomes the median of its runs
median() {
  [ -n "${ALLT[$1]:-}" ] || return 0
  T[$1]=$(tr ' ' '\n' <<< "${ALLT[$1]}" | median_of)
}
# First backups (local and S3) take seconds and move by 10-20 % from run to
# run here: BENCH_FIRST_REPS runs each (3), every one into a new repository,
# the tools' order alternating; the median counts, the last run's repository
# is the one the later steps use.
FIRST_REPS=${BENCH_FIRST_REPS:-3}
# Full restores likewise: BENCH_FULL_REPS runs each (3), local and from S3
# (there cold and warm), every one onto a fresh target; the median counts.
FULL_REPS=${BENCH_FULL_REPS:-3}

# coffer: operator identity + agent key; the catalog (its local cache) lives in $W.
C=$W/coffer
export COFFER_CACHE_DIR=$C/cache   # belt and braces: nothing goes to ~/.cache
coffer_setup() {
  run coffer keygen "$COFFER" key generate --output "$C/operator.key" || return 1
  coffer_init
}
coffer_init() {
  rm -rf "$C/repo" "$C/agent.key" "$C/catalog.sqlite"*
  run coffer init "$COFFER" init --repo "$C/repo" --recipient "$(tail -n1 "$W/raw/coffer.keygen.out")" --agent-key "$C/agent.key"
}
coffer_backup()  { run coffer "$1" "$COFFER" backup --repo "$C/repo" --agent-key "$C/agent.key" --catalog "$C/catalog.sqlite" --quiet "$DATA"; }
coffer_restore() { fresh_target "$W/restore-coffer" "$nbytes" && run coffer restore "$COFFER" restore latest --repo "$C/repo" --identity "$C/operator.key" --catalog "$C/catalog.sqlite" --target "$W/restore-coffer" --quiet; }

# restic: repository format 2 (needed for compression), cache inside $W.
R=$W/restic
export RESTIC_PASSWORD=coffer-bench
RESTIC=(restic --repo "$R/repo" --cache-dir "$R/cache" --compression auto)
restic_setup()   { rm -rf "$R/repo" "$R/cache"; run restic init "${RESTIC[@]}" init --repository-version 2; }
restic_init()    { restic_setup; }
restic_backup()  { run restic "$1" "${RESTIC[@]}" backup --quiet "$DATA"; }
restic_restore() { fresh_target "$W/restore-restic" "$nbytes" && run restic restore "${RESTIC[@]}" restore latest --target "$W/restore-restic" --quiet; }

TOOLS=(); want coffer && TOOLS+=(coffer); want restic && TOOLS+=(restic)
# each step: the order of the tools alternates (first, then reversed)
both() {
  local fn=$1 arg=${2:-} order=("${TOOLS[@]}")
  [ "${#TOOLS[@]}" -eq 2 ] && [ "$((STEPNO++ % 2))" -eq 1 ] && order=("${TOOLS[1]}" "${TOOLS[0]}")
  for t in "${order[@]}"; do "${t}_$fn" $arg || true; done   # failures: see run()
}
STEPNO=0

# verify TOOL [NAME]: the tree restored into $W/restore-NAME (default: TOOL) must
# equal $DATA (content, and per file: size, mode, mtime).
BAD=(); VERIFIED=()
verify() {
  local tool=$1 name=${2:-$1}
  local got=$W/restore-$name${DATA}
  [ -z "${FAILED[$tool]:-}" ] || return 0
  log "$tool: verifying restore ($got)"
  if [ ! -d "$got" ]; then BAD+=("$name: restore has no $got"); return; fi
  if ! diff -rq "$DATA" "$got" > "$W/raw/$name.diff" 2>&1; then
    BAD+=("$name: restored content differs (diff -rq: $(wc -l < "$W/raw/$name.diff") lines, $W/raw/$name.diff)")
  fi
  # files only (directory mtimes are touched by the restore itself in some tools);
  # mtime compared to the second
  meta() { (cd "$1" && find . ! -type d -printf '%y %P %m %s %T@\n' | sed -E 's/\.[0-9]+$//' | sort); }
  if ! diff <(meta "$DATA") <(meta "$got") > "$W/raw/$name.meta.diff"; then
    BAD+=("$name: restored metadata (type/mode/size/mtime) differs ($W/raw/$name.meta.diff)")
  fi
  [ "${#BAD[@]}" -gt 0 ] && [[ "${BAD[-1]}" == "$name:"* ]] || VERIFIED+=("$name")
  [ "${BENCH_KEEP:-0}" = 1 ] || drop_target "$W/restore-$name"
}
# verify_file NAME GOT: GOT must equal the small file $SMALL of $DATA.
verify_file() {
  if cmp -s "$DATA/$SMALL" "$2"; then VERIFIED+=("$1"); else BAD+=("$1: $2 differs from $DATA/$SMALL"); fi
}

# --- 3. the runs ---------------------------------------------------------------------
for t in "${TOOLS[@]}"; do "${t}_setup" || true; done
for rep in $(seq "$FIRST_REPS"); do
  if [ "$rep" -gt 1 ]; then for t in "${TOOLS[@]}"; do "${t}_init" || true; done; fi
  both backup first
done
for t in "${TOOLS[@]}"; do median "$t.first"; done
both backup nochange
# --- 3b. S3 over TLS, same data, one local server ----------------------------------------
declare -A REQ=() BYTES=() S3SIZE=()   # REQ/BYTES[tool.step]: requests sent, response bytes received
if [ "${BENCH_S3:-1}" = 1 ]; then
  rm -rf "$W/s3srv"
  s3start "$S3SERVER" "$W/s3srv"
  export AWS_ENDPOINT_URL=$EP AWS_CA_BUNDLE=$S3CA   # coffer's; restic takes --cacert
  s3run() {   # s3run TOOL STEP CMD...: times it, counts its requests and the bytes it fetched
    local tool=$1 step=$2 r0 b0 r1 b1; shift 2
    read -r r0 b0 < <(s3counters)
    run "$tool" "$step" "$@" || return 1
    read -r r1 b1 < <(s3counters)
    REQ[$tool.$step]=$((r1 - r0)); BYTES[$tool.$step]=$((b1 - b0))
    echo "   ${REQ[$tool.$step]} requests, ${BYTES[$tool.$step]} bytes fetched" >&2
  }
  # Each run backs up into a new prefix; the last run's is the one restored from.
  restic_s3first() {
    # s3legacy layout (data/ID, no data/XX/ folders): s3s-fs takes minio-go's
    # empty "delimiter=" of a recursive listing as a delimiter and would list
    # no packs below data/
    RS3=(restic --repo "s3:$EP/bench/restic-$1" --cacert "$S3CA" --compression auto -o s3.layout=s3legacy)
    rm -rf "$R/cache-s3"
    run restic s3init "${RS3[@]}" --cache-dir "$R/cache-s3" init --repository-version 2 &&
      s3run restic s3first "${RS3[@]}" --cache-dir "$R/cache-s3" backup --quiet "$DATA" &&
      S3SIZE[restic]=$(du -sb "$S3DIR/s3/bench/restic-$1" | cut -f1)
  }
  coffer_s3first() {
    CS3=(--repo "s3://bench/coffer-$1")
    rm -rf "$C/agent-s3.key" "$C/catalog-s3.sqlite"*
    run coffer s3init "$COFFER" init "${CS3[@]}" --agent-key "$C/agent-s3.key" \
        --recipient "$(tail -n1 "$W/raw/coffer.keygen.out")" &&
      s3run coffer s3first "$COFFER" backup "${CS3[@]}" --agent-key "$C/agent-s3.key" \
        --catalog "$C/catalog-s3.sqlite" --quiet "$DATA" &&
      S3SIZE[coffer]=$(du -sb "$S3DIR/s3/bench/coffer-$1" | cut -f1)
  }
  for rep in $(seq "$FIRST_REPS"); do both s3first "$rep"; done
  for t in "${TOOLS[@]}"; do median "$t.s3first"; done

  # coffer's S3 throughput against its local throughput, in pairs: this
  # machine's speed drifts by 10-20 % over minutes (the same backup's user CPU
  # moves as much), and the medians above come from runs minutes apart, with
  # restic's runs between. So each S3 first backup here is set against a local
  # one run right next to it (which goes first alternates), both into new
  # repositories that are removed after; the median of the pairs' ratios
  # counts. BENCH_PAIR_REPS pairs (3).
  PAIR_REPS=${BENCH_PAIR_REPS:-3}
  PAIRS=()
  coffer_pair_local() {
    local rc=0
    rm -rf "$C/pair-repo" "$C/pair-agent.key" "$C/pair-catalog.sqlite"*
    run coffer pairinit "$COFFER" init --repo "$C/pair-repo" --agent-key "$C/pair-agent.key" \
        --recipient "$(tail -n1 "$W/raw/coffer.keygen.out")" &&
      run coffer pairlocal "$COFFER" backup --repo "$C/pair-repo" --agent-key "$C/pair-agent.key" \
        --catalog "$C/pair-catalog.sqlite" --quiet "$DATA" || rc=1
    rm -rf "$C/pair-repo"
    return $rc
  }
  coffer_pair_s3() {
    local rc=0
    rm -rf "$C/pair-agent-s3.key" "$C/pair-catalog-s3.sqlite"*
    run coffer pairs3init "$COFFER" init --repo "s3://bench/coffer-pair-$1" --agent-key "$C/pair-agent-s3.key" \
        --recipient "$(tail -n1 "$W/raw/coffer.keygen.out")" &&
      run coffer pairs3 "$COFFER" backup --repo "s3://bench/coffer-pair-$1" --agent-key "$C/pair-agent-s3.key" \
        --catalog "$C/pair-catalog-s3.sqlite" --quiet "$DATA" || rc=1
    rm -rf "$S3DIR/s3/bench/coffer-pair-$1"   # (s3s-fs's small sidecar files stay)
    return $rc
  }
  if want coffer; then
    for i in $(seq "$PAIR_REPS"); do
      if [ $((i % 2)) -eq 1 ]; then
        coffer_pair_local && coffer_pair_s3 "$i" || true
      else
        coffer_pair_s3 "$i" && coffer_pair_local || true
      fi
      [ -z "${FAILED[coffer]:-}" ] && PAIRS+=("${T[coffer.pairlocal]}/${T[coffer.pairs3]}")
    done
  fi

  # The small file: the deepest one of 2 to 8 KiB (first by name among those).
  SMALL=$(cd "$DATA" && find . -type f -size +1k -size -9k -printf '%d %P\n' | sort -k1,1nr -k2 | sed -n 1p | cut -d' ' -f2-)   # sed reads all: no SIGPIPE under pipefail
  [ -n "$SMALL" ] || die "no file of 2 to 8 KiB in $DATA"
  SMALL_SIZE=$(stat -c %s "$DATA/$SMALL")
  log "small file: $SMALL ($SMALL_SIZE bytes)"
  # Each restore from S3 runs cold (an empty cache), then warm (what the cold
  # run left). A single-file restore takes a fraction of a second, where the
  # machine's noise is as large as the figure: it runs BENCH_REPS times (5),
  # every cold run with a fresh cache and into a fresh folder, and the median
  # counts (requests and bytes: the last run's; they do not vary).
  REPS=${BENCH_REPS:-5}
  # small TOOL KIND: KIND (file | cat) from S3, cold then warm, REPS times each
  small() {
    local t=$1 k=$2 c
    for c in cold warm; do
      for _ in $(seq "$REPS"); do
        [ "$c" = warm ] || rm -rf "$C/catalog-s3$k.sqlite"* "$R/cache-s3$k"
        rm -rf "$W/restore-s3file-$t-$c"
        "${t}_small" "$k" "$c" || return 1
      done
      median "$t.s3$k.$c"
    done
  }
  coffer_small() {
    case $1 in
      file) s3run coffer "s3file.$2" "$COFFER" restore latest "${CS3[@]}" --identity "$C/operator.key" \
              --catalog "$C/catalog-s3file.sqlite" --target "$W/restore-s3file-coffer-$2" --include "$DATA/$SMALL" --quiet &&
              verify_file "coffer s3file.$2" "$W/restore-s3file-coffer-$2$DATA/$SMALL" ;;
      cat) s3run coffer "s3cat.$2" "$COFFER" cat latest "$DATA/$SMALL" "${CS3[@]}" --identity "$C/operator.key" \
              --catalog "$C/catalog-s3cat.sqlite" &&
              verify_file "coffer s3cat.$2" "$W/raw/coffer.s3cat.$2.out" ;;
    esac
  }
  restic_small() {
    case $1 in
      file) s3run restic "s3file.$2" "${RS3[@]}" --cache-dir "$R/cache-s3file" restore latest \
              --target "$W/restore-s3file-restic-$2" --include "$DATA/$SMALL" --quiet &&
              verify_file "restic s3file.$2" "$W/restore-s3file-restic-$2$DATA/$SMALL" ;;
      cat) s3run restic "s3cat.$2" "${RS3[@]}" --cache-dir "$R/cache-s3cat" dump --quiet latest "$DATA/$SMALL" &&
              verify_file "restic s3cat.$2" "$W/raw/restic.s3cat.$2.out" ;;
    esac
  }
  coffer_s3() {   # coffer_s3 file | cat | full
    local c
    case $1 in file|cat) small coffer "$1"; return ;; esac
    for c in cold warm; do
      for _ in $(seq "$FULL_REPS"); do
        [ "$c" = warm ] || rm -rf "$C/catalog-s3full.sqlite"*
        fresh_target "$W/restore-s3-coffer-$c" "$nbytes" && s3run coffer "s3full.$c" "$COFFER" restore latest "${CS3[@]}" --identity "$C/operator.key" \
          --catalog "$C/catalog-s3full.sqlite" --target "$W/restore-s3-coffer-$c" --quiet &&
          verify coffer "s3-coffer-$c" || return 1
      done
      median "coffer.s3full.$c"
    done
  }
  restic_s3() {
    local c
    case $1 in file|cat) small restic "$1"; return ;; esac
    for c in cold warm; do
      for _ in $(seq "$FULL_REPS"); do
        [ "$c" = warm ] || rm -rf "$R/cache-s3full"
        fresh_target "$W/restore-s3-restic-$c" "$nbytes" && s3run restic "s3full.$c" "${RS3[@]}" --cache-dir "$R/cache-s3full" restore latest \
          --target "$W/restore-s3-restic-$c" --quiet &&
          verify restic "s3-restic-$c" || return 1
      done
      median "restic.s3full.$c"
    done
  }
  for kind in file cat full; do both s3 "$kind"; done
  s3stop
fi

log "mutate-dataset.sh round 1"
"$BENCH/mutate-dataset.sh" "$DATA" 1 >&2
both backup mutated
for rep in $(seq "$FULL_REPS"); do
  both restore
  for t in "${TOOLS[@]}"; do verify "$t"; done
done
for t in "${TOOLS[@]}"; do median "$t.restore"; done

declare -A SIZE=() PEAK=()
for t in "${TOOLS[@]}"; do
  [ -z "${FAILED[$t]:-}" ] || continue
  [ -d "$W/$t/repo" ] || { FAILED[$t]="no repository at $W/$t/repo"; continue; }
  SIZE[$t]=$(du -sb "$W/$t/repo" | cut -f1)
  p=0; for s in first nochange mutated restore; do [ "${M[$t.$s]}" -gt $p ] && p=${M[$t.$s]}; done
  PEAK[$t]=$p
done

# --- 4. report ---------------------------------------------------------------------------
# row LABEL KIND COFFER RESTIC TARGET   (KIND: s = seconds, b = bytes, k = KiB)
fmt() {
  [ -n "$2" ] || { echo "-"; return; }
  case $1 in
    s) printf '%.2f s' "$2" ;;
    b) awk -v v="$2" 'BEGIN{printf "%.1f MiB", v/1048576}' ;;
    k) awk -v v="$2" 'BEGIN{printf "%.0f MiB", v/1024}' ;;
    B) awk -v v="$2" 'BEGIN{ if (v >= 1048576) printf "%.1f MiB", v/1048576; else printf "%.1f KiB", v/1024 }' ;;
    n) printf '%s' "$2" ;;
  esac
}
row() {
  local label=$1 kind=$2 c=$3 r=$4 target=$5 ratio="-" met="-"
  if [ -n "$c" ] && [ -n "$r" ]; then
    ratio=$(awk -v c="$c" -v r="$r" 'BEGIN{ if (r > 0) printf "%.2f", c/r; else print "inf" }')
    # judged on the unrounded ratio (0.954 shows as 0.95 but misses <= 0.95)
    met=$(awk -v c="$c" -v r="$r" -v t="$target" 'BEGIN{ print (r > 0 && c / r <= t) ? "yes" : "**no**" }')
  fi
  echo "| $label | $(fmt "$kind" "$c") | $(fmt "$kind" "$r") | $ratio | ≤ $target | $met |"
}
# the commit measured; "+changes" if src/ or Cargo.* differ from it (target/ is ignored)
coffer_rev() {
  [ -z "${COFFER_BIN:-}" ] || { printf 'prebuilt %s' "${COFFER_REV:-$COFFER}"; return 0; }
  git -C "$ROOT" log -1 --format='%h' 2>/dev/null | tr -d '\n'
  git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || printf '+changes'
  return 0
}
val() { local -n a=$1; echo "${a[$2]:-}"; }   # value or empty if that tool did not run

{
  echo "# coffer vs restic — $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores"
  echo
  echo "Data set: $nfiles files, $(fmt b "$nbytes") ($params), page cache warm."
  # other work on the box skews wall times: show it, so a noisy run is recognisable
  echo "Load average (1 min) at start $LOAD0, at end $(cut -d' ' -f1 /proc/loadavg)."
  if [ "$RFS" = ext4 ]; then echo "Full restores each write to a fresh ext4 (loop-mounted sparse image)."
  else echo "Full restores write to folders of \`$W\`."; fi
  echo "restic $(want restic && restic version | cut -d' ' -f2 || echo '-'): \`--compression auto\`, repository format 2, cache \`--cache-dir $R/cache\` (empty at start)."
  echo "coffer: \`$(want coffer && coffer_rev || echo '-')\`, catalog \`$C/catalog.sqlite\` (empty at start)."
  echo
  echo "| step | coffer | restic | ratio coffer/restic | target ratio | met |"
  echo "|---|---|---|---|---|---|"
  row "first backup"          s "$(val T coffer.first)"    "$(val T restic.first)"    0.55
  row "backup, no change"     s "$(val T coffer.nochange)" "$(val T restic.nochange)" 0.15
  row "backup after mutation" s "$(val T coffer.mutated)"  "$(val T restic.mutated)"  0.8
  row "full restore"          s "$(val T coffer.restore)"  "$(val T restic.restore)"  0.6
  row "repository size"       b "$(val SIZE coffer)"       "$(val SIZE restic)"       0.95
  row "peak memory (max RSS)" k "$(val PEAK coffer)"       "$(val PEAK restic)"       0.5
  if [ "${BENCH_S3:-1}" = 1 ]; then
    row "S3 first backup (TLS)" s "$(val T coffer.s3first)"  "$(val T restic.s3first)"  0.7
    row "S3 requests, first backup" n "$(val REQ coffer.s3first)" "$(val REQ restic.s3first)" 1.0
    echo
    for t in "${TOOLS[@]}"; do
      [ -n "${REQ[$t.s3first]:-}" ] && [ -n "${S3SIZE[$t]:-}" ] &&
        awk -v t="$t" -v r="${REQ[$t.s3first]}" -v b="${S3SIZE[$t]}" 'BEGIN{printf "%s: %d requests for %.1f MiB stored = %.0f requests per GiB stored\n", t, r, b/1048576, r/(b/1073741824)}'
    done
    if [ "${#PAIRS[@]}" -gt 0 ]; then
      ratio_median=$(printf '%s\n' "${PAIRS[@]}" | awk -F/ '{printf "%.4f\n", $1 / $2}' | median_of)
      each=$(printf '%s\n' "${PAIRS[@]}" | awk -F/ '{printf " %.2f (%s s local, %s s S3);", $1 / $2, $1, $2}')
      printf 'coffer S3 throughput = %.2f x its local-directory throughput (target >= 0.8): the median of %d pairs of runs side by side, ratios%s\n' \
        "$ratio_median" "${#PAIRS[@]}" "${each%;}"
    fi
    if [ -n "${T[coffer.s3first]:-}" ] && [ -n "${T[coffer.first]:-}" ]; then
      awk -v s="${T[coffer.s3first]}" -v l="${T[coffer.first]}" 'BEGIN{printf "(from the medians of the first backups above, minutes apart: %.2f)\n", l/s}'
    fi
  fi
  echo
  echo "First backups are the median of $FIRST_REPS runs each, every one into a new repository; local full restores of $FULL_REPS:"
  for t in "${TOOLS[@]}"; do
    for k in first s3first restore; do
      if [ -n "${ALLT[$t.$k]:-}" ]; then
        echo "- $t $k, every run (s): ${ALLT[$t.$k]% }"
      fi
    done
  done
  if [ "${BENCH_S3:-1}" = 1 ] && [ -n "${SMALL:-}" ]; then
    echo
    echo "Restores from S3 (issue 5). Small file: \`/${DATA#/}/$SMALL\`, $SMALL_SIZE bytes. Cold: an empty"
    echo "catalog / restic cache dir; warm: the same command again, with what the cold run left."
    echo "Single-file times are the median of $REPS runs each, full restores of $FULL_REPS (every cold run with a fresh cache)."
    for t in "${TOOLS[@]}"; do
      for c in cold warm; do
        if [ -n "${ALLT[$t.s3full.$c]:-}" ]; then
          echo "- $t full restore $c, every run (s): ${ALLT[$t.s3full.$c]% }"
        fi
      done
    done
    echo
    echo "| restore from S3 | coffer | restic | ratio | target | met | requests coffer / restic | fetched coffer / restic |"
    echo "|---|---|---|---|---|---|---|---|"
    for k in s3full s3file s3cat; do
      for c in cold warm; do
        case $k in
          s3full) label="full restore"; target=0.6 ;;
          s3file) label="single file, \`restore --include\`"; target=0.1 ;;
          s3cat) label="single file, \`cat\` / \`dump\`"; target=0.1 ;;
        esac
        r=$(row "$label, $c" s "$(val T coffer.$k.$c)" "$(val T restic.$k.$c)" $target)
        echo "$r $(val REQ coffer.$k.$c) / $(val REQ restic.$k.$c) | $(fmt B "$(val BYTES coffer.$k.$c)") / $(fmt B "$(val BYTES restic.$k.$c)") |"
      done
    done
    echo
    for t in "${TOOLS[@]}"; do
      for k in s3file s3cat; do
        for c in cold warm; do
          [ -n "${BYTES[$t.$k.$c]:-}" ] || continue
          awk -v l="$t $k $c" -v b="${BYTES[$t.$k.$c]}" -v f="$SMALL_SIZE" 'BEGIN{printf "- %s: %.1f KiB fetched beyond the file\n", l, (b - f)/1024}'
        done
      done
    done
  fi
  echo
  echo "Machine bound \`tar -cf - data | zstd -3 -T2 > /dev/null\`: $(fmt s "$ZSTD_S")."
  if [ -n "${T[coffer.first]:-}" ]; then
    awk -v c="${T[coffer.first]}" -v z="$ZSTD_S" 'BEGIN{printf "coffer first backup = %.2f x the zstd -T2 bound.\n", c/z}'
  fi
  echo
  echo "Per-step peak RSS (MiB):"
  for t in "${TOOLS[@]}"; do
    echo "- $t:$(for s in first nochange mutated restore; do [ -n "${M[$t.$s]:-}" ] && printf ' %s %d' "$s" $((M[$t.$s] / 1024)); done)"
  done
  for t in "${!FAILED[@]}"; do
    echo
    echo "**$t FAILED** in ${FAILED[$t]}"
  done
  if [ ${#BAD[@]} -gt 0 ]; then
    echo
    echo "**RESTORE VERIFICATION FAILED:**"
    for b in "${BAD[@]}"; do echo "- $b"; done
  fi
  if [ ${#VERIFIED[@]} -gt 0 ]; then
    echo
    echo "Restores verified ($(printf '%s\n' "${VERIFIED[@]}" | awk '!seen[$0]++' | paste -sd' ')): diff -rq and per-file type/mode/size/mtime equal the data set."
  fi
} | tee "$W/results.md"

if [ ${#BAD[@]} -gt 0 ]; then
  printf '\n!!!!!!!! RESTORE MISMATCH !!!!!!!!\n' >&2
  printf '%s\n' "${BAD[@]}" >&2
fi
[ ${#BAD[@]} -eq 0 ] && [ ${#FAILED[@]} -eq 0 ]   # exit status: 1 on any failure
