"""Lazy values (API-17..27, API-35..38): analysis results described, not yet run.

Building a value lowers its operator at once into plan stages
(:mod:`kangaroo.lowering`), recorded in the dataset's graph context as the
producer of the value's field; nothing runs (API-18). ``compute`` submits the
producer stages of the requested values and their ancestors as one job and
reads the results back (:meth:`kangaroo.client.Client.execute`).

* :class:`Array`: an unbounded AMR field (``shape is None``), or a bounded
  regular image ``(nv, nu)`` from ``slice`` / ``project``. Arithmetic
  (``+ - * / **``) lowers to ``field_expr``, comparisons to ``mesh_compare``
  (:class:`MeshMask`), ``mask & mask`` to ``mesh_mask_and``.
* :class:`Histogram`, :class:`Histogram2D`: mesh histograms whose edges are
  known before execution.
"""

from __future__ import annotations

import html
import math
import numbers
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import config
from . import ir
from . import lowering as lw
from .results import AMRChunk, AMRChunkedArray, Histogram2DResult, HistogramResult, check_max_bytes

__all__ = ["LazyValue", "Array", "MeshMask", "Histogram", "Histogram2D", "compute", "histogram_edges_1d"]

_COMPUTE_OPTIONS = ("gather", "max_bytes")


def histogram_edges_1d(range: Sequence[float], bins: int) -> np.ndarray:  # noqa: A002 - API-46 name
    """The ``bins + 1`` edges ``lo + i*(hi-lo)/bins`` (API-46)."""
    if isinstance(bins, bool) or not isinstance(bins, numbers.Integral) or bins <= 0:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    lo, hi = (float(v) for v in range)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"histogram range must be finite, got ({lo}, {hi})")
    if not lo < hi:
        raise ValueError(f"histogram range must be increasing, got ({lo}, {hi})")
    return np.array([lo + i * (hi - lo) / bins for i in range_(bins + 1)], dtype=np.float64)


range_ = range  # the builtin, shadowed by the API-46 parameter name above


def _is_real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _literal(x: Any) -> str:
    """API-20: a finite real scalar written with ``repr``."""
    if not _is_real(x):
        raise TypeError(f"mesh arrays combine with real scalars or arrays, got {type(x).__name__}")
    v = float(x)
    if not math.isfinite(v):
        raise ValueError(f"non-finite literal {v!r} in a field expression")
    return repr(v)


def _kernel_dtype(dtype: str) -> str:
    return "f32" if dtype == "float32" else "f64"


def _fan_in() -> Optional[int]:
    return config.get("reduction.fan_in")


class LazyValue:
    """Common surface of every lazy value (API-17)."""

    _kind = "LazyValue"
    #: whether ``gather`` / ``max_bytes`` apply (arrays, particle arrays and masks, API-35)
    _takes_array_options = False

    def __init__(self, dataset: Any, name: str, *, field: int, fragment: Optional[lw.Fragment] = None) -> None:
        self._dataset = dataset
        self._name = name
        self._field = field
        self._fragment = fragment
        self._persisted: Any = None
        self._materialized = False
        if fragment is not None:
            dataset._graph.record(field, fragment.tail)

    # -- identity ---------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def dataset(self) -> Any:
        return self._dataset

    @property
    def dtype(self) -> str:
        raise NotImplementedError

    @property
    def domain(self) -> str:
        raise NotImplementedError

    @property
    def is_materialized(self) -> bool:
        return self._materialized

    def _same(self, **changes: Any) -> "LazyValue":
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.__dict__.update(changes)
        clone._persisted, clone._materialized = None, False
        return clone

    def rename(self, name: str) -> "LazyValue":
        """An equal value under another display name (API-22)."""
        if not isinstance(name, str) or not name:
            raise ValueError("rename needs a non-empty name")
        return self._same(_name=name)

    # -- execution --------------------------------------------------------

    def _target(self) -> Tuple[int, Optional[ir.Stage]]:
        """The field to fetch and the stage producing it (None: nothing to run)."""
        return self._field, None if self._fragment is None else self._fragment.tail

    def _targets(self) -> List[Tuple[int, Optional[ir.Stage]]]:
        """Every field the value is read from, with its producer (a mean reads two)."""
        return [self._target()]

    def _check_options(self, opts: Dict[str, Any]) -> None:
        if opts:
            raise TypeError(f"unexpected compute options: {', '.join(sorted(opts))}")

    def _materialize(self, results: Any, opts: Dict[str, Any]) -> Any:
        raise NotImplementedError

    def compute(self, *, progress: Optional[bool] = None, **opts: Any) -> Any:
        """Runs the value's producer stages as one job and returns the result (API-35)."""
        return compute(self, progress=progress, **opts)

    def persist(self, progress: bool = False, **kwargs: Any) -> "LazyValue":
        """Computes the value, keeps the result on it and persists its fields (API-36).

        The job's result chunks stay on the gateway; the dataset context records
        the job and forgets the fields' producer stages (LOW-23), so values built
        on this one read the persisted fields in their own jobs (submitted with
        ``seed_jobs``) instead of recomputing them. Returns ``self``."""
        if kwargs:
            raise TypeError(f"unexpected persist options: {', '.join(sorted(kwargs))}")
        if self._persisted is None:
            ds = self._dataset
            (result,), job_id = ds.client.run_values(ds, [self], [{}], progress=progress)
            self._persisted = result
            if job_id is not None:
                ds._graph.persist(self._targets(), job_id)
        self._materialized = True
        return self

    # -- diagnostics (API-37, API-38) ---------------------------------------

    def _ancestry(self) -> List[ir.Stage]:
        """The stages computing this value would submit: its producers and their ancestors,
        without the producers of persisted fields (empty for dataset fields)."""
        if self._fragment is None:
            return []
        tails = [t for _, t in self._targets() if t is not None]
        return ir.Plan(self._dataset._graph.job_stages(tails)).topo_stages()

    def _estimates(self) -> Dict[str, Any]:
        stages = self._ancestry()
        steps = {s.step: s for s in self._dataset._job_runmeta().steps}
        tasks = 0
        storage = 0
        exact = True
        kernels: List[str] = []
        reductions = 0
        for st in stages:
            if st.plane == "graph":
                reductions += 1
            for t in st.templates:
                if t.kernel not in kernels:
                    kernels.append(t.kernel)
                sm = steps.get(t.domain.step)
                lv = sm.levels[t.domain.level] if sm is not None and t.domain.level < len(sm.levels) else None
                if t.graph_reduce is not None:
                    blocks: List[Optional[int]] = [None] * t.graph_reduce.num_groups
                elif t.domain.blocks is not None:
                    blocks = list(t.domain.blocks)
                else:
                    blocks = list(range(len(lv.boxes))) if lv is not None else []
                tasks += len(blocks)
                for out in t.outputs:
                    spec = out.buffer
                    item = ir.DType.parse(spec.dtype).itemsize
                    shape = spec.shape
                    if isinstance(shape, ir.FixedShape):
                        storage += len(blocks) * item * int(np.prod(shape.extents))
                    elif isinstance(shape, ir.BlockShape) and lv is not None:
                        for b in blocks:
                            if b is not None and b < len(lv.boxes):
                                storage += lv.boxes[b].cells * shape.components * item
                            else:
                                exact = False
                    elif (isinstance(shape, ir.DynamicShape) and shape.upper_bound.kind == "literal"):
                        storage += len(blocks) * item * int(shape.upper_bound.value)
                    else:
                        exact = False
        return {"stages": len(stages), "tasks": tasks, "storage": storage, "exact": exact,
                "reductions": reductions, "localities": self._dataset.world_size, "kernels": kernels}

    def explain(self) -> str:
        """A one-line summary of what computing the value would run (API-37); runs nothing."""
        e = self._estimates()
        storage = f"{'' if e['exact'] else '>='}{e['storage']} bytes"
        return (f"{self._kind}(name={self._name!r}, dtype={self.dtype}, domain={self.domain}, "
                f"stages={e['stages']}, estimated_tasks={e['tasks']}, estimated_storage={storage}, "
                f"reductions={e['reductions']}, localities={e['localities']}, kernels={e['kernels']})")

    def visualize(self, filename: Optional[str] = None) -> str:
        """Graphviz DOT of the producer stages and their ``after`` edges (API-38)."""
        stages = self._ancestry()
        index = {id(s): i for i, s in enumerate(stages)}
        lines = ["digraph kangaroo {"]
        for i, s in enumerate(stages):
            label = s.name.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'  n{i} [label="{label}"];')
        for i, s in enumerate(stages):
            for a in s.after:
                if id(a) in index:
                    lines.append(f"  n{index[id(a)]} -> n{i};")
        lines.append("}")
        dot = "\n".join(lines)
        if filename is not None:
            with open(filename, "w", encoding="utf-8") as f:
                f.write(dot + "\n")
        return dot

    def __repr__(self) -> str:
        state = ", materialized" if self._materialized else ""
        return f"{self._kind}(name={self._name!r}, dtype={self.dtype}, domain={self.domain}{state})"

    def _repr_html_(self) -> str:
        e = self._estimates()
        rows = [("name", self._name), ("dtype", self.dtype), ("domain", self.domain),
                ("dataset", self._dataset.uri), ("stages", e["stages"]), ("estimated tasks", e["tasks"]),
                ("estimated storage", f"{'' if e['exact'] else '>='}{e['storage']} bytes"),
                ("kernels", ", ".join(e["kernels"]) or "-"), ("materialized", self._materialized)]
        body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in rows)
        return f"<div><b>{html.escape(self._kind)}</b> (lazy)<table>{body}</table></div>"


# ---------------------------------------------------------------------------
# mesh arrays

_ARITH = {"__add__": "+", "__sub__": "-", "__mul__": "*", "__truediv__": "/", "__pow__": "**"}
_COMPARE = {"__lt__": "<", "__le__": "<=", "__gt__": ">", "__ge__": ">=", "__eq__": "==", "__ne__": "!="}


class Array(LazyValue):
    """A mesh field: unbounded AMR data or a bounded ``(nv, nu)`` image (API-19)."""

    _kind = "Array"
    _takes_array_options = True

    def __init__(self, dataset: Any, name: str, *, field: int, dtype: str, fragment: Optional[lw.Fragment] = None,
                 shape: Optional[Tuple[int, int]] = None, region: Optional[tuple] = None) -> None:
        super().__init__(dataset, name, field=field, fragment=fragment)
        self._dtype = dtype
        self._shape = shape
        self._region = region
        self._identity: Optional[lw.Fragment] = None

    @classmethod
    def _source(cls, dataset: Any, name: str) -> "Array":
        return cls(dataset, name, field=dataset.field_id(name), dtype=dataset._field_dtypes.get(name, "float64"))

    # -- description ------------------------------------------------------

    @property
    def dtype(self) -> str:
        return self._dtype

    @property
    def shape(self) -> Optional[Tuple[int, int]]:
        return self._shape

    @property
    def bounded(self) -> bool:
        return self._shape is not None

    @property
    def chunks(self) -> Optional[Tuple[Tuple[int, int, int], ...]]:
        """Per level ``(level, block_count, cell_count)`` of an unbounded array."""
        if self.bounded:
            return None
        sm = self._dataset.runmeta.step_meta(self._dataset.step)
        return tuple((L, len(lv.boxes), sum(b.cells for b in lv.boxes)) for L, lv in enumerate(sm.levels))

    @property
    def domain(self) -> str:
        if self.bounded:
            return f"Regular(shape={self._shape})"
        return f"AMR({len(self._dataset.runmeta.step_meta(self._dataset.step).levels)} levels)"

    # -- building helpers -------------------------------------------------

    def _lowering_args(self) -> Dict[str, Any]:
        ds = self._dataset
        return dict(step=ds.step, dataset_level=ds.level)

    def _check_combinable(self, other: "Array") -> None:
        if other._dataset is not self._dataset:
            raise ValueError("cannot combine arrays from different dataset contexts")
        if other._shape != self._shape or other._region != self._region:
            raise ValueError("cannot combine mesh arrays with different domains or shapes")

    def _expression(self, expr: str, inputs: List["Array"], dtype: str, kernel: str, cls: type, label: str) -> "Array":
        ds = self._dataset
        out = ds._graph.alloc()
        out_dtype = "u8" if kernel != "field_expr" else _kernel_dtype(dtype)
        variables = ["a", "b"][: len(inputs)]
        frag = lw.field_expr_plan(
            ds.runmeta, None if kernel == "mesh_mask_and" else expr, variables, [i._field for i in inputs], out,
            dtype=out_dtype, kernel=kernel, bounded=self.bounded, producers=ds._graph.producers,
            name=f"{label}_f{out}", **self._lowering_args())
        return cls(ds, label, field=out, dtype=dtype, fragment=frag, shape=self._shape, region=self._region)

    def _binary(self, op: str, other: Any, reflected: bool, kernel: str = "field_expr") -> Any:
        if isinstance(self, MeshMask) or isinstance(other, MeshMask):
            raise TypeError("boolean mesh masks support only '&'; arithmetic and comparisons need numeric arrays")
        compare = kernel == "mesh_compare"
        if isinstance(other, Array):
            self._check_combinable(other)
            lhs, rhs = ("b", "a") if reflected else ("a", "b")
            inputs = [self, other]
            dtype = "bool" if compare else np.result_type(np.dtype(self.dtype), np.dtype(other.dtype)).name
            label = f"({self._name} {op} {other._name})"
        elif _is_real(other):
            lit = _literal(other)
            lhs, rhs = (lit, "a") if reflected else ("a", lit)
            inputs = [self]
            dtype = "bool" if compare else self.dtype
            label = f"({lit} {op} {self._name})" if reflected else f"({self._name} {op} {lit})"
        else:
            return NotImplemented
        expr = f"pow({lhs}, {rhs})" if op == "**" else f"{lhs} {op} {rhs}"
        return self._expression(expr, inputs, dtype, kernel, MeshMask if compare else Array, label)

    def __neg__(self) -> "Array":
        return self._binary("*", -1.0, False)

    def __radd__(self, other: Any) -> Any:
        return self._binary("+", other, True)

    def __rsub__(self, other: Any) -> Any:
        return self._binary("-", other, True)

    def __rmul__(self, other: Any) -> Any:
        return self._binary("*", other, True)

    def __rtruediv__(self, other: Any) -> Any:
        return self._binary("/", other, True)

    def __and__(self, other: Any) -> Any:
        raise TypeError("bitwise-and is only supported between boolean mesh masks")

    __rand__ = __and__
    __hash__ = LazyValue.__hash__  # comparisons build masks; identity still hashes

    def __bool__(self) -> bool:
        raise TypeError(f"the truth value of a lazy {self._kind} is undefined; call compute() first")

    def astype(self, dtype: Any) -> "Array":
        """Cast to float32 or float64 (API-22): the identity expression with that output."""
        try:
            target = np.dtype(dtype).name
        except TypeError:
            target = None
        if target not in ("float32", "float64"):
            raise TypeError(f"astype supports float32 and float64, got {dtype!r}")
        if isinstance(self, MeshMask):
            raise TypeError("boolean mesh masks cannot be cast")
        return self._expression("a", [self], target, "field_expr", Array, f"{self._name}.astype({target})")

    # -- plane operators (API-23) -------------------------------------------

    def _require_unbounded(self, op: str) -> None:
        if self.bounded:
            raise ValueError(f"{op} is only defined for unbounded AMR arrays")

    def slice(self, *, axis: Any, coord: Optional[float] = None, resolution: Any = None, zoom: float = 1.0,
              rect: Optional[Sequence[float]] = None) -> "Array":
        """The ``(nv, nu)`` image of the plane ``axis = coord`` over ``rect``, sampled
        from the finest covering cells (LOW-9); NaN where nothing is sampled. The
        dtype stays float32 for float32 fields. Defaults follow ``geometry.plane``."""
        self._require_unbounded("slice")
        ds = self._dataset
        g = ds.geometry.plane(axis=axis, coord=coord, zoom=zoom, resolution=resolution)
        r = lw.parse_rect(rect) if rect is not None else g.rect
        out = ds._graph.alloc()
        dtype = "float32" if self.dtype == "float32" else "float64"
        frag = lw.slice_plan(ds.runmeta, self._field, g.axis_index, g.coord, r, g.resolution, out,
                             dtype=_kernel_dtype(dtype), world_size=ds.world_size, fan_in=_fan_in(),
                             alloc_field=ds._graph.alloc, producers=ds._graph.producers, name=f"slice_f{out}",
                             **self._lowering_args())
        nu, nv = g.resolution
        region = (g.axis_index, "point", (g.coord, g.coord), tuple(r), (nu, nv))
        return Array(ds, f"slice({self._name}, {g.plane}, {g.coord!r})", field=out, dtype=dtype, fragment=frag,
                     shape=(nv, nu), region=region)

    def project(self, *, axis: Any, bounds: Optional[Sequence[float]] = None, resolution: Any = None,
                zoom: float = 1.0, rect: Optional[Sequence[float]] = None, amr_cell_average: bool = True) -> "Array":
        """Column integrals along ``axis`` within ``bounds`` (default: the whole
        axis) over ``rect`` (LOW-10): float64 ``(nv, nu)``, 0 where no data."""
        self._require_unbounded("project")
        ds = self._dataset
        g = ds.geometry.plane(axis=axis, zoom=zoom, resolution=resolution)
        r = lw.parse_rect(rect) if rect is not None else g.rect
        b = tuple(float(v) for v in bounds) if bounds is not None else g.axis_bounds
        out = ds._graph.alloc()
        frag = lw.projection_plan(ds.runmeta, self._field, g.axis_index, b, r, g.resolution, out,
                                  amr_cell_average=amr_cell_average, world_size=ds.world_size, fan_in=_fan_in(),
                                  alloc_field=ds._graph.alloc, producers=ds._graph.producers,
                                  name=f"project_f{out}", **self._lowering_args())
        nu, nv = g.resolution
        region = (g.axis_index, "interval", b, tuple(r), (nu, nv))
        return Array(ds, f"project({self._name}, {g.plane})", field=out, dtype="float64", fragment=frag,
                     shape=(nv, nu), region=region)

    # -- histograms (API-24) --------------------------------------------------

    def _hist_domain(self, weight_mode: str) -> Any:
        if not self.bounded:
            return None
        if weight_mode != "input":
            raise ValueError(f"weight_mode {weight_mode!r} needs cells; on a bounded array only 'input' is valid")
        return (self._dataset.level, [0])

    def _weights(self, weights: Any) -> Optional[int]:
        if weights is None:
            return None
        if not isinstance(weights, Array) or isinstance(weights, MeshMask):
            raise TypeError(f"weights must be a numeric mesh Array, got {type(weights).__name__}")
        self._check_combinable(weights)
        return weights._field

    def histogram(self, *, bins: int, range: Sequence[float], weights: Optional["Array"] = None,  # noqa: A002
                  weight_mode: str = "input") -> "Histogram":
        """Histogram of the values over leaf cells (LOW-11).

        The default ``weight_mode="input"`` counts leaf cells (each weighted by
        ``weights`` when given), so on AMR data a coarse region weighs less than
        its volume: use ``weight_mode="cell_volume"`` for a volume-weighted PDF
        (``"cell_mass"``: value times volume). On bounded arrays only ``input``."""
        if isinstance(bins, bool) or not isinstance(bins, numbers.Integral):
            raise TypeError(f"mesh histograms take an integer number of bins, got {bins!r}")
        edges = histogram_edges_1d(range, int(bins))
        ds = self._dataset
        domain = self._hist_domain(weight_mode)
        out = ds._graph.alloc()
        frag = lw.histogram1d_plan(ds.runmeta, self._field, (edges[0], edges[-1]), int(bins), out,
                                   weights=self._weights(weights), weight_mode=weight_mode, domain=domain,
                                   world_size=ds.world_size, fan_in=_fan_in(), alloc_field=ds._graph.alloc,
                                   producers=ds._graph.producers, name=f"hist1d_f{out}", **self._lowering_args())
        return Histogram(ds, f"histogram({self._name})", field=out, fragment=frag, edges=edges)

    def histogram2d(self, other: "Array", *, bins: Any, range: Sequence[Sequence[float]],  # noqa: A002
                    weights: Optional["Array"] = None, weight_mode: str = "input") -> "Histogram2D":
        """Joint histogram of ``(self, other)`` over leaf cells, counts indexed
        ``[ix, iy]`` (LOW-11). As :meth:`histogram`, the default counts leaf
        cells; ``weight_mode="cell_volume"`` gives volume-weighted PDFs."""
        if not isinstance(other, Array):
            raise TypeError(f"histogram2d pairs two mesh arrays, got {type(other).__name__}")
        self._check_combinable(other)
        nb = (bins, bins) if isinstance(bins, numbers.Integral) and not isinstance(bins, bool) else tuple(bins)
        if len(nb) != 2:
            raise ValueError(f"bins must be an integer or (nx, ny), got {bins!r}")
        xr, yr = range
        x_edges, y_edges = histogram_edges_1d(xr, nb[0]), histogram_edges_1d(yr, nb[1])
        ds = self._dataset
        domain = self._hist_domain(weight_mode)
        out = ds._graph.alloc()
        frag = lw.histogram2d_plan(ds.runmeta, self._field, other._field, (x_edges[0], x_edges[-1]),
                                   (y_edges[0], y_edges[-1]), (int(nb[0]), int(nb[1])), out,
                                   weights=self._weights(weights), weight_mode=weight_mode, domain=domain,
                                   world_size=ds.world_size, fan_in=_fan_in(), alloc_field=ds._graph.alloc,
                                   producers=ds._graph.producers, name=f"hist2d_f{out}", **self._lowering_args())
        return Histogram2D(ds, f"histogram2d({self._name}, {other._name})", field=out, fragment=frag,
                           x_edges=x_edges, y_edges=y_edges)

    # -- execution (API-27) -------------------------------------------------

    def _target(self) -> Tuple[int, Optional[ir.Stage]]:
        if self._fragment is not None:
            return self._field, self._fragment.tail
        # A dataset field has no producer: fetch it through an identity expression.
        if self._identity is None:
            ds = self._dataset
            out = ds._graph.alloc()
            self._identity = lw.field_expr_plan(ds.runmeta, "a", ["a"], [self._field], out,
                                                dtype=_kernel_dtype(self.dtype), name=f"load_f{out}",
                                                **self._lowering_args())
        return self._identity.out_field, self._identity.tail

    def _check_options(self, opts: Dict[str, Any]) -> None:
        unknown = sorted(set(opts) - set(_COMPUTE_OPTIONS))
        if unknown:
            raise TypeError(f"unexpected compute options: {', '.join(unknown)}")
        if opts.get("gather") and not self.bounded:
            raise ValueError("gather=True is not defined for an unbounded AMR hierarchy; compute per-block chunks "
                             "or slice/project to a bounded array")
        mb = opts.get("max_bytes")
        if mb is not None and (isinstance(mb, bool) or not isinstance(mb, numbers.Integral) or mb < 0):
            raise ValueError(f"max_bytes must be a non-negative integer, got {mb!r}")

    def iter_chunks(self, *, progress: Optional[bool] = None) -> Any:
        """Computes the array and yields its per-block arrays (the single image of
        a bounded array) (API-27)."""
        result = compute(self, progress=progress)
        if isinstance(result, AMRChunkedArray):
            for chunk in result:
                yield chunk.values
        else:
            yield result

    def _materialize(self, results: Any, opts: Dict[str, Any]) -> Any:
        field, _ = self._target()
        ds = self._dataset
        max_bytes = opts.get("max_bytes")
        if self.bounded:
            chunk = results.chunk(field, ds.step, ds.level, 0)
            check_max_bytes(int(chunk.get("bytes", 0)), max_bytes)
            (arr,) = results.arrays([chunk])
            if tuple(arr.shape) != tuple(self._shape):
                raise RuntimeError(f"result of {self._name!r} has shape {tuple(arr.shape)}, expected {self._shape}")
            return arr.astype(bool) if isinstance(self, MeshMask) else arr
        sm = ds.runmeta.step_meta(ds.step)
        where = [(L, b) for L, lv in enumerate(sm.levels) for b in range(len(lv.boxes))]
        chunks = [results.chunk(field, ds.step, L, b) for L, b in where]
        check_max_bytes(sum(int(c.get("bytes", 0)) for c in chunks), max_bytes)
        arrays = results.arrays(chunks)
        out = []
        for (L, b), arr in zip(where, arrays):
            if isinstance(self, MeshMask):
                arr = arr.astype(bool)
            lv = sm.levels[L]
            out.append(AMRChunk(arr, ds.step, L, b, lv.boxes[b], lv.geom))
        return AMRChunkedArray(out)


class MeshMask(Array):
    """A boolean mesh array from a comparison (API-21); combine with ``&``."""

    _kind = "MeshMask"

    def __and__(self, other: Any) -> "MeshMask":
        if not isinstance(other, MeshMask):
            raise TypeError("bitwise-and is only supported between boolean mesh masks")
        self._check_combinable(other)
        return self._expression("", [self, other], "bool", "mesh_mask_and", MeshMask,
                                f"({self._name} & {other._name})")

    __rand__ = __and__
    __hash__ = Array.__hash__


def _install_operators() -> None:
    for meth, op in _ARITH.items():
        setattr(Array, meth, lambda self, other, _op=op: self._binary(_op, other, False))
    for meth, op in _COMPARE.items():
        setattr(Array, meth, lambda self, other, _op=op: self._binary(_op, other, False, "mesh_compare"))


_install_operators()


# ---------------------------------------------------------------------------
# histograms


class Histogram(LazyValue):
    """A 1-D mesh histogram; ``edges`` are known before execution (API-39)."""

    _kind = "Histogram"

    def __init__(self, dataset: Any, name: str, *, field: int, fragment: lw.Fragment, edges: np.ndarray) -> None:
        super().__init__(dataset, name, field=field, fragment=fragment)
        self._edges = edges

    @property
    def dtype(self) -> str:
        return "float64"

    @property
    def domain(self) -> str:
        return f"Histogram(bins={len(self._edges) - 1})"

    @property
    def edges(self) -> np.ndarray:
        return self._edges.copy()

    def _materialize(self, results: Any, opts: Dict[str, Any]) -> HistogramResult:
        ds = self._dataset
        (counts,) = results.arrays([results.chunk(self._field, ds.step, ds.level, 0)])
        return HistogramResult(counts, self._edges.copy())


class Histogram2D(LazyValue):
    """A 2-D mesh histogram with known ``x_edges`` and ``y_edges`` (API-39)."""

    _kind = "Histogram2D"

    def __init__(self, dataset: Any, name: str, *, field: int, fragment: lw.Fragment, x_edges: np.ndarray,
                 y_edges: np.ndarray) -> None:
        super().__init__(dataset, name, field=field, fragment=fragment)
        self._x_edges = x_edges
        self._y_edges = y_edges

    @property
    def dtype(self) -> str:
        return "float64"

    @property
    def domain(self) -> str:
        return f"Histogram2D(bins=({len(self._x_edges) - 1}, {len(self._y_edges) - 1}))"

    @property
    def x_edges(self) -> np.ndarray:
        return self._x_edges.copy()

    @property
    def y_edges(self) -> np.ndarray:
        return self._y_edges.copy()

    def _materialize(self, results: Any, opts: Dict[str, Any]) -> Histogram2DResult:
        ds = self._dataset
        (counts,) = results.arrays([results.chunk(self._field, ds.step, ds.level, 0)])
        return Histogram2DResult(counts, self._x_edges.copy(), self._y_edges.copy())


# ---------------------------------------------------------------------------
# compute (API-35)


def compute(*values: LazyValue, progress: Optional[bool] = None, **opts: Any) -> Any:
    """Computes several values with ONE job: the union of their producer stages
    and ancestors (LOW-22). Returns the results in argument order; a single
    value is returned unwrapped, no values give ``()``.

    ``gather`` and ``max_bytes`` apply to arrays, particle arrays and particle
    masks (``gather=True`` on an unbounded array is a ``ValueError``, a result
    over ``max_bytes`` a ``MemoryError``, checked from the result manifest
    before downloading). Mesh and particle values of one dataset run in the
    same job."""
    if not values:
        return ()
    for v in values:
        if not isinstance(v, LazyValue):
            raise TypeError(f"compute takes lazy values, got {type(v).__name__}")
    ds = values[0].dataset
    if any(v.dataset is not ds for v in values):
        raise ValueError("compute values must share one dataset context")
    has_arrays = any(v._takes_array_options for v in values)
    if opts and not has_arrays:
        raise TypeError(f"unexpected compute options: {', '.join(sorted(opts))}")
    per_value = []
    for v in values:
        o = dict(opts) if v._takes_array_options else {}
        v._check_options(o)
        per_value.append(o)
    results = ds.client.execute(ds, values, per_value, progress=progress)
    for v in values:
        v._materialized = True
    return results[0] if len(values) == 1 else tuple(results)
