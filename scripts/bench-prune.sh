#!/usr/bin/env bash
# Benchmark: expiring a history (coffer forget + prune vs restic forget --prune),
# same data, same run; and the agent's idle cost.
#
# usage: scripts/bench-prune.sh      (from anywhere; all settings via env)
#
#   BENCH_DIR      work dir (default /tmp/coffer-bench). The pristine data set
#                  $BENCH_DIR/dataset is shared with scripts/bench.sh (built once,
#                  reused); everything of this script lives in $BENCH_DIR/prune/
#   BENCH_ONLY     all | prune | idle   (default all)
#   DAYS           simulated days of history (default 90)
#   PER_DAY        snapshots per simulated day (default 1); one mutation round
#                  (mutate-dataset.sh, ~1% change) before every snapshot but the first
#   KEEP_DAYS      retention window in days, both tools (default 60)
#   IDLE_SECONDS   how long the agent idles (default 60)
#   COFFER_SHARED  the project's shared/ dir (default: <repo root>/../shared)
#   COFFER_BIN     a prebuilt coffer binary (skips cargo build; its S3 server is
#                  expected at <its dir>/examples/s3_server). Use it when the
#                  working tree is mid-edit: build a clean export of a commit and
#                  point here. COFFER_REV labels it in the results.
#   REAL_MIB, RAND_MIB, LOG_MIB   passed to make-dataset.sh (small values = quick run)
#   BENCH_S3       0 = skip the S3 part (default 1)
#   BENCH_DRYRUN   0 = skip the planning-only (--dry-run) measurement (default 1)
#   BENCH_REUSE_HISTORY  1 = keep the built history in $BENCH_DIR/prune-history
#                  (packs hard-linked, the rest copied) and, on a later run with
#                  the same DAYS, PER_DAY and data set, start from it instead of
#                  building it again: for iterating on the expiry (default 0).
#                  The saved history ends when it was built; reuse it within a
#                  day so both retention rules still keep the same snapshots
#
# What it does, in order (prune part):
#   0. installs restic, GNU time, jq and awscli if missing; builds coffer (cargo build --release)
#   1. builds/reuses the data set, copies it to $BENCH_DIR/prune/data
#   2. history: DAYS*PER_DAY snapshots, evenly spaced and ending now
#      (snapshot k at now - (N-1-k) * 24h/PER_DAY), both tools backing up the
#      same data state each time (alternating who goes first), with
#      mutate-dataset.sh DATA k between snapshots. coffer: `backup --time
#      RFC3339` with the agent key; restic: `backup --time "YYYY-MM-DD HH:MM:SS"`
#      under TZ=UTC. Ending the history now makes restic's --keep-within
#      (relative to the newest snapshot) and coffer's (relative to now) agree.
#   3. (S3) before anything is expired, both repositories are uploaded file for
#      file (aws s3 cp) to one local S3 server over TLS
#      (target/release/examples/s3_server: s3s-fs behind rustls, counting
#      requests), so both tools find on S3 the pack layout they have locally;
#      restic uses its s3legacy layout there (see RS3 below)
#   4. planning only: on copies of the repositories (and caches), forget and
#      prune --dry-run (restic: forget --prune --dry-run): what deciding costs
#   5. expire, local repositories: coffer forget --keep-within, then coffer prune
#      --grace 0s --json (agent key only); restic forget --keep-within --prune
#   6. (S3) the same on the S3 copies, counting each tool's requests
#   7. checks: coffer check --read-data with the identity, restic check
#      --read-data; both restore the latest snapshot, diff -r against the data
#   8. agent idle (BENCH_ONLY=idle runs only this): 3 profiles whose next run
#      is ~12 h away; agent --check, then the agent idles IDLE_SECONDS; VmRSS,
#      VmHWM and CPU ticks used while idle; SIGTERM must end it with status 0
#   9. a Markdown table, printed and written to $BENCH_DIR/prune-results.md
#      ($BENCH_DIR/idle-results.md when BENCH_ONLY=idle)
#
# Fairness notes: page caches are never dropped; both tools back up the same
# warm data state; the tool that goes first alternates (per snapshot, and
# between the local and the S3 expiry). The two tools' prune defaults differ
# and are kept: restic repacks packs once 5% unused (--max-unused 5%), coffer
# at 20% (docs/FORMAT.md, "The repack trade-off").
set -euo pipefail
export LC_ALL=C TZ=UTC   # TZ: restic's --time is local time; the history is in UTC

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${COFFER_SHARED:-$ROOT/../shared}
BENCH=$SHARED/bench
W=${BENCH_DIR:-/tmp/coffer-bench}
ONLY=${BENCH_ONLY:-all}
case $ONLY in all|prune|idle) ;; *) echo "BENCH_ONLY must be all, prune or idle" >&2; exit 2 ;; esac
DAYS=${DAYS:-90}; PER_DAY=${PER_DAY:-1}; KEEP_DAYS=${KEEP_DAYS:-60}; IDLE_SECONDS=${IDLE_SECONDS:-60}
S3=${BENCH_S3:-1}; DRYRUN=${BENCH_DRYRUN:-1}
want() { [ "$ONLY" = all ] || [ "$ONLY" = "$1" ]; }
log() { printf '\n== [%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf '\nBENCH FAILED: %s\n' "$*" >&2; exit 1; }
. "$ROOT/scripts/bench-s3.sh"
[ $((86400 % PER_DAY)) -eq 0 ] || die "PER_DAY must divide 86400"

# --- 0. tools (as in bench.sh) ------------------------------------------------------
missing=()
want prune && ! command -v restic >/dev/null && missing+=(restic)
[ -x /usr/bin/time ] || missing+=(time)
command -v jq >/dev/null || missing+=(jq)
want prune && [ "$S3" = 1 ] && ! command -v aws >/dev/null && missing+=(awscli)   # S3 upload
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  log "installing ${missing[*]}"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "${missing[@]}"
fi
if [ -n "${COFFER_BIN:-}" ]; then
  COFFER=$(readlink -f "$COFFER_BIN")
  S3SERVER=$(dirname "$COFFER")/examples/s3_server
  REV=${COFFER_REV:-prebuilt $COFFER}
else
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release && cargo build --release --example s3_server)
  COFFER=$ROOT/target/release/coffer
  S3SERVER=$ROOT/target/release/examples/s3_server
  REV=$(git -C "$ROOT" log -1 --format='%h' | tr -d '\n')
  git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || REV="$REV+changes"
fi
[ -x "$COFFER" ] || die "no coffer binary at $COFFER"

mkdir -p "$W"
W=$(cd "$W" && pwd)
P=$W/prune
RAW=$P/raw
mkdir -p "$P"
want prune && rm -rf "$RAW"   # (an idle-only run leaves the last prune run's files)
mkdir -p "$RAW"
RESULTS=$W/prune-results.md; [ "$ONLY" = idle ] && RESULTS=$W/idle-results.md
export COFFER_CACHE_DIR=$P/cache   # nothing goes to ~/.cache
LOAD0=$(cut -d' ' -f1 /proc/loadavg); LOADMAX=$LOAD0
T_START=$(date +%s)

declare -A T=() M=() CPU=()   # T[name] = wall seconds, M[name] = peak RSS KiB, CPU[name] = user + sys seconds
declare -A FAILED=()   # FAILED[name] = what failed; reported, exit status 1
BAD=(); VERIFIED=()    # verification after the expiry
# timed NAME CMD...: runs CMD under GNU time; stdout/stderr in $RAW/NAME.{out,err}.
timed() {
  local name=$1; shift
  local out=$RAW/$name
  sync   # earlier writes are flushed here, not billed to this step
  if ! /usr/bin/time -f '%e %M %U %S' -o "$out.time" "$@" > "$out.out" 2> "$out.err"; then
    FAILED[$name]="$* -- $(tail -n1 "$out.time" | head -c 200) -- stderr: $(tail -c 1500 "$out.err")"
    printf '\n!!! %s FAILED: %s\n' "$name" "$*" >&2
    tail -c 3000 "$out.err" >&2
    return 1
  fi
  local u sy
  read -r T[$name] M[$name] u sy < <(tail -n1 "$out.time")
  CPU[$name]=$(awk -v u="$u" -v s="$sy" 'BEGIN{print u + s}')
  local load; load=$(cut -d' ' -f1 /proc/loadavg)
  LOADMAX=$(awk -v a="$LOADMAX" -v b="$load" 'BEGIN{print (b > a) ? b : a}')
  printf '   %-28s %8.2f s %6d MiB  cpu %6.2f s  (load %s)\n' "$name" "${T[$name]}" $((M[$name] / 1024)) "${CPU[$name]}" "$load" >&2
}
mib() { awk -v v="$1" 'BEGIN{printf "%.1f MiB", v/1048576}'; }
size() { du -sb "$1" | cut -f1; }

# ====================================================================================
# PRUNE
# ====================================================================================
if want prune; then
[ -x "$BENCH/make-dataset.sh" ] || die "no $BENCH/make-dataset.sh (set COFFER_SHARED)"

# --- 1. data set (the same convention and marker file as bench.sh) -----------------
params="REAL_MIB=${REAL_MIB:-1536} RAND_MIB=${RAND_MIB:-300} LOG_MIB=${LOG_MIB:-500}"
if [ ! -f "$W/dataset.params" ] || [ "$(cat "$W/dataset.params")" != "$params" ]; then
  log "building data set ($params); this takes a while"
  rm -rf "$W/dataset" "$W/dataset.manifest" "$W/dataset.filelist" "$W/dataset.params"
  env $params "$BENCH/make-dataset.sh" "$W/dataset" >&2
  echo "$params" > "$W/dataset.params"
fi
DATA=$P/data
C=$P/coffer
R=$P/restic
rm -rf "$DATA" "$C" "$R" "$P/dry" "$P/restore-coffer" "$P/restore-restic" "$P/s3srv" "$P/cache"
N=$((DAYS * PER_DAY)); STEP=$((86400 / PER_DAY))
export RESTIC_PASSWORD=coffer-bench
RESTIC=(restic --repo "$R/repo" --cache-dir "$R/cache" --compression auto)
CA=(--repo "$C/repo" --agent-key "$C/agent.key" --catalog "$C/catalog.sqlite")
# A saved history: pack folders (written once, never changed) hard-linked,
# every other file copied (catalogs and caches change in place).
HS=$W/prune-history
HKEY="$params DAYS=$DAYS PER_DAY=$PER_DAY"
clone_tree() {   # clone_tree SRC DST
  cp -al "$1" "$2"
  find "$2" -type f ! -path '*/data/*' -links +1 -exec sh -c 'for f; do cp -p "$f" "$f.cp" && mv "$f.cp" "$f"; done' _ {} +
}
if [ "${BENCH_REUSE_HISTORY:-0}" = 1 ] && [ -f "$HS/key" ] && [ "$(cat "$HS/key")" = "$HKEY" ]; then
log "reusing the history saved in $HS (built $(date -u -d @"$(cut -d" " -f1 "$HS/end")" '+%F %T') UTC)"
cp -al "$HS/data" "$DATA"
clone_tree "$HS/coffer" "$C"; clone_tree "$HS/restic" "$R"
read -r END MUT_S T_HIST NFILES0 NBYTES0 < "$HS/end"
cp "$HS/history.tsv" "$RAW/history.tsv"
sync
tar -cf - -C "$P" data | cat > /dev/null   # warm the page cache for both tools
else
log "copying data set to $DATA"
cp -a "$W/dataset" "$DATA"
mkdir -p "$C" "$R"
NFILES0=$(find "$DATA" -type f | wc -l); NBYTES0=$(size "$DATA")
sync
tar -cf - -C "$P" data | cat > /dev/null   # warm the page cache for both tools

# coffer: operator identity (for check/restore only) + agent key (everything else)
"$COFFER" key generate --output "$C/operator.key" > /dev/null 2>&1 || die "coffer key generate"
RECIPIENT=$("$COFFER" key recipient --identity "$C/operator.key")
"$COFFER" init --repo "$C/repo" --recipient "$RECIPIENT" --agent-key "$C/agent.key" > "$RAW/coffer.init" 2>&1 ||
  die "coffer init: $(cat "$RAW/coffer.init")"
"${RESTIC[@]}" init --repository-version 2 > "$RAW/restic.init" 2>&1 || die "restic init: $(cat "$RAW/restic.init")"

# --- 2. history ------------------------------------------------------------------------
END=$(date +%s)
log "history: $N snapshots ($DAYS days x $PER_DAY), one every $((STEP / 3600)) h, ending $(date -u -d @"$END" '+%F %T') UTC"
: > "$RAW/history.tsv"   # k tool seconds rss_kib
hist_backup() {   # hist_backup TOOL K EPOCH
  local tool=$1 k=$2 t=$3
  if [ "$tool" = coffer ]; then
    timed "h.coffer.$k" "$COFFER" backup "${CA[@]}" --time "$(date -u -d @"$t" +%Y-%m-%dT%H:%M:%SZ)" -q "$DATA"
  else
    timed "h.restic.$k" "${RESTIC[@]}" backup --quiet --time "$(date -u -d @"$t" '+%Y-%m-%d %H:%M:%S')" "$DATA"
  fi || die "history: $tool backup $k failed (see above)"
  printf '%s\t%s\t%s\t%s\n' "$k" "$tool" "${T[h.$tool.$k]}" "${M[h.$tool.$k]}" >> "$RAW/history.tsv"
  rm -f "$RAW/h.$tool.$k".*
}
MUT_S=0
for ((k = 0; k < N; k++)); do
  t=$((END - (N - 1 - k) * STEP))
  if [ "$k" -gt 0 ]; then
    m0=$(date +%s.%N)
    "$BENCH/mutate-dataset.sh" "$DATA" "$k" > "$RAW/mutate.last" 2>&1 || die "mutate-dataset.sh $k: $(cat "$RAW/mutate.last")"
    MUT_S=$(awk -v a="$MUT_S" -v b="$m0" -v c="$(date +%s.%N)" 'BEGIN{print a + c - b}')
  fi
  log "snapshot $((k + 1))/$N at $(date -u -d @"$t" '+%F %T')"
  if [ $((k % 2)) -eq 0 ]; then hist_backup coffer "$k" "$t"; hist_backup restic "$k" "$t"
  else hist_backup restic "$k" "$t"; hist_backup coffer "$k" "$t"; fi
done
T_HIST=$(($(date +%s) - T_START))
if [ "${BENCH_REUSE_HISTORY:-0}" = 1 ]; then
  log "saving the history in $HS"
  rm -rf "$HS"; mkdir -p "$HS"
  cp -al "$DATA" "$HS/data"
  clone_tree "$C" "$HS/coffer"; clone_tree "$R" "$HS/restic"
  cp "$RAW/history.tsv" "$HS/"
  echo "$END $MUT_S $T_HIST $NFILES0 $NBYTES0" > "$HS/end"
  echo "$HKEY" > "$HS/key"
fi
fi   # history built or reused
NFILES1=$(find "$DATA" -type f | wc -l); NBYTES1=$(size "$DATA")

coffer_count() { "$COFFER" snapshots "$@" --json 2> "$RAW/count.err" | jq length; }
restic_count() { "$@" snapshots --json 2> "$RAW/count.err" | jq length; }
declare -A SNAP0=() SNAP1=() SIZE0=() SIZE1=()
SNAP0[coffer]=$(coffer_count "${CA[@]}"); SNAP0[restic]=$(restic_count "${RESTIC[@]}")
SIZE0[coffer]=$(size "$C/repo"); SIZE0[restic]=$(size "$R/repo")
# what either rule should keep: younger than KEEP_DAYS (the newest snapshot is "now")
EXPECT=$(( (KEEP_DAYS * 86400 - 1) / STEP + 1 )); [ "$EXPECT" -le "$N" ] || EXPECT=$N
log "history done in ${T_HIST}s: coffer ${SNAP0[coffer]} snapshots ($(mib "${SIZE0[coffer]}")), restic ${SNAP0[restic]} ($(mib "${SIZE0[restic]}"))"

# --- 3. S3: upload both histories to one local S3 server over TLS ---------------------------
declare -A REQ=()
S3UP=0
if [ "$S3" = 1 ]; then
  [ -x "$S3SERVER" ] || die "no S3 server at $S3SERVER"
  s3start "$S3SERVER" "$P/s3srv"
  requests() { local r _b; read -r r _b < <(s3counters); echo "$r"; }
  s3timed() {   # s3timed NAME CMD...: timed, and its requests counted in REQ[NAME]
    local name=$1 before; shift
    before=$(requests)
    timed "$name" "$@" || return 1
    REQ[$name]=$(( $(requests) - before ))
    echo "   $name: ${REQ[$name]} requests" >&2
  }
  CS3=(--repo s3://bench/coffer --agent-key "$C/agent.key" --catalog "$C/catalog-s3.sqlite")
  # s3legacy layout (data/ID, no data/XX/ folders): the s3s-fs server takes
  # minio-go's empty "delimiter=" of a recursive listing as a delimiter and
  # lists nothing below data/, so restic would find no packs at all
  RS3=(restic --repo "s3:$EP/bench/restic" --cacert "$S3CA" --cache-dir "$R/cache-s3" --compression auto -o s3.layout=s3legacy)
  log "S3: uploading both histories as they are (aws s3 cp)"
  # The S3 repositories are file-for-file uploads of the local ones, so both
  # tools prune on S3 exactly the pack layout they prune locally. (`restic
  # copy` would re-pack every snapshot's blobs together and hand restic an
  # easier layout; `coffer copy` copies packs as they are.) Uploaded through
  # the server rather than copied into its folder: s3s-fs stores each object's
  # ETag at upload, and recomputes the MD5 of the whole object on every GET of
  # an object it did not receive itself (a ranged GET included).
  export AWS_ENDPOINT_URL=$EP AWS_CA_BUNDLE=$S3CA
  printf '[default]\ns3 =\n  multipart_threshold = 5GB\n' > "$P/aws.config"   # single PUTs, as both tools do
  upload() { AWS_CONFIG_FILE=$P/aws.config aws s3 cp --recursive --only-show-errors "$1" "$2" >&2; }
  # coffer: the same keys as on disk
  upload "$C/repo" s3://bench/coffer/ || FAILED[s3setup]="aws s3 cp (coffer) failed"
  # restic: its s3legacy layout (see RS3 above): data/ID, key/, snapshot/, index/
  ST=$P/stage-restic
  rm -rf "$ST"; mkdir -p "$ST/data" "$ST/key" "$ST/snapshot" "$ST/index"
  cp -al "$R/repo/config" "$ST/"
  cp -al "$R/repo/keys/." "$ST/key/"; cp -al "$R/repo/snapshots/." "$ST/snapshot/"
  cp -al "$R/repo/index/." "$ST/index/"
  find "$R/repo/data" -type f -exec cp -al -t "$ST/data/" {} +
  upload "$ST" s3://bench/restic/ || FAILED[s3setup]="aws s3 cp (restic) failed"
  rm -rf "$ST"
  B=$S3DIR/s3/bench
  # each tool's local cache state, as if it had written the S3 repository
  # itself: coffer's catalog and restic's cache are copies of the local ones
  for f in "$C"/catalog.sqlite*; do cp -a "$f" "$C/catalog-s3.sqlite${f#"$C"/catalog.sqlite}"; done
  cp -a "$R/cache" "$R/cache-s3"
  SNAP0[s3coffer]=$(coffer_count "${CS3[@]}") && SNAP0[s3restic]=$(restic_count "${RS3[@]}") &&
    [ "${SNAP0[s3coffer]}" = "${SNAP0[coffer]}" ] && [ "${SNAP0[s3restic]}" = "${SNAP0[restic]}" ] && S3UP=1 ||
    FAILED[s3setup]="the S3 copies do not list the local snapshots (coffer ${SNAP0[s3coffer]:-?}, restic ${SNAP0[s3restic]:-?}): $(cat "$RAW/count.err")"
  SIZE0[s3coffer]=$(size "$B/coffer"); SIZE0[s3restic]=$(size "$B/restic")
fi

# --- 4. planning only: forget, then prune --dry-run, on copies -------------------------
if [ "$DRYRUN" = 1 ]; then
  log "planning only (dry runs on copies of the repositories)"
  D=$P/dry
  mkdir -p "$D"
  # packs hard-linked (a dry run reads them, forget only deletes snapshot files)
  mkdir -p "$D/coffer/repo" "$D/restic/repo"
  for d in "$C/repo"/*; do
    if [ "$(basename "$d")" = data ]; then cp -al "$d" "$D/coffer/repo/"; else cp -a "$d" "$D/coffer/repo/"; fi
  done
  cp -a "$C/agent.key" "$C"/catalog.sqlite* "$D/coffer/"
  for d in "$R/repo"/*; do
    if [ "$(basename "$d")" = data ]; then cp -al "$d" "$D/restic/repo/"; else cp -a "$d" "$D/restic/repo/"; fi
  done
  cp -a "$R/cache" "$D/restic/cache"
  DCA=(--repo "$D/coffer/repo" --agent-key "$D/coffer/agent.key" --catalog "$D/coffer/catalog.sqlite")
  timed dry.coffer.forget "$COFFER" forget "${DCA[@]}" --keep-within "${KEEP_DAYS}d" -q || true
  timed dry.coffer.prune "$COFFER" prune "${DCA[@]}" --grace 0s --dry-run --json || true
  timed dry.restic "restic" --repo "$D/restic/repo" --cache-dir "$D/restic/cache" --compression auto \
    forget --keep-within "${KEEP_DAYS}d" --prune --dry-run || true
  rm -rf "$D"
fi

# --- 5./6. expire ---------------------------------------------------------------------------
coffer_expire() {   # coffer_expire ARGS...: forget, then prune (agent key only)
  timed coffer.forget "$COFFER" forget "$@" --keep-within "${KEEP_DAYS}d" --json &&
    timed coffer.prune "$COFFER" prune "$@" --grace 0s --json
}
restic_expire() {   # restic_expire PREFIX RESTIC-COMMAND...
  local pre=$1; shift
  local run=timed; [ -n "$pre" ] && run=s3timed
  $run "${pre}restic.expire" "$@" forget --keep-within "${KEEP_DAYS}d" --prune
}
log "expire, local repositories (coffer first)"
coffer_expire "${CA[@]}" || true
restic_expire "" "${RESTIC[@]}" || true
SNAP1[coffer]=$(coffer_count "${CA[@]}"); SNAP1[restic]=$(restic_count "${RESTIC[@]}")
SIZE1[coffer]=$(size "$C/repo"); SIZE1[restic]=$(size "$R/repo")

if [ "$S3UP" = 1 ]; then
  log "expire, S3 copies (restic first)"
  restic_expire s3. "${RS3[@]}" || true
  # coffer, with its planning measured apart: after the forget, prune
  # --dry-run on a copy of the catalog (so the real prune finds the catalog as
  # the forget left it), then the real prune
  if s3timed s3.coffer.forget "$COFFER" forget "${CS3[@]}" --keep-within "${KEEP_DAYS}d" --json; then
    for f in "$C"/catalog-s3.sqlite*; do cp -a "$f" "$C/catalog-s3dry.sqlite${f#"$C"/catalog-s3.sqlite}"; done
    s3timed s3.coffer.dryprune "$COFFER" prune --repo s3://bench/coffer --agent-key "$C/agent.key" \
      --catalog "$C/catalog-s3dry.sqlite" --grace 0s --dry-run --json || true
    s3timed s3.coffer.prune "$COFFER" prune "${CS3[@]}" --grace 0s --json || true
  fi
  SNAP1[s3coffer]=$(coffer_count "${CS3[@]}"); SNAP1[s3restic]=$(restic_count "${RS3[@]}")
  SIZE1[s3coffer]=$(size "$B/coffer"); SIZE1[s3restic]=$(size "$B/restic")
  log "S3: coffer check (structure) after its prune"
  timed s3check.coffer "$COFFER" check --repo s3://bench/coffer --identity "$C/operator.key" --catalog "$C/catalog-s3.sqlite" || true
  s3stop
fi

# --- 7. checks and restores ---------------------------------------------------------------
log "checks (--read-data) and restores of the latest snapshot"
timed check.coffer "$COFFER" check --repo "$C/repo" --identity "$C/operator.key" --catalog "$C/catalog.sqlite" --read-data || BAD+=("coffer check --read-data failed: $RAW/check.coffer.err")
timed check.restic "${RESTIC[@]}" check --read-data || BAD+=("restic check --read-data failed: $RAW/check.restic.err")
mkdir -p "$P/restore-coffer" "$P/restore-restic"
timed restore.restic "${RESTIC[@]}" restore latest --target "$P/restore-restic" --quiet || true
timed restore.coffer "$COFFER" restore latest --repo "$C/repo" --identity "$C/operator.key" \
  --catalog "$C/catalog.sqlite" --target "$P/restore-coffer" --quiet || true
for t in coffer restic; do
  [ -z "${FAILED[restore.$t]:-}" ] || { BAD+=("$t: restore failed"); continue; }
  if diff -r "$DATA" "$P/restore-$t$DATA" > "$RAW/$t.diff" 2>&1; then VERIFIED+=("$t")
  else BAD+=("$t: restored latest snapshot differs from the data (diff -r: $(wc -l < "$RAW/$t.diff") lines, $RAW/$t.diff)"); fi
  rm -rf "$P/restore-$t"
done
fi   # want prune

# ====================================================================================
# AGENT IDLE
# ====================================================================================
if want idle; then
  log "agent idle: 3 profiles, ${IDLE_SECONDS}s"
  I=$P/idle
  rm -rf "$I"; mkdir -p "$I/profiles" "$I/state" "$I/src"
  echo "idle benchmark" > "$I/src/file.txt"
  "$COFFER" key generate --output "$I/operator.key" > /dev/null 2>&1 || die "coffer key generate"
  "$COFFER" init --repo "$I/repo" --recipient "$("$COFFER" key recipient --identity "$I/operator.key")" \
    --agent-key "$I/agent.key" > "$RAW/idle.init" 2>&1 || die "coffer init (idle): $(cat "$RAW/idle.init")"
  # the next run ~12 hours away (at least 11 h), whatever the time of day
  AT=$(printf '%02d:00' $(( (10#$(date -u +%H) + 12) % 24 )))
  for i in 1 2 3; do
    cat > "$I/profiles/idle$i.toml" <<EOF
name = "idle$i"
sources = ["$I/src"]
repository = "$I/repo"
agent_key = "$I/agent.key"
catalog = "$I/idle$i.sqlite"

[schedule]
times = ["$AT"]
timezone = "UTC"
catch_up = false
EOF
  done
  "$COFFER" agent --check --profiles "$I/profiles" --state-dir "$I/state" > "$RAW/idle.check" 2>&1 ||
    die "coffer agent --check failed: $(cat "$RAW/idle.check")"
  cat "$RAW/idle.check" >&2
  "$COFFER" agent --profiles "$I/profiles" --state-dir "$I/state" > "$RAW/idle.log" 2>&1 &
  APID=$!
  ticks() { sed 's/^.*) //' "/proc/$APID/stat" | awk '{print $12 + $13}'; }   # utime + stime
  status() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$APID/status"; }
  sleep 2   # start-up: profiles read, state loaded
  kill -0 "$APID" 2>/dev/null || die "the agent exited at start: $(cat "$RAW/idle.log")"
  IDLE_T0=$(ticks); IDLE_START_RSS=$(status VmRSS); IDLE_W0=$(date +%s.%N)
  sleep "$IDLE_SECONDS"
  IDLE_T1=$(ticks); IDLE_W1=$(date +%s.%N)
  IDLE_RSS=$(status VmRSS); IDLE_HWM=$(status VmHWM); IDLE_THREADS=$(status Threads)
  IDLE_CHILDREN=$(pgrep -c -P "$APID" || true)
  HZ=$(getconf CLK_TCK)
  s0=$(date +%s.%N)
  kill -TERM "$APID"
  IDLE_RC=0; wait "$APID" || IDLE_RC=$?
  IDLE_STOP=$(awk -v a="$s0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b - a}')
  IDLE_WALL=$(awk -v a="$IDLE_W0" -v b="$IDLE_W1" 'BEGIN{printf "%.1f", b - a}')
  IDLE_TICKS=$((IDLE_T1 - IDLE_T0))
  IDLE_RUNS=$(ls "$I/state" | wc -l)
  log "agent: ${IDLE_TICKS} ticks (CLK_TCK $HZ) in ${IDLE_WALL}s, VmRSS $IDLE_RSS kB, VmHWM $IDLE_HWM kB, exit $IDLE_RC"
  [ "$IDLE_RC" = 0 ] || FAILED[agent]="coffer agent exited $IDLE_RC after SIGTERM (log: $RAW/idle.log)"
fi

# ====================================================================================
# REPORT
# ====================================================================================
fmt_s() { [ -n "${1:-}" ] && printf '%.2f s' "$1" || echo "-"; }
fmt_m() { [ -n "${1:-}" ] && awk -v v="$1" 'BEGIN{printf "%.0f MiB", v/1024}' || echo "-"; }
ratio() { [ -n "${1:-}" ] && [ -n "${2:-}" ] && awk -v c="$1" -v r="$2" 'BEGIN{ if (r > 0) printf "%.2f", c/r; else print "inf" }' || echo "-"; }
sum() { [ -n "${1:-}" ] && [ -n "${2:-}" ] && awk -v a="$1" -v b="$2" 'BEGIN{print a + b}' || true; }
max() { [ -n "${1:-}" ] && [ -n "${2:-}" ] && awk -v a="$1" -v b="$2" 'BEGIN{print (a > b) ? a : b}' || true; }
v() { local -n a=$1; echo "${a[$2]:-}"; }
# restic's prune summary: the lines after "collecting packs for deletion and repacking"
restic_summary() { sed -n '/^collecting packs/,/^rebuilding index/p' "$1" 2>/dev/null | grep -v -e '^collecting' -e '^rebuilding' -e '^$' || true; }
hist_stat() {   # hist_stat TOOL: mean and max backup seconds after the first, peak RSS
  awk -F'\t' -v t="$1" '$2 == t && $1 > 0 {n++; s += $3; if ($3 > m) m = $3; if ($4 > r) r = $4}
    END { if (n) printf "mean %.2f s, max %.2f s, peak RSS %d MiB", s/n, m, r/1024; else print "-" }' "$RAW/history.tsv"
}
hist_first() { awk -F'\t' -v t="$1" '$2 == t && $1 == 0 {printf "%.2f s", $3}' "$RAW/history.tsv"; }

{
  echo "# Prune and agent idle — $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores"
  echo
  echo "coffer \`$REV\`; restic $(restic version | cut -d' ' -f2). Load average (1 min) at start $LOAD0, highest seen after a step $LOADMAX, at end $(cut -d' ' -f1 /proc/loadavg); the whole script took $(( $(date +%s) - T_START )) s."
  if want prune; then
    T_CE=$(sum "$(v T coffer.forget)" "$(v T coffer.prune)"); M_CE=$(max "$(v M coffer.forget)" "$(v M coffer.prune)")
    T_SCE=$(sum "$(v T s3.coffer.forget)" "$(v T s3.coffer.prune)"); M_SCE=$(max "$(v M s3.coffer.forget)" "$(v M s3.coffer.prune)")
    R_SCE=$(sum "$(v REQ s3.coffer.forget)" "$(v REQ s3.coffer.prune)")
    T_DC=$(sum "$(v T dry.coffer.forget)" "$(v T dry.coffer.prune)")
    echo
    echo "History: $N snapshots ($DAYS days x $PER_DAY, one every $((STEP / 3600)) h, the newest at $(date -u -d @"$END" '+%F %T') UTC), $((N - 1)) mutation rounds (mutate-dataset.sh, $(printf '%.0f' "$MUT_S") s in all)."
    echo "Data: $params; $NFILES0 files, $(mib "$NBYTES0") at the first snapshot; $NFILES1 files, $(mib "$NBYTES1") at the last. Building the history took $T_HIST s."
    echo "Backups in the history: coffer first $(hist_first coffer), then $(hist_stat coffer); restic first $(hist_first restic), then $(hist_stat restic)."
    echo "Expiry: keep within ${KEEP_DAYS}d (expected to keep $EXPECT). coffer: \`forget --keep-within ${KEEP_DAYS}d\` then \`prune --grace 0s\` (agent key; max-unused 20%); restic: \`forget --keep-within ${KEEP_DAYS}d --prune\` (max-unused 5%)."
    echo
    echo "| | coffer | restic | ratio coffer/restic | target |"
    echo "|---|---|---|---|---|"
    echo "| **expire, local: forget + prune** | $(fmt_s "$T_CE") | $(fmt_s "$(v T restic.expire)") | **$(ratio "$T_CE" "$(v T restic.expire)")** | ≤ 0.5 |"
    echo "| of which forget | $(fmt_s "$(v T coffer.forget)") | | | |"
    echo "| of which prune | $(fmt_s "$(v T coffer.prune)") | | $(ratio "$(v T coffer.prune)" "$(v T restic.expire)") | |"
    [ "$DRYRUN" = 1 ] && echo "| planning only: forget + prune --dry-run (on a copy) | $(fmt_s "$T_DC") (prune $(fmt_s "$(v T dry.coffer.prune)")) | $(fmt_s "$(v T dry.restic)") | $(ratio "$T_DC" "$(v T dry.restic)") | |"
    echo "| CPU (user + sys), expire | $(fmt_s "$(sum "$(v CPU coffer.forget)" "$(v CPU coffer.prune)")") | $(fmt_s "$(v CPU restic.expire)") | | |"
    echo "| peak RSS, expire | $(fmt_m "$M_CE") | $(fmt_m "$(v M restic.expire)") | $(ratio "$M_CE" "$(v M restic.expire)") | |"
    echo "| snapshots before → kept | ${SNAP0[coffer]} → ${SNAP1[coffer]} | ${SNAP0[restic]} → ${SNAP1[restic]} | | equal |"
    echo "| repository before | $(mib "${SIZE0[coffer]}") | $(mib "${SIZE0[restic]}") | $(ratio "${SIZE0[coffer]}" "${SIZE0[restic]}") | |"
    echo "| repository after | $(mib "${SIZE1[coffer]}") | $(mib "${SIZE1[restic]}") | $(ratio "${SIZE1[coffer]}" "${SIZE1[restic]}") | |"
    echo "| freed | $(mib $((SIZE0[coffer] - SIZE1[coffer]))) | $(mib $((SIZE0[restic] - SIZE1[restic]))) | | |"
    if [ "$S3UP" = 1 ]; then
      echo "| **expire, S3 (TLS): forget + prune** | $(fmt_s "$T_SCE") | $(fmt_s "$(v T s3.restic.expire)") | **$(ratio "$T_SCE" "$(v T s3.restic.expire)")** | ≤ 0.5 |"
      echo "| S3 requests, expire | $R_SCE (forget $(v REQ s3.coffer.forget), prune $(v REQ s3.coffer.prune)) | $(v REQ s3.restic.expire) | $(ratio "$R_SCE" "$(v REQ s3.restic.expire)") | |"
      echo "| of which prune | $(fmt_s "$(v T s3.coffer.prune)"), $(v REQ s3.coffer.prune) requests | | | |"
      echo "| planning only: prune --dry-run after the forget | $(fmt_s "$(v T s3.coffer.dryprune)"), $(v REQ s3.coffer.dryprune) requests | | | |"
      echo "| CPU (user + sys), S3 expire | $(fmt_s "$(sum "$(v CPU s3.coffer.forget)" "$(v CPU s3.coffer.prune)")") | $(fmt_s "$(v CPU s3.restic.expire)") | | |"
      echo "| peak RSS, S3 expire | $(fmt_m "$M_SCE") | $(fmt_m "$(v M s3.restic.expire)") | | |"
      echo "| S3 snapshots before → kept | ${SNAP0[s3coffer]:-} → ${SNAP1[s3coffer]:-} | ${SNAP0[s3restic]:-} → ${SNAP1[s3restic]:-} | | equal |"
      echo "| S3 repository before → after | $(mib "${SIZE0[s3coffer]}") → $(mib "${SIZE1[s3coffer]}") | $(mib "${SIZE0[s3restic]}") → $(mib "${SIZE1[s3restic]}") | | |"
      echo "| S3 check after the prune (structure) | $(fmt_s "$(v T s3check.coffer)") | | | |"
    elif [ "$S3" = 1 ]; then
      echo "| S3 | setup failed, see below | | | |"
    fi
    echo "| check --read-data afterwards | $(fmt_s "$(v T check.coffer)") | $(fmt_s "$(v T check.restic)") | | |"
    echo "| restore latest afterwards | $(fmt_s "$(v T restore.coffer)") | $(fmt_s "$(v T restore.restic)") | | |"
    echo
    [ "${SNAP1[coffer]}" = "${SNAP1[restic]}" ] && echo "Both kept ${SNAP1[coffer]} snapshots (expected $EXPECT)." ||
      echo "**Snapshots kept differ: coffer ${SNAP1[coffer]}, restic ${SNAP1[restic]} (expected $EXPECT).**"
    echo
    echo "coffer prune (local): \`$(jq -c . "$RAW/coffer.prune.out" 2>/dev/null)\`"
    [ "$S3UP" = 1 ] && echo && echo "coffer prune (S3): \`$(jq -c . "$RAW/s3.coffer.prune.out" 2>/dev/null)\`"
    [ "$DRYRUN" = 1 ] && echo && echo "coffer prune --dry-run: \`$(jq -c . "$RAW/dry.coffer.prune.out" 2>/dev/null)\`"
    echo
    echo "restic prune (local):"
    echo '```'; restic_summary "$RAW/restic.expire.out"; echo '```'
    if [ "$S3UP" = 1 ]; then
      echo "restic prune (S3):"
      echo '```'; restic_summary "$RAW/s3.restic.expire.out"; echo '```'
    fi
    if [ ${#BAD[@]} -gt 0 ]; then
      echo; echo "**VERIFICATION FAILED:**"; for b in "${BAD[@]}"; do echo "- $b"; done
    fi
    [ ${#VERIFIED[@]} -gt 0 ] && echo && echo "Verified after the expiry: check --read-data passed (coffer with the identity); the latest snapshot restored equals the data (diff -r): ${VERIFIED[*]}."
  fi
  if want idle; then
    echo
    echo "Agent idle: 3 profiles (next run at $AT UTC, catch_up = false), \`coffer agent --check\` passed; idle ${IDLE_WALL} s after a 2 s start-up."
    echo
    echo "| agent | value |"
    echo "|---|---|"
    echo "| VmRSS after idling | $IDLE_RSS kB |"
    echo "| VmHWM (peak RSS since start) | $IDLE_HWM kB |"
    echo "| CPU while idle (utime + stime) | $IDLE_TICKS ticks = $(awk -v t="$IDLE_TICKS" -v h="$HZ" 'BEGIN{printf "%.2f s", t/h}') in ${IDLE_WALL} s ($(awk -v t="$IDLE_TICKS" -v h="$HZ" -v w="$IDLE_WALL" 'BEGIN{printf "%.3f %%", 100*t/h/w}') of one core) |"
    echo "| CPU during start-up | $IDLE_T0 ticks |"
    echo "| threads / child processes while idle | $IDLE_THREADS / $IDLE_CHILDREN |"
    echo "| exit after SIGTERM | status $IDLE_RC in $IDLE_STOP s |"
  fi
  for f in "${!FAILED[@]}"; do
    echo; echo "**FAILED: $f**: ${FAILED[$f]}"
  done
} | tee "$RESULTS"

[ ${#FAILED[@]} -eq 0 ] && [ ${#BAD[@]} -eq 0 ]   # exit status: 1 on any failure
