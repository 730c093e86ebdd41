#!/usr/bin/env bash
# Recover one file from a coffer repository with only the stock tools:
# age, zstd, jq and coreutils. No coffer binary needed (docs/FORMAT.md, "Recovery").
#
#   scripts/recover-file.sh REPO_DIR IDENTITY_FILE SNAPSHOT_ID_PREFIX PATH > out
#
# PATH is as stored in the snapshot: the absolute source path without the leading '/'.
# For an S3 repository, download the bucket prefix first (aws s3 sync s3://bucket/prefix REPO_DIR).
set -euo pipefail
[ $# -eq 4 ] || { echo "usage: $0 REPO_DIR IDENTITY SNAPSHOT_PREFIX PATH" >&2; exit 2; }
repo=$1 id=$2 snap=$3 want=${4#/}

# LEN bytes at OFFSET of a file (dd reads exactly that; no SIGPIPE games).
cut_bytes() { dd if="$1" bs=1M iflag=skip_bytes,count_bytes skip="$2" count="$3" status=none; }

open_obj() { age -d -i "$id" "$1" | zstd -dq; }  # index and snapshot objects: age(zstd(JSON))

# One blob: cut its bytes out of the pack, then age -d | zstd -d.
blob() {
  local loc pack off len
  loc=$(jq -r --arg b "$1" '.[$b] // empty' "$tmp/where.json")
  [ -n "$loc" ] || { echo "blob $1 is in no index" >&2; exit 1; }
  read -r pack off len <<<"$loc"
  cut_bytes "$repo/data/${pack:0:2}/$pack" "$off" "$len" | age -d -i "$id" | zstd -dq
}

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

# 1. Where every blob is: merge all index objects into {blob: "pack offset length"}.
for f in "$repo"/index/*; do open_obj "$f"; done |
  jq -s 'map(.packs[] | .id as $p | .blobs[] | {key: .id, value: "\($p) \(.offset) \(.length)"}) | from_entries' > "$tmp/where.json"

# 2. The snapshot: its file list is the concatenation of its tree blobs.
snapfile=$(ls "$repo"/snapshots/"$snap"* | head -n 1)
open_obj "$snapfile" > "$tmp/snapshot.json"
for t in $(jq -r '.tree[]' "$tmp/snapshot.json"); do blob "$t"; done > "$tmp/files.jsonl"

# 3. The file's entry, and its content: pieces [blob, offset, length] in order.
entry=$(jq -c --arg p "$want" 'select(.path == $p)' "$tmp/files.jsonl")
[ -n "$entry" ] || { echo "$want is not in snapshot $snap" >&2; exit 1; }
jq -r '(.content // [])[] | "\(.[0]) \(.[1]) \(.[2])"' <<<"$entry" | while read -r b off len; do
  blob "$b" > "$tmp/blob"
  cut_bytes "$tmp/blob" "$off" "$len"
done
