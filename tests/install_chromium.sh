#!/bin/sh
# Installs Debian's headless-capable Chromium for tests/test_report.py (needs root and the Debian mirrors).
# .ci/run calls it; elsewhere the browser test skips when chromium is missing (and fails under CI=true).
set -eu
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
