#!/usr/bin/env bash
# ensure-tools.sh: make sure curl and jq are there for the README examples' test
# (tests/integration/readme.rs runs the README's shell examples, which use both; `make test`).
# Installs Debian's packages with apt-get when one is missing and we are root; otherwise stops
# with a clear message and exit 1.
set -euo pipefail
missing=()
for tool in curl jq; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-tools: ${missing[*]} not found; installing with apt-get install ${missing[*]}" >&2
    apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >&2 || true
fi
for tool in "${missing[@]}"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "ensure-tools: $tool is needed by tests/integration/readme.rs (the README's examples); install it with: apt-get install $tool" >&2
        exit 1
    fi
done
