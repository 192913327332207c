"""Quiet start-up: TensorFlow's and OpenCV's start-up notices stay out of every command's and replica's output.

Imported first by `deepxray/__init__.py`, so it runs before anything in DeepXRay imports TensorFlow or OpenCV, in
every process: the CLI, benchmarks, tests, and each Ray Serve replica (which imports `deepxray` to unpickle its
deployment). Only defaults: a variable already set, to see more, wins. Errors still show.

- `TF_CPP_MIN_LOG_LEVEL=2`: TensorFlow's C++ log without its INFO and WARNING lines (the notice about CPU
  instructions the binary was not built for among them), errors kept.
- `OPENCV_LOG_LEVEL=ERROR`: OpenCV's log without its INFO and WARNING lines, errors kept.

Left as they are: TensorFlow's oneDNN notice and absl's line before it (printed whatever the log level unless
`TF_ENABLE_ONEDNN_OPTS` is set, and turning oneDNN off changes the models' outputs in the fourth decimal and
their speed), and Python warnings, which `warnings` filters decide.
"""

from __future__ import annotations

import os

DEFAULTS = {"TF_CPP_MIN_LOG_LEVEL": "2", "OPENCV_LOG_LEVEL": "ERROR"}

for _name, _value in DEFAULTS.items():
    os.environ.setdefault(_name, _value)
