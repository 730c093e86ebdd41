#!/usr/bin/env bash
# Installs coffer on a server: the binary, shell completions and man pages,
# a system user (sysusers.d), the configuration and state folders with safe
# modes (tmpfiles.d), example profiles and the hardened systemd unit for
# `coffer agent` (in the vendor folder /usr/lib/systemd/system). See
# docs/INSTALL.md.
#
#   sudo scripts/install.sh                       # install target/release/coffer to /usr/local
#   sudo scripts/install.sh --build               # build it first (cargo build --release --locked)
#   sudo scripts/install.sh --binary ./coffer     # install a prebuilt binary
#   DESTDIR=/tmp/stage scripts/install.sh         # stage into a folder (packaging, tests)
#
# Options (or the environment variables in brackets):
#   --binary PATH   the coffer binary [default: release/coffer in
#                   CARGO_TARGET_DIR or target/; never built unless --build]
#   --build         run `cargo build --release --locked` first, then install
#                   what it built
#   --prefix DIR    [PREFIX, default /usr/local]
#   --destdir DIR   [DESTDIR, default empty: install on this machine]
#
# Safe to run again (upgrades): it replaces the binary, the unit and the
# example profiles, tightens folder modes, and never touches your profiles in
# /etc/coffer/profiles or your keys in /etc/coffer/keys. It never enables or
# starts the service.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
binary=
build=false

usage() { sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case $1 in
    --binary) [ $# -ge 2 ] || die "--binary needs a path"; binary=$2; shift 2 ;;
    --binary=*) binary=${1#*=}; shift ;;
    --build) build=true; shift ;;
    --prefix) [ $# -ge 2 ] || die "--prefix needs a folder"; PREFIX=$2; shift 2 ;;
    --prefix=*) PREFIX=${1#*=}; shift ;;
    --destdir) [ $# -ge 2 ] || die "--destdir needs a folder"; DESTDIR=$2; shift 2 ;;
    --destdir=*) DESTDIR=${1#*=}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

# PREFIX goes into the unit's ExecStart=: absolute, and nothing systemd or sed
# would read specially.
case $PREFIX in
  /*) ;;
  *) die "PREFIX must be an absolute path, not '$PREFIX'" ;;
esac
[[ $PREFIX =~ ^[A-Za-z0-9/._+-]+$ ]] ||
  die "PREFIX '$PREFIX' may only contain letters, digits and / . _ + -"
PREFIX=${PREFIX%/}
[ -n "$PREFIX" ] || die "PREFIX must not be /"
if [ -n "$DESTDIR" ]; then
  case $DESTDIR in /*) ;; *) DESTDIR=$PWD/$DESTDIR ;; esac
  DESTDIR=${DESTDIR%/}
  [ -n "$DESTDIR" ] || die "DESTDIR=/ means no DESTDIR: leave it empty"
fi

# Staged (DESTDIR set): files only, no users, no ownership, no systemctl;
# say instead what a real install would do.
staged() { [ -n "$DESTDIR" ]; }
if ! staged && [ "$(id -u)" != 0 ]; then
  die "run as root (sudo $0), or set DESTDIR=<folder> for a staged install"
fi
note() { echo "install.sh: $*"; }

# --- the binary ---------------------------------------------------------------
# Never built behind the admin's back (a build as root, or into a staged
# package, is a surprise): only with --build.
if [ -z "$binary" ]; then
  binary=${CARGO_TARGET_DIR:-$root/target}/release/coffer
  case $binary in /*) ;; *) binary=$root/$binary ;; esac
  if $build; then
    note "building $binary (cargo build --release --locked)"
    (cd "$root" && cargo build --release --locked)
  elif [ ! -e "$binary" ]; then
    die "no coffer binary at $binary: build it (cargo build --release --locked), or run again with --build to have it built, or pass --binary PATH"
  fi
elif $build; then
  die "--build and --binary exclude each other: --build installs what cargo builds"
fi
{ [ -f "$binary" ] && [ -x "$binary" ]; } || die "no executable coffer binary at '$binary'"

# --- the coffer user -----------------------------------------------------------
# Declared for systemd-sysusers (which also makes it on image-based systems
# at boot); made here at once, by it where it exists, else by useradd.
sysusers=/usr/lib/sysusers.d/coffer.conf
install -D -m 0644 "$root/scripts/coffer.sysusers" "$DESTDIR$sysusers"
note "installed $sysusers (mode 0644)"
if staged; then
  note "staged install: would create the system group and user 'coffer' (home /var/lib/coffer, no login shell)"
elif command -v systemd-sysusers >/dev/null && [ -d /run/systemd/system ]; then
  systemd-sysusers "$sysusers"
  note "ran systemd-sysusers $sysusers"
else
  if ! getent group coffer >/dev/null; then
    groupadd --system coffer
    note "created system group coffer"
  fi
  if ! getent passwd coffer >/dev/null; then
    nologin=/usr/sbin/nologin
    [ -x "$nologin" ] || nologin=/sbin/nologin
    [ -x "$nologin" ] || nologin=/bin/false
    useradd --system --gid coffer --home-dir /var/lib/coffer --no-create-home \
      --shell "$nologin" --comment "coffer backup agent" coffer
    note "created system user coffer"
  fi
fi

# dir PATH MODE OWNER:GROUP: create (or tighten) a folder.
dir() {
  local path=$1 mode=$2 owner=$3
  install -d -m "$mode" "$DESTDIR$path"
  chmod "$mode" "$DESTDIR$path"   # an existing folder gets the safe mode too
  if staged; then
    note "staged install: would chown $owner $path (mode $mode)"
  else
    chown "$owner" "$path"
  fi
}

# put SRC DEST MODE: install a file we own (replaced on every run).
put() {
  install -D -m "$3" "$1" "$DESTDIR$2"
  note "installed $2 (mode $3)"
}

# --- files -------------------------------------------------------------------
put "$binary" "$PREFIX/bin/coffer" 0755

dir /etc/coffer 0750 root:coffer
dir /etc/coffer/profiles 0750 root:coffer
dir /etc/coffer/keys 0750 root:coffer
dir /var/lib/coffer 0700 coffer:coffer
dir /var/cache/coffer 0700 coffer:coffer
# The same two folders for systemd-tmpfiles (recreated at boot if missing).
put "$root/scripts/coffer.tmpfiles" /usr/lib/tmpfiles.d/coffer.conf 0644

# Shell completions and man pages, from the binary being installed.
gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
for shell in bash zsh fish; do
  "$binary" completions "$shell" >"$gen/coffer.$shell" ||
    die "$binary completions $shell failed"
done
put "$gen/coffer.bash" "$PREFIX/share/bash-completion/completions/coffer" 0644
put "$gen/coffer.zsh" "$PREFIX/share/zsh/site-functions/_coffer" 0644
put "$gen/coffer.fish" "$PREFIX/share/fish/vendor_completions.d/coffer.fish" 0644
"$binary" man "$gen/man1" || die "$binary man failed"
for page in "$gen"/man1/*.1; do
  install -D -m 0644 "$page" "$DESTDIR$PREFIX/share/man/man1/$(basename "$page")"
done
note "installed $(find "$gen/man1" -name '*.1' | wc -l) man pages in $PREFIX/share/man/man1 (man coffer)"

# Example profiles: reference copies, NOT in /etc/coffer/profiles (the agent
# would run them). demo.toml is the development demo, not for servers.
examples=$PREFIX/share/coffer/profiles
install -d -m 0755 "$DESTDIR$PREFIX/share/coffer" "$DESTDIR$examples"
for p in "$root"/profiles/*.toml; do
  [ "$(basename "$p")" = demo.toml ] && continue
  put "$p" "$examples/$(basename "$p")" 0644
done

# The vendor folder: /etc/systemd/system stays the admin's (drop-ins, or a
# full copy made with `systemctl edit --full`, which wins over this one).
unit=/usr/lib/systemd/system/coffer-agent.service
tmp=$gen/coffer-agent.service
sed "s|@PREFIX@|$PREFIX|g" "$root/scripts/coffer-agent.service" >"$tmp"
if grep -q '@[A-Z_]*@' "$tmp"; then
  die "unit template has an unfilled placeholder: $(grep -o '@[A-Z_]*@' "$tmp" | head -1)"
fi
put "$tmp" "$unit" 0644
# An older install.sh put the unit in /etc/systemd/system, where it would
# hide the new one: it goes if it is that file, untouched.
legacy=/etc/systemd/system/coffer-agent.service
if [ -f "$DESTDIR$legacy" ]; then
  if head -1 "$DESTDIR$legacy" | grep -qx '# coffer backup agent: a hardened systemd service\.' &&
    grep -q '^# Installed by scripts/install.sh, which replaces ' "$DESTDIR$legacy"; then
    rm -f "$DESTDIR$legacy"
    note "removed $legacy (an older install put the unit there; it is now $unit)"
  else
    note "WARNING: $legacy exists and overrides $unit; remove it unless you wrote it on purpose (drop-ins belong in $legacy.d)"
  fi
fi

# --- look at what the admin already has (never changed, only reported) --------
shopt -s nullglob
for k in "$DESTDIR"/etc/coffer/keys/*; do
  [ -f "$k" ] || continue
  mode=$(stat -c %a "$k")
  owner=$(stat -c %U "$k")
  if [ "$mode" != 600 ]; then
    note "WARNING: ${k#"$DESTDIR"} has mode $mode; key files must be 0600 (chmod 600 ${k#"$DESTDIR"})"
  fi
  if ! staged && [ "$owner" != coffer ]; then
    note "WARNING: ${k#"$DESTDIR"} is owned by $owner; the agent's key files belong to coffer (chown coffer:coffer ${k#"$DESTDIR"})"
  fi
done
profiles=("$DESTDIR"/etc/coffer/profiles/*.toml)
shopt -u nullglob

# --- systemd -------------------------------------------------------------------
if staged; then
  note "staged install: would run 'systemctl daemon-reload'"
elif [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  note "ran systemctl daemon-reload"
  if systemctl is-active --quiet coffer-agent; then
    note "coffer-agent is running the old binary: systemctl restart coffer-agent"
  fi
else
  note "systemd is not running here: the unit is installed but not loaded"
fi

cat <<EOF

coffer is installed ($PREFIX/bin/coffer). Next steps (docs/INSTALL.md):
  1. Copy an example and adapt it (name, sources, repository, agent_key):
       install -m 0640 -g coffer $examples/nightly-7d.toml /etc/coffer/profiles/files-1.toml
  2. Create the repository and the agent key (operator's recipient age1…):
       coffer init --repo … --recipient age1… --agent-key /etc/coffer/keys/files-1.agent.key
       chown coffer:coffer /etc/coffer/keys/files-1.agent.key; chmod 600 /etc/coffer/keys/files-1.agent.key
  3. Check the profiles as the agent will see them:
       $PREFIX/bin/coffer agent --check --profiles /etc/coffer/profiles
  4. Start the agent (not done for you):
       systemctl enable --now coffer-agent
EOF
if [ ${#profiles[@]} -eq 0 ]; then
  echo "  (/etc/coffer/profiles has no profile yet: the agent would have nothing to do.)"
fi
