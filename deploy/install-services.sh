#!/usr/bin/env bash
# Installs the Debian packages the demo and the tests start locally: influxdb
# (InfluxDB 1.x, influxd), victoria-metrics (the InfluxDB 2.x write API, for the
# tests) and chromium (the tests open the monthly report in it, headless). Only where the user is root and a package is missing; otherwise it says
# what is missing and leaves the machine alone (the demo then runs without InfluxDB).
set -euo pipefail

missing=()
command -v influxd >/dev/null 2>&1 || missing+=(influxdb)
command -v victoria-metrics >/dev/null 2>&1 || missing+=(victoria-metrics)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "install-services: not root, so not installing: ${missing[*]} (sudo apt-get install ${missing[*]})" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-services: no apt-get here; install ${missing[*]} by hand" >&2
    exit 0
fi
echo "install-services: apt-get install ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts the packaged services on their default ports; ticketpulse starts its
# own on free ports with temporary data, so stop the packaged ones.
for unit in influxdb victoria-metrics; do
    if command -v systemctl >/dev/null 2>&1; then systemctl stop "$unit" >/dev/null 2>&1 || true; fi
done
