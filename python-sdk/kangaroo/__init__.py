"""Kangaroo: analyses of adaptive-mesh-refinement data on a distributed runtime.

Describe an analysis with lazy values and compute it on a Kangaroo cluster
through its gateway::

    import kangaroo as kg

    client = kg.Client()                      # settings written by `kangaroo up`
    ds = kg.open_dataset("amrex://plt00100", client=client)
    img = ds["density"].slice(axis="z")       # lazy: nothing runs yet
    hist = ds["temp"].histogram(bins=64, range=(300.0, 3000.0))
    image, counts = kg.compute(img, hist)     # one job for both

Submodules: :mod:`kangaroo.ir` (plan and buffer model), :mod:`kangaroo.lowering`
(client-side plan construction), :mod:`kangaroo.config` (options and the client
connection file), :mod:`kangaroo.errors` (exception classes) and
:mod:`kangaroo.synthetic` (a synthetic AMReX plotfile writer, imported on demand).
Particle species come from ``ds.particles`` (:mod:`kangaroo.particles`).
"""

__version__ = "0.1.0"

# The client side needs numpy; the plan model (``kangaroo.ir``) does not, so
# the client names are imported on first use (PEP 562).
_LAZY = {
    "config": ".config", "errors": ".errors", "lowering": ".lowering",
    "Client": ".client", "JobResults": ".client", "get_default_client": ".client", "open_dataset": ".client",
    "set_default_client": ".client",
    "Dataset": ".dataset", "Geometry": ".dataset", "ParticleSpecies": ".particles",
    "ParticleArray": ".particles", "ParticleMask": ".particles", "Mask": ".particles", "Scalar": ".particles",
    "TopK": ".particles",
    "GatewayError": ".errors", "AuthenticationError": ".errors", "PlanValidationError": ".errors",
    "DatasetNotFoundError": ".errors", "DatasetError": ".errors", "JobNotFoundError": ".errors",
    "JobFailedError": ".errors", "JobCancelledError": ".errors", "GatewayUnavailableError": ".errors",
    "LazyValue": ".lazy", "Array": ".lazy", "MeshMask": ".lazy", "Histogram": ".lazy", "Histogram2D": ".lazy",
    "compute": ".lazy",
    "PlaneGeometry": ".lowering",
    "ChunkedArray": ".results", "AMRChunk": ".results", "AMRChunkedArray": ".results",
    "HistogramResult": ".results", "Histogram2DResult": ".results", "TopKResult": ".results",
}
_DTYPES = {"bool_": "bool", "float32": "float32", "float64": "float64", "int64": "int64"}

from . import ir  # noqa: E402


def __getattr__(name):
    import importlib

    if name in _DTYPES:
        import numpy

        value = numpy.dtype(_DTYPES[name])
    elif name in _LAZY:
        module = importlib.import_module(_LAZY[name], __name__)
        value = module if _LAZY[name].lstrip(".") == name else getattr(module, name)
    else:
        raise AttributeError(f"module 'kangaroo' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_DTYPES))


__all__ = [
    "__version__",
    "ir",
    "lowering",
    "config",
    "errors",
    "Client",
    "JobResults",
    "Dataset",
    "Geometry",
    "PlaneGeometry",
    "ParticleSpecies",
    "ParticleArray",
    "ParticleMask",
    "Mask",
    "Scalar",
    "TopK",
    "LazyValue",
    "Array",
    "MeshMask",
    "Histogram",
    "Histogram2D",
    "ChunkedArray",
    "AMRChunk",
    "AMRChunkedArray",
    "HistogramResult",
    "Histogram2DResult",
    "TopKResult",
    "open_dataset",
    "compute",
    "get_default_client",
    "set_default_client",
    "GatewayError",
    "AuthenticationError",
    "PlanValidationError",
    "DatasetNotFoundError",
    "DatasetError",
    "JobNotFoundError",
    "JobFailedError",
    "JobCancelledError",
    "GatewayUnavailableError",
    "bool_",
    "float32",
    "float64",
    "int64",
]
