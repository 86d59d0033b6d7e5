#!/usr/bin/env bash
# The cloud tests' broker: Debian's mosquitto (a real MQTT broker; the tests start their own instances with
# their own configuration on loopback ports, never the system's service). Installs it when missing, as
# root, with apt-get; says what to do otherwise. `make test` runs this first.
set -euo pipefail
if command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "installing mosquitto (apt-get) for the cloud tests"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends mosquitto >/dev/null
    [ -x /usr/sbin/mosquitto ] && exit 0
fi
echo "the cloud tests need mosquitto: as root, apt-get install mosquitto" >&2
exit 1
