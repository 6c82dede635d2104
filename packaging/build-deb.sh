#!/usr/bin/env bash
# Builds the Debian package with cargo-deb (`cargo install cargo-deb` once):
#
#   packaging/build-deb.sh [CARGO-DEB ARGS...]
#
# cargo-deb packages files, and the man page and the completions are made by
# the binary itself (`subvault man`, `subvault completions SHELL`), so this
# builds the release binary, writes them into target/assets/, writes the
# systemd unit with the binary's packaged path (/usr/bin, where the example
# unit says /usr/local/bin), then runs `cargo deb --no-build`. The assets list
# is [package.metadata.deb] in Cargo.toml.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
# cargo-deb reads the assets relative to the repo, under target/.
ASSETS=$REPO/target/assets

cargo build --release --locked
BIN=$TARGET/release/subvault
mkdir -p "$ASSETS"
[[ $TARGET/release == "$REPO/target/release" ]] || install -D -m 755 "$BIN" "$REPO/target/release/subvault"
"$BIN" man | gzip -9n >"$ASSETS/subvault.1.gz"
"$BIN" completions bash >"$ASSETS/subvault.bash"
"$BIN" completions zsh >"$ASSETS/_subvault"
"$BIN" completions fish >"$ASSETS/subvault.fish"
sed 's|/usr/local/bin/subvault|/usr/bin/subvault|' config-examples/subvault.service >"$ASSETS/subvault.service"
cp config-examples/subvault.timer "$ASSETS/subvault.timer"

# Stripped: the release profile keeps line tables for backtraces, which made
# the packaged binary 155 MB instead of 24 MB (measured 2026-12-03).
exec cargo deb --no-build --strip "$@"
