#!/usr/bin/env bash
# ensure-bwrap.sh: make sure bubblewrap is there for the sandbox tests (tests/integration/sandbox.rs, run by
# `make test`), which start daemons with JCT_SANDBOX=bwrap. Installs Debian's `bubblewrap` with
# apt-get when `bwrap` is missing and we are root; otherwise stops with a clear message and exit 1.
set -euo pipefail
have() { command -v bwrap >/dev/null 2>&1; }
if have; then exit 0; fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-bwrap: bwrap not found; installing it with apt-get install bubblewrap" >&2
    apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y bubblewrap >&2 || true
fi
if ! have; then
    echo "ensure-bwrap: bwrap is needed by tests/integration/sandbox.rs; install it with: apt-get install bubblewrap" >&2
    exit 1
fi
