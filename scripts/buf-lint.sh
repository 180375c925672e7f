#!/usr/bin/env bash
# Lint every .proto under protos/ with `buf lint` (rules in protos/buf.yaml),
# then check with `buf breaking` that protos/ does not break the contracts as
# last released (protos-released/, see its README).
#
# buf ships as the npm package @bufbuild/buf (a small node launcher plus the
# native binary in a per-platform optional dependency). It is installed once,
# at a pinned version, into build/tools/ (git-ignored) and reused afterwards;
# a missing or different version is (re)installed. No lock file or package.json
# is written. Extra arguments go to `buf lint`, e.g. --error-format=json.
#
# Exit status: 0 when clean, non-zero on lint errors or a failed install.
set -euo pipefail

BUF_VERSION=1.75.0

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$repo/build/tools"
buf="$tools/node_modules/.bin/buf"

installed_version() {
    # Empty when buf is absent or broken.
    "$buf" --version 2>/dev/null || true
}

if [[ "$(installed_version)" != "$BUF_VERSION" ]]; then
    if ! command -v npm >/dev/null && [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        echo "buf-lint: installing npm from Debian's packages" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
    fi
    command -v npm >/dev/null || {
        echo "buf-lint: npm is needed to install @bufbuild/buf" >&2
        exit 1
    }
    echo "buf-lint: installing @bufbuild/buf@$BUF_VERSION into build/tools" >&2
    mkdir -p "$tools"
    # --ignore-scripts: the launcher finds the platform binary by itself; the
    # package's postinstall only optimises that lookup.
    npm install --prefix "$tools" --no-save --no-package-lock --ignore-scripts \
        --no-audit --no-fund --loglevel=error "@bufbuild/buf@$BUF_VERSION" >&2
    if [[ "$(installed_version)" != "$BUF_VERSION" ]]; then
        echo "buf-lint: $buf does not report version $BUF_VERSION after install" >&2
        exit 1
    fi
fi

cd "$repo/protos"
"$buf" lint "$@"
"$buf" breaking --against "$repo/protos-released"
