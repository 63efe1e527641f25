#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian/Ubuntu machine, then runs it:
# static checks (ruff, mypy --strict) and pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v curl >/dev/null || need+=(curl)
command -v nghttp >/dev/null || need+=(nghttp2-client)
command -v nghttpd >/dev/null || need+=(nghttp2-server)
command -v openssl >/dev/null || need+=(openssl)
command -v npm >/dev/null || need+=(npm)
command -v unzip >/dev/null || need+=(unzip)
command -v haproxy >/dev/null || need+=(haproxy)
command -v nginx >/dev/null || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test,loadtest]'

python3 -m ruff check activator tests loadtest
python3 -m ruff format --check activator tests loadtest
python3 -m mypy activator loadtest

set +e
python3 -m pytest "$@"
status=$?
set -e
if [ "$status" = 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
if [ "$status" = 0 ] && [ "$#" = 0 ]; then
  # The client side runs on jh2 by default; the HTTP/2 conformance cases also run on h2, the other
  # library h2lib can choose (it is picked at import, hence a second run).
  ACTIVATOR_H2=h2 python3 -m pytest -q tests/conformance
  status=$?
fi
exit "$status"
