# Sourced by scripts/bench.sh and scripts/bench-scale.sh: where full
# restores write, so each one starts on a fresh file system. Needs `die` and
# `log` from the sourcing script, and W (the work folder).

# loop_mount IMAGE DIR: the image's loop device reads and writes it with
# direct I/O. With a plain `mount -o loop`, every restored page was cached
# twice (the file system's page and the image file's), a 2.2 GiB restore made
# 4.4 GiB dirty, and the kernel's dirty-page throttling stalled whichever
# restore crossed the limit: coffer's local restore took 4.0 to 9.5 s in one
# run. The device is detached when the file system is unmounted.
loop_mount() {
  local dev
  # some losetup versions attach, then fail over direct I/O: never leave one attached
  if ! dev=$(losetup --find --show --direct-io=on "$1"); then
    [ -z "$dev" ] || losetup -d "$dev"
    return 1
  fi
  mount "$dev" "$2" || { losetup -d "$dev"; return 1; }
  losetup -d "$dev"   # busy: detached at umount
}

# restore_fs_choose: sets RFS from BENCH_RESTORE_FS (ext4 | dir), by default
# ext4 where root can loop-mount one. Unmounts what an earlier run left.
restore_fs_choose() {
  local m
  for m in "$W"/restore-*; do mountpoint -q "$m" && umount "$m"; done 2>/dev/null || true
  RFS=${BENCH_RESTORE_FS:-}
  if [ -z "$RFS" ]; then
    RFS=dir
    if [ "$(id -u)" -eq 0 ] && command -v mkfs.ext4 >/dev/null; then
      truncate -s 64M "$W/fs-probe.img" && mkfs.ext4 -q -F "$W/fs-probe.img" && mkdir -p "$W/fs-probe" &&
        loop_mount "$W/fs-probe.img" "$W/fs-probe" 2>/dev/null && umount "$W/fs-probe" && RFS=ext4
      rm -rf "$W/fs-probe" "$W/fs-probe.img"
    fi
  fi
  case $RFS in ext4|dir) ;; *) die "BENCH_RESTORE_FS must be ext4 or dir" ;; esac
  log "full restores write to: $RFS"
}

# fresh_target DIR BYTES: an empty DIR, with ext4 on a new file system of
# its own with room for twice BYTES (sparse: only what is written is used).
fresh_target() {
  drop_target "$1"; mkdir -p "$1"
  [ "$RFS" = ext4 ] || return 0
  truncate -s $((($2 * 2 >> 20) + 1024))M "$1.img" &&
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$1.img" &&
    loop_mount "$1.img" "$1" && sync
}
drop_target() { if mountpoint -q "$1"; then umount "$1"; fi; rm -rf "$1" "$1.img"; }
