#!/usr/bin/env bash
# ensure-python.sh: make sure python3 is there for the example-client tests (`make test`).
# Installs Debian's python3 with apt-get when it is missing and we are root; otherwise stops
# with a clear message and exit 1.
set -euo pipefail
if command -v python3 >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-python: python3 not found; installing it with apt-get install python3" >&2
    apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y python3 >&2 || true
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "ensure-python: python3 is needed by tests/integration/python_worker.rs (examples/python); install it with: apt-get install python3" >&2
    exit 1
fi
