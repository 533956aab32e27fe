#!/usr/bin/env bash
# Build llama.cpp (via llama-cpp-python, from source) into .bench/venvs/llamacpp,
# keeping its CMake build folder under .bench/llamacpp-build so that the tools
# (llama-batched-bench, llama-server, llama-quantize) are built from it afterwards. Niced, 2 build jobs.
# Usage: benchmarks/llamacpp_setup.sh   (from the repository root)
# OPENMAAS_BENCH_DIR names the bench folder (default: the repository's .bench); a git worktree points it
# at the main checkout's, e.g. OPENMAAS_BENCH_DIR=/work/main/.bench, so one build serves every checkout.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BENCH="${OPENMAAS_BENCH_DIR:-$ROOT/.bench}"
VENV="$BENCH/venvs/llamacpp"
SRC="$BENCH/llamacpp-src"
BUILD="$BENCH/llamacpp-build"
export CMAKE_BUILD_PARALLEL_LEVEL=2
mkdir -p "$BENCH/venvs" "$SRC"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
# Only the sdist of llama-cpp-python (its build dependencies come as wheels). The GGUF converter in it,
# vendor/llama.cpp/convert_hf_to_gguf.py, runs in the project's .venv (torch, transformers) with the
# vendored gguf-py on PYTHONPATH: see benchmarks/llamacpp.py.
if ! ls "$SRC"/llama_cpp_python-*/vendor/llama.cpp >/dev/null 2>&1; then
  "$VENV/bin/pip" download -q --no-deps --no-binary llama-cpp-python -d "$SRC" llama-cpp-python
  (cd "$SRC" && tar xzf llama_cpp_python-*.tar.gz)
fi
PKG="$(ls -d "$SRC"/llama_cpp_python-*/ | head -1)"
if ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
  CMAKE_ARGS="-DLLAVA_BUILD=OFF" nice -n 19 "$VENV/bin/pip" install -v \
    -C build-dir="$BUILD" "$PKG"
fi
# Tools: reconfigure the kept build folder and build only the three tools the benchmarks run.
# (Q8_0 / Q4_0 files need `--no-repack` in llama-server on this AVX-512 machine: benchmarks/llamacpp.py.)
nice -n 19 cmake -S "$PKG" -B "$BUILD" -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_MTMD=OFF \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_EXAMPLES=ON >/dev/null
nice -n 19 cmake --build "$BUILD" --target llama-batched-bench llama-server llama-quantize -j 2
find "$BUILD" \( -name llama-batched-bench -o -name llama-server -o -name llama-quantize \) -type f -perm -u+x -print
