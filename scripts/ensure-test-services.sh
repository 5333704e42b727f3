#!/usr/bin/env bash
# Installs the system services that integration tests start themselves (redis-server), when they
# are missing and we may install them (root + apt). Otherwise those tests skip, saying why.
set -u
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing redis-server for the cluster-quota tests..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) \
    || echo "could not install redis-server: the Redis quota tests will be skipped"
  # The package starts a system instance; tests run their own on free ports, so stop it.
  (command -v service >/dev/null 2>&1 && service redis-server stop >/dev/null 2>&1) || true
else
  echo "redis-server not found and cannot install it here: the Redis quota tests will be skipped"
fi
exit 0
