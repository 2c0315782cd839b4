#!/usr/bin/env bash
# The GPU run in one command (benchmarks/gpu_run.py says what it runs and writes).
#
#   benchmarks/gpu_run.sh --prepare   # here, with network: wheels the GPU image lacks -> .whl/, Gemma-3-270M's
#                                     # config + tokenizer and the clembench records -> .gpu_carry/ (both git-ignored)
#   benchmarks/gpu_run.sh             # on the GPU machine (device command, carry [".whl", ".gpu_carry"]); writes $OUT
#   benchmarks/gpu_run.sh --tiny      # CPU dry run with this environment's python (the test suite runs it)
#
# On the GPU machine the carried wheels go to /tmp/site (pip, no index, no network) and PYTHONPATH points there and
# at src/, then benchmarks/gpu_run.py runs with python3 (the image's, which holds CUDA torch).
set -euo pipefail
cd "$(dirname "$0")/.."

# The packages the GPU image lacks (KINDS.md lists what it holds), and the versions uv.lock pins where its own differ
# (transformers 5.17 there: the boolean logits_to_keep needs 5.24).
WHEELS="bergson==2.5.1 simple-parsing docstring-parser petname natsort torchopt optree graphviz datasets dill
multiprocess trl==1.16.0 transformers==5.24.0 peft==0.21.2 pydantic pydantic-core annotated-types typing-inspection"

if [[ "${1:-}" == "--prepare" ]]; then
  rm -rf .whl .gpu_carry && mkdir -p .gpu_carry/gemma-3-270m .gpu_carry/clembench_taboo
  # shellcheck disable=SC2086
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $WHEELS
  src=models/gemma-3-270m
  cp "$src/config.json" "$src/generation_config.json" "$src/tokenizer_config.json" .gpu_carry/gemma-3-270m/
  xz -9 -c "$src/tokenizer.json" > .gpu_carry/gemma-3-270m/tokenizer.json.xz
  cp -r ../shared/data/clembench_taboo/raw .gpu_carry/clembench_taboo/ 2>/dev/null \
    || echo "no ../shared/data/clembench_taboo/raw: the experiment step will read the config's own path"
  du -sh .whl .gpu_carry
  exit 0
fi

if [[ "${1:-}" == "--tiny" ]]; then
  exec "${PYTHON:-python}" benchmarks/gpu_run.py "$@"
fi

if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
exec python3 benchmarks/gpu_run.py "$@"
