#!/usr/bin/env bash
# Installs the system programs that integration tests start themselves (redis-server; chromium for
# the dashboard page test), when they are missing and we may install them (root + apt). Otherwise
# those tests skip, saying why. Playwright drives /usr/bin/chromium; it never downloads a browser.
set -u
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} for the integration tests..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
    || echo "could not install ${missing[*]}: the tests that need them will be skipped"
  # The redis package starts a system instance; tests run their own on free ports, so stop it.
  (command -v service >/dev/null 2>&1 && service redis-server stop >/dev/null 2>&1) || true
else
  echo "${missing[*]} not found and cannot install here: the tests that need them will be skipped"
fi
exit 0
