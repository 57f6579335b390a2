#!/bin/bash
# InfluxDB 2.x: map the bucket to a database/retention policy for the v1 API, so
# that Grafana's InfluxQL datasource (and the dashboards, written in InfluxQL) can
# query it. Runs once, at the first start of the influxdb container.
set -euo pipefail
bucket_id=$(influx bucket list --name "${DOCKER_INFLUXDB_INIT_BUCKET}" --hide-headers | cut -f1)
influx v1 dbrp create --db "${DOCKER_INFLUXDB_INIT_BUCKET}" --rp autogen --bucket-id "${bucket_id}" --default
