#!/usr/bin/env bash
# Install Debian's chromium for the dashboard's browser test (tests/httpapi/test_dashboard.py,
# driven by the PyPI package playwright with this system browser: no browser download).
# Idempotent: nothing is done when /usr/bin/chromium exists. Needs root and apt-get.
set -euo pipefail

if [[ -x /usr/bin/chromium ]]; then
    echo "install-browser: chromium already installed"
    exit 0
fi
if ! command -v apt-get >/dev/null || [[ "$(id -u)" != 0 ]]; then
    echo "install-browser: cannot install chromium here (needs root and apt-get): the" \
         "dashboard's browser test will fail until /usr/bin/chromium exists" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends chromium
