#!/usr/bin/env bash
# The environment of the XLA (torch-neuronx) code path on PJRT_DEVICE=CPU: torch-xla 2.9 pins torch 2.9,
# so it cannot share the project's .venv. About 7 GB, kept outside the checkout so a fresh clone reuses
# it; installed from the pinned hack/xla/requirements.txt (uv pip sync), so every machine tests the same
# versions, and uv's cache hard-links a rebuild. `make test` runs it; it prints the interpreter's path.
# Usage: hack/xla/setup.sh     (then: LLAMAOP_XLA_PYTHON=$(hack/xla/setup.sh) pytest -m runtime)
set -euo pipefail
cd "$(dirname "$0")"
venv=${LLAMAOP_XLA_VENV:-$HOME/.cache/llama-operator/xla-venv}
want="$(sha256sum requirements.txt | cut -c1-16)"
stamp=$venv/.llamaop-stamp
if [[ -f $stamp && "$(cat "$stamp")" == "$want" ]]; then echo "$venv/bin/python"; exit 0; fi
mkdir -p "$(dirname "$venv")"
# Several checkouts share the one environment: the second waits instead of installing over the first.
exec 9>"$venv.lock"
flock 9
if [[ -f $stamp && "$(cat "$stamp")" == "$want" ]]; then echo "$venv/bin/python"; exit 0; fi
if ! command -v uv >/dev/null 2>&1; then python3 -m pip install -q --disable-pip-version-check 'uv>=0.5' >&2; fi
export UV_LINK_MODE=${UV_LINK_MODE:-hardlink}
t0=$SECONDS
[[ -x $venv/bin/python ]] || uv venv -q --python 3.11 "$venv" >&2
rm -f "$stamp"
uv pip sync -q --python "$venv/bin/python" requirements.txt >&2
echo "$want" > "$stamp"
echo "[xla] environment ready in $((SECONDS - t0))s" >&2
echo "$venv/bin/python"
