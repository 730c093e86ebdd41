#!/usr/bin/env bash
# Removes what scripts/install.sh installed: the coffer binary, its shell
# completions and man pages, the systemd unit (stopped and disabled first),
# the sysusers.d and tmpfiles.d entries, the example profiles, and the
# coffer folders that are left empty. See docs/INSTALL.md.
#
#   sudo scripts/uninstall.sh            # keeps state, catalogs, keys, profiles
#   sudo scripts/uninstall.sh --purge    # also deletes /var/lib/coffer and /var/cache/coffer
#   DESTDIR=/tmp/stage scripts/uninstall.sh
#
# Options (or the environment variables in brackets):
#   --purge         also delete the agent state (/var/lib/coffer) and the
#                   catalogs (/var/cache/coffer; `coffer catalog rebuild`
#                   recreates them)
#   --prefix DIR    [PREFIX, default /usr/local]
#   --destdir DIR   [DESTDIR, default empty: this machine]
#
# Never removed, not even with --purge: repositories, keys
# (/etc/coffer/keys), the profiles you wrote (/etc/coffer/profiles), unit
# drop-ins (coffer-agent.service.d) and the coffer user (its uid still owns
# your key files; `userdel coffer` if you really want it gone).
set -euo pipefail

DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
purge=false

usage() { sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "uninstall.sh: $*" >&2; exit 1; }
note() { echo "uninstall.sh: $*"; }

while [ $# -gt 0 ]; do
  case $1 in
    --purge) purge=true; shift ;;
    --prefix) [ $# -ge 2 ] || die "--prefix needs a folder"; PREFIX=$2; shift 2 ;;
    --prefix=*) PREFIX=${1#*=}; shift ;;
    --destdir) [ $# -ge 2 ] || die "--destdir needs a folder"; DESTDIR=$2; shift 2 ;;
    --destdir=*) DESTDIR=${1#*=}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

case $PREFIX in
  /*) ;;
  *) die "PREFIX must be an absolute path, not '$PREFIX'" ;;
esac
PREFIX=${PREFIX%/}
[ -n "$PREFIX" ] || die "PREFIX must not be /"
if [ -n "$DESTDIR" ]; then
  case $DESTDIR in /*) ;; *) DESTDIR=$PWD/$DESTDIR ;; esac
  DESTDIR=${DESTDIR%/}
  [ -n "$DESTDIR" ] || die "DESTDIR=/ means no DESTDIR: leave it empty"
  [ -d "$DESTDIR" ] || die "DESTDIR $DESTDIR does not exist"
fi
staged() { [ -n "$DESTDIR" ]; }
if ! staged && [ "$(id -u)" != 0 ]; then
  die "run as root (sudo $0), or set DESTDIR=<folder> for a staged install"
fi

remove() {
  if [ -e "$DESTDIR$1" ] || [ -L "$DESTDIR$1" ]; then
    rm -f "$DESTDIR$1"
    note "removed $1"
  fi
}
# Removes a folder only if it is empty (rmdir refuses otherwise).
prune_dir() {
  if [ -d "$DESTDIR$1" ]; then
    if rmdir "$DESTDIR$1" 2>/dev/null; then
      note "removed empty folder $1"
    else
      note "kept $1 (not empty)"
    fi
  fi
}

# --- the service -------------------------------------------------------------
unit=/usr/lib/systemd/system/coffer-agent.service
# Where an older install.sh put it, and where drop-ins live.
etc_unit=/etc/systemd/system/coffer-agent.service
if staged; then
  note "staged install: would run 'systemctl disable --now coffer-agent'"
  # An `systemctl --root=… enable` leaves this link behind.
  remove /etc/systemd/system/multi-user.target.wants/coffer-agent.service
elif [ -d /run/systemd/system ]; then
  if systemctl cat coffer-agent.service >/dev/null 2>&1; then
    # Stops a running backup cleanly (SIGTERM; what was uploaded is kept).
    systemctl disable --now coffer-agent.service || note "could not stop/disable coffer-agent; continuing"
  fi
fi
remove "$unit"
# The unit an older install.sh wrote there; a copy of your own is kept.
if [ -f "$DESTDIR$etc_unit" ]; then
  if grep -q '^# Installed by scripts/install.sh' "$DESTDIR$etc_unit"; then
    remove "$etc_unit"
  else
    note "kept $etc_unit (not written by install.sh)"
  fi
fi
if ! staged && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl reset-failed coffer-agent.service 2>/dev/null || true
fi
if [ -d "$DESTDIR$etc_unit.d" ]; then
  note "kept your drop-ins in $etc_unit.d (remove them yourself if no longer wanted)"
fi
# The user's declaration goes; the user stays (see above). The folders'
# declaration goes; the folders stay until --purge.
remove /usr/lib/sysusers.d/coffer.conf
remove /usr/lib/tmpfiles.d/coffer.conf

# --- files -----------------------------------------------------------------------
remove "$PREFIX/bin/coffer"
remove "$PREFIX/share/bash-completion/completions/coffer"
remove "$PREFIX/share/zsh/site-functions/_coffer"
remove "$PREFIX/share/fish/vendor_completions.d/coffer.fish"
shopt -s nullglob
for p in "$DESTDIR$PREFIX"/share/man/man1/coffer.1 "$DESTDIR$PREFIX"/share/man/man1/coffer-*.1; do
  remove "${p#"$DESTDIR"}"
done
shopt -u nullglob
shopt -s nullglob
for p in "$DESTDIR$PREFIX"/share/coffer/profiles/*.toml; do
  remove "${p#"$DESTDIR"}"
done
shopt -u nullglob
prune_dir "$PREFIX/share/coffer/profiles"
prune_dir "$PREFIX/share/coffer"

# --- state and catalogs (--purge only) ----------------------------------------------
# A last guard: a purge never deletes a repository (a folder with coffer's
# plaintext `config`) or a key (a file with an age secret key), even one an
# admin put in the wrong place.
guarded() {
  local hits
  hits=$(
    find "$1" -xdev -type f -size -1024k \( \
      \( -name config -exec grep -lE '"format" *: *"coffer"' {} + \) , \
      \( -exec grep -lI 'AGE-SECRET-KEY-' {} + \) \) 2>/dev/null | sort -u
  )
  if [ -n "$hits" ]; then
    note "NOT purging ${1#"$DESTDIR"}: it holds a repository or a key:"
    while IFS= read -r h; do echo "  ${h#"$DESTDIR"}"; done <<<"$hits"
    return 0
  fi
  return 1
}
refused=false
for d in /var/lib/coffer /var/cache/coffer; do
  [ -e "$DESTDIR$d" ] || [ -L "$DESTDIR$d" ] || continue
  if $purge; then
    if [ -L "$DESTDIR$d" ]; then
      rm -f "$DESTDIR$d"   # the link only, never what it points to
      note "removed link $d"
    elif guarded "$DESTDIR$d"; then
      refused=true
    else
      rm -rf --one-file-system "$DESTDIR$d"
      note "purged $d"
    fi
  else
    note "kept $d (use --purge to delete it)"
  fi
done

prune_dir /etc/coffer/profiles
prune_dir /etc/coffer/keys
prune_dir /etc/coffer

if $refused; then
  die "done, except for the folders above: move the repository or key out, then run --purge again"
fi
note "done; the coffer user and group remain (userdel coffer; groupdel coffer)"
