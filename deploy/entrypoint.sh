#!/bin/sh
# Entrypoint of the crafting-table image (see Dockerfile).
#
# Started as root (the default): makes sure the data, workspace and cache volumes
# belong to crafter (uid 1000) -- a host directory that Docker created for a bind
# mount, or an older root-run left, belongs to root -- then drops to crafter for good
# (setpriv: no capabilities, no_new_privs) and runs the command under tini, which
# reaps orphaned processes. Nothing runs as root after this script.
#
# Started as crafter (`--user 1000:1000`, compose `user:`): only checks that the
# volumes are writable and, when one is not, says which and the chown that fixes it.
set -eu

user=crafter
uid=$(id -u "$user")
gid=$(id -g "$user")
data_dir=${CRAFTING_DATA_DIR:-/data}
workspace_dir=${CRAFTING_WORKSPACE_DIR:-/workspace}
# Subdirectories of /caches that the image's cache variables point at.
cache_dirs="cargo npm pnpm-store pip uv maven gradle bun go nuget"

say() { echo "crafting-entrypoint: $*" >&2; }

not_writable() {
  say "$1 is not writable by $user (uid $uid): it belongs to uid $(stat -c %u "$1" 2>/dev/null || echo '?')."
  say "On the host, give the directory mounted at $1 to uid $uid:"
  say "    sudo chown -R $uid:$gid /path/on/the/host   # the source of the $1 mount"
  say "or start the container as root (the image default) and it is done for you."
  exit 1
}

if [ "$(id -u)" = 0 ]; then
  for dir in "$data_dir" "$workspace_dir" /caches; do
    mkdir -p "$dir" || not_writable "$dir"
    owner=$(stat -c %u "$dir")
    if [ "$owner" != "$uid" ]; then
      say "$dir belongs to uid $owner; handing it to $user (uid $uid)"
      # Everything not yet crafter's, once: later starts find the top directory
      # already owned and skip the walk.
      if ! chown "$uid:$gid" "$dir" || ! find "$dir" -xdev ! -uid "$uid" -exec chown -h "$uid:$gid" {} +; then
        # Root cannot chown here (rootless engine with an ID map, NFS root_squash,
        # a read-only mount): the host has to.
        not_writable "$dir"
      fi
    fi
  done
  for sub in $cache_dirs; do
    [ -d "/caches/$sub" ] || install -d -o "$uid" -g "$gid" "/caches/$sub"
  done
  export HOME="/home/$user" USER="$user" LOGNAME="$user"
  exec setpriv --reuid="$uid" --regid="$gid" --init-groups --inh-caps=-all --no-new-privs \
    -- tini -s -- "$@"
fi

if [ "$(id -u)" != "$uid" ]; then
  say "running as uid $(id -u), not $user ($uid): volumes may not be writable"
fi
for dir in "$data_dir" "$workspace_dir" /caches; do
  mkdir -p "$dir" 2>/dev/null || not_writable "$dir"
  { [ -w "$dir" ] && [ -x "$dir" ]; } || not_writable "$dir"
done
for sub in $cache_dirs; do
  mkdir -p "/caches/$sub" 2>/dev/null || true
done
exec tini -s -- "$@"
