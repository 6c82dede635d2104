# shellcheck shell=bash
# Loop-device btrfs helpers for the demo and the benchmarks, as root. Source it
# (sourcing only defines the functions below, nothing runs):
#
#   source "$REPO/integration/loopfs.sh"
#
#   loopfs_make IMAGE SIZE        a new sparse file IMAGE of SIZE (N followed by
#                                 M for MiB or G for GiB: 512M, 3G) holding a new
#                                 btrfs; an old IMAGE is replaced (it must not be
#                                 attached to a loop device)
#   loopfs_mount IMAGE DIR [OPTS] mount IMAGE on DIR (made if missing) through a
#                                 new loop device: mount -o loop[,OPTS]; the loop
#                                 device goes away with the last umount
#   loopfs_umount DIR             unmount DIR when it is a mount point; fails
#                                 when it is busy (for use between steps)
#   loopfs_devices IMAGE          print the loop devices backed by IMAGE
#   loopfs_teardown IMAGE...      for each IMAGE: unmount every mount of the loop
#                                 devices backed by it (lazily when busy, the
#                                 deepest first), detach those devices and wait
#                                 up to 5 s for them to go. Detaches no other
#                                 loop device (but a lazy unmount takes the
#                                 mounts below it along); quiet, always succeeds,
#                                 safe to call twice, from an EXIT trap and after
#                                 IMAGE (or its directory) was deleted
#
# The functions return non-zero on failure instead of exiting, also when the
# caller runs them under `if`, `||` or `&&` (where set -e is off).

loopfs_make() { # IMAGE SIZE
  local img=$1 size=$2
  if [[ ! $size =~ ^[1-9][0-9]*[MG]$ ]]; then
    echo "loopfs_make: size '$size' is not a number followed by M (MiB) or G (GiB)" >&2
    return 2
  fi
  if [[ -n $(loopfs_devices "$img") ]]; then
    echo "loopfs_make: $img is attached to a loop device" >&2
    return 1
  fi
  rm -f -- "$img" || return
  truncate -s "$size" -- "$img" || return
  mkfs.btrfs -q "$img" >/dev/null || return
}

loopfs_mount() { # IMAGE DIR [OPTS]
  local img=$1 dir=$2 opts=${3:-}
  mkdir -p -- "$dir" || return
  mount -o "loop${opts:+,$opts}" -- "$img" "$dir"
}

loopfs_umount() { # DIR
  if mountpoint -q -- "$1" 2>/dev/null; then
    umount -- "$1"
  fi
}

loopfs_devices() { # IMAGE
  local img backing file dev
  # The kernel shows the backing file's absolute path, plus " (deleted)" once
  # it was removed.
  img=$(realpath -m -- "$1") || return 0
  for file in /sys/block/loop*/loop/backing_file; do
    [[ -r $file ]] || continue
    backing=$(<"$file") || continue
    if [[ $backing == "$img" || $backing == "$img (deleted)" ]]; then
      dev=${file#/sys/block/}
      printf '/dev/%s\n' "${dev%%/*}"
    fi
  done
}

loopfs_teardown() { # IMAGE...
  local img dev source target i
  local -a devs targets
  for img in "$@"; do
    mapfile -t devs < <(loopfs_devices "$img")
    for dev in "${devs[@]}"; do
      # btrfs shows the source as /dev/loopN or /dev/loopN[/subvolume].
      targets=()
      while read -r source target; do
        if [[ $source == "$dev" || $source == "${dev}["* ]]; then
          targets+=("$(printf '%b' "$target")") # findmnt -r escapes as \xNN
        fi
      done < <(findmnt -rn -o SOURCE,TARGET 2>/dev/null)
      # The deepest first: a mount inside another one goes before it.
      while read -r target; do
        [[ -n $target ]] || continue
        umount -- "$target" 2>/dev/null || umount -l -- "$target" 2>/dev/null || true
      done < <(for target in "${targets[@]}"; do printf '%s %s\n' "${#target}" "$target"; done |
        sort -rn | cut -d' ' -f2-)
      # Already gone when the umount released it (autoclear); a device still
      # held by a lazy unmount is detached when its last user goes.
      losetup -d "$dev" 2>/dev/null || true
    done
    for ((i = 0; i < 50; i++)); do
      [[ -n $(loopfs_devices "$img") ]] || break
      sleep 0.1
    done
  done
  return 0
}
