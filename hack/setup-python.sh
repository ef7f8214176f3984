#!/usr/bin/env bash
# Creates .venv with the project and its extras. uv's cache (outside the checkout) hard-links
# packages, so a fresh clone on a warm machine gets torch in seconds instead of minutes.
# Usage: hack/setup-python.sh [EXTRAS]   (default: dev,runtime)
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-dev,runtime}
stamp=.venv/.llamaop-stamp
want="$(sha256sum pyproject.toml | cut -c1-16) $extras"
if [[ -f $stamp && "$(cat $stamp)" == "$want" ]]; then exit 0; fi
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install -q --disable-pip-version-check 'uv>=0.5'
fi
export UV_LINK_MODE=${UV_LINK_MODE:-hardlink}
t0=$SECONDS
[[ -x .venv/bin/python ]] || uv venv -q --python python3 .venv
uv pip install -q --python .venv/bin/python -e ".[$extras]"
echo "$want" > $stamp
echo "[setup] python environment ready in $((SECONDS - t0))s" >&2
