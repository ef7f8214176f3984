#!/usr/bin/env bash
# Creates .venv with the project and its extras, exactly as uv.lock pins them (`make lock` upgrades the
# lock on purpose; a pyproject.toml that no longer matches the lock fails here instead of resolving
# anew). uv's cache (outside the checkout) hard-links packages, so a fresh clone on a warm machine gets
# torch in seconds instead of minutes.
# Usage: hack/setup-python.sh [EXTRAS]   (default: dev,runtime)
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-dev,runtime}
stamp=.venv/.llamaop-stamp
want="$(cat pyproject.toml uv.lock | sha256sum | cut -c1-16) $extras"
if [[ -f $stamp && "$(cat $stamp)" == "$want" ]]; then exit 0; fi
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install -q --disable-pip-version-check 'uv>=0.5'
fi
export UV_LINK_MODE=${UV_LINK_MODE:-hardlink}
t0=$SECONDS
args=()
for extra in ${extras//,/ }; do args+=(--extra "$extra"); done
# --locked: install what the lock says or fail (never re-resolve); exact: packages not in the lock go.
if ! uv sync -q --locked --python python3 "${args[@]}"; then
  echo "[setup] uv.lock does not match pyproject.toml: run \`uv lock\` (adds what changed, keeps the other" \
    "pins) or \`make lock\` (upgrades everything), and commit uv.lock" >&2
  exit 1
fi
echo "$want" > $stamp
echo "[setup] python environment ready in $((SECONDS - t0))s" >&2
