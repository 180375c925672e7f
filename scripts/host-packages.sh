#!/bin/sh
# The Debian packages whose tools the services run on this host, installed
# when missing (root + apt-get). Quiet and idempotent: nothing happens when
# every tool is there. Never fails by itself: where a tool cannot be
# installed, the service that needs it says so when it starts.
#   nft      (nftables)    vmhost filters the guests' bridge (swarm_vmhost.firewall)
#   bwrap    (bubblewrap)  netns guests run in a bubblewrap sandbox (swarm_vmhost.sandbox)
#   setpriv  (util-linux)  ... started as the guests' unprivileged uid
#   runsc    (runsc)       gvisor guests (swarm_vmhost.drivers.gvisor)
#   chromium (chromium)    the dashboard's browser tests (tests/dashboard, via Playwright)
# The guests' seccomp filter is built with the system's libseccomp (a
# dependency of util-linux, so always there on Debian).
set -u
TOOLS="nft:nftables bwrap:bubblewrap setpriv:util-linux runsc:runsc chromium:chromium"

missing=""
for pair in $TOOLS; do
    tool=${pair%%:*}
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing="$missing ${pair#*:}"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "host-packages: missing$missing (installing needs root and apt-get)" >&2
    exit 0
fi
install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1
}
install || { apt-get update -qq >/dev/null 2>&1 && install; } || echo "host-packages: could not install$missing" >&2
exit 0
