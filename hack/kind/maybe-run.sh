#!/usr/bin/env bash
# CI's entry to the kind tier (the last step of `make test`): hack/kind/run.sh all, which starts a Docker
# engine of its own where none runs. Only a machine that cannot run it at all skips, in one line that
# says why; any failure past that point fails `make test`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
skip() { echo "kind: skipped, $*"; exit 0; }
[[ -z ${LLAMAOP_SKIP_KIND:-} ]] || skip "LLAMAOP_SKIP_KIND is set"
[[ $(uname -s) == Linux ]] || skip "needs Linux, this is $(uname -s)"
if ! { command -v docker >/dev/null && timeout 15 docker info >/dev/null 2>&1; }; then
  # No engine answers: hack/kind/docker.sh starts Debian's dockerd, which needs root and apt-get.
  [[ $EUID == 0 ]] || skip "no Docker engine answers and starting one needs root"
  command -v dockerd >/dev/null || command -v apt-get >/dev/null ||
    skip "no Docker engine answers, and neither dockerd nor apt-get (to install Debian's docker.io) is here"
fi
exec "$here/run.sh" all
