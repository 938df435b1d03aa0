"""Kangaroo: analyses of adaptive-mesh-refinement data on a distributed runtime.

This package currently holds the plan and buffer model (:mod:`kangaroo.ir`),
which builds the plan documents that ``kangaroo-worker`` executes, and a
synthetic AMReX plotfile writer for tests and benchmarks
(:mod:`kangaroo.synthetic`, imported on demand).
"""

__version__ = "0.1.0"

from . import ir  # noqa: E402  (re-exported namespace)

__all__ = ["__version__", "ir"]
