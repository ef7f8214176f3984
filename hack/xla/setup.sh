#!/usr/bin/env bash
# Optional environment for the XLA (torch-neuronx) code path on PJRT_DEVICE=CPU: torch-xla 2.9 pins
# torch 2.9, so it cannot share the project's .venv. About 7 GB, kept outside the checkout so a fresh
# clone reuses it; uv's cache makes a rebuild cheap. Prints the interpreter's path when ready.
# Usage: hack/xla/setup.sh            (then: LLAMAOP_XLA_PYTHON=$(hack/xla/setup.sh) pytest -m runtime)
set -euo pipefail
venv=${LLAMAOP_XLA_VENV:-$HOME/.cache/llama-operator/xla-venv}
want="torch==2.9.0 torch-xla==2.9.0 transformers>=5,<6 safetensors numpy prometheus-client structlog"
stamp=$venv/.llamaop-stamp
if [[ -f $stamp && "$(cat "$stamp")" == "$want" ]]; then echo "$venv/bin/python"; exit 0; fi
if ! command -v uv >/dev/null 2>&1; then python3 -m pip install -q --disable-pip-version-check 'uv>=0.5' >&2; fi
export UV_LINK_MODE=${UV_LINK_MODE:-hardlink}
t0=$SECONDS
[[ -x $venv/bin/python ]] || uv venv -q --python 3.11 "$venv" >&2
# shellcheck disable=SC2086
uv pip install -q --python "$venv/bin/python" $want >&2
echo "$want" > "$stamp"
echo "[xla] environment ready in $((SECONDS - t0))s" >&2
echo "$venv/bin/python"
