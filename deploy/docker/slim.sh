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
# test suites only: numpy.testing and sklearn.utils._testing are imported by the libraries
find "$site" -depth -type d \( -name tests -o -name test \) \
    \( -path "*/numpy/*" -o -path "*/pandas/*" -o -path "*/scipy/*" -o -path "*/sklearn/*" -o -path "*/pyarrow/*" \
       -o -path "*/matplotlib/*" -o -path "*/onnx/*" -o -path "*/dask/*" -o -path "*/distributed/*" \
       -o -path "*/networkx/*" -o -path "*/sympy/*" -o -path "*/skl2onnx/*" \) -exec rm -rf {} +
find "$site" -type f -name "*.pyi" -delete
# the Python binding carries the whole runtime; libonnxruntime.so is for C API users
rm -f "$site"/onnxruntime/capi/libonnxruntime.so*
# strip extension modules (uvloop's 13.6 MB -> 1.6 MB), never the vendored libraries in
# *.libs (auditwheel patched them; stripping breaks their ELF layout), then import them
if command -v strip >/dev/null; then
  find "$site" -name "*.so" -not -path "*.libs/*" -exec strip --strip-unneeded {} +
fi
# pyarrow's Flight RPC library (nothing here uses Arrow Flight; 31 MB) and C++ headers
rm -f "$site"/pyarrow/libarrow_flight.so* "$site"/pyarrow/_flight*.so
rm -rf "$site"/pyarrow/include
rm -rf "$site"/onnxruntime/transformers "$site"/onnxruntime/quantization "$site"/onnxruntime/tools \
       "$site"/onnxruntime/datasets
"$venv/bin/python" - <<'PY'
import importlib, importlib.util
# (installed when, module to import)
checks = ["numpy", "onnxruntime", "uvloop", "yaml", "pydantic_core", "orjson", "pymongo",
          "pandas", "pyarrow.parquet", "pyarrow.compute", "pyarrow.json", "scipy.stats", "sklearn.ensemble", "sklearn.linear_model",
          "skl2onnx", "matplotlib.pyplot", "confluent_kafka", "distributed", "mlflow.server",
          ("fastapi", "mlcycle.serve.app"), ("sklearn", "mlcycle.train.train"),
          ("pandas", "mlcycle.etl.pipeline"), ("confluent_kafka", "mlcycle.stream.consumer")]
for check in checks:
    needs, name = check if isinstance(check, tuple) else (check.split(".")[0], check)
    if importlib.util.find_spec(needs) is not None:
        importlib.import_module(name)
PY
du -sh "$venv" >&2
