"""Client-side lowering of particle operators (LOW-17..20, PMETA-1..3).

Particle arrays live on a *virtual particle level*: chunk ``c`` of a species
(PMETA-1) is block ``c`` of one level whose boxes are ``((c,0,0),(c,0,0))``.
Every operation below appends one chunk stage over the blocks
``0..chunks-1`` of that level (LOW-17), ordered after the producers of the
fields it reads; scalar, histogram and top-k results are reduced to block 0
with the block reduction of LOW-6 (LOW-19, LOW-20).

The functions are pure: they take the step label of the virtual level, the
chunk count and the field IDs, and return :class:`~kangaroo.lowering.Fragment`
objects like the mesh lowering does.

*Deviation from PMETA-3:* the spec runs particle plans against a separate
RunMeta whose single step is labelled 0. A gateway job carries one RunMeta,
and label 0 is usually the mesh step as well, so mesh and particle work of
one ``compute`` could not share a job. :func:`job_runmeta` instead appends the
virtual level to the mesh RunMeta as an extra step with a label no mesh step
uses (:func:`particle_step_label`: -1, or one below the smallest label). A
negative label never names a real output step, so it cannot collide with a
step the user selects, and it does not depend on the chunk count. Geometry,
boxes and chunk addressing are otherwise exactly PMETA-3's.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Dict, List, Optional, Sequence

from . import ir
from .lowering import (BlockBox, Fragment, LevelGeom, LevelMeta, Producers, RunMeta, StepMeta, _producer_stages,
                       _check_fan_in)

__all__ = [
    "particle_step_label", "virtual_particle_step", "job_runmeta", "species_chunk_count",
    "COMPARE_KERNELS", "SCALAR_ARITH_KERNELS", "REFLECTED_SCALAR_KERNELS", "ARRAY_ARITH_KERNELS",
    "load_plan", "unary_plan", "binary_plan", "and_plan", "filter_plan", "reduce_plan", "histogram_plan",
    "topk_plan",
]

#: Comparison operator -> mask kernel (OP-PART-2).
COMPARE_KERNELS = {"==": "particle_eq_mask", "!=": "particle_ne_mask", "<": "particle_lt_mask",
                   "<=": "particle_le_mask", ">": "particle_gt_mask", ">=": "particle_ge_mask"}
#: ``x <op> s`` kernels (OP-PART-5).
SCALAR_ARITH_KERNELS = {"+": "particle_add_scalar", "-": "particle_subtract_scalar", "*": "particle_multiply_scalar",
                        "/": "particle_divide_scalar", "**": "particle_power_scalar"}
#: ``s <op> x`` kernels. Addition and multiplication commute, so the catalog has
#: no reflected form of them and the plain scalar kernels serve.
REFLECTED_SCALAR_KERNELS = {"+": "particle_add_scalar", "-": "particle_rsubtract_scalar",
                            "*": "particle_multiply_scalar", "/": "particle_rdivide_scalar",
                            "**": "particle_rpower_scalar"}
#: ``x <op> y`` kernels over two particle arrays.
ARRAY_ARITH_KERNELS = {"+": "particle_add", "-": "particle_subtract", "*": "particle_multiply",
                       "/": "particle_divide", "**": "particle_power"}

_F64_LOAD = ir.BufferSpec("f64", ir.DynamicShape(ir.DynamicUpperBound.backend_chunk(0)))
_F64_LIKE = ir.BufferSpec("f64", ir.DynamicShape(ir.DynamicUpperBound.like_input(0)))
_MASK = ir.BufferSpec("u8", ir.LikeInputShape(0))
_MASK_DYNAMIC = ir.BufferSpec("u8", ir.DynamicShape(ir.DynamicUpperBound.like_input(0)))
_MAP = ir.BufferSpec("opaque", ir.DynamicShape(ir.DynamicUpperBound.backend_chunk(0)))
_F64_SCALAR = ir.BufferSpec("f64", ir.FixedShape((1,)), "zero")
_I64_SCALAR = ir.BufferSpec("i64", ir.FixedShape((1,)), "zero")

# reduction -> (chunk kernel, output spec, reduce kernel, takes FiniteOnlyParams)
_REDUCTIONS = {
    "sum": ("particle_sum", _F64_SCALAR, "uniform_slice_reduce", False),
    "min": ("particle_min", _F64_SCALAR, "particle_scalar_min_reduce", True),
    "max": ("particle_max", _F64_SCALAR, "particle_scalar_max_reduce", True),
    "count": ("particle_count", _I64_SCALAR, "particle_int64_sum_reduce", False),
    "len": ("particle_len_f64", _I64_SCALAR, "particle_int64_sum_reduce", False),
}


# ---------------------------------------------------------------------------
# the virtual particle level (PMETA-2, PMETA-3)


def species_chunk_count(runmeta: RunMeta, name: str, dataset_chunks: Optional[int]) -> int:
    """PMETA-2: the RunMeta's count when it names the species, else the dataset's, else 1 (at least 1)."""
    if name in runmeta.particle_species:
        return max(1, int(runmeta.particle_species[name]))
    if isinstance(dataset_chunks, numbers.Integral) and not isinstance(dataset_chunks, bool):
        return max(1, int(dataset_chunks))
    return 1


def particle_step_label(runmeta: RunMeta) -> int:
    """The step label of the virtual particle level: -1, or one below the smallest mesh label."""
    labels = [s.step for s in runmeta.steps]
    return -1 if -1 not in labels else min(labels) - 1


def virtual_particle_step(label: int, chunks: int) -> StepMeta:
    """PMETA-3: one level, unit cells, ``chunks`` single-cell boxes along x."""
    n = max(1, int(chunks))
    geom = LevelGeom(dx=(1.0, 1.0, 1.0), x0=(0.0, 0.0, 0.0), ref_ratio=(1, 1, 1))
    boxes = tuple(BlockBox((c, 0, 0), (c, 0, 0)) for c in range(n))
    return StepMeta(int(label), (LevelMeta(geom, boxes),))


def job_runmeta(mesh: RunMeta, chunks: int) -> RunMeta:
    """The mesh RunMeta plus the virtual particle level as an extra step (see the module note)."""
    if chunks <= 0:
        return mesh
    step = virtual_particle_step(particle_step_label(mesh), chunks)
    return RunMeta(mesh.steps + (step,), particle_species=dict(mesh.particle_species), coord_sys=mesh.coord_sys,
                   mapped_mesh=mesh.mapped_mesh)


# ---------------------------------------------------------------------------
# chunk stages (LOW-17, LOW-18)


def _chunks(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"particle chunk counts are positive integers, got {value!r}")
    return int(value)


def _chunk_stage(name: str, kernel: str, step: int, chunks: int, inputs: Sequence[int], out_field: int,
                 spec: ir.BufferSpec, params: Optional[ir.Params], producers: Producers) -> Fragment:
    st = ir.Stage(name, plane="chunk", after=_producer_stages(producers, inputs))
    st.map_blocks(name, kernel, ir.Domain(step, 0, list(range(_chunks(chunks)))), inputs=list(inputs),
                  outputs=[ir.OutputRef(out_field, spec)], params=params)
    return Fragment([st], out_field, step, 0, None, st, dtype=spec.dtype.value)


def load_plan(step: int, chunks: int, species: str, field_name: str, out_field: int, *,
              name: str = "particle_load") -> Fragment:
    """OP-PART-1 over every chunk: f64 ``Dynamic(BackendChunk(0))``."""
    if not species or not field_name:
        raise ValueError("particle loads need a species and a field name")
    prm = ir.ParticleFieldParams(particle_type=species, field_name=field_name)
    return _chunk_stage(name, "particle_load_field_chunk_f64", step, chunks, [], out_field, _F64_LOAD, prm, None)


def _finite_scalar(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a real number, got {type(value).__name__}")
    return float(value)


def unary_plan(step: int, chunks: int, kernel: str, input_field: int, out_field: int, *,
               scalar: Optional[float] = None, producers: Producers = None, name: str = "particle_op") -> Fragment:
    """A one-input particle kernel: masks (``*_mask``: u8 ``LikeInput(0)``; ``isfinite`` takes no
    scalar) or scalar arithmetic (f64 ``Dynamic(LikeInput(0))``)."""
    is_mask = kernel.endswith("_mask")
    spec = _MASK if is_mask else _F64_LIKE
    if kernel == "particle_isfinite_mask":
        prm = None
    else:
        prm = ir.ScalarParams(scalar=_finite_scalar(scalar, "the scalar operand"))
    return _chunk_stage(name, kernel, step, chunks, [input_field], out_field, spec, prm, producers)


def binary_plan(step: int, chunks: int, kernel: str, a: int, b: int, out_field: int, *,
                producers: Producers = None, name: str = "particle_op") -> Fragment:
    """Elementwise arithmetic of two particle arrays (f64 ``Dynamic(LikeInput(0))``)."""
    return _chunk_stage(name, kernel, step, chunks, [a, b], out_field, _F64_LIKE, None, producers)


def and_plan(step: int, chunks: int, masks: Sequence[int], alloc: Callable[[], int], out_field: int, *,
             producers: Producers = None, name: str = "particle_and") -> Fragment:
    """OP-PART-3 chained left to right over ``masks`` (LOW-18); one mask passes through an
    and with itself so the result is still a fresh field."""
    masks = list(masks)
    if not masks:
        raise ValueError("particle_and requires at least one mask")
    if len(masks) == 1:
        masks = masks * 2
    stages: List[ir.Stage] = []
    prods: Dict[int, ir.Stage] = dict(producers or {})
    cur = masks[0]
    for i, m in enumerate(masks[1:]):
        out = out_field if i == len(masks) - 2 else alloc()
        frag = _chunk_stage(f"{name}_{i}" if len(masks) > 2 else name, "particle_and_mask", step, chunks, [cur, m],
                            out, _MASK_DYNAMIC, None, prods)
        stages.append(frag.tail)
        prods[out] = frag.tail
        cur = out
    return Fragment(stages, out_field, step, 0, None, stages[-1], dtype="u8")


def filter_plan(step: int, chunks: int, values: int, mask: int, out_field: int, *, producers: Producers = None,
                name: str = "particle_filter") -> Fragment:
    """OP-PART-4: the values whose mask byte is set (f64 ``Dynamic(LikeInput(0))``)."""
    return _chunk_stage(name, "particle_filter", step, chunks, [values, mask], out_field, _F64_LIKE, None,
                        producers)


def _reduce(frag: Fragment, chunks: int, kernel: str, buffer: ir.BufferSpec, params: Optional[ir.Params],
            alloc: Callable[[], int], world_size: int, fan_in: Optional[int], name: str) -> Fragment:
    """LOW-19: a LOW-6 tree over the chunks (none for one chunk). The result is block 0 of
    the returned fragment's ``out_field``: the chunk stage's field, or the temporary of the last
    round when the tree has several rounds."""
    if chunks == 1:
        frag.block = 0
        return frag
    stages, (field, block) = ir.block_reduction_stages(
        frag.out_field, list(range(chunks)), buffer=buffer, alloc_field=alloc, kernel=kernel, step=frag.step,
        level=0, fan_in=_check_fan_in(fan_in), normalize=False, world_size=world_size, after=[frag.tail],
        name=f"{name}_reduce", params=params)
    if block != 0:
        raise AssertionError("a particle reduction must end at block 0")
    return Fragment(frag.stages + stages, field, frag.step, 0, 0, stages[-1], dtype=frag.dtype)


def reduce_plan(step: int, chunks: int, op: str, input_field: int, out_field: int, *, finite_only: bool = True,
                alloc: Callable[[], int], world_size: int = 1, fan_in: Optional[int] = None,
                producers: Producers = None, name: str = "particle_reduce") -> Fragment:
    """``sum`` / ``min`` / ``max`` (f64[1]) or ``count`` / ``len`` (i64[1]) (OP-PART-6, LOW-18/19)."""
    if op not in _REDUCTIONS:
        raise ValueError(f"unknown particle reduction {op!r} (expected one of {', '.join(_REDUCTIONS)})")
    kernel, spec, reducer, finite = _REDUCTIONS[op]
    prm = ir.FiniteOnlyParams(finite_only=bool(finite_only)) if finite else None
    frag = _chunk_stage(name, kernel, step, chunks, [input_field], out_field, spec, prm, producers)
    return _reduce(frag, chunks, reducer, spec, prm, alloc, world_size, fan_in, name)


def histogram_edges(bins: object, hist_range: Optional[Sequence[float]]) -> List[float]:
    """API-33: ``linspace(lo, hi, bins+1)`` for an integer ``bins`` (needs the range), else the given edges."""
    if isinstance(bins, numbers.Integral) and not isinstance(bins, bool):
        if hist_range is None:
            raise ValueError("hist_range is required when bins is an integer")
        if bins < 1:
            raise ValueError(f"bins must be a positive integer, got {bins}")
        lo, hi = (float(v) for v in hist_range)
        if not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
            raise ValueError(f"histogram range must be finite and increasing, got ({lo}, {hi})")
        n = int(bins)
        # numpy.linspace(lo, hi, n + 1) without importing numpy here
        edges = [lo + (hi - lo) * i / n for i in range(n + 1)]
        edges[-1] = hi
        return edges
    if isinstance(bins, (str, bytes)) or not hasattr(bins, "__len__"):
        raise TypeError(f"bins must be an integer or a 1-D sequence of edges, got {bins!r}")
    try:
        edges = [float(v) for v in bins]  # type: ignore[union-attr]
    except TypeError:
        raise ValueError("bins must define at least two edges (a 1-D sequence)") from None
    if len(edges) < 2:
        raise ValueError("bins must define at least two edges")
    return edges


def histogram_plan(step: int, chunks: int, values: int, edges: Sequence[float], out_field: int, *,
                   weights: Optional[int] = None, alloc: Callable[[], int], world_size: int = 1,
                   fan_in: Optional[int] = None, producers: Producers = None,
                   name: str = "particle_hist") -> Fragment:
    """OP-PART-7 per chunk into f64 ``Fixed((len(edges)-1,))`` with ``density`` false (the SDK
    normalizes after the reduction, API-33), reduced with ``uniform_slice_reduce``."""
    edges = [float(e) for e in edges]
    if len(edges) < 2:
        raise ValueError("bins must define at least two edges")
    spec = ir.BufferSpec("f64", ir.FixedShape((len(edges) - 1,)), "zero")
    prm = ir.ParticleHistogramParams(edges=edges, density=False)
    kernel = "particle_histogram1d" if weights is None else "particle_histogram1d_weighted"
    inputs = [values] if weights is None else [values, weights]
    frag = _chunk_stage(name, kernel, step, chunks, inputs, out_field, spec, prm, producers)
    return _reduce(frag, chunks, "uniform_slice_reduce", spec, None, alloc, world_size, fan_in, name)


def topk_plan(step: int, chunks: int, species: str, field_name: str, k: int, out_field: int, *,
              alloc: Callable[[], int], world_size: int = 1, fan_in: Optional[int] = None,
              name: str = "particle_topk") -> Fragment:
    """LOW-20: count maps per chunk, merged to block 0, finalized into f64 ``Fixed((2k,))``."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an integer, got {k!r}")
    if k <= 0:
        raise ValueError("k must be positive")
    prm = ir.ParticleFieldParams(particle_type=species, field_name=field_name)
    maps = _chunk_stage(f"{name}_map", "particle_topk_modes_map", step, chunks, [], alloc(), _MAP, prm, None)
    merged = _reduce(maps, chunks, "particle_value_counts_reduce", _MAP, None, alloc, world_size, fan_in,
                     f"{name}_map")
    st = ir.Stage(f"{name}_finalize", plane="chunk", after=[merged.tail])
    st.map_blocks(f"{name}_finalize", "particle_topk_modes_finalize", ir.Domain(step, 0, [0]),
                  inputs=[merged.out_field],
                  outputs=[ir.OutputRef(out_field, ir.BufferSpec("f64", ir.FixedShape((2 * int(k),)), "zero"))],
                  params=ir.TopKModesParams(k=int(k)))
    return Fragment(merged.stages + [st], out_field, step, 0, 0, st, dtype="f64")
