#!/usr/bin/env bash
# Unpacks Debian 12's own Node 18 into DIR (default: build/node18) without installing it
# (apt-get download + dpkg -x), with a `node` wrapper there, so the server's end-to-end tests
# can run under the Node a bare Debian 12 has (README) on a machine whose system node is newer.
# tests/serve_e2e_test.sh runs the suite under DIR/node too when it exists.
#
# Debian's node looks for some builtins (undici's fetch, acorn, cjs-module-lexer) under
# /usr/share/nodejs; the wrapper overlays the unpacked copy there in a private mount namespace
# (unshare, so it needs root), leaving the system untouched.
set -euo pipefail
DIR="${1:-$(cd "$(dirname "$0")/../.." && pwd)/build/node18}"
PKGS="libnode108 node-undici node-acorn node-cjs-module-lexer"
# Its shared libraries, where the system lacks them (a machine with another vendor's node).
for p in libuv1 libc-ares2 libicu72 libnghttp2-14 libbrotli1 libssl3; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || PKGS="$PKGS $p"
done

if [ -x "$DIR/node" ] && "$DIR/node" --version >/dev/null 2>&1; then
  echo "debian-node18: $("$DIR/node" --version) at $DIR/node"; exit 0
fi
command -v apt-get >/dev/null && command -v dpkg >/dev/null || { echo "debian-node18: needs apt-get and dpkg (Debian)"; exit 1; }
[ "$(id -u)" = 0 ] || { echo "debian-node18: needs root (the wrapper uses a mount namespace)"; exit 1; }
ver=$(apt-cache policy nodejs | awk '/^ +[0-9*]/ { v = ($1 == "***") ? $2 : $1; if (v ~ /^18\./) { print v; exit } }')
[ -n "$ver" ] || { echo "debian-node18: apt knows no nodejs 18 (run apt-get update?)"; exit 1; }
rm -rf "$DIR.tmp" && mkdir -p "$DIR.tmp/debs"
(cd "$DIR.tmp/debs" && apt-get download -q "nodejs=$ver" $PKGS 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
for d in "$DIR.tmp"/debs/*.deb; do dpkg -x "$d" "$DIR.tmp/root"; done
rm -rf "$DIR.tmp/debs"
cat > "$DIR.tmp/node" <<EOF
#!/bin/bash
# Debian 12's node $ver unpacked by tests/server/debian-node18.sh.
R="$DIR/root"
exec unshare -m bash -c 'mount -t overlay overlay -o lowerdir="\$0/usr/share:/usr/share" /usr/share &&
  LD_LIBRARY_PATH="\$0/usr/lib/x86_64-linux-gnu" exec "\$0/usr/bin/node" "\$@"' "\$R" "\$@"
EOF
chmod +x "$DIR.tmp/node"
rm -rf "$DIR" && mv "$DIR.tmp" "$DIR"
echo "debian-node18: $("$DIR/node" --version) at $DIR/node"
