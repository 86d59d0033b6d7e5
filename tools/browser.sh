#!/usr/bin/env bash
# The page tests' browser: Debian's chromium and chromium-driver (browser downloads by Selenium or
# Playwright are not possible here, and the board needs none). Installs them when missing, as root, with
# apt-get; says what to do otherwise. `make test` runs this first.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "installing chromium and chromium-driver (apt-get) for the page tests"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null
    command -v chromium >/dev/null && command -v chromedriver >/dev/null && exit 0
fi
echo "the page tests need chromium and chromedriver: as root, apt-get install chromium chromium-driver" >&2
exit 1
