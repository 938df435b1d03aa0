"""Client-side plan construction for AMR operators (§11 of the functional contract).

This module turns mesh operators into :mod:`kangaroo.ir` plan fragments given
only client-side knowledge: a :class:`RunMeta`, field ids, the world size and
the home-rank function (API-4). It holds

* the RunMeta model (DATA-1..7) with its JSON form, and its synthesis from a
  backend metadata dictionary (COORD-4, META-1);
* axis and plane helpers (AXIS-1..4) and coordinate maps (COORD-1..3);
* AMR coverage (COV-3..6), plane indices (LOW-3), slab ranges (LOW-4) and
  block selection (LOW-2);
* the lowering of slices (LOW-9), projections (LOW-10), mesh histograms
  (LOW-11), field expressions (LOW-12), gradients and vorticity (LOW-13) and
  particle CIC projections (LOW-16), with the explicit client-side failures of
  §13 (``ValueError`` for invalid values, ``TypeError`` for wrong types).

Each lowering function returns a :class:`Fragment`: its stages (ordered among
themselves and after the producers of the fields it reads, LOW-1) and where
the result lives. ``Fragment.plan()`` gives a submittable :class:`ir.Plan`.
Nothing here runs a kernel (API-18).
"""

from __future__ import annotations

import json
import math
import numbers
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

from . import ir

__all__ = [
    "AXIS_NAMES",
    "axis_index",
    "plane_axes",
    "plane_name",
    "BlockBox",
    "LevelGeom",
    "LevelMeta",
    "StepMeta",
    "RunMeta",
    "runmeta_from_metadata",
    "cell_index",
    "index_range",
    "cumulative_ratio",
    "coarsen_box",
    "volume_coverage",
    "plane_indices",
    "plane_coverage",
    "slab_ranges",
    "slab_coverage",
    "select_blocks",
    "parse_resolution",
    "parse_rect",
    "PlaneGeometry",
    "plane_geometry",
    "FieldAllocator",
    "Fragment",
    "slice_plan",
    "projection_plan",
    "histogram1d_plan",
    "histogram2d_plan",
    "field_expr_plan",
    "gradient_plan",
    "vorticity_plan",
    "particle_cic_projection_plan",
    "HISTOGRAM_WEIGHT_MODES",
]

Triple = Tuple[int, int, int]


# ---------------------------------------------------------------------------
# axes and planes (AXIS-1..2)

#: Accepted axis spellings (AXIS-1): names in either case and the indices 0..2.
AXIS_NAMES = {"x": 0, "y": 1, "z": 2, "X": 0, "Y": 1, "Z": 2}

_PLANE_AXES = {0: (1, 2), 1: (0, 2), 2: (0, 1)}
_PLANE_NAMES = {0: "yz", 1: "xz", 2: "xy"}


def axis_index(axis: Any) -> int:
    """Axis index of ``x/y/z`` (either case) or ``0/1/2`` (AXIS-1); anything else is a ``ValueError``.

    Booleans are rejected although they are integers: ``axis=True`` is a
    mistake, not the y axis."""
    if isinstance(axis, str):
        if axis in AXIS_NAMES:
            return AXIS_NAMES[axis]
    elif not isinstance(axis, bool):
        try:
            i = operator.index(axis)
        except TypeError:
            i = None
        if i is not None and 0 <= i <= 2:
            return i
    raise ValueError(f"invalid axis {axis!r}: expected one of x, y, z (either case) or 0, 1, 2")


def plane_axes(axis: Any) -> Tuple[int, int]:
    """In-plane axes ``(u, v)`` for normal ``axis``: the other two in increasing order (AXIS-2)."""
    return _PLANE_AXES[axis_index(axis)]


def plane_name(axis: Any) -> str:
    """``"yz"``, ``"xz"`` or ``"xy"`` for normal axis x, y or z (AXIS-2)."""
    return _PLANE_NAMES[axis_index(axis)]


# ---------------------------------------------------------------------------
# small value checks


# The same integer rule as the plan model's.
_int = ir._as_int


def _real(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{what} must be finite, got {v}")
    return v


def _seq(value: Any, what: str) -> List[Any]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise TypeError(f"{what} must be a sequence, got {type(value).__name__}")
    return list(value)


def _triple(value: Any, what: str, conv: Callable[[Any, str], Any]) -> tuple:
    items = _seq(value, what)
    if len(items) != 3:
        raise ValueError(f"{what} must have exactly 3 entries, got {len(items)}")
    return tuple(conv(v, f"{what} entry") for v in items)


def _bool(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if type(value).__name__ == "bool_":  # numpy.bool_
        return bool(value)
    if isinstance(value, numbers.Integral) and int(value) in (0, 1):
        return bool(int(value))
    raise TypeError(f"{what} must be a boolean (or 0/1), got {value!r}")


def parse_resolution(resolution: Any) -> Tuple[int, int]:
    """``(nu, nv)`` from a pair of positive integers or the string ``"nu,nv"`` (API-15, ERR-33/34).

    Malformed or non-positive values raise ``ValueError``
    (``resolution must be positive``)."""
    if isinstance(resolution, str):
        parts = [p.strip() for p in resolution.split(",")]
        if len(parts) != 2:
            raise ValueError(f"malformed resolution {resolution!r}: expected 'nu,nv'")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"malformed resolution {resolution!r}: expected two integers 'nu,nv'") from None
    else:
        try:
            items = _seq(resolution, "resolution")
        except TypeError:
            raise ValueError(f"malformed resolution {resolution!r}: expected (nu, nv)") from None
        if len(items) != 2:
            raise ValueError(f"malformed resolution {resolution!r}: expected (nu, nv)")
        values = []
        for v in items:
            if isinstance(v, bool):
                raise ValueError(f"malformed resolution {resolution!r}: entries must be integers")
            try:
                values.append(operator.index(v))
            except TypeError:
                raise ValueError(f"malformed resolution {resolution!r}: entries must be integers") from None
    if values[0] <= 0 or values[1] <= 0:
        raise ValueError(f"resolution must be positive, got {tuple(values)}")
    return values[0], values[1]


def parse_rect(rect: Any) -> Tuple[float, float, float, float]:
    """``(u0, v0, u1, v1)`` as given (AXIS-3); a degenerate rect (zero width or
    height) or a non-finite corner raises ``ValueError`` (ERR-34)."""
    items = _seq(rect, "rect")
    if len(items) != 4:
        raise ValueError(f"rect must be (u0, v0, u1, v1), got {len(items)} values")
    u0, v0, u1, v1 = (_real(v, "rect entry") for v in items)
    if u0 == u1 or v0 == v1:
        raise ValueError(f"degenerate rect {(u0, v0, u1, v1)}: width and height must be non-zero")
    return u0, v0, u1, v1


def _sorted_rect(rect: Tuple[float, float, float, float]) -> Tuple[float, float, float, float]:
    u0, v0, u1, v1 = rect
    return min(u0, u1), max(u0, u1), min(v0, v1), max(v0, v1)


def _axis_bounds(bounds: Any) -> Tuple[float, float]:
    """Normal-axis bounds ``(lo, hi)``: finite with ``hi > lo`` (ERR-34)."""
    items = _seq(bounds, "axis bounds")
    if len(items) != 2:
        raise ValueError(f"axis bounds must be (lo, hi), got {len(items)} values")
    lo, hi = (_real(v, "axis bound") for v in items)
    if not hi > lo:
        raise ValueError(f"axis bounds must satisfy hi > lo, got ({lo}, {hi})")
    return lo, hi


# ---------------------------------------------------------------------------
# RunMeta model (DATA-1..7)


class BlockBox(NamedTuple):
    """Inclusive index box ``lo..hi`` (DATA-5). A plain tuple ``(lo, hi)``, so it
    can be used directly as a coverage box."""

    lo: Triple
    hi: Triple

    @classmethod
    def of(cls, value: Any, what: str = "box") -> "BlockBox":
        if isinstance(value, Mapping):
            lo, hi = value.get("lo"), value.get("hi")
            if lo is None or hi is None:
                raise ValueError(f"{what} needs 'lo' and 'hi'")
        else:
            corners = _seq(value, what)
            if len(corners) != 2:
                raise ValueError(f"{what} must be [lo, hi], got {value!r}")
            lo, hi = corners
        return cls(_triple(lo, f"{what} lo", _int), _triple(hi, f"{what} hi", _int))

    @property
    def shape(self) -> Triple:
        return tuple(h - l + 1 for l, h in zip(self.lo, self.hi))  # type: ignore[return-value]

    @property
    def cells(self) -> int:
        n = 1
        for e in self.shape:
            n *= e
        return n

    def to_json(self) -> List[List[int]]:
        return [list(self.lo), list(self.hi)]


@dataclass(frozen=True)
class LevelGeom:
    """Geometry of one level (DATA-4)."""

    dx: Tuple[float, float, float]
    x0: Tuple[float, float, float]
    index_origin: Triple = (0, 0, 0)
    is_periodic: Tuple[bool, bool, bool] = (False, False, False)
    ref_ratio: Triple = (1, 1, 1)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dx", _triple(self.dx, "dx", _real))
        object.__setattr__(self, "x0", _triple(self.x0, "x0", _real))
        object.__setattr__(self, "index_origin", _triple(self.index_origin, "index_origin", _int))
        object.__setattr__(self, "is_periodic", _triple(self.is_periodic, "is_periodic", _bool))
        rr = self.ref_ratio
        if isinstance(rr, numbers.Integral) and not isinstance(rr, bool):
            rr = (rr, rr, rr)
        rr = _triple(rr, "ref_ratio", _int)
        if any(r < 1 for r in rr):
            raise ValueError(f"ref_ratio entries must be >= 1, got {list(rr)}")
        object.__setattr__(self, "ref_ratio", rr)

    def cell_index(self, axis: int, x: float) -> int:
        """COORD-2 on this level."""
        return cell_index(self, axis, x)

    def lower_edge(self, axis: int, i: int) -> float:
        """COORD-1: low edge of cell ``i`` on ``axis``."""
        return self.x0[axis] + (i - self.index_origin[axis]) * self.dx[axis]

    def to_json(self) -> Dict[str, Any]:
        return {
            "dx": list(self.dx),
            "x0": list(self.x0),
            "index_origin": list(self.index_origin),
            "is_periodic": list(self.is_periodic),
            "ref_ratio": list(self.ref_ratio),
        }


@dataclass(frozen=True)
class LevelMeta:
    """One level: geometry and its blocks; list position is the block index (DATA-3)."""

    geom: LevelGeom
    boxes: Tuple[BlockBox, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.geom, LevelGeom):
            raise TypeError(f"LevelMeta.geom must be a LevelGeom, got {type(self.geom).__name__}")
        boxes = tuple(BlockBox.of(b, f"box {i}") for i, b in enumerate(_seq(self.boxes, "boxes")))
        for i, b in enumerate(boxes):
            if any(e <= 0 for e in b.shape):
                raise ValueError(f"box {i} {b.to_json()} has no positive extent on every axis (DATA-5)")
        object.__setattr__(self, "boxes", boxes)

    def to_json(self) -> Dict[str, Any]:
        return {"geom": self.geom.to_json(), "boxes": [b.to_json() for b in self.boxes]}


@dataclass(frozen=True)
class StepMeta:
    """One step: a label and its levels, coarsest first (DATA-2)."""

    step: int
    levels: Tuple[LevelMeta, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "step", _int(self.step, "step"))
        levels = tuple(_seq(self.levels, "levels"))
        for lv in levels:
            if not isinstance(lv, LevelMeta):
                raise TypeError(f"StepMeta.levels holds LevelMeta objects, got {type(lv).__name__}")
        object.__setattr__(self, "levels", levels)

    @property
    def finest_level(self) -> int:
        return len(self.levels) - 1

    def to_json(self) -> Dict[str, Any]:
        return {"step": self.step, "levels": [lv.to_json() for lv in self.levels]}


@dataclass(frozen=True)
class RunMeta:
    """Run metadata (DATA-1): steps, particle species chunk counts and ``coord_sys``.

    ``mapped_mesh`` is the metadata flag of COORD-5. It is not part of the
    DATA-7 document (the runtime does not need it); the SDK keeps it here so
    that lowering can refuse operators on mapped meshes. Construction checks
    unique step labels (DATA-6) and refinement alignment (COV-3)."""

    steps: Tuple[StepMeta, ...]
    particle_species: Mapping[str, int] = field(default_factory=dict)
    coord_sys: int = 0
    mapped_mesh: bool = False

    def __post_init__(self) -> None:
        steps = tuple(_seq(self.steps, "steps"))
        for s in steps:
            if not isinstance(s, StepMeta):
                raise TypeError(f"RunMeta.steps holds StepMeta objects, got {type(s).__name__}")
        labels = [s.step for s in steps]
        if len(set(labels)) != len(labels):
            raise ValueError(f"step labels must be unique, got {labels} (DATA-6)")
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "particle_species", _species(self.particle_species))
        cs = _int(self.coord_sys, "coord_sys")
        if cs not in (0, 1, 2):
            raise ValueError(f"coord_sys must be 0, 1 or 2, got {cs}")
        object.__setattr__(self, "coord_sys", cs)
        object.__setattr__(self, "mapped_mesh", _bool(self.mapped_mesh, "mapped_mesh"))
        for s in steps:
            _check_alignment(s)

    def step_meta(self, step: Optional[int] = None) -> StepMeta:
        """The step labelled ``step`` (DATA-6); ``None``: the only (or first) step."""
        if not self.steps:
            raise ValueError("RunMeta has no steps")
        if step is None:
            return self.steps[0]
        step = _int(step, "step")
        for s in self.steps:
            if s.step == step:
                return s
        raise ValueError(f"step {step} is not in the RunMeta (labels: {[s.step for s in self.steps]})")

    def to_dict(self) -> Dict[str, Any]:
        """The DATA-7 document."""
        return {
            "steps": [s.to_json() for s in self.steps],
            "particle_species": dict(self.particle_species),
            "coord_sys": self.coord_sys,
        }

    def to_json(self, **dumps_kwargs: Any) -> str:
        dumps_kwargs.setdefault("allow_nan", False)
        return json.dumps(self.to_dict(), **dumps_kwargs)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], *, mapped_mesh: bool = False) -> "RunMeta":
        """Parses a DATA-7 document; a missing required key raises ``ValueError`` naming it."""
        if not isinstance(doc, Mapping):
            raise TypeError(f"a RunMeta document must be an object, got {type(doc).__name__}")
        steps = []
        for si, sd in enumerate(_seq(_need(doc, "steps", "RunMeta"), "steps")):
            where = f"steps[{si}]"
            label = _need(sd, "step", where)
            levels = []
            for li, ld in enumerate(_seq(_need(sd, "levels", where), f"{where}.levels")):
                lwhere = f"{where}.levels[{li}]"
                gd = _need(ld, "geom", lwhere)
                gwhere = f"{lwhere}.geom"
                geom = LevelGeom(
                    dx=_need(gd, "dx", gwhere),
                    x0=_need(gd, "x0", gwhere),
                    index_origin=gd.get("index_origin") or (0, 0, 0),
                    is_periodic=gd.get("is_periodic") or (False, False, False),
                    ref_ratio=_need(gd, "ref_ratio", gwhere),
                )
                levels.append(LevelMeta(geom, _need(ld, "boxes", lwhere)))
            steps.append(StepMeta(label, tuple(levels)))
        return cls(
            tuple(steps),
            particle_species=doc.get("particle_species") or {},
            coord_sys=doc.get("coord_sys", 0) if doc.get("coord_sys") is not None else 0,
            mapped_mesh=mapped_mesh,
        )

    @classmethod
    def from_json(cls, text: str, **kwargs: Any) -> "RunMeta":
        return cls.from_dict(json.loads(text), **kwargs)


def _need(mapping: Any, key: str, where: str) -> Any:
    if not isinstance(mapping, Mapping):
        raise TypeError(f"{where} must be an object, got {type(mapping).__name__}")
    if key not in mapping:
        raise ValueError(f"RunMeta: missing key '{key}' in {where}")
    return mapping[key]


def _species(value: Any) -> Dict[str, int]:
    """DATA-7: a mapping name -> count or a list of ``[name, count]`` pairs."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        items = list(value.items())
    else:
        items = []
        for pair in _seq(value, "particle_species"):
            p = _seq(pair, "particle_species entry")
            if len(p) != 2:
                raise ValueError(f"particle_species entries must be [name, count] pairs, got {pair!r}")
            items.append((p[0], p[1]))
    out: Dict[str, int] = {}
    for name, count in items:
        if not isinstance(name, str):
            raise TypeError(f"particle species names must be strings, got {name!r}")
        out[name] = _int(count, f"particle_species[{name!r}]")
    return out


def _check_alignment(step: StepMeta) -> None:
    """COV-3: every box of level F >= 1 aligned to ``ref_ratio[F-1]`` (ERR-48)."""
    for F in range(1, len(step.levels)):
        ratio = step.levels[F - 1].geom.ref_ratio
        origin = step.levels[F].geom.index_origin
        for b, box in enumerate(step.levels[F].boxes):
            for a in range(3):
                if (box.lo[a] - origin[a]) % ratio[a] or (box.hi[a] + 1 - origin[a]) % ratio[a]:
                    raise ValueError(
                        f"fine box not aligned to refinement ratio: step {step.step} level {F} block {b} "
                        f"{box.to_json()} (ratio {list(ratio)})"
                    )


# ---------------------------------------------------------------------------
# RunMeta synthesis from backend metadata (COORD-4)


def _box_from_meta(value: Any, spacedim: int, what: str) -> BlockBox:
    """A META-1 box ``((lo), (hi))`` (or ``{"lo", "hi"}``) with ``spacedim`` or 3
    components; axes beyond ``spacedim`` become the single cell ``[0, 0]``."""
    if isinstance(value, Mapping):
        lo, hi = value.get("lo"), value.get("hi")
    else:
        corners = _seq(value, what)
        if len(corners) < 2:
            raise ValueError(f"{what} must be (lo, hi), got {value!r}")
        lo, hi = corners[0], corners[1]  # a third entry (index type) is the backend's concern
    lo = [_int(v, f"{what} lo") for v in _seq(lo, f"{what} lo")]
    hi = [_int(v, f"{what} hi") for v in _seq(hi, f"{what} hi")]
    if len(lo) < spacedim or len(hi) < spacedim:
        raise ValueError(f"{what} has fewer than {spacedim} components: {value!r}")
    lo3 = tuple(lo[a] if a < spacedim else 0 for a in range(3))
    hi3 = tuple(hi[a] if a < spacedim else 0 for a in range(3))
    return BlockBox(lo3, hi3)  # type: ignore[arg-type]


def runmeta_from_metadata(
    meta: Mapping[str, Any],
    *,
    step: int = 0,
    is_periodic: Optional[Sequence[bool]] = None,
    particle_species: Optional[Mapping[str, int]] = None,
) -> RunMeta:
    """Synthesizes a :class:`RunMeta` from a META-1 metadata dictionary (COORD-4).

    Per level ``L``: ``dx[a] = cell_size[L][a]``, ``x0 = prob_lo``,
    ``index_origin = prob_domain[L].lo``, ``ref_ratio[a] = n[L+1][a] / n[L][a]``
    from the cell counts of consecutive ``prob_domain`` boxes (must divide
    exactly, else ``ValueError``; 1 on the finest level), blocks from
    ``level_boxes``. Axes beyond ``spacedim`` (``len(prob_lo)`` unless the
    metadata names it) get ``x0 = 0``, ``dx = 1``, index range ``[0, 0]``,
    ratio 1 and no periodicity. ``is_periodic`` overrides the metadata key of
    that name (default all false). The single step is labelled ``step``;
    ``coord_sys`` and ``mapped_mesh`` come from the metadata.
    ``particle_species`` holds the chunk counts the caller could read (types
    whose count query failed are simply left out).
    """
    if not isinstance(meta, Mapping) or not meta:
        raise ValueError("Backend does not provide metadata for RunMeta construction")
    for key in ("prob_lo", "cell_size", "prob_domain", "level_boxes"):
        if key not in meta:
            raise ValueError(f"metadata lacks '{key}', needed for RunMeta construction (COORD-4)")
    prob_lo = [_real(v, "prob_lo entry") for v in _seq(meta["prob_lo"], "prob_lo")]
    spacedim = _int(meta["spacedim"], "spacedim") if meta.get("spacedim") is not None else len(prob_lo)
    if not 1 <= spacedim <= 3 or len(prob_lo) < spacedim:
        raise ValueError(f"metadata describes an unsupported dimensionality (spacedim={spacedim}, prob_lo={prob_lo})")
    cell_size = _seq(meta["cell_size"], "cell_size")
    domains = _seq(meta["prob_domain"], "prob_domain")
    level_boxes = _seq(meta["level_boxes"], "level_boxes")
    nlev = len(level_boxes)
    if meta.get("finest_level") is not None:
        nlev_meta = _int(meta["finest_level"], "finest_level") + 1
        if nlev_meta != nlev:
            raise ValueError(f"metadata lists boxes for {nlev} levels but finest_level is {nlev_meta - 1}")
    if nlev == 0:
        raise ValueError("metadata lists no levels")
    if len(cell_size) < nlev or len(domains) < nlev:
        raise ValueError(f"metadata needs cell_size and prob_domain for each of its {nlev} levels")

    if is_periodic is None:
        is_periodic = meta.get("is_periodic")
    periodic = [False, False, False]
    if is_periodic is not None:
        flags = _seq(is_periodic, "is_periodic")
        if len(flags) < spacedim:
            raise ValueError(f"is_periodic needs {spacedim} entries, got {len(flags)}")
        for a in range(spacedim):
            periodic[a] = _bool(flags[a], "is_periodic entry")

    dom = [_box_from_meta(domains[L], spacedim, f"prob_domain[{L}]") for L in range(nlev)]
    counts = [dom[L].shape for L in range(nlev)]
    for L, c in enumerate(counts):
        if any(n <= 0 for n in c):
            raise ValueError(f"prob_domain[{L}] is empty: {dom[L].to_json()}")

    levels = []
    for L in range(nlev):
        sizes = _seq(cell_size[L], f"cell_size[{L}]")
        if len(sizes) < spacedim:
            raise ValueError(f"cell_size[{L}] has fewer than {spacedim} entries")
        dx = [1.0, 1.0, 1.0]
        x0 = [0.0, 0.0, 0.0]
        for a in range(spacedim):
            dx[a] = _real(sizes[a], f"cell_size[{L}][{a}]")
            if dx[a] <= 0:
                raise ValueError(f"cell_size[{L}][{a}] must be positive, got {dx[a]}")
            x0[a] = prob_lo[a]
        ratio = [1, 1, 1]
        if L + 1 < nlev:
            for a in range(spacedim):
                fine, coarse = counts[L + 1][a], counts[L][a]
                if fine % coarse:
                    raise ValueError(
                        f"refinement ratio between levels {L} and {L + 1} on axis {a} is not an exact integer "
                        f"({fine} / {coarse} cells) (COORD-4)"
                    )
                ratio[a] = fine // coarse
        geom = LevelGeom(dx=tuple(dx), x0=tuple(x0), index_origin=dom[L].lo, is_periodic=tuple(periodic),
                         ref_ratio=tuple(ratio))
        boxes = [_box_from_meta(b, spacedim, f"level_boxes[{L}][{i}]") for i, b in enumerate(_seq(level_boxes[L], f"level_boxes[{L}]"))]
        levels.append(LevelMeta(geom, tuple(boxes)))
    coord_sys = meta.get("coord_sys", 0)
    return RunMeta(
        (StepMeta(step, tuple(levels)),),
        particle_species=dict(particle_species or {}),
        coord_sys=0 if coord_sys is None else coord_sys,
        mapped_mesh=bool(meta.get("mapped_mesh", False)),
    )


# ---------------------------------------------------------------------------
# plane geometry defaults (API-15)


class PlaneGeometry(NamedTuple):
    """Defaults of a plane operator (API-15): ``rect = (u0, v0, u1, v1)``,
    ``resolution = (nu, nv)``, ``labels = (u, v)`` axis names, ``plane`` like
    ``"xz"``, the normal ``axis_index`` and its ``axis_bounds``."""

    coord: float
    rect: Tuple[float, float, float, float]
    resolution: Tuple[int, int]
    labels: Tuple[str, str]
    plane: str
    axis_index: int
    axis_bounds: Tuple[float, float]


def plane_geometry(
    meta: Mapping[str, Any],
    *,
    axis: Any,
    level: int = 0,
    coord: Optional[float] = None,
    zoom: float = 1.0,
    resolution: Any = None,
) -> PlaneGeometry:
    """API-15 from a META-1 dictionary at ``level``.

    Per axis, with ``n`` the cells of ``prob_domain[level]`` and ``dx`` the cell
    size (``(prob_hi - prob_lo) / max(1, n)`` when that is non-finite or 0):
    bounds ``(prob_lo, prob_lo + n*dx)`` (``(lo, lo + (n or 1))`` when unusable);
    axes beyond ``spacedim`` are the unit cell ``(0, 1)`` (COORD-4). The default
    coord is the center of the middle cell, the default resolution the cell
    counts; ``zoom > 0`` shrinks the rect about its center. Bad zooms and
    resolutions raise ``ValueError`` (ERR-33)."""
    a = axis_index(axis)
    if isinstance(zoom, bool) or not isinstance(zoom, numbers.Real) or not math.isfinite(zoom) or zoom <= 0:
        raise ValueError("--zoom must be a positive number")
    if not isinstance(meta, Mapping) or not meta:
        raise ValueError("Backend does not provide metadata for plane geometry")
    prob_lo = list(_seq(meta.get("prob_lo", []), "prob_lo"))
    prob_hi = list(_seq(meta.get("prob_hi", []), "prob_hi"))
    spacedim = _int(meta["spacedim"], "spacedim") if meta.get("spacedim") is not None else len(prob_lo)
    L = _int(level, "level")
    domains = _seq(meta.get("prob_domain", []), "prob_domain")
    sizes = _seq(meta.get("cell_size", []), "cell_size")
    if not 0 <= L < len(domains) or L >= len(sizes):
        raise ValueError(f"level {L} is not described by the metadata")
    dom = _box_from_meta(domains[L], spacedim, f"prob_domain[{L}]")
    cell = _seq(sizes[L], f"cell_size[{L}]")
    bounds, dxs, dlo, dhi = [], [], [], []
    for ax in range(3):
        if ax >= spacedim:
            bounds.append((0.0, 1.0))
            dxs.append(1.0)
            dlo.append(0)
            dhi.append(0)
            continue
        n = dom.hi[ax] - dom.lo[ax] + 1
        lo = float(prob_lo[ax])
        dx = float(cell[ax]) if ax < len(cell) else float("nan")
        if not math.isfinite(dx) or dx == 0:
            hi_meta = float(prob_hi[ax]) if ax < len(prob_hi) else float("nan")
            dx = (hi_meta - lo) / max(1, n)
        hi = lo + n * dx
        if not (math.isfinite(lo) and math.isfinite(hi)) or hi == lo:
            hi = lo + (n or 1)
            dx = float("nan")
        bounds.append((lo, hi))
        dxs.append(dx)
        dlo.append(dom.lo[ax])
        dhi.append(dom.hi[ax])
    u, v = _PLANE_AXES[a]
    if coord is None:
        if math.isfinite(dxs[a]) and dxs[a] != 0:
            coord = bounds[a][0] + ((dhi[a] - dlo[a]) // 2 + 0.5) * dxs[a]
        else:
            coord = 0.5 * (bounds[a][0] + bounds[a][1])
    coord = _real(coord, "coord")
    if resolution is None:
        res = (max(1, dhi[u] - dlo[u] + 1), max(1, dhi[v] - dlo[v] + 1))
    else:
        res = parse_resolution(resolution)
    cu, cv = 0.5 * (bounds[u][0] + bounds[u][1]), 0.5 * (bounds[v][0] + bounds[v][1])
    hu, hv = 0.5 * (bounds[u][1] - bounds[u][0]) / zoom, 0.5 * (bounds[v][1] - bounds[v][0]) / zoom
    rect = (cu - hu, cv - hv, cu + hu, cv + hv)
    names = "xyz"
    return PlaneGeometry(coord, rect, res, (names[u], names[v]), _PLANE_NAMES[a], a, bounds[a])


# ---------------------------------------------------------------------------
# coordinates (COORD-1..3)


def cell_index(geom: LevelGeom, axis: int, x: float) -> int:
    """COORD-2: ``floor((x - x0) / dx) + index_origin``; ``index_origin`` when ``dx == 0``."""
    dx = geom.dx[axis]
    if dx == 0:
        return geom.index_origin[axis]
    return math.floor((x - geom.x0[axis]) / dx) + geom.index_origin[axis]


def index_range(geom: LevelGeom, axis: int, lo: float, hi: float) -> Tuple[int, int]:
    """COORD-3: the inclusive index range of the half-open interval ``[lo, hi)`` (either order)."""
    a, b = min(lo, hi), max(lo, hi)
    i1 = cell_index(geom, axis, a)
    i2 = cell_index(geom, axis, math.nextafter(b, -math.inf))
    return min(i1, i2), max(i1, i2)


# ---------------------------------------------------------------------------
# coverage (COV-3..6), plane indices (LOW-3), slab ranges (LOW-4), blocks (LOW-2)


def _levels(step: Union[StepMeta, Sequence[LevelMeta]]) -> Sequence[LevelMeta]:
    return step.levels if isinstance(step, StepMeta) else step


def cumulative_ratio(step: Union[StepMeta, Sequence[LevelMeta]], coarse: int, fine: int) -> Triple:
    """COV-3: ``R[a] = prod(ref_ratio[l][a] for l in coarse..fine-1)``."""
    levels = _levels(step)
    r = [1, 1, 1]
    for lv in range(coarse, fine):
        for a in range(3):
            r[a] *= levels[lv].geom.ref_ratio[a]
    return tuple(r)  # type: ignore[return-value]


def coarsen_box(box: Any, step: Union[StepMeta, Sequence[LevelMeta]], fine: int, coarse: int) -> BlockBox:
    """COV-3: a box of level ``fine`` in the index space of level ``coarse <= fine``
    (exact floor division; aligned boxes map to exactly the cells they cover)."""
    levels = _levels(step)
    box = BlockBox.of(box)
    R = cumulative_ratio(levels, coarse, fine)
    of, oc = levels[fine].geom.index_origin, levels[coarse].geom.index_origin
    lo = tuple((box.lo[a] - of[a]) // R[a] + oc[a] for a in range(3))
    hi = tuple((box.hi[a] - of[a] + 1) // R[a] + oc[a] - 1 for a in range(3))
    return BlockBox(lo, hi)  # type: ignore[arg-type]


def volume_coverage(step: Union[StepMeta, Sequence[LevelMeta]], level: int) -> Tuple[BlockBox, ...]:
    """COV-4: every box of every finer level, coarsened to ``level``."""
    levels = _levels(step)
    return tuple(coarsen_box(b, levels, F, level) for F in range(level + 1, len(levels)) for b in levels[F].boxes)


def plane_indices(step: Union[StepMeta, Sequence[LevelMeta]], axis: Any, coord: float) -> List[int]:
    """LOW-3: per-level plane indices of ``coord`` on normal ``axis``.

    ``p[Lf]`` is COORD-2 on the finest level and coarser levels take the cell
    containing that fine cell, ``floor((p[Lf] - origin_Lf) / R) + origin_L``:
    the half-open cell containing ``coord`` on every level (the upper cell at a
    face), so the indices nest and plane coverage stays consistent."""
    levels = _levels(step)
    a = axis_index(axis)
    coord = _real(coord, "coord")
    if not levels:
        return []
    Lf = len(levels) - 1
    pf = cell_index(levels[Lf].geom, a, coord)
    of = levels[Lf].geom.index_origin[a]
    out = []
    for L in range(Lf + 1):
        R = cumulative_ratio(levels, L, Lf)[a]
        out.append((pf - of) // R + levels[L].geom.index_origin[a])
    return out


def plane_coverage(step: Union[StepMeta, Sequence[LevelMeta]], axis: Any, p: Sequence[int], level: int) -> Tuple[BlockBox, ...]:
    """COV-5: finer boxes containing ``p[F]`` on ``axis``, coarsened to ``level``,
    kept when they contain ``p[level]`` and clamped to that single layer."""
    levels = _levels(step)
    a = axis_index(axis)
    out = []
    for F in range(level + 1, len(levels)):
        for b in levels[F].boxes:
            if not b.lo[a] <= p[F] <= b.hi[a]:
                continue
            c = coarsen_box(b, levels, F, level)
            if not c.lo[a] <= p[level] <= c.hi[a]:
                continue
            lo, hi = list(c.lo), list(c.hi)
            lo[a] = hi[a] = p[level]
            out.append(BlockBox(tuple(lo), tuple(hi)))  # type: ignore[arg-type]
    return tuple(out)


def slab_ranges(step: Union[StepMeta, Sequence[LevelMeta]], axis: Any, bounds: Sequence[float]) -> List[Tuple[int, int]]:
    """LOW-4: COORD-3 of the normal-axis bounds on every level."""
    levels = _levels(step)
    a = axis_index(axis)
    lo, hi = bounds
    return [index_range(lv.geom, a, lo, hi) for lv in levels]


def slab_coverage(step: Union[StepMeta, Sequence[LevelMeta]], axis: Any, r: Sequence[Tuple[int, int]], level: int) -> Tuple[BlockBox, ...]:
    """COV-6: finer boxes overlapping ``r[F]`` on ``axis``, coarsened to ``level``,
    kept when they overlap ``r[level]`` and clipped to it."""
    levels = _levels(step)
    a = axis_index(axis)
    rl0, rl1 = r[level]
    out = []
    for F in range(level + 1, len(levels)):
        f0, f1 = r[F]
        for b in levels[F].boxes:
            if b.hi[a] < f0 or b.lo[a] > f1:
                continue
            c = coarsen_box(b, levels, F, level)
            if c.hi[a] < rl0 or c.lo[a] > rl1:
                continue
            lo, hi = list(c.lo), list(c.hi)
            lo[a] = max(lo[a], rl0)
            hi[a] = min(hi[a], rl1)
            out.append(BlockBox(tuple(lo), tuple(hi)))  # type: ignore[arg-type]
    return tuple(out)


def _clip_axis(box: Any, axis: int, irange: Tuple[int, int]) -> BlockBox:
    box = BlockBox.of(box)
    lo, hi = list(box.lo), list(box.hi)
    lo[axis], hi[axis] = max(lo[axis], irange[0]), min(hi[axis], irange[1])
    return BlockBox(tuple(lo), tuple(hi))  # type: ignore[arg-type]


def _meets(a: BlockBox, b: BlockBox) -> bool:
    return all(a.lo[x] <= b.hi[x] and b.lo[x] <= a.hi[x] for x in range(3))


class CoverageIndex:
    """Coverage boxes bucketed on a grid whose cells are as large as the
    largest box given (coverage or ``blocks``), so a box meets at most eight
    cells and a query costs what the boxes near it cost, not the whole list.
    """

    def __init__(self, coverage: Sequence[Any], blocks: Sequence[Any] = ()) -> None:
        self.boxes = [BlockBox.of(c) for c in coverage]
        every = self.boxes + [BlockBox.of(b) for b in blocks]
        self.cell = tuple(max([1] + [b.hi[x] - b.lo[x] + 1 for b in every]) for x in range(3))
        self.cells: Dict[Tuple[int, int, int], List[int]] = {}
        for i, c in enumerate(self.boxes):
            for key in self._keys(c):
                self.cells.setdefault(key, []).append(i)

    def _keys(self, box: BlockBox) -> Iterable[Tuple[int, int, int]]:
        r = [range(box.lo[x] // self.cell[x], box.hi[x] // self.cell[x] + 1) for x in range(3)]
        return ((i, j, k) for i in r[0] for j in r[1] for k in r[2])

    def meeting(self, box: BlockBox) -> List[BlockBox]:
        found = sorted({i for key in self._keys(box) for i in self.cells.get(key, ())})
        return [self.boxes[i] for i in found if _meets(self.boxes[i], box)]

    def covers(self, box: Any, *, max_pieces: int = 4096) -> bool:
        """True when every cell of ``box`` lies in some coverage box (the boxes
        may overlap): a block an operator masking this coverage gets nothing
        from, so its task and its read can be left out. The box is cut into the parts no coverage box has taken
        yet; past ``max_pieces`` parts the answer is False, which only keeps a
        block that could have gone."""
        box = BlockBox.of(box)
        near = self.meeting(box)
        pending = [box]
        seen = 0
        while pending:
            b = pending.pop()
            c = next((c for c in near if _meets(b, c)), None)
            if c is None:
                return False
            lo, hi = list(b.lo), list(b.hi)
            for x in range(3):  # the parts of b outside c, axis by axis
                if lo[x] < c.lo[x]:
                    plo, phi = list(lo), list(hi)
                    phi[x] = c.lo[x] - 1
                    pending.append(BlockBox(tuple(plo), tuple(phi)))  # type: ignore[arg-type]
                    lo[x] = c.lo[x]
                if hi[x] > c.hi[x]:
                    plo, phi = list(lo), list(hi)
                    plo[x] = c.hi[x] + 1
                    pending.append(BlockBox(tuple(plo), tuple(phi)))  # type: ignore[arg-type]
                    hi[x] = c.hi[x]
            seen += 1
            if seen > max_pieces:
                return False
        return True


def select_blocks(level: LevelMeta, axis: Any, irange: Tuple[int, int], rect: Sequence[float]) -> List[int]:
    """LOW-2: blocks whose normal-axis index range overlaps ``irange`` and whose
    physical ``u``/``v`` extents overlap the sorted rect (closed intervals)."""
    a = axis_index(axis)
    u, v = _PLANE_AXES[a]
    umin, umax, vmin, vmax = _sorted_rect(tuple(rect))  # type: ignore[arg-type]
    g = level.geom
    out = []
    for b, box in enumerate(level.boxes):
        if box.hi[a] < irange[0] or box.lo[a] > irange[1]:
            continue
        bu0, bu1 = g.lower_edge(u, box.lo[u]), g.lower_edge(u, box.hi[u] + 1)
        bv0, bv1 = g.lower_edge(v, box.lo[v]), g.lower_edge(v, box.hi[v] + 1)
        if bu1 < umin or umax < bu0 or bv1 < vmin or vmax < bv0:
            continue
        out.append(b)
    return out


# ---------------------------------------------------------------------------
# lowering infrastructure


class FieldAllocator:
    """Hands out fresh field ids for temporaries: ``start``, ``start + 1``, ...
    (CHUNK-4 reference behavior starts at 1000)."""

    def __init__(self, start: int = 1000) -> None:
        self.next = _int(start, "start")
        if self.next < 0:
            raise ValueError("field ids must not be negative (CHUNK-4)")

    def __call__(self) -> int:
        v = self.next
        self.next += 1
        return v


@dataclass
class Fragment:
    """Stages of one lowered operator and where its result lives.

    ``stages`` lists every stage of the fragment (producers of the fields it
    reads are referenced through ``after`` but are not listed). The result is
    field ``out_field`` (version 0) at ``(step, level, block)``: for reduced
    results ``(step, dataset level, 0)`` (LOW-8); for per-block results
    (field expressions, vorticity) ``level``/``block`` are ``None``, meaning
    every block of every level. ``tail`` is the stage producing the result.
    """

    stages: List[ir.Stage]
    out_field: int
    step: int
    level: Optional[int]
    block: Optional[int]
    tail: ir.Stage
    shape: Optional[Tuple[int, ...]] = None
    dtype: str = "f64"
    info: Dict[str, Any] = field(default_factory=dict)

    def plan(self, *others: "Fragment") -> ir.Plan:
        """A plan holding this fragment (and ``others``); ancestors are pulled in by the encoder."""
        seen: Dict[int, ir.Stage] = {}
        for frag in (self, *others):
            for s in frag.stages:
                seen.setdefault(id(s), s)
        return ir.Plan(list(seen.values()))


Producers = Optional[Mapping[int, Union[ir.Stage, Sequence[ir.Stage]]]]


def _producer_stages(producers: Producers, fields: Iterable[int]) -> List[ir.Stage]:
    """LOW-1 (b): the producer stages of exactly the fields read."""
    out: List[ir.Stage] = []
    if not producers:
        return out
    for f in fields:
        p = producers.get(f)
        if p is None:
            continue
        for s in ([p] if isinstance(p, ir.Stage) else list(p)):
            if s not in out:
                out.append(s)
    return out


def _field_ref(value: Any, what: str) -> ir.FieldRef:
    if isinstance(value, ir.FieldRef):
        if value.domain is not None:
            raise ValueError(f"{what}: lowering reads fields at the template's own domain; drop the override")
        return value
    f = _int(value, what)
    if f < 0:
        raise ValueError(f"{what}: field ids must not be negative, got {f}")
    return ir.FieldRef(f)


def _out_field(value: Any) -> int:
    f = _int(value, "out_field")
    if f < 0:
        raise ValueError(f"out_field must not be negative, got {f}")
    return f


def _allocator(alloc_field: Optional[Callable[[], int]], *used: int) -> Callable[[], int]:
    if alloc_field is not None:
        return alloc_field
    return FieldAllocator(max([999, *used]) + 1)


def _check_cartesian(runmeta: RunMeta, op: str) -> None:
    """COORD-5 / ERR-49 for geometric operators."""
    if runmeta.coord_sys != 0:
        raise ValueError(f"operator requires Cartesian coordinates (coord_sys={runmeta.coord_sys}): {op}")
    _check_unmapped(runmeta, op)


def _check_unmapped(runmeta: RunMeta, op: str) -> None:
    if runmeta.mapped_mesh:
        raise ValueError(f"operator requires an unmapped mesh: {op}")


def _step_and_levels(runmeta: RunMeta, step: Optional[int], dataset_level: int) -> Tuple[StepMeta, int]:
    if not isinstance(runmeta, RunMeta):
        raise TypeError(f"runmeta must be a RunMeta, got {type(runmeta).__name__}")
    sm = runmeta.step_meta(step)
    if not sm.levels:
        raise ValueError(f"step {sm.step} has no levels")
    dl = _int(dataset_level, "dataset_level")
    if not 0 <= dl < len(sm.levels):
        raise ValueError(f"dataset level {dl} is outside levels 0..{len(sm.levels) - 1}")
    return sm, dl


def _image_spec(nu: int, nv: int, dtype: Any = "f64") -> ir.BufferSpec:
    return ir.BufferSpec(dtype, ir.FixedShape((nv, nu)), "zero")


def _image_dtype(dtype: Any) -> str:
    """Slices keep the field's float type (API-23): f32 or f64 only."""
    try:
        d = ir.DType.parse(dtype)
    except TypeError:
        raise TypeError(f"slice dtype must be f32 or f64, got {dtype!r}") from None
    if d not in (ir.DType.F32, ir.DType.F64):
        raise TypeError(f"slice dtype must be f32 or f64, got {dtype!r}")
    return d.value


def _check_fan_in(fan_in: Optional[int]) -> Optional[int]:
    """LOW-5: a configured fan-in must be an integer >= 2 (None: the default per reduction)."""
    if fan_in is None:
        return None
    return ir.resolve_fan_in(1, fan_in)


def _reduce_level(
    field_id: int,
    blocks: List[int],
    *,
    level: int,
    producer: ir.Stage,
    after: List[ir.Stage],
    buffer: ir.BufferSpec,
    alloc: Callable[[], int],
    step: int,
    fan_in: Optional[int],
    normalize: bool,
    world_size: int,
    home: Optional[ir.HomeFn],
    name: str,
) -> Tuple[List[ir.Stage], ir.LevelValue]:
    """LOW-6 for one level; the value's producer is the last reduction stage (or ``producer``)."""
    stages, (f, b) = ir.block_reduction_stages(
        field_id, blocks, buffer=buffer, alloc_field=alloc, step=step, level=level, fan_in=fan_in,
        normalize=normalize, world_size=world_size, home=home, after=after, name=name,
    )
    return stages, ir.LevelValue(f, level, b, stages[-1] if stages else producer)


# ---------------------------------------------------------------------------
# slices (LOW-9) and projections (LOW-10)


def slice_plan(
    runmeta: RunMeta,
    field_id: Any,
    axis: Any,
    coord: float,
    rect: Sequence[float],
    resolution: Any,
    out_field: int,
    *,
    dtype: Any = "f64",
    step: Optional[int] = None,
    dataset_level: int = 0,
    world_size: int = 1,
    home: Optional[ir.HomeFn] = None,
    fan_in: Optional[int] = None,
    alloc_field: Optional[Callable[[], int]] = None,
    producers: Producers = None,
    name: str = "slice",
) -> Fragment:
    """Slice of ``field_id`` on the plane ``axis = coord`` over ``rect`` at ``resolution`` (LOW-9).

    Per level (finest first) with qualifying blocks (LOW-2 at the LOW-3 plane
    index): one chunk stage with a ``uniform_slice_cellavg_accumulate``
    template per block (plane coverage COV-5), sum and area outputs; both are
    block-reduced with normalization (the area after the sum), levels are
    combined pairwise without location preservation (LOW-7) and
    ``uniform_slice_finalize`` divides sum by area into an ``(nv, nu)`` image of
    ``dtype`` (NaN where nothing was sampled). On a mapped mesh slices are
    refused (COORD-5); other coordinate systems are allowed.
    """
    a = axis_index(axis)
    coord = _real(coord, "coord")
    rect = parse_rect(rect)
    nu, nv = parse_resolution(resolution)
    dtype = _image_dtype(dtype)
    _check_unmapped(runmeta, "slice")
    fan_in = _check_fan_in(fan_in)
    src = _field_ref(field_id, "field_id")
    out_field = _out_field(out_field)
    sm, dl = _step_and_levels(runmeta, step, dataset_level)
    alloc = _allocator(alloc_field, src.field, out_field)
    levels = sm.levels
    p = plane_indices(levels, a, coord)
    img = _image_spec(nu, nv)
    read_after = _producer_stages(producers, [src.field])
    params_of = lambda L: ir.UniformSliceCellParams(  # noqa: E731
        axis=a, coord=coord, plane_index=p[L], rect=list(rect), resolution=[nu, nv])

    stages: List[ir.Stage] = []
    sums: List[ir.LevelValue] = []
    areas: List[ir.LevelValue] = []
    selected: Dict[int, List[int]] = {}
    for L in range(len(levels) - 1, -1, -1):
        blocks = select_blocks(levels[L], a, (p[L], p[L]), rect)
        if not blocks:
            continue
        selected[L] = blocks
        cov = plane_coverage(levels, a, p, L)
        sum_f, area_f = alloc(), alloc()
        st = ir.Stage(f"{name}_l{L}", plane="chunk", after=list(read_after))
        # One template for the level's selected blocks: the plan stays small
        # whatever the number of blocks.
        st.map_blocks(
            f"{name}_l{L}", "uniform_slice_cellavg_accumulate", ir.Domain(sm.step, L, blocks),
            inputs=[src], outputs=[ir.OutputRef(sum_f, img), ir.OutputRef(area_f, img)],
            params=params_of(L), covered_boxes=cov,
        )
        stages.append(st)
        common = dict(level=L, producer=st, buffer=img, alloc=alloc, step=sm.step, fan_in=fan_in,
                      normalize=True, world_size=world_size, home=home)
        s_stages, s_val = _reduce_level(sum_f, blocks, after=[st], name=f"{name}_sum_l{L}", **common)
        a_after = [s_stages[-1]] if s_stages else [st]
        a_stages, a_val = _reduce_level(area_f, blocks, after=a_after, name=f"{name}_area_l{L}", **common)
        stages += s_stages + a_stages
        sums.append(s_val)
        areas.append(a_val)

    if not sums:
        # Nothing qualifies (LOW-9): still produce an image. The accumulator run
        # on one block whose plane or footprint is strictly disjoint from the
        # request adds nothing, so sum and area stay zero and finalize gives NaN.
        st, s_val, a_val = _empty_slice_stage(sm, dl, src, params_of(dl), plane_coverage(levels, a, p, dl), img, alloc,
                                              read_after, name)
        stages.append(st)
        sums, areas = [s_val], [a_val]

    c_stages, s_comb = ir.level_combination_stages(
        sums, buffer=img, alloc_field=alloc, step=sm.step, dataset_level=dl, world_size=world_size, home=home,
        name=f"{name}_combine_sum")
    stages += c_stages
    c_stages, a_comb = ir.level_combination_stages(
        areas, buffer=img, alloc_field=alloc, step=sm.step, dataset_level=dl, world_size=world_size, home=home,
        name=f"{name}_combine_area")
    stages += c_stages
    u0, v0, u1, v1 = rect
    pixel_area = abs((u1 - u0) / nu) * abs((v1 - v0) / nv)
    fin = ir.final_stage(
        [s_comb, a_comb], out_field=out_field, buffer=_image_spec(nu, nv, dtype), kernel="uniform_slice_finalize",
        step=sm.step, dataset_level=dl, params=ir.SliceFinalizeParams(pixel_area=pixel_area), name=f"{name}_finalize")
    stages.append(fin)
    return Fragment(stages, out_field, sm.step, dl, 0, fin, shape=(nv, nu), dtype=dtype,
                    info={"plane_indices": p, "blocks": selected, "pixel_area": pixel_area})


def _empty_slice_stage(sm, dl, src, params, cov, img, alloc, read_after, name):
    if not sm.levels[dl].boxes:
        raise ValueError(f"level {dl} has no blocks to build an empty image on")
    sum_f, area_f = alloc(), alloc()
    st = ir.Stage(f"{name}_empty", plane="chunk", after=list(read_after))
    st.map_blocks(f"{name}_empty", "uniform_slice_cellavg_accumulate", ir.Domain(sm.step, dl, [0]),
                  inputs=[src], outputs=[ir.OutputRef(sum_f, img), ir.OutputRef(area_f, img)],
                  params=params, covered_boxes=cov)
    return st, ir.LevelValue(sum_f, dl, 0, st), ir.LevelValue(area_f, dl, 0, st)


def _finish_projection(stages, vals, img, alloc, sm, dl, rect, nu, nv, world_size, home, name, out_field, info):
    """Location-preserving level combination (LOW-7) and the one-input finalize
    dividing by the pixel area (LOW-8, OP-RED-3), shared by mesh and particle
    projections."""
    c_stages, comb = ir.level_combination_stages(
        vals, buffer=img, alloc_field=alloc, step=sm.step, dataset_level=dl, preserve_location=True,
        home_order=True, world_size=world_size, home=home, name=f"{name}_combine")
    stages += c_stages
    u0, v0, u1, v1 = rect
    pixel_area = abs((u1 - u0) / nu) * abs((v1 - v0) / nv)
    fin = ir.final_stage(
        [comb], out_field=out_field, buffer=_image_spec(nu, nv), kernel="uniform_slice_finalize", step=sm.step,
        dataset_level=dl, params=ir.SliceFinalizeParams(pixel_area=pixel_area), name=f"{name}_finalize")
    stages.append(fin)
    return Fragment(stages, out_field, sm.step, dl, 0, fin, shape=(nv, nu), dtype="f64",
                    info={**info, "pixel_area": pixel_area})


def projection_plan(
    runmeta: RunMeta,
    field_id: Any,
    axis: Any,
    axis_bounds: Sequence[float],
    rect: Sequence[float],
    resolution: Any,
    out_field: int,
    *,
    amr_cell_average: bool = True,
    step: Optional[int] = None,
    dataset_level: int = 0,
    world_size: int = 1,
    home: Optional[ir.HomeFn] = None,
    fan_in: Optional[int] = None,
    alloc_field: Optional[Callable[[], int]] = None,
    producers: Producers = None,
    name: str = "project",
) -> Fragment:
    """Column integral of ``field_id`` along ``axis`` within ``axis_bounds`` (LOW-10).

    As :func:`slice_plan`, but per block one ``uniform_projection_accumulate``
    with slab coverage (COV-6) over the LOW-4 slab ranges, levels combined with
    home-rank ordering and location preservation, and a final
    ``uniform_slice_finalize`` with ``pixel_area = du*dv`` so that pixels hold
    value x length (OP-PROJ-2); pixels without data are 0. Requires Cartesian,
    unmapped cells (COORD-5).
    """
    if not amr_cell_average:
        raise ValueError("UniformProjection requires amr_cell_average semantics")
    a = axis_index(axis)
    bounds = _axis_bounds(axis_bounds)
    rect = parse_rect(rect)
    nu, nv = parse_resolution(resolution)
    _check_cartesian(runmeta, "projection")
    fan_in = _check_fan_in(fan_in)
    src = _field_ref(field_id, "field_id")
    out_field = _out_field(out_field)
    sm, dl = _step_and_levels(runmeta, step, dataset_level)
    alloc = _allocator(alloc_field, src.field, out_field)
    levels = sm.levels
    r = slab_ranges(levels, a, bounds)
    img = _image_spec(nu, nv)
    read_after = _producer_stages(producers, [src.field])
    prm = ir.UniformProjectionParams(axis=a, axis_bounds=list(bounds), rect=list(rect), resolution=[nu, nv])

    stages: List[ir.Stage] = []
    vals: List[ir.LevelValue] = []
    selected: Dict[int, List[int]] = {}
    for L in range(len(levels) - 1, -1, -1):
        cov = slab_coverage(levels, a, r, L)
        # Blocks whose cells in the slab are all covered by finer levels add nothing.
        index = CoverageIndex(cov, levels[L].boxes)
        blocks = [b for b in select_blocks(levels[L], a, r[L], rect)
                  if not index.covers(_clip_axis(levels[L].boxes[b], a, r[L]))]
        if not blocks:
            continue
        selected[L] = blocks
        acc = alloc()
        st = ir.Stage(f"{name}_l{L}", plane="chunk", after=list(read_after))
        st.map_blocks(
            f"{name}_l{L}", "uniform_projection_accumulate", ir.Domain(sm.step, L, blocks),
            inputs=[src], outputs=[ir.OutputRef(acc, img)], params=prm, covered_boxes=cov,
        )
        stages.append(st)
        red, val = _reduce_level(acc, blocks, level=L, producer=st, after=[st], buffer=img, alloc=alloc,
                                 step=sm.step, fan_in=fan_in, normalize=True, world_size=world_size, home=home,
                                 name=f"{name}_reduce_l{L}")
        stages += red
        vals.append(val)

    if not vals:
        # Nothing qualifies (LOW-10): one accumulator on a block strictly outside
        # the slab or the rect contributes nothing, giving an all-zero image.
        if not levels[dl].boxes:
            raise ValueError(f"level {dl} has no blocks to build an empty image on")
        acc = alloc()
        st = ir.Stage(f"{name}_empty", plane="chunk", after=list(read_after))
        st.map_blocks(f"{name}_empty", "uniform_projection_accumulate", ir.Domain(sm.step, dl, [0]),
                      inputs=[src], outputs=[ir.OutputRef(acc, img)], params=prm,
                      covered_boxes=slab_coverage(levels, a, r, dl))
        stages.append(st)
        vals = [ir.LevelValue(acc, dl, 0, st)]

    return _finish_projection(stages, vals, img, alloc, sm, dl, rect, nu, nv, world_size, home, name, out_field,
                              {"slab_ranges": r, "blocks": selected})


# ---------------------------------------------------------------------------
# mesh histograms (LOW-11)

#: Weight modes of mesh histograms (OP-HIST-3).
HISTOGRAM_WEIGHT_MODES = ("input", "cell_volume", "cell_mass")


def _hist_range(value: Any, what: str) -> Tuple[float, float]:
    items = _seq(value, what)
    if len(items) != 2:
        raise ValueError(f"{what} must be (lo, hi), got {len(items)} values")
    lo, hi = (float(v) if isinstance(v, numbers.Real) and not isinstance(v, bool) else None for v in items)
    if lo is None or hi is None:
        raise TypeError(f"{what} entries must be real numbers, got {value!r}")
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{what} must be finite, got ({lo}, {hi})")
    if not lo < hi:
        raise ValueError(f"{what} must be increasing (lo < hi), got ({lo}, {hi})")
    return lo, hi


def _hist_bins(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an integer")
    n = _int(value, what)
    if n <= 0:
        raise ValueError(f"{what} must be positive, got {n}")
    return n


def _hist_mode(runmeta: RunMeta, weight_mode: Any, has_weights: bool) -> str:
    if weight_mode not in HISTOGRAM_WEIGHT_MODES:
        raise ValueError(f"unknown weight_mode {weight_mode!r} (expected one of {', '.join(HISTOGRAM_WEIGHT_MODES)})")
    if has_weights and weight_mode != "input":
        raise ValueError(f"weight_mode {weight_mode!r} cannot be combined with explicit weights")
    if weight_mode != "input":
        _check_cartesian(runmeta, f"histogram weight_mode={weight_mode}")
    return weight_mode


def _histogram(
    runmeta: RunMeta,
    kernel: str,
    inputs: List[ir.FieldRef],
    prm: ir.Params,
    shape: Tuple[int, ...],
    out_field: int,
    *,
    domain: Any,
    step: Optional[int],
    dataset_level: int,
    world_size: int,
    home: Optional[ir.HomeFn],
    fan_in: Optional[int],
    alloc_field: Optional[Callable[[], int]],
    producers: Producers,
    name: str,
) -> Fragment:
    out_field = _out_field(out_field)
    fan_in = _check_fan_in(fan_in)
    sm, dl = _step_and_levels(runmeta, step, dataset_level)
    alloc = _allocator(alloc_field, out_field, *(i.field for i in inputs))
    levels = sm.levels
    spec = ir.BufferSpec("f64", ir.FixedShape(shape), "zero")
    read_after = _producer_stages(producers, [i.field for i in inputs])

    # (level, explicit block list or None, coverage or None)
    if domain is None:
        # Every leaf cell once (COV-4); blocks entirely covered by finer levels add nothing.
        work = []
        for L in range(len(levels) - 1, -1, -1):
            cov = volume_coverage(levels, L)
            index = CoverageIndex(cov, levels[L].boxes)
            keep = [b for b, box in enumerate(levels[L].boxes) if not index.covers(box)]
            if keep:
                work.append((L, keep, None if len(keep) == len(levels[L].boxes) else keep, cov))
    else:
        if isinstance(domain, ir.Domain):
            L, blist = domain.level, domain.blocks
        elif isinstance(domain, numbers.Integral) and not isinstance(domain, bool):
            L, blist = int(domain), None
        else:
            items = _seq(domain, "domain")
            if len(items) != 2:
                raise ValueError("a histogram domain is a level or (level, blocks)")
            L, blist = _int(items[0], "domain level"), items[1]
        if not 0 <= L < len(levels):
            raise ValueError(f"histogram domain level {L} is outside levels 0..{len(levels) - 1}")
        nb = len(levels[L].boxes)
        blocks = list(range(nb)) if blist is None else [_int(b, "domain block") for b in _seq(blist, "domain blocks")]
        if not blocks:
            raise ValueError("a histogram domain needs at least one block")
        for b in blocks:
            if not 0 <= b < nb:
                raise ValueError(f"histogram domain block {b} is outside level {L} (0..{nb - 1})")
        work = [(L, blocks, None if blist is None else blocks, None)]

    st = ir.Stage(f"{name}_accumulate", plane="chunk", after=list(read_after))
    stages: List[ir.Stage] = [st]
    vals: List[ir.LevelValue] = []
    for L, blocks, explicit, cov in work:
        acc = alloc()
        st.map_blocks(
            f"{name}_l{L}", kernel, ir.Domain(sm.step, L, explicit), inputs=list(inputs),
            outputs=[ir.OutputRef(acc, spec)], params=prm, covered_boxes=cov,
        )
        red, val = _reduce_level(acc, blocks, level=L, producer=st, after=[st], buffer=spec, alloc=alloc,
                                 step=sm.step, fan_in=fan_in, normalize=False, world_size=world_size, home=home,
                                 name=f"{name}_reduce_l{L}")
        stages += red
        vals.append(val)
    if not vals:
        raise ValueError("the mesh has no blocks to histogram")
    c_stages, comb = ir.level_combination_stages(
        vals, buffer=spec, alloc_field=alloc, step=sm.step, dataset_level=dl, world_size=world_size, home=home,
        name=f"{name}_combine")
    stages += c_stages
    fin = ir.final_stage([comb], out_field=out_field, buffer=spec, kernel="uniform_slice_reduce", step=sm.step,
                         dataset_level=dl, name=f"{name}_finalize")
    stages.append(fin)
    return Fragment(stages, out_field, sm.step, dl, 0, fin, shape=shape, dtype="f64")


def histogram1d_plan(
    runmeta: RunMeta,
    field_id: Any,
    range: Sequence[float],
    bins: int,
    out_field: int,
    *,
    weights: Any = None,
    weight_mode: str = "input",
    domain: Any = None,
    step: Optional[int] = None,
    dataset_level: int = 0,
    world_size: int = 1,
    home: Optional[ir.HomeFn] = None,
    fan_in: Optional[int] = None,
    alloc_field: Optional[Callable[[], int]] = None,
    producers: Producers = None,
    name: str = "hist1d",
) -> Fragment:
    """1-D histogram of ``field_id`` over leaf cells (LOW-11, OP-HIST-1..3).

    Without ``domain`` every block of every level contributes with volume
    coverage (COV-4), so each leaf cell is counted once. The default
    ``weight_mode="input"`` counts cells (a coarse region then weighs less
    than its volume); ``cell_volume`` weighs by ``dx*dy*dz`` and ``cell_mass``
    by ``value*dx*dy*dz`` (Cartesian, unmapped meshes only, COORD-5). With
    ``domain`` (a level, ``(level, blocks)`` or an :class:`ir.Domain`) only
    those blocks contribute, without coverage. The result is f64 ``(bins,)``.
    """
    lo, hi = _hist_range(range, "range")
    nb = _hist_bins(bins, "bins")
    mode = _hist_mode(runmeta, weight_mode, weights is not None)
    inputs = [_field_ref(field_id, "field_id")]
    if weights is not None:
        inputs.append(_field_ref(weights, "weights"))
    prm = ir.Histogram1DParams(range=[lo, hi], bins=nb, weight_mode=mode)
    return _histogram(runmeta, "histogram1d_accumulate", inputs, prm, (nb,), out_field, domain=domain, step=step,
                      dataset_level=dataset_level, world_size=world_size, home=home, fan_in=fan_in,
                      alloc_field=alloc_field, producers=producers, name=name)


def histogram2d_plan(
    runmeta: RunMeta,
    x_field: Any,
    y_field: Any,
    x_range: Sequence[float],
    y_range: Sequence[float],
    bins: Sequence[int],
    out_field: int,
    *,
    weights: Any = None,
    weight_mode: str = "input",
    domain: Any = None,
    step: Optional[int] = None,
    dataset_level: int = 0,
    world_size: int = 1,
    home: Optional[ir.HomeFn] = None,
    fan_in: Optional[int] = None,
    alloc_field: Optional[Callable[[], int]] = None,
    producers: Producers = None,
    name: str = "hist2d",
) -> Fragment:
    """2-D histogram of ``(x_field, y_field)`` (LOW-11): f64 ``(nx_bins, ny_bins)``
    indexed ``[ix, iy]``. ``cell_mass`` weighs by the x value times the cell volume."""
    xr = _hist_range(x_range, "x_range")
    yr = _hist_range(y_range, "y_range")
    b = _seq(bins, "bins")
    if len(b) != 2:
        raise ValueError(f"bins must be (nx, ny), got {bins!r}")
    nx, ny = _hist_bins(b[0], "bins[0]"), _hist_bins(b[1], "bins[1]")
    mode = _hist_mode(runmeta, weight_mode, weights is not None)
    inputs = [_field_ref(x_field, "x_field"), _field_ref(y_field, "y_field")]
    if weights is not None:
        inputs.append(_field_ref(weights, "weights"))
    prm = ir.Histogram2DParams(x_range=list(xr), y_range=list(yr), bins=[nx, ny], weight_mode=mode)
    return _histogram(runmeta, "histogram2d_accumulate", inputs, prm, (nx, ny), out_field, domain=domain, step=step,
                      dataset_level=dataset_level, world_size=world_size, home=home, fan_in=fan_in,
                      alloc_field=alloc_field, producers=producers, name=name)


# ---------------------------------------------------------------------------
# field expressions (LOW-12)

_EXPR_KERNELS = {"field_expr", "mesh_compare", "mesh_mask_and"}


def field_expr_plan(
    runmeta: RunMeta,
    expression: Optional[str],
    variables: Sequence[str],
    input_fields: Sequence[Any],
    out_field: int,
    *,
    dtype: Any = "f64",
    kernel: str = "field_expr",
    bounded: bool = False,
    step: Optional[int] = None,
    dataset_level: int = 0,
    producers: Producers = None,
    name: str = "expr",
) -> Fragment:
    """Elementwise expression over mesh fields (LOW-12, OP-EXPR-1..5).

    Unbounded (AMR) inputs: one chunk stage with one template per
    ``(level, block)`` of the step, output ``Block(1)`` of ``dtype``
    (uninitialized: the kernel writes every element). Bounded inputs (images
    at ``(step, dataset level, block 0)``): one template there with a
    ``LikeInput(0)`` output. ``kernel`` is ``field_expr`` (f32/f64 output),
    ``mesh_compare`` (u8 output) or ``mesh_mask_and`` (two inputs, no
    expression, u8 output). Invalid expressions raise ``ValueError`` (ERR-35).
    """
    if kernel not in _EXPR_KERNELS:
        raise ValueError(f"unknown field expression kernel {kernel!r} (expected one of {sorted(_EXPR_KERNELS)})")
    ins = [_field_ref(f, "input field") for f in _seq(input_fields, "input_fields")]
    try:
        d = ir.DType.parse(dtype)
    except TypeError:
        raise TypeError(f"unsupported output dtype {dtype!r}") from None
    if kernel == "mesh_mask_and":
        if len(ins) != 2:
            raise ValueError(f"mesh_mask_and takes exactly two mask inputs, got {len(ins)}")
        if d is not ir.DType.U8:
            raise TypeError("mesh_mask_and output must be u8")
        prm = None
    else:
        if not isinstance(expression, str) or not expression.strip():
            raise ValueError("field expression must be a non-empty string")
        vars_ = _seq(variables, "variables")
        if not vars_:
            raise ValueError("field expression needs at least one variable")
        if len(vars_) > 8:
            raise ValueError(f"field expressions take at most 8 variables, got {len(vars_)}")
        for v in vars_:
            if not isinstance(v, str) or not v:
                raise ValueError(f"field expression variable names must be non-empty strings, got {v!r}")
        if len(vars_) != len(ins):
            raise ValueError(f"field_expr variables/input size mismatch ({len(vars_)} variables, {len(ins)} inputs)")
        if kernel == "field_expr" and d not in (ir.DType.F32, ir.DType.F64):
            raise TypeError("field expression output must be f32 or f64")
        if kernel == "mesh_compare" and d is not ir.DType.U8:
            raise TypeError("mesh_compare output must be u8")
        prm = ir.FieldExprParams(expression=expression, variables=list(vars_))
    out_field = _out_field(out_field)
    sm, dl = _step_and_levels(runmeta, step, dataset_level)
    st = ir.Stage(name, plane="chunk", after=_producer_stages(producers, [i.field for i in ins]))
    if bounded:
        st.map_blocks(f"{name}_bounded", kernel, ir.Domain(sm.step, dl, [0]), inputs=ins,
                      outputs=[ir.OutputRef(out_field, ir.BufferSpec(d, ir.LikeInputShape(0)))], params=prm)
        return Fragment([st], out_field, sm.step, dl, 0, st, dtype=d.value)
    spec = ir.BufferSpec(d, ir.BlockShape(1))
    for L, lv in enumerate(sm.levels):
        if lv.boxes:
            st.map_blocks(f"{name}_l{L}", kernel, ir.Domain(sm.step, L, list(range(len(lv.boxes)))), inputs=ins,
                          outputs=[ir.OutputRef(out_field, spec)], params=prm)
    return Fragment([st], out_field, sm.step, None, None, st, dtype=d.value)


# ---------------------------------------------------------------------------
# gradients and vorticity (LOW-13)


def _halo_and_gradient_stages(
    sm: StepMeta,
    components: List[ir.FieldRef],
    stencil_radius: int,
    alloc: Callable[[], int],
    read_after: List[ir.Stage],
    grad_fields: Optional[List[int]],
    name: str,
) -> Tuple[ir.Stage, ir.Stage, List[int]]:
    """Stages ``neighbor_fetch`` (``amr_subbox_fetch_pack`` per component and level)
    and ``gradients`` (``gradU_stencil`` per component and level)."""
    fetch = ir.Stage(f"{name}neighbor_fetch", plane="chunk", after=list(read_after))
    halos = []
    pack = ir.BufferSpec("opaque", ir.DynamicShape(ir.DynamicUpperBound.amr_subbox_pack()))
    for c, comp in enumerate(components):
        halo = alloc()
        halos.append(halo)
        for L in range(len(sm.levels)):
            fetch.map_blocks(
                f"{name}halo_c{c}_l{L}", "amr_subbox_fetch_pack", ir.Domain(sm.step, L),
                outputs=[ir.OutputRef(halo, pack)],
                params=ir.AmrSubboxPackParams(input_field=comp.field, input_version=comp.version, input_step=sm.step,
                                              input_level=L, halo_cells=stencil_radius),
            )
    grads = list(grad_fields) if grad_fields is not None else [alloc() for _ in components]
    gspec = ir.BufferSpec("f64", ir.BlockShape(3), "zero")
    gstage = ir.Stage(f"{name}gradients", plane="chunk", after=[fetch, *[s for s in read_after if s is not fetch]])
    for c, comp in enumerate(components):
        for L in range(len(sm.levels)):
            gstage.map_blocks(
                f"{name}grad_c{c}_l{L}", "gradU_stencil", ir.Domain(sm.step, L),
                inputs=[comp, ir.FieldRef(halos[c])], outputs=[ir.OutputRef(grads[c], gspec)],
                params=ir.GradStencilParams(input_field=comp.field, input_version=comp.version, input_step=sm.step,
                                            input_level=L, stencil_radius=stencil_radius),
            )
    return fetch, gstage, grads


def _stencil_radius(value: Any) -> int:
    r = _int(value, "stencil_radius")
    if r < 1:
        raise ValueError(f"stencil_radius must be >= 1, got {r}")
    return r


def gradient_plan(
    runmeta: RunMeta,
    field_id: Any,
    out_field: int,
    *,
    stencil_radius: int = 1,
    step: Optional[int] = None,
    alloc_field: Optional[Callable[[], int]] = None,
    producers: Producers = None,
    name: str = "",
) -> Fragment:
    """Least-squares gradient of a scalar on every block of every level: the
    first two stages of LOW-13 for one component, writing f64 ``Block(3)``
    (``(nx, ny, nz, 3)``, components x, y, z) to ``out_field``."""
    r = _stencil_radius(stencil_radius)
    src = _field_ref(field_id, "field_id")
    out_field = _out_field(out_field)
    sm, _ = _step_and_levels(runmeta, step, 0)
    alloc = _allocator(alloc_field, src.field, out_field)
    fetch, gstage, _ = _halo_and_gradient_stages(sm, [src], r, alloc, _producer_stages(producers, [src.field]),
                                                 [out_field], name)
    return Fragment([fetch, gstage], out_field, sm.step, None, None, gstage, dtype="f64")


def vorticity_plan(
    runmeta: RunMeta,
    velocity: Sequence[Any],
    out_field: int,
    *,
    stencil_radius: int = 1,
    step: Optional[int] = None,
    alloc_field: Optional[Callable[[], int]] = None,
    producers: Producers = None,
    name: str = "",
) -> Fragment:
    """Vorticity magnitude of ``velocity = (vx, vy, vz)`` on every level (LOW-13).

    Stage ``neighbor_fetch`` packs each component's AMR halo
    (``halo_cells = stencil_radius``, drawn from all levels); stage
    ``gradients`` runs ``gradU_stencil`` per component into f64 ``Block(3)``;
    stage ``vortmag`` writes ``|curl v|`` as f64 ``Block(1)`` to ``out_field``.
    Requires Cartesian, unmapped cells (COORD-5).
    """
    comps = [_field_ref(v, "velocity component") for v in _seq(velocity, "velocity")]
    if len(comps) != 3:
        raise ValueError(f"vorticity needs three velocity components, got {len(comps)}")
    r = _stencil_radius(stencil_radius)
    _check_cartesian(runmeta, "vorticity")
    out_field = _out_field(out_field)
    sm, _ = _step_and_levels(runmeta, step, 0)
    alloc = _allocator(alloc_field, out_field, *(c.field for c in comps))
    read_after = _producer_stages(producers, [c.field for c in comps])
    fetch, gstage, grads = _halo_and_gradient_stages(sm, comps, r, alloc, read_after, None, name)
    vstage = ir.Stage(f"{name}vortmag", plane="chunk", after=[gstage])
    spec = ir.BufferSpec("f64", ir.BlockShape(1), "zero")
    for L in range(len(sm.levels)):
        vstage.map_blocks(f"{name}vortmag_l{L}", "vorticity_mag", ir.Domain(sm.step, L),
                          inputs=[ir.FieldRef(g) for g in grads], outputs=[ir.OutputRef(out_field, spec)])
    return Fragment([fetch, gstage, vstage], out_field, sm.step, None, None, vstage, dtype="f64",
                    info={"gradients": grads})


# ---------------------------------------------------------------------------
# particle CIC projection (LOW-16)


def particle_cic_projection_plan(
    runmeta: RunMeta,
    particle_type: str,
    axis: Any,
    axis_bounds: Sequence[float],
    rect: Sequence[float],
    resolution: Any,
    out_field: int,
    *,
    mass_field: str = "mass",
    mass_max: Optional[float] = None,
    step: Optional[int] = None,
    dataset_level: int = 0,
    world_size: int = 1,
    home: Optional[ir.HomeFn] = None,
    fan_in: Optional[int] = None,
    alloc_field: Optional[Callable[[], int]] = None,
    name: str = "cic",
) -> Fragment:
    """Cloud-in-cell projection of a particle species' mass (LOW-16, OP-CIC-2).

    Per level (finest first, each level's stage after the previous level's
    reduction tail) one ``particle_cic_projection_accumulate`` template over the
    qualifying blocks (LOW-2 with slab ranges) with slab coverage; normalized
    block reductions; levels combined with home ordering and location
    preservation; a final ``uniform_slice_finalize`` dividing by ``du*dv`` so the
    image holds mass per unit area. Requires Cartesian, unmapped cells.
    """
    if not isinstance(particle_type, str) or not particle_type:
        raise ValueError("particle_type must be a non-empty string")
    if not isinstance(mass_field, str) or not mass_field:
        raise ValueError("mass_field must be a non-empty string")
    a = axis_index(axis)
    bounds = _axis_bounds(axis_bounds)
    rect = parse_rect(rect)
    nu, nv = parse_resolution(resolution)
    mmax = None if mass_max is None else _real(mass_max, "mass_max")
    _check_cartesian(runmeta, "particle CIC projection")
    fan_in = _check_fan_in(fan_in)
    out_field = _out_field(out_field)
    sm, dl = _step_and_levels(runmeta, step, dataset_level)
    alloc = _allocator(alloc_field, out_field)
    levels = sm.levels
    r = slab_ranges(levels, a, bounds)
    img = _image_spec(nu, nv)

    def prm(L: int, mm: Optional[float]) -> ir.Params:
        return ir.ParticleCicProjectionParams(
            particle_type=particle_type, level_index=L, axis=a, axis_bounds=list(bounds), rect=list(rect),
            resolution=[nu, nv], mass_field=mass_field, mass_max=mm)

    stages: List[ir.Stage] = []
    vals: List[ir.LevelValue] = []
    selected: Dict[int, List[int]] = {}
    prev_tail: List[ir.Stage] = []
    for L in range(len(levels) - 1, -1, -1):
        blocks = select_blocks(levels[L], a, r[L], rect)
        if not blocks:
            continue
        selected[L] = blocks
        acc = alloc()
        st = ir.Stage(f"{name}_l{L}", plane="chunk", after=list(prev_tail))
        st.map_blocks(f"{name}_l{L}", "particle_cic_projection_accumulate", ir.Domain(sm.step, L, blocks),
                      outputs=[ir.OutputRef(acc, img)], params=prm(L, mmax),
                      covered_boxes=slab_coverage(levels, a, r, L))
        stages.append(st)
        red, val = _reduce_level(acc, blocks, level=L, producer=st, after=[st], buffer=img, alloc=alloc,
                                 step=sm.step, fan_in=fan_in, normalize=True, world_size=world_size, home=home,
                                 name=f"{name}_reduce_l{L}")
        stages += red
        vals.append(val)
        prev_tail = [red[-1] if red else st]

    if not vals:
        # Nothing qualifies: deposit with mass_max = 0 on one block. Every
        # particle is skipped (m <= 0 or m > mass_max), so the image is zero.
        if not levels[dl].boxes:
            raise ValueError(f"level {dl} has no blocks to build an empty image on")
        acc = alloc()
        st = ir.Stage(f"{name}_empty", plane="chunk")
        st.map_blocks(f"{name}_empty", "particle_cic_projection_accumulate", ir.Domain(sm.step, dl, [0]),
                      outputs=[ir.OutputRef(acc, img)], params=prm(dl, 0.0),
                      covered_boxes=slab_coverage(levels, a, r, dl))
        stages.append(st)
        vals = [ir.LevelValue(acc, dl, 0, st)]

    return _finish_projection(stages, vals, img, alloc, sm, dl, rect, nu, nv, world_size, home, name, out_field,
                              {"slab_ranges": r, "blocks": selected})
