#!/usr/bin/env bash
# ensure-chromium.sh: make sure Debian's headless-capable Chromium and its WebDriver are there
# for the dashboard's browser test (tests/integration/ui_browser.rs, run by `make test`). Installs the
# `chromium` and `chromium-driver` packages with apt-get when either is missing and we are
# root; otherwise stops with a clear message and exit 1.
set -euo pipefail
have() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }
if have; then exit 0; fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: chromium or chromedriver not found; installing them with apt-get install chromium chromium-driver" >&2
    apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver >&2 || true
fi
if ! have; then
    echo "ensure-chromium: chromium and chromedriver are needed by tests/integration/ui_browser.rs; install them with: apt-get install chromium chromium-driver" >&2
    exit 1
fi
