#!/bin/sh
# Slim a finished virtualenv for an image: what runs never needs pip, setuptools or
# wheel, bytecode caches (PYTHONDONTWRITEBYTECODE is set; modules compile in memory),
# the packages' own test suites, type stubs, or onnxruntime's model tooling
# (transformers/quantization/tools: offline utilities, never imported by a session) and
# its C API library (the Python binding links the runtime statically).
set -eu
venv="$1"
site="$(echo "$venv"/lib/python3*/site-packages)"
"$venv/bin/python" -m pip uninstall -y -q pip setuptools wheel >/dev/null 2>&1 || true
rm -f "$venv"/bin/pip "$venv"/bin/pip3*
find "$site" -depth -type d -name __pycache__ -exec rm -rf {} +
find "$site" -depth -type d \( -name tests -o -name testing \) -path "*/numpy/*" -exec rm -rf {} +
find "$site" -depth -type d \( -name tests -o -name test \) \
    \( -path "*/pandas/*" -o -path "*/scipy/*" -o -path "*/sklearn/*" -o -path "*/pyarrow/*" \
       -o -path "*/matplotlib/*" -o -path "*/onnx/*" -o -path "*/dask/*" -o -path "*/distributed/*" \
       -o -path "*/networkx/*" -o -path "*/sympy/*" -o -path "*/skl2onnx/*" \) -exec rm -rf {} +
find "$site" -type f -name "*.pyi" -delete
# the Python binding carries the whole runtime; libonnxruntime.so is for C API users
rm -f "$site"/onnxruntime/capi/libonnxruntime.so*
rm -rf "$site"/onnxruntime/transformers "$site"/onnxruntime/quantization "$site"/onnxruntime/tools \
       "$site"/onnxruntime/datasets
du -sh "$venv" >&2
