#!/bin/sh
# Installs Debian's headless-capable Chromium for tests/test_report.py (needs root and the Debian mirrors).
# CI runs it once; the test calls it itself when /usr/bin/chromium is missing.
set -eu
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
