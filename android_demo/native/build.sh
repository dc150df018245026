#!/usr/bin/env bash
# Build libfoveate_engine.so (the ExecuTorch engine + its JNI layer) with g++ against the executorch wheel.
#   android_demo/native/build.sh OUT_DIR [PYTHON]
# PYTHON (default: the repository's .venv/bin/python) locates the wheel; the library gets an rpath to its lib/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: build.sh OUT_DIR [PYTHON]}"
python="${2:-$here/../../.venv/bin/python}"
et="$("$python" -c 'import executorch; print(list(executorch.__path__)[0])')"
java_home="${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")}"
mkdir -p "$out"
libs=(executorch executorch_threadpool executorch_backend_xnnpack executorch_kernels_optimized)
if [ -f "$et/lib/libexecutorch_kernels_quantized.so" ]; then
  libs+=(executorch_kernels_quantized)  # quantized_decomposed::embedding_byte etc. (8da4w builds)
fi
link=()
for l in "${libs[@]}"; do link+=("-l$l"); done
# --no-as-needed: the kernel and backend libraries register themselves from static initialisers.
g++ -std=c++17 -O2 -fPIC -shared -Wno-deprecated-declarations \
  -I"$et/include" -I"$et/include/executorch/runtime/core/portable_type/c10" \
  -DC10_USING_CUSTOM_GENERATED_MACROS -DET_EVENT_TRACER_ENABLED -DET_USE_THREADPOOL \
  -I"$java_home/include" -I"$java_home/include/linux" \
  "$here/src/main/cpp/engine.cpp" "$here/src/main/cpp/jni.cpp" \
  -L"$et/lib" -Wl,--no-as-needed "${link[@]}" -Wl,--as-needed -Wl,-rpath,"$et/lib" \
  -o "$out/libfoveate_engine.so"
echo "$out/libfoveate_engine.so"
