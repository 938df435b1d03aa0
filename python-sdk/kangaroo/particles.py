"""Particle values (API-28..34, API-39/40): species, arrays, masks, scalars, top-k.

``ds.particles[name]`` is a :class:`ParticleSpecies`; ``species[field]`` a
:class:`ParticleArray` loaded chunk by chunk (one chunk per particle grid,
PMETA-1). Operators lower at once into chunk stages over the virtual particle
level (:mod:`kangaroo.particle_lowering`); nothing runs until ``compute``,
which submits mesh and particle work of one dataset as a single job.

Operands must come from one dataset, one species and one *position lineage*
(API-30): every field of a species shares the species lineage, arithmetic and
comparisons keep it, and ``values[mask]`` takes the mask's selection, so
arrays filtered by the same mask stay combinable and arrays filtered by
different masks do not.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import lowering as lw
from . import particle_lowering as pl
from .lazy import Array, Histogram, LazyValue, _fan_in, compute
from .results import ChunkedArray, HistogramResult, TopKResult, check_max_bytes

__all__ = ["ParticleSpecies", "ParticleArray", "ParticleMask", "Mask", "Scalar", "TopK", "ParticleHistogram"]

_ARRAY_OPTIONS = ("gather", "max_bytes")


def _is_real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _scalar_operand(x: Any) -> float:
    v = float(x)
    if not math.isfinite(v):
        raise ValueError(f"particle operators take finite scalars, got {v!r}")
    return v


class ParticleSpecies:
    """One particle species of a dataset (API-28): ``name``, the ``fields`` mapping
    of its backend particle fields, ``species[field]`` and a CIC ``project``."""

    def __init__(self, dataset: Any, name: str, fields: Sequence[str], chunks: int) -> None:
        from .dataset import NameMapping  # local: the dataset module builds species

        self._dataset = dataset
        self.name = name
        self._chunks = chunks
        self._fields = NameMapping("particle field", list(fields), lambda f: ParticleArray._load(self, f))

    @property
    def dataset(self) -> Any:
        return self._dataset

    @property
    def fields(self) -> Any:
        return self._fields

    @property
    def chunks(self) -> int:
        """Chunk count used for this species (PMETA-2)."""
        return self._chunks

    def __getitem__(self, field: str) -> "ParticleArray":
        return self._fields[field]

    def project(self, *, axis: Any, bounds: Optional[Sequence[float]] = None, resolution: Any = None,
                zoom: float = 1.0, mass_field: str = "mass", mass_max: Optional[float] = None) -> Array:
        """Cloud-in-cell projection of the species' ``mass_field`` along ``axis`` (LOW-16,
        OP-CIC-2): a bounded float64 ``(nv, nu)`` array of mass per unit area. ``bounds``
        defaults to the whole axis; plane defaults follow ``geometry.plane``. WarpX data
        stores ``weight`` rather than ``mass``: pass ``mass_field="weight"``."""
        ds = self._dataset
        g = ds.geometry.plane(axis=axis, zoom=zoom, resolution=resolution)
        b = tuple(float(v) for v in bounds) if bounds is not None else g.axis_bounds
        out = ds._graph.alloc()
        frag = lw.particle_cic_projection_plan(
            ds.runmeta, self.name, g.axis_index, b, g.rect, g.resolution, out, mass_field=mass_field,
            mass_max=mass_max, step=ds.step, dataset_level=ds.level, world_size=ds.world_size, fan_in=_fan_in(),
            alloc_field=ds._graph.alloc, name=f"cic_f{out}")
        nu, nv = g.resolution
        region = (g.axis_index, "interval", b, tuple(g.rect), (nu, nv))
        return Array(ds, f"project({self.name}.{mass_field}, {g.plane})", field=frag.out_field, dtype="float64",
                     fragment=frag, shape=(nv, nu), region=region)

    def __repr__(self) -> str:
        return f"ParticleSpecies({self.name!r}, fields={len(self._fields)}, chunks={self._chunks})"


class _ParticleValue(LazyValue):
    """Shared state of particle arrays and masks: species, chunk count and lineage."""

    _takes_array_options = True

    def __init__(self, dataset: Any, name: str, *, field: int, fragment: lw.Fragment, species: str, chunks: int,
                 lineage: Tuple[Any, ...]) -> None:
        super().__init__(dataset, name, field=field, fragment=fragment)
        self._species = species
        self._chunks = chunks
        self._lineage = lineage

    @property
    def chunks(self) -> int:
        return self._chunks

    @property
    def species(self) -> str:
        return self._species

    def _check_operand(self, other: "_ParticleValue") -> None:
        """API-30: same dataset, species and position lineage (LOW-17: same chunk count)."""
        if other._dataset is not self._dataset:
            raise ValueError("cannot combine particle values from different dataset contexts")
        if other._species != self._species:
            raise ValueError(f"cannot combine different particle species ({self._species!r} and {other._species!r})")
        if other._lineage != self._lineage:
            raise ValueError("cannot combine values of different filtered particle domains "
                             f"({self._name!r} and {other._name!r})")
        if other._chunks != self._chunks:
            raise ValueError(f"particle operands must have matching chunk_count ({self._chunks} and {other._chunks})")

    def _step(self) -> int:
        return self._dataset._particle_step()

    def _new_field(self) -> int:
        return self._dataset._graph.alloc()

    def _check_options(self, opts: Dict[str, Any]) -> None:
        unknown = sorted(set(opts) - set(_ARRAY_OPTIONS))
        if unknown:
            raise TypeError(f"unexpected compute options: {', '.join(unknown)}")
        mb = opts.get("max_bytes")
        if mb is not None and (isinstance(mb, bool) or not isinstance(mb, numbers.Integral) or mb < 0):
            raise ValueError(f"max_bytes must be a non-negative integer, got {mb!r}")

    def _materialize_chunks(self, results: Any, opts: Dict[str, Any], dtype: Any) -> Any:
        step = self._step()
        chunks = [results.chunk(self._field, step, 0, c) for c in range(self._chunks)]
        total = sum(int(c.get("bytes", 0)) for c in chunks)
        check_max_bytes(total, opts.get("max_bytes"))
        arrays = [np.asarray(a).reshape(-1).astype(dtype, copy=False) for a in results.arrays(chunks)]
        out = ChunkedArray(arrays)
        return out.gather() if opts.get("gather") else out

    def __bool__(self) -> bool:
        raise TypeError(f"the truth value of a lazy {self._kind} is undefined; call compute() first")

    def __len__(self) -> int:
        raise TypeError(f"the length of a lazy {self._kind} is not known before execution; "
                        "use .len() or .count() and compute()")

    __hash__ = LazyValue.__hash__


class ParticleArray(_ParticleValue):
    """A float64 particle array, one chunk per particle grid (API-29)."""

    _kind = "ParticleArray"

    def __init__(self, dataset: Any, name: str, *, field: int, fragment: lw.Fragment, species: str, chunks: int,
                 lineage: Tuple[Any, ...], source: Optional[str] = None, dtype: str = "float64") -> None:
        super().__init__(dataset, name, field=field, fragment=fragment, species=species, chunks=chunks,
                         lineage=lineage)
        self._source = source
        self._dtype = dtype

    @classmethod
    def _load(cls, species: ParticleSpecies, field_name: str) -> "ParticleArray":
        ds = species.dataset
        ds._use_particle_chunks(species.chunks)
        out = ds._graph.alloc()
        frag = pl.load_plan(ds._particle_step(), species.chunks, species.name, field_name, out,
                            name=f"particle_load_f{out}")
        return cls(ds, f"{species.name}.{field_name}", field=out, fragment=frag, species=species.name,
                   chunks=species.chunks, lineage=("species", species.name), source=field_name)

    @property
    def dtype(self) -> str:
        return self._dtype

    @property
    def domain(self) -> str:
        return f"Particles(chunks={self._chunks})"

    def _derived(self, frag: lw.Fragment, name: str, lineage: Optional[Tuple[Any, ...]] = None) -> "ParticleArray":
        return ParticleArray(self._dataset, name, field=frag.out_field, fragment=frag, species=self._species,
                             chunks=self._chunks, lineage=self._lineage if lineage is None else lineage)

    def _producers(self) -> Any:
        return self._dataset._graph.producers

    # -- arithmetic (API-29) --------------------------------------------------

    def _arith(self, op: str, other: Any, reflected: bool) -> Any:
        out = self._new_field()
        step = self._step()
        if isinstance(other, ParticleMask):
            raise TypeError("particle masks support only '&', filtering and count(); arithmetic needs particle "
                            "arrays")
        if isinstance(other, ParticleArray):
            self._check_operand(other)
            a, b = (other, self) if reflected else (self, other)
            frag = pl.binary_plan(step, self._chunks, pl.ARRAY_ARITH_KERNELS[op], a._field, b._field, out,
                                  producers=self._producers(), name=f"particle_arith_f{out}")
            return self._derived(frag, f"({a._name} {op} {b._name})")
        if _is_real(other):
            s = _scalar_operand(other)
            kernels = pl.REFLECTED_SCALAR_KERNELS if reflected else pl.SCALAR_ARITH_KERNELS
            frag = pl.unary_plan(step, self._chunks, kernels[op], self._field, out, scalar=s,
                                 producers=self._producers(), name=f"particle_arith_f{out}")
            label = f"({s!r} {op} {self._name})" if reflected else f"({self._name} {op} {s!r})"
            return self._derived(frag, label)
        return NotImplemented

    def __add__(self, other: Any) -> Any:
        return self._arith("+", other, False)

    def __sub__(self, other: Any) -> Any:
        return self._arith("-", other, False)

    def __mul__(self, other: Any) -> Any:
        return self._arith("*", other, False)

    def __truediv__(self, other: Any) -> Any:
        return self._arith("/", other, False)

    def __pow__(self, other: Any) -> Any:
        return self._arith("**", other, False)

    def __radd__(self, other: Any) -> Any:
        return self._arith("+", other, True)

    def __rsub__(self, other: Any) -> Any:
        return self._arith("-", other, True)

    def __rmul__(self, other: Any) -> Any:
        return self._arith("*", other, True)

    def __rtruediv__(self, other: Any) -> Any:
        return self._arith("/", other, True)

    def __rpow__(self, other: Any) -> Any:
        return self._arith("**", other, True)

    def __neg__(self) -> "ParticleArray":
        return self._arith("*", -1.0, False)

    # -- masks ----------------------------------------------------------------

    def _mask(self, kernel: str, scalar: Optional[float], label: str) -> "ParticleMask":
        out = self._new_field()
        frag = pl.unary_plan(self._step(), self._chunks, kernel, self._field, out, scalar=scalar,
                             producers=self._producers(), name=f"particle_mask_f{out}")
        return ParticleMask(self._dataset, label, field=out, fragment=frag, species=self._species,
                            chunks=self._chunks, lineage=self._lineage)

    def _compare(self, op: str, other: Any) -> Any:
        if isinstance(other, LazyValue):
            raise TypeError("particle arrays compare with real scalars only")
        if not _is_real(other):
            return NotImplemented
        s = _scalar_operand(other)
        return self._mask(pl.COMPARE_KERNELS[op], s, f"({self._name} {op} {s!r})")

    def __lt__(self, other: Any) -> Any:
        return self._compare("<", other)

    def __le__(self, other: Any) -> Any:
        return self._compare("<=", other)

    def __gt__(self, other: Any) -> Any:
        return self._compare(">", other)

    def __ge__(self, other: Any) -> Any:
        return self._compare(">=", other)

    def __eq__(self, other: Any) -> Any:  # type: ignore[override]
        return self._compare("==", other)

    def __ne__(self, other: Any) -> Any:  # type: ignore[override]
        return self._compare("!=", other)

    __hash__ = LazyValue.__hash__

    def isfinite(self) -> "ParticleMask":
        """Mask of the finite values."""
        return self._mask("particle_isfinite_mask", None, f"isfinite({self._name})")

    def __and__(self, other: Any) -> Any:
        raise TypeError("'&' combines particle masks, not particle arrays")

    __rand__ = __and__

    def __getitem__(self, mask: Any) -> "ParticleArray":
        """The values whose mask entry is true (OP-PART-4); the result takes the mask's selection."""
        if not isinstance(mask, ParticleMask):
            raise TypeError(f"particle arrays are indexed by a ParticleMask, got {type(mask).__name__}")
        self._check_operand(mask)
        out = self._new_field()
        frag = pl.filter_plan(self._step(), self._chunks, self._field, mask._field, out,
                              producers=self._producers(), name=f"particle_filter_f{out}")
        return self._derived(frag, f"{self._name}[{mask._name}]", lineage=("selection", mask._selection))

    # -- reductions -------------------------------------------------------------

    def _reduce(self, op: str, label: str, finite_only: bool = True) -> "Scalar":
        frag = pl.reduce_plan(self._step(), self._chunks, op, self._field, self._new_field(),
                              finite_only=finite_only, alloc=self._dataset._graph.alloc,
                              world_size=self._dataset.world_size, fan_in=_fan_in(), producers=self._producers(),
                              name=f"particle_{op}_f{self._field}")
        return Scalar(self._dataset, label, parts=[frag], dtype="int64" if op in ("count", "len") else "float64")

    def sum(self) -> "Scalar":
        """Sum in index order (NaN propagates)."""
        return self._reduce("sum", f"sum({self._name})")

    def min(self, finite_only: bool = True) -> "Scalar":
        """Smallest value; with ``finite_only`` non-finite values are skipped (+inf when none qualifies)."""
        return self._reduce("min", f"min({self._name})", bool(finite_only))

    def max(self, finite_only: bool = True) -> "Scalar":
        """Largest value; with ``finite_only`` non-finite values are skipped (-inf when none qualifies)."""
        return self._reduce("max", f"max({self._name})", bool(finite_only))

    def len(self) -> "Scalar":  # noqa: A003 - the lazy counterpart of len()
        """Number of values (an int ``Scalar``)."""
        return self._reduce("len", f"len({self._name})")

    def mean(self) -> "Scalar":
        """``sum / len`` from one shared execution (NaN for no values)."""
        s = self._reduce("sum", f"sum({self._name})")
        n = self._reduce("len", f"len({self._name})")
        return Scalar(self._dataset, f"mean({self._name})", parts=s._parts + n._parts, dtype="float64",
                      combine=_mean)

    def histogram(self, *, bins: Any, range: Optional[Sequence[float]] = None,  # noqa: A002 - API-33 name
                  weights: Optional["ParticleArray"] = None, density: bool = False) -> "ParticleHistogram":
        """1-D histogram (API-33): an integer ``bins`` needs ``range`` (``linspace`` edges), an
        array ``bins`` gives the edges. ``density`` is applied after the reduction."""
        edges = pl.histogram_edges(bins, range)
        wfield = None
        if weights is not None:
            if not isinstance(weights, ParticleArray):
                raise TypeError(f"weights must be a ParticleArray, got {type(weights).__name__}")
            self._check_operand(weights)
            wfield = weights._field
        frag = pl.histogram_plan(self._step(), self._chunks, self._field, edges, self._new_field(), weights=wfield,
                                 alloc=self._dataset._graph.alloc, world_size=self._dataset.world_size,
                                 fan_in=_fan_in(), producers=self._producers(), name=f"particle_hist_f{self._field}")
        return ParticleHistogram(self._dataset, f"histogram({self._name})", field=frag.out_field, fragment=frag,
                                 edges=np.asarray(edges, dtype=np.float64), density=bool(density))

    def topk(self, k: int) -> "TopK":
        """The ``k`` most frequent finite values with their counts (API-31, LOW-20); needs an
        array that is directly a backend field."""
        if self._source is None:
            raise ValueError(f"topk requires a backend particle field; {self._name!r} is derived")
        ds = self._dataset
        frag = pl.topk_plan(self._step(), self._chunks, self._species, self._source, k, ds._graph.alloc(),
                            alloc=ds._graph.alloc, world_size=ds.world_size, fan_in=_fan_in(),
                            name=f"particle_topk_f{self._field}")
        return TopK(ds, f"topk({self._name}, {k})", field=frag.out_field, fragment=frag, k=int(k))

    def astype(self, dtype: Any) -> "ParticleArray":
        """float32 or float64, applied when the chunks are materialized (API-29)."""
        try:
            target = np.dtype(dtype).name
        except TypeError:
            target = None
        if target not in ("float32", "float64"):
            raise TypeError(f"particle arrays cast to float32 or float64, got {dtype!r}")
        return self._same(_dtype=target, _name=f"{self._name}.astype({target})")

    def _materialize(self, results: Any, opts: Dict[str, Any]) -> Any:
        return self._materialize_chunks(results, opts, np.dtype(self._dtype))


class ParticleMask(_ParticleValue):
    """A boolean particle mask (API-32): ``&`` with masks of the same lineage, ``count()``,
    and ``values[mask]``. Materializes as boolean chunks."""

    _kind = "ParticleMask"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Each mask is its own selection: arrays filtered by it stay combinable.
        self._selection = ("mask", self._field)

    @property
    def dtype(self) -> str:
        return "bool"

    @property
    def domain(self) -> str:
        return f"ParticleMask(chunks={self._chunks})"

    def __and__(self, other: Any) -> "ParticleMask":
        if not isinstance(other, ParticleMask):
            raise TypeError(f"'&' combines particle masks, got {type(other).__name__}")
        self._check_operand(other)
        ds = self._dataset
        out = ds._graph.alloc()
        frag = pl.and_plan(self._step(), self._chunks, [self._field, other._field], ds._graph.alloc, out,
                           producers=ds._graph.producers, name=f"particle_and_f{out}")
        return ParticleMask(ds, f"({self._name} & {other._name})", field=out, fragment=frag, species=self._species,
                            chunks=self._chunks, lineage=self._lineage)

    __rand__ = __and__

    def _arith_refused(self, *_: Any) -> Any:
        raise TypeError("particle masks support only '&', filtering and count()")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _arith_refused
    __truediv__ = __rtruediv__ = __pow__ = __lt__ = __le__ = __gt__ = __ge__ = _arith_refused
    __neg__ = _arith_refused

    def count(self) -> "Scalar":
        """Number of true entries (an int ``Scalar``)."""
        ds = self._dataset
        frag = pl.reduce_plan(self._step(), self._chunks, "count", self._field, ds._graph.alloc(),
                              alloc=ds._graph.alloc, world_size=ds.world_size, fan_in=_fan_in(),
                              producers=ds._graph.producers, name=f"particle_count_f{self._field}")
        return Scalar(ds, f"count({self._name})", parts=[frag], dtype="int64")

    def _materialize(self, results: Any, opts: Dict[str, Any]) -> Any:
        return self._materialize_chunks(results, opts, np.bool_)


Mask = ParticleMask


def _mean(parts: List[float]) -> float:
    total, n = parts
    return float(total) / n if n else math.nan


class Scalar(LazyValue):
    """A lazy number (API-34): ``float()``, ``int()`` and truth tests refuse with a
    ``TypeError``; ``compute()`` returns a Python ``float`` (or ``int`` for counts)."""

    _kind = "Scalar"

    def __init__(self, dataset: Any, name: str, *, parts: List[lw.Fragment], dtype: str,
                 combine: Optional[Callable[[List[Any]], Any]] = None) -> None:
        super().__init__(dataset, name, field=parts[0].out_field, fragment=parts[0])
        for frag in parts[1:]:
            dataset._graph.record(frag.out_field, frag.tail)
        self._parts = list(parts)
        self._dtype = dtype
        self._combine = combine

    @property
    def dtype(self) -> str:
        return self._dtype

    @property
    def domain(self) -> str:
        return "Scalar"

    def _targets(self) -> List[Tuple[int, Any]]:
        return [(f.out_field, f.tail) for f in self._parts]

    def _refuse(self, what: str) -> TypeError:
        return TypeError(f"{what} of a lazy Scalar ({self._name}) is not known before execution; call compute() "
                         "first")

    def __float__(self) -> float:
        raise self._refuse("float()")

    def __int__(self) -> int:
        raise self._refuse("int()")

    def __index__(self) -> int:
        raise self._refuse("int()")

    def __bool__(self) -> bool:
        raise self._refuse("the truth value")

    def compute(self, *, progress: Optional[bool] = None, **opts: Any) -> Any:
        """The value: ``float`` (``int`` for counts and lengths). Takes no options."""
        if opts:
            raise TypeError(f"Scalar.compute() takes no options, got: {', '.join(sorted(opts))}")
        return compute(self, progress=progress)

    def _materialize(self, results: Any, opts: Dict[str, Any]) -> Any:
        step = self._dataset._particle_step()
        values = []
        for frag in self._parts:
            (arr,) = results.arrays([results.chunk(frag.out_field, step, 0, 0)])
            arr = np.asarray(arr).reshape(-1)
            is_int = arr.dtype.kind in "iu"
            if arr.size == 0:
                values.append(0 if is_int else math.nan)
            else:
                values.append(int(arr[0]) if is_int else float(arr[0]))
        if self._combine is not None:
            return self._combine(values)
        return int(values[0]) if self._dtype == "int64" else float(values[0])


class TopK(LazyValue):
    """The ``k`` most frequent values of a particle field (API-31) -> :class:`TopKResult`."""

    _kind = "TopK"

    def __init__(self, dataset: Any, name: str, *, field: int, fragment: lw.Fragment, k: int) -> None:
        super().__init__(dataset, name, field=field, fragment=fragment)
        self._k = k

    @property
    def k(self) -> int:
        return self._k

    @property
    def dtype(self) -> str:
        return "float64"

    @property
    def domain(self) -> str:
        return f"TopK(k={self._k})"

    def _materialize(self, results: Any, opts: Dict[str, Any]) -> TopKResult:
        step = self._dataset._particle_step()
        (arr,) = results.arrays([results.chunk(self._field, step, 0, 0)])
        arr = np.asarray(arr, dtype=np.float64).reshape(-1)
        k = self._k
        if arr.size < 2 * k:
            return TopKResult(np.empty(0, dtype=np.float64), np.empty(0, dtype=np.float64))
        return TopKResult(arr[:k].copy(), arr[k:2 * k].copy())


class ParticleHistogram(Histogram):
    """A particle histogram (API-33): edges known before execution; ``density`` applied
    client-side with the OP-PART-7 formula."""

    def __init__(self, dataset: Any, name: str, *, field: int, fragment: lw.Fragment, edges: np.ndarray,
                 density: bool) -> None:
        super().__init__(dataset, name, field=field, fragment=fragment, edges=edges)
        self._density = density

    def _materialize(self, results: Any, opts: Dict[str, Any]) -> HistogramResult:
        step = self._dataset._particle_step()
        (counts,) = results.arrays([results.chunk(self._field, step, 0, 0)])
        counts = np.asarray(counts, dtype=np.float64)
        if self._density:
            widths = np.diff(self._edges)
            total = float(counts.sum())
            if total > 0:
                counts = counts.copy()
                positive = widths > 0
                counts[positive] = counts[positive] / (total * widths[positive])
        return HistogramResult(counts, self._edges.copy())
