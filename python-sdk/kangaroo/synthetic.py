"""Synthetic AMReX plotfile writer.

Writes real AMReX plotfiles (the ``HyperCLaw-V1.1`` layout that AMReX's
``WriteMultiLevelPlotfile`` produces and that the runtime's plotfile backend
reads, FUNCTIONAL.md section 9.4) whose cell values are known in closed form.
Tests and benchmarks can therefore check every value a reader returns against
:func:`analytic_field`, and benchmarks can produce files of any size without
shipping data.

Layout of a written plotfile ``P``::

    P/Header                 HyperCLaw-V1.1 text header (BACK-AMREX-1)
    P/job_info               short AMReX-style job information file
    P/Level_<L>/Cell_H       VisMF version-1 multifab header (BACK-AMREX-3)
    P/Level_<L>/Cell_D_<n>   FAB records (BACK-AMREX-4..6)
    P/<species>/Header       particle header, Version_Two_Dot_One_<real>
    P/<species>/Level_<L>/Particle_H, DATA_00000   (BACK-AMREX-11/12)

Geometry
    Level 0 covers ``n_cells`` cells on ``[prob_lo, prob_hi]``; level ``L``
    has ``n_cells * ref_ratio**L`` cells on the same box, so its cell size is
    ``dx_L = (prob_hi - prob_lo) / (n_cells * ref_ratio**L)`` per axis.
    The centre of cell ``i`` on axis ``a`` is exactly
    ``prob_lo[a] + (i + 0.5) * dx_L[a]`` (evaluated in float64 in this order);
    this is the coordinate passed to :func:`analytic_field`.

Boxes
    Level 0 is chopped into boxes of at most ``max_grid_size`` cells per axis,
    aligned at multiples of ``max_grid_size``. Level ``L+1`` is built from
    tiles of ``B = max_grid_size // ref_ratio`` level-``L`` cells (aligned at
    multiples of ``B``): a tile is refined when the ``refine`` criterion tags
    at least one of its cells and the tile grown by one level-``L`` cell
    (clipped to the domain) lies inside level ``L`` (proper nesting, as AMReX
    enforces with ``n_proper = 1``). Each refined tile becomes one fine box of
    at most ``max_grid_size`` cells whose corners are multiples of
    ``ref_ratio``. The default criterion tags level-``L`` cells whose centre
    lies inside the ellipsoid centred on the domain with semi-axes
    ``0.25 * 0.5**L`` of the domain extent. A level that ends up empty is not
    written (``finest_level`` is the last non-empty level).

Analytic fields (``c_a`` are the coordinates of the axes present; factors of
absent axes are omitted, so 1D and 2D files stay non-trivial)
    ``density     = 1 + 0.5 * prod_a sin(2 pi c_a)``
    ``temperature = 300 + 200 * prod_a exp(-(c_a - 0.5)**2 / 0.05)``
    ``velx        = sin(2 pi x) * cos(2 pi y) * cos(2 pi z)``
    ``vely        = cos(2 pi x) * sin(2 pi y) * cos(2 pi z)``
    ``velz        = cos(2 pi x) * cos(2 pi y) * sin(2 pi z)``
    ``pressure    = density * temperature``
    any other name: ``0.1 * k + prod_a cos(2 pi k c_a + k)`` with
    ``k = 1 + crc32(name) % 7`` (stable across runs and platforms).
    Products are always taken in axis order (x, then y, then z) and the
    scalar amplitude is applied to the x factor first, so a caller that
    passes the same coordinate values gets bit-identical results whatever
    the array shapes.

Particles (optional)
    One species (default name ``Tracer``): uniformly random positions from
    ``numpy.random.default_rng(seed)``, ids ``1..count`` (cpu 0), real
    components ``mass = density(pos) / count`` and ``vx, vy, vz = velx,
    vely, velz`` at the particle position (by default only the first
    ``spacedim`` velocities). As in AMReX, each particle lives in the finest
    level box that contains it; the particle grids of every level are that
    level's mesh boxes (``Level_<L>/Particle_H`` repeats the box array) and
    the particle Header lists all of them, empty ones with count 0.

Command line::

    python3 -m kangaroo.synthetic OUT_DIR --cells 256 --levels 3 \\
        --fields density,temperature --max-grid 64 [--dtype float32] \\
        [--dims 3] [--target-bytes 1.5e9] [--particles N]
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import shutil
import sys
import time as _time
import zlib
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "DEFAULT_FIELDS",
    "LevelLayout",
    "ParticleLayout",
    "PlotfileLayout",
    "analytic_field",
    "cell_centers",
    "default_refine",
    "main",
    "plan_hierarchy",
    "plan_plotfile",
    "write_plotfile",
]

DEFAULT_FIELDS = ("density", "temperature", "velx", "vely", "velz")

# Real descriptors exactly as AMReX writes them for little-endian IEEE data;
# readers (yt included) take the width from the first number and the byte
# order from the permutation list, so these strings must match byte for byte.
_REAL_DESCRIPTOR = {
    "float64": "((8, (64 11 52 0 1 12 0 1023)),(8, (8 7 6 5 4 3 2 1)))",
    "float32": "((4, (32 8 23 0 1 9 0 127)),(4, (4 3 2 1)))",
}
# The payload is always written little-endian so that the descriptor above is
# truthful on any host.
_DISK_DTYPE = {"float64": np.dtype("<f8"), "float32": np.dtype("<f4")}

_TWO_PI = 2.0 * math.pi
_AXIS_NAMES = ("x", "y", "z")

Box = Tuple[Tuple[int, ...], Tuple[int, ...]]


# --------------------------------------------------------------------------
# Analytic fields
# --------------------------------------------------------------------------


def _present(x, y, z):
    coords = [x, y, z]
    n = 3
    while n > 0 and coords[n - 1] is None:
        n -= 1
    if n == 0 or any(c is None for c in coords[:n]):
        # A hole (x and z without y) has no meaning for a plotfile, whose
        # dimensionality always counts axes from x.
        raise ValueError("analytic_field needs x, or x and y, or x, y and z")
    return [np.asarray(c, dtype=np.float64) for c in coords[:n]]


def _separable(offset: float, amp: float, factors):
    # The amplitude goes onto the first (smallest, per-axis) factor and the
    # product runs in axis order, so the full-size array is touched only by
    # the last multiplications and the final offset: cheap, and the rounding
    # sequence is the same for every caller.
    acc = amp * factors[0]
    for f in factors[1:]:
        acc = acc * f
    if isinstance(acc, np.ndarray) and acc.ndim > 0:
        acc += offset
        return acc
    return np.float64(acc + offset)


def analytic_field(name: str, x, y=None, z=None):
    """Exact value of synthetic field ``name`` at cell centres ``(x, y, z)``.

    ``x``, ``y``, ``z`` are float64 scalars or arrays that broadcast together;
    pass ``None`` for axes a 1D or 2D file does not have. Returns a float64
    array of the broadcast shape (see the module docstring for formulas).
    """
    cs = _present(x, y, z)
    if name == "density":
        return _separable(1.0, 0.5, [np.sin(_TWO_PI * c) for c in cs])
    if name == "temperature":
        return _separable(300.0, 200.0, [np.exp(-((c - 0.5) ** 2) / 0.05) for c in cs])
    if name in ("velx", "vely", "velz"):
        comp = ("velx", "vely", "velz").index(name)
        factors = [
            np.sin(_TWO_PI * c) if a == comp else np.cos(_TWO_PI * c)
            for a, c in enumerate(cs)
        ]
        return _separable(0.0, 1.0, factors)
    if name == "pressure":
        return analytic_field("density", *cs) * analytic_field("temperature", *cs)
    k = 1 + zlib.crc32(name.encode("utf-8")) % 7
    return _separable(0.1 * k, 1.0, [np.cos(_TWO_PI * k * c + k) for c in cs])


def cell_centers(prob_lo, dx, lo, hi) -> List[np.ndarray]:
    """1D cell-centre coordinates of box ``[lo, hi]`` per axis.

    Uses the documented formula ``prob_lo + (i + 0.5) * dx`` so that tests
    recomputing centres the same way obtain identical float64 values.
    """
    return [
        prob_lo[a] + (np.arange(lo[a], hi[a] + 1, dtype=np.float64) + 0.5) * dx[a]
        for a in range(len(lo))
    ]


def _broadcast_coords(centers: Sequence[np.ndarray]):
    # Data arrays are held in C order with x varying fastest, i.e. with the
    # axes reversed, which is exactly AMReX's Fortran order on disk.
    d = len(centers)
    out = []
    for a, c in enumerate(centers):
        shape = [1] * d
        shape[d - 1 - a] = c.size
        out.append(c.reshape(shape))
    return out + [None] * (3 - d)


def default_refine(prob_lo, prob_hi) -> Callable:
    """Tagging rule used when ``refine`` is None (central ellipsoid)."""
    lo = [float(v) for v in prob_lo]
    hi = [float(v) for v in prob_hi]
    centre = [0.5 * (a + b) for a, b in zip(lo, hi)]
    extent = [b - a for a, b in zip(lo, hi)]

    def refine(level, x, y=None, z=None):
        cs = [c for c in (x, y, z) if c is not None]
        radius = 0.25 * 0.5**level
        r2 = 0.0
        for a, c in enumerate(cs):
            r2 = r2 + ((c - centre[a]) / extent[a]) ** 2
        return r2 < radius * radius

    return refine


# --------------------------------------------------------------------------
# Hierarchy planning
# --------------------------------------------------------------------------


@dataclass
class LevelLayout:
    """Index-space layout of one level (boxes are inclusive ``(lo, hi)``)."""

    level: int
    domain: Tuple[int, ...]
    dx: Tuple[float, ...]
    boxes: List[Box]
    # (Cell_D file name, byte offset) of each box's FAB, fixed when planning
    # so that sizes can be predicted before anything is written.
    fabs: List[Tuple[str, int]] = field(default_factory=list)
    nbytes: int = 0

    @property
    def files(self) -> List[str]:
        return sorted({f for f, _ in self.fabs})

    @property
    def cells(self) -> int:
        return sum(_npts(b) for b in self.boxes)


@dataclass
class ParticleLayout:
    name: str
    count: int
    real_comps: Tuple[str, ...]
    grid_counts: List[int]
    dtype: str
    nbytes: int = 0


@dataclass
class PlotfileLayout:
    """What :func:`write_plotfile` wrote (or :func:`plan_plotfile` plans).

    ``nbytes`` is the exact size on disk after writing; for a plan it is a
    prediction (exact except for the sign characters of Cell_H minima and
    maxima and the digits of particle offsets).
    """

    path: Optional[str]
    spacedim: int
    fields: Tuple[str, ...]
    dtype: str
    prob_lo: Tuple[float, ...]
    prob_hi: Tuple[float, ...]
    ref_ratio: int
    max_grid_size: int
    time: float
    step: int
    levels: List[LevelLayout]
    particles: Optional[ParticleLayout] = None
    nbytes: int = 0
    seconds: float = 0.0

    @property
    def finest_level(self) -> int:
        return len(self.levels) - 1

    @property
    def cells(self) -> int:
        return sum(lv.cells for lv in self.levels)

    def summary(self) -> str:
        lines = [
            f"AMReX plotfile {self.path or '(planned)'}: {self.spacedim}D, "
            f"{self.dtype}, {len(self.fields)} fields ({','.join(self.fields)}), "
            f"{len(self.levels)} levels, ref_ratio {self.ref_ratio}, "
            f"max_grid_size {self.max_grid_size}"
        ]
        for lv in self.levels:
            dom = "x".join(str(n) for n in lv.domain)
            files = f" in {len(lv.files)} file(s)" if lv.files else ""
            lines.append(
                f"  level {lv.level}: domain {dom}, {len(lv.boxes)} boxes, "
                f"{lv.cells} cells, {lv.nbytes} bytes{files}"
            )
        if self.particles is not None:
            p = self.particles
            lines.append(
                f"  particles {p.name}: {p.count} ({p.dtype}, real comps "
                f"{','.join(p.real_comps)}), {p.nbytes} bytes"
            )
        lines.append(f"  total: {self.nbytes} bytes ({self.nbytes / 1e9:.3f} GB)")
        return "\n".join(lines)


def _npts(box: Box) -> int:
    lo, hi = box
    n = 1
    for a, b in zip(lo, hi):
        n *= b - a + 1
    return n


def _box_str(lo, hi) -> str:
    # AMReX's IntVect/Box text form; the index type is all zeros (cell-centred).
    d = len(lo)
    return "((%s) (%s) (%s))" % (
        ",".join(str(v) for v in lo),
        ",".join(str(v) for v in hi),
        ",".join("0" for _ in range(d)),
    )


def _fab_header(dtype: str, box: Box, ncomp: int) -> bytes:
    return ("FAB %s%s %d\n" % (_REAL_DESCRIPTOR[dtype], _box_str(*box), ncomp)).encode(
        "ascii"
    )


def _fab_bytes(dtype: str, box: Box, ncomp: int) -> int:
    return len(_fab_header(dtype, box, ncomp)) + ncomp * _npts(box) * _DISK_DTYPE[dtype].itemsize


def _chop(domain: Sequence[int], size: int) -> List[Box]:
    # x varies fastest in the box list, matching the order AMReX's
    # maxSize() chopping of a single domain box yields on one rank.
    ranges = [range(0, n, size) for n in domain]
    boxes = []
    for rev in itertools.product(*reversed(ranges)):
        lo = tuple(reversed(rev))
        hi = tuple(min(l + size, n) - 1 for l, n in zip(lo, domain))
        boxes.append((lo, hi))
    return boxes


def _normalise_geometry(n_cells, prob_lo, prob_hi, dims=None):
    if isinstance(n_cells, (int, np.integer)):
        d = 3 if dims is None else int(dims)
        n_cells = (int(n_cells),) * d
    n_cells = tuple(int(n) for n in n_cells)
    d = len(n_cells)
    if dims is not None and int(dims) != d:
        raise ValueError(f"n_cells has {d} entries but dims is {dims}")
    if not 1 <= d <= 3:
        raise ValueError("spacedim must be 1, 2 or 3")
    if any(n < 1 for n in n_cells):
        raise ValueError("n_cells entries must be positive")

    def axes(v, what):
        v = tuple(float(x) for x in v)
        # The defaults are 3-vectors; a 1D/2D file keeps their leading axes.
        if len(v) < d:
            raise ValueError(f"{what} needs {d} entries")
        return v[:d]

    lo = axes(prob_lo, "prob_lo")
    hi = axes(prob_hi, "prob_hi")
    if any(b <= a for a, b in zip(lo, hi)):
        raise ValueError("prob_hi must exceed prob_lo on every axis")
    return n_cells, lo, hi


def plan_hierarchy(
    *,
    n_cells=(64, 64, 64),
    levels: int = 3,
    ref_ratio: int = 2,
    max_grid_size: int = 32,
    prob_lo=(0.0, 0.0, 0.0),
    prob_hi=(1.0, 1.0, 1.0),
    refine: Optional[Callable] = None,
) -> List[LevelLayout]:
    """Compute the box layout of every level without writing anything."""
    n_cells, lo, hi = _normalise_geometry(n_cells, prob_lo, prob_hi)
    levels = int(levels)
    r = int(ref_ratio)
    mgs = int(max_grid_size)
    if levels < 1:
        raise ValueError("levels must be >= 1")
    if levels > 1 and r < 2:
        raise ValueError("ref_ratio must be >= 2")
    if mgs < 1 or (levels > 1 and mgs % r != 0):
        # Fine boxes are refined tiles of max_grid_size / ref_ratio coarse
        # cells; an inexact division would break the alignment guarantee.
        raise ValueError("max_grid_size must be a positive multiple of ref_ratio")
    if refine is None:
        refine = default_refine(lo, hi)
    d = len(n_cells)

    def level_dx(domain):
        return tuple((hi[a] - lo[a]) / domain[a] for a in range(d))

    out = [LevelLayout(0, n_cells, level_dx(n_cells), _chop(n_cells, mgs))]
    tile = mgs // r if levels > 1 else mgs
    for L in range(levels - 1):
        cur = out[-1]
        dom = cur.domain
        # Coverage of level L in units of aligned max_grid_size tiles: every
        # level-L box is exactly one such tile (clipped at the domain end).
        ntile = tuple(-(-n // mgs) for n in dom)
        cov = np.zeros(ntile, dtype=bool)
        for blo, _ in cur.boxes:
            cov[tuple(v // mgs for v in blo)] = True
        fine = []
        for blo, bhi in cur.boxes:
            coords = _broadcast_coords(cell_centers(lo, cur.dx, blo, bhi))
            shape = tuple(reversed([h - l + 1 for l, h in zip(blo, bhi)]))
            mask = np.broadcast_to(np.asarray(refine(L, *coords), dtype=bool), shape)
            # Collapse cells to tiles of `tile` cells along each data axis.
            for k in range(d):
                n = shape[k]
                mask = np.logical_or.reduceat(mask, np.arange(0, n, tile), axis=k)
            for idx in np.argwhere(mask):
                t = tuple(blo[a] // tile + int(idx[d - 1 - a]) for a in range(d))
                c_lo = tuple(t[a] * tile for a in range(d))
                c_hi = tuple(min(c_lo[a] + tile, dom[a]) - 1 for a in range(d))
                # Proper nesting: the tile grown by one coarse cell (clipped
                # to the domain) must stay inside level L.
                g_lo = [max(c_lo[a] - 1, 0) // mgs for a in range(d)]
                g_hi = [min(c_hi[a] + 1, dom[a] - 1) // mgs for a in range(d)]
                if not cov[tuple(slice(g_lo[a], g_hi[a] + 1) for a in range(d))].all():
                    continue
                fine.append(
                    (
                        tuple(v * r for v in c_lo),
                        tuple((v + 1) * r - 1 for v in c_hi),
                    )
                )
        if not fine:
            break
        fine.sort(key=lambda b: tuple(reversed(b[0])))
        fdom = tuple(n * r for n in dom)
        out.append(LevelLayout(L + 1, fdom, level_dx(fdom), fine))
    return out


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------


def _fmt(v: float) -> str:
    # repr() is the shortest string that round-trips the float64 exactly, so
    # readers recover the same cell sizes and grid bounds we computed.
    return repr(float(v))


def _fmt_minmax(v: float) -> str:
    # Same style as AMReX's VisMF (17 significant digits, exact round trip).
    return "%.16e" % float(v)


def _prepare_dir(path: str, overwrite: bool) -> None:
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise FileExistsError(f"not a directory: {path}")
        if os.listdir(path):
            # Only something that looks like a plotfile is ever removed, so a
            # mistyped path cannot wipe unrelated data.
            if not overwrite or not os.path.isfile(os.path.join(path, "Header")):
                raise FileExistsError(
                    f"output directory is not empty: {path} (pass overwrite=True "
                    "to replace an existing plotfile)"
                )
            shutil.rmtree(path)
    os.makedirs(path, exist_ok=True)


def _assign_fabs(lv: LevelLayout, ncomp: int, dtype: str, max_file_bytes: int) -> int:
    # Like AMReX's NFiles output, data is spread over several Cell_D files;
    # a new file starts once the current one reaches max_file_bytes, and a
    # FAB never straddles two files. Returns the level's FAB bytes.
    lv.fabs = []
    nfile = -1
    offset = 0
    total = 0
    for box in lv.boxes:
        if nfile < 0 or offset >= max_file_bytes:
            nfile += 1
            offset = 0
        lv.fabs.append(("Cell_D_%05d" % nfile, offset))
        nb = _fab_bytes(dtype, box, ncomp)
        offset += nb
        total += nb
    return total


def _cell_h_text(lv: LevelLayout, ncomp: int, mins, maxs) -> str:
    lines = ["1", "1", str(ncomp), "0", f"({len(lv.boxes)} 0"]
    lines += [_box_str(*box) for box in lv.boxes]
    lines += [")", str(len(lv.boxes))]
    lines += [f"FabOnDisk: {f} {o}" for f, o in lv.fabs]
    for mat in (mins, maxs):
        lines.append("")
        lines.append(f"{len(lv.boxes)},{ncomp}")
        lines += ["".join(_fmt_minmax(v) + "," for v in row) for row in mat]
    return "\n".join(lines) + "\n"


def _write_level(path: str, lv: LevelLayout, fields: Sequence[str], dtype: str, prob_lo) -> None:
    ldir = os.path.join(path, f"Level_{lv.level}")
    os.makedirs(ldir, exist_ok=True)
    disk = _DISK_DTYPE[dtype]
    ncomp = len(fields)
    mins = np.empty((len(lv.boxes), ncomp), dtype=np.float64)
    maxs = np.empty_like(mins)
    fobj = None
    fname = None
    total = 0
    try:
        for b, (box, (target, offset)) in enumerate(zip(lv.boxes, lv.fabs)):
            if target != fname:
                if fobj is not None:
                    fobj.close()
                fname = target
                fobj = open(os.path.join(ldir, fname), "wb")
            if fobj.tell() != offset:
                raise RuntimeError(f"internal error: FAB offset mismatch in {fname}")
            header = _fab_header(dtype, box, ncomp)
            fobj.write(header)
            total += len(header)
            lo, hi = box
            coords = _broadcast_coords(cell_centers(prob_lo, lv.dx, lo, hi))
            shape = tuple(reversed([h - l + 1 for l, h in zip(lo, hi)]))
            # One component at a time keeps memory at one box-sized array.
            for c, name in enumerate(fields):
                vals = np.broadcast_to(analytic_field(name, *coords), shape)
                arr = np.ascontiguousarray(vals, dtype=disk)
                mins[b, c] = arr.min()
                maxs[b, c] = arr.max()
                fobj.write(memoryview(arr).cast("B"))
                total += arr.nbytes
    finally:
        if fobj is not None:
            fobj.close()
    text = _cell_h_text(lv, ncomp, mins, maxs)
    with open(os.path.join(ldir, "Cell_H"), "w") as f:
        f.write(text)
    lv.nbytes = total + len(text)


def _header_text(layout: PlotfileLayout) -> str:
    lv0 = layout.levels
    d = layout.spacedim
    lines = ["HyperCLaw-V1.1", str(len(layout.fields))]
    lines += list(layout.fields)
    lines += [str(d), _fmt(layout.time), str(layout.finest_level)]
    lines.append(" ".join(_fmt(v) for v in layout.prob_lo))
    lines.append(" ".join(_fmt(v) for v in layout.prob_hi))
    # One ratio per coarse level; an empty line when there is a single level,
    # as AMReX writes it.
    lines.append(" ".join(str(layout.ref_ratio) for _ in range(layout.finest_level)))
    lines.append(
        " ".join(_box_str((0,) * d, tuple(n - 1 for n in lv.domain)) for lv in lv0)
    )
    lines.append(" ".join(str(layout.step) for _ in lv0))
    for lv in lv0:
        lines.append(" ".join(_fmt(v) for v in lv.dx))
    lines.append("0")  # coord_sys: Cartesian
    lines.append("0")  # boundary width
    for lv in lv0:
        lines.append(f"{lv.level} {len(lv.boxes)} {_fmt(layout.time)}")
        lines.append(str(layout.step))
        for lo, hi in lv.boxes:
            for a in range(d):
                lines.append(
                    "%s %s"
                    % (
                        _fmt(layout.prob_lo[a] + lo[a] * lv.dx[a]),
                        _fmt(layout.prob_lo[a] + (hi[a] + 1) * lv.dx[a]),
                    )
                )
        lines.append(f"Level_{lv.level}/Cell")
    return "\n".join(lines) + "\n"


def _job_info_text(layout: PlotfileLayout) -> str:
    # yt picks its AMReX frontend (the one that reads particles) only when a
    # job_info file mentions AMReX; the keys below follow AMReX's own
    # "Inputs File Parameters" section. No dates or host names: the output
    # must be reproducible byte for byte.
    bar = "=" * 79
    d = layout.spacedim
    lines = [
        bar,
        " Job Information",
        bar,
        "number of MPI processes: 1",
        "",
        bar,
        " Plotfile Information",
        bar,
        "writer: AMReX plotfile format, synthetic data (kangaroo.synthetic)",
        "",
        bar,
        " Inputs File Parameters",
        bar,
        "amr.n_cell = " + " ".join(str(n) for n in layout.levels[0].domain),
        f"amr.max_level = {layout.finest_level}",
        f"amr.max_grid_size = {layout.max_grid_size}",
        "geometry.coord_sys = 0",
        "geometry.prob_lo = " + " ".join(_fmt(v) for v in layout.prob_lo),
        "geometry.prob_hi = " + " ".join(_fmt(v) for v in layout.prob_hi),
        "geometry.is_periodic = " + " ".join("0" for _ in range(d)),
    ]
    return "\n".join(lines) + "\n"


def _normalise_particles(particles, spacedim: int, dtype: str):
    if particles is None or particles is False:
        return None
    if isinstance(particles, (int, np.integer)):
        spec = {"count": int(particles)}
    elif isinstance(particles, dict):
        spec = dict(particles)
    else:
        raise TypeError("particles must be None, a count, or a dict")
    unknown = set(spec) - {"name", "count", "real_comps", "dtype"}
    if unknown:
        raise ValueError(f"unknown particle options: {sorted(unknown)}")
    name = str(spec.get("name", "Tracer"))
    if not name or "/" in name or name.startswith("Level_") or name == "Header":
        raise ValueError(f"invalid particle species name: {name!r}")
    count = int(spec.get("count", 0))
    if count < 0:
        raise ValueError("particle count must be >= 0")
    comps = tuple(spec.get("real_comps", ("mass", "vx", "vy", "vz")[: 1 + spacedim]))
    for c in comps:
        if c not in ("mass", "vx", "vy", "vz"):
            raise ValueError(f"unsupported particle real component: {c}")
    pdtype = str(np.dtype(spec.get("dtype", dtype)))
    if pdtype not in _DISK_DTYPE:
        raise ValueError("particle dtype must be float32 or float64")
    return name, count, comps, pdtype


def _owner_boxes(layout: PlotfileLayout, pos: np.ndarray):
    """(level, box index) of the finest box containing each particle."""
    d = layout.spacedim
    mgs = layout.max_grid_size
    lo = np.asarray(layout.prob_lo)
    count = pos.shape[0]
    level = np.full(count, -1, dtype=np.int64)
    box = np.full(count, -1, dtype=np.int64)
    for lv in layout.levels:
        # Every box is one aligned max_grid_size tile of its level (clipped
        # at the domain end), so a dense tile -> box table finds owners
        # without any per-particle search.
        ntile = [-(-n // mgs) for n in lv.domain]
        table = np.full(ntile, -1, dtype=np.int64)
        for b, (blo, _) in enumerate(lv.boxes):
            table[tuple(v // mgs for v in blo)] = b
        cell = np.floor((pos - lo) / np.asarray(lv.dx)).astype(np.int64)
        cell = np.clip(cell, 0, np.asarray(lv.domain) - 1)
        tile = cell // mgs
        hit = table[tuple(tile[:, a] for a in range(d))]
        inside = hit >= 0
        # Levels are visited coarse to fine, so the finest match wins, as in
        # AMReX's particle redistribution.
        level[inside] = lv.level
        box[inside] = hit[inside]
    return level, box


def _write_particles(path, layout: PlotfileLayout, name, count, comps, pdtype, seed):
    d = layout.spacedim
    lo = np.asarray(layout.prob_lo)
    hi = np.asarray(layout.prob_hi)
    rng = np.random.default_rng(seed)
    pos = lo + rng.random((count, d)) * (hi - lo)
    ids = np.arange(1, count + 1, dtype=np.int64)

    level, box = _owner_boxes(layout, pos)
    # Global grid number in level-major order, which is how the particle
    # Header lists grids; sorting by it groups each grid's particles.
    first = np.cumsum([0] + [len(lv.boxes) for lv in layout.levels])
    gid = first[level] + box
    order = np.argsort(gid, kind="stable")
    pos, ids, gid = pos[order], ids[order], gid[order]
    counts = np.bincount(gid, minlength=int(first[-1]))

    cs = [pos[:, a] for a in range(d)] + [None] * (3 - d)
    values = {
        "mass": analytic_field("density", *cs) / max(count, 1),
        "vx": analytic_field("velx", *cs),
        "vy": analytic_field("vely", *cs),
        "vz": analytic_field("velz", *cs),
    }
    reals = np.empty((count, d + len(comps)), dtype=_DISK_DTYPE[pdtype])
    reals[:, :d] = pos
    for j, c in enumerate(comps):
        reals[:, d + j] = values[c]
    ints = np.empty((count, 2), dtype="<i4")  # id, cpu
    ints[:, 0] = ids
    ints[:, 1] = 0

    entries = []
    start = 0
    nbytes = 0
    for lv in layout.levels:
        sdir = os.path.join(path, name, f"Level_{lv.level}")
        os.makedirs(sdir, exist_ok=True)
        # Particle grids are the mesh boxes of the level (BACK-AMREX-11).
        with open(os.path.join(sdir, "Particle_H"), "w") as f:
            f.write(f"({len(lv.boxes)} 0\n")
            for bx in lv.boxes:
                f.write(_box_str(*bx) + "\n")
            f.write(")\n")
        lcounts = counts[first[lv.level] : first[lv.level + 1]]
        offset = 0
        if lcounts.sum() == 0:
            entries += [(0, 0, 0)] * len(lv.boxes)
            continue
        with open(os.path.join(sdir, "DATA_00000"), "wb") as f:
            for n in lcounts:
                n = int(n)
                entries.append((0, n, offset))
                if n == 0:
                    continue
                # Per grid: all integers (record-major), then all reals.
                blk_i = np.ascontiguousarray(ints[start : start + n])
                blk_r = np.ascontiguousarray(reals[start : start + n])
                f.write(memoryview(blk_i).cast("B"))
                f.write(memoryview(blk_r).cast("B"))
                offset += blk_i.nbytes + blk_r.nbytes
                start += n
        nbytes += offset

    real_word = "double" if pdtype == "float64" else "single"
    lines = [f"Version_Two_Dot_One_{real_word}", str(d), str(len(comps))]
    lines += list(comps)
    # No extra int components; the checkpoint flag is set because id and cpu
    # are stored (as AMReX plotfiles do, and as yt's reader assumes).
    lines += ["0", "1", str(count), str(count + 1), str(layout.finest_level)]
    lines += [str(len(lv.boxes)) for lv in layout.levels]
    lines += [f"{fn} {n} {o}" for fn, n, o in entries]
    with open(os.path.join(path, name, "Header"), "w") as f:
        f.write("\n".join(lines) + "\n")

    return ParticleLayout(
        name=name,
        count=count,
        real_comps=comps,
        grid_counts=[int(c) for c in counts],
        dtype=pdtype,
        nbytes=nbytes,
    )


def _normalise_fields(fields) -> Tuple[str, ...]:
    if isinstance(fields, str):
        fields = [f for f in fields.split(",")]
    fields = tuple(str(f).strip() for f in fields)
    if not fields:
        raise ValueError("at least one field is required")
    for f in fields:
        # Header lists one name per line and readers trim them.
        if not f or any(ch.isspace() for ch in f):
            raise ValueError(f"invalid field name: {f!r}")
    if len(set(fields)) != len(fields):
        raise ValueError("field names must be unique")
    return fields


def _plan(
    *,
    n_cells=(64, 64, 64),
    levels: int = 3,
    ref_ratio: int = 2,
    max_grid_size: int = 32,
    fields=DEFAULT_FIELDS,
    prob_lo=(0.0, 0.0, 0.0),
    prob_hi=(1.0, 1.0, 1.0),
    dtype="float64",
    time: float = 0.0,
    step: int = 0,
    refine: Optional[Callable] = None,
    particles=None,
    max_file_bytes: int = 256 * 1024 * 1024,
) -> PlotfileLayout:
    n_cells, lo, hi = _normalise_geometry(n_cells, prob_lo, prob_hi)
    fields = _normalise_fields(fields)
    dtype = str(np.dtype(dtype))
    if dtype not in _DISK_DTYPE:
        raise ValueError("dtype must be float32 or float64")
    if int(max_file_bytes) < 1:
        raise ValueError("max_file_bytes must be positive")
    d = len(n_cells)
    pspec = _normalise_particles(particles, d, dtype)
    lvls = plan_hierarchy(
        n_cells=n_cells,
        levels=levels,
        ref_ratio=ref_ratio,
        max_grid_size=max_grid_size,
        prob_lo=lo,
        prob_hi=hi,
        refine=refine,
    )
    layout = PlotfileLayout(
        path=None,
        spacedim=d,
        fields=fields,
        dtype=dtype,
        prob_lo=lo,
        prob_hi=hi,
        ref_ratio=int(ref_ratio),
        max_grid_size=int(max_grid_size),
        time=float(time),
        step=int(step),
        levels=lvls,
    )
    ncomp = len(fields)
    total = 0
    for lv in lvls:
        fab = _assign_fabs(lv, ncomp, dtype, int(max_file_bytes))
        # Zeros format with the width of any non-negative value.
        zeros = np.zeros((len(lv.boxes), ncomp))
        lv.nbytes = fab + len(_cell_h_text(lv, ncomp, zeros, zeros))
        total += lv.nbytes
    if pspec is not None:
        name, count, comps, pdtype = pspec
        width = _DISK_DTYPE[pdtype].itemsize
        pbytes = count * (2 * 4 + (d + len(comps)) * width)
        layout.particles = ParticleLayout(name, count, comps, [], pdtype, pbytes)
        # Particle headers: box arrays per level and about 12 bytes per grid
        # entry in the species Header.
        for lv in lvls:
            pbytes += sum(len(_box_str(*b)) + 1 for b in lv.boxes) + 16
            pbytes += 12 * len(lv.boxes)
        total += pbytes + 100
    total += len(_header_text(layout)) + len(_job_info_text(layout))
    layout.nbytes = total
    return layout, pspec


def plan_plotfile(**kwargs) -> PlotfileLayout:
    """Layout and predicted size of the plotfile :func:`write_plotfile` would
    write with the same keyword arguments (``path``, ``seed`` and
    ``overwrite`` excepted); nothing is written."""
    return _plan(**kwargs)[0]


def write_plotfile(
    path,
    *,
    n_cells=(64, 64, 64),
    levels: int = 3,
    ref_ratio: int = 2,
    max_grid_size: int = 32,
    fields=DEFAULT_FIELDS,
    prob_lo=(0.0, 0.0, 0.0),
    prob_hi=(1.0, 1.0, 1.0),
    dtype="float64",
    time: float = 0.0,
    step: int = 0,
    refine: Optional[Callable] = None,
    particles=None,
    seed: int = 0,
    max_file_bytes: int = 256 * 1024 * 1024,
    overwrite: bool = False,
) -> PlotfileLayout:
    """Write a synthetic AMReX plotfile to directory ``path``.

    ``n_cells`` is an int (a cube, 3D) or one count per axis; its length sets
    ``spacedim`` (1, 2 or 3). ``refine(level, x, y, z)`` receives broadcastable
    cell-centre coordinates of one level-``level`` box (``None`` for absent
    axes) and returns a boolean mask of cells that level ``level + 1`` must
    cover. ``particles`` is ``None``, a particle count, or a dict with
    ``name``, ``count``, ``real_comps`` (subset of mass, vx, vy, vz) and
    ``dtype``. FAB data is spread over ``Cell_D`` files of about
    ``max_file_bytes`` each. ``overwrite`` replaces an existing plotfile
    (a directory holding a ``Header``); any other non-empty directory is
    refused. Returns the layout written, with exact byte counts.
    """
    t0 = _time.perf_counter()
    layout, pspec = _plan(
        n_cells=n_cells,
        levels=levels,
        ref_ratio=ref_ratio,
        max_grid_size=max_grid_size,
        fields=fields,
        prob_lo=prob_lo,
        prob_hi=prob_hi,
        dtype=dtype,
        time=time,
        step=step,
        refine=refine,
        particles=particles,
        max_file_bytes=max_file_bytes,
    )
    path = os.fspath(path)
    layout.path = path
    _prepare_dir(path, overwrite)
    for lv in layout.levels:
        _write_level(path, lv, layout.fields, layout.dtype, layout.prob_lo)
    if pspec is not None:
        layout.particles = _write_particles(path, layout, *pspec, seed)
    with open(os.path.join(path, "job_info"), "w") as f:
        f.write(_job_info_text(layout))
    # Header last: a plotfile interrupted mid-write has no Header and is
    # therefore never mistaken for a complete one.
    with open(os.path.join(path, "Header"), "w") as f:
        f.write(_header_text(layout))
    layout.nbytes = _dir_bytes(path)
    layout.seconds = _time.perf_counter() - t0
    return layout


def _dir_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def _choose_cells(target: float, base: Tuple[int, ...], plan_kw) -> Tuple[int, ...]:
    # Size grows roughly like scale**spacedim, but the refined regions snap
    # to whole tiles, so the size is not smooth in the resolution: a few
    # secant steps on real plans get close, then the neighbouring
    # resolutions are tried and the closest one wins.
    d = len(base)
    sizes = {}

    def size(cells):
        if cells not in sizes:
            sizes[cells] = plan_plotfile(n_cells=cells, **plan_kw).nbytes
        return sizes[cells]

    def cells_at(scale):
        return tuple(max(1, int(round(n * scale))) for n in base)

    scale = 1.0
    for _ in range(8):
        cells = cells_at(scale)
        known = cells in sizes
        s = size(cells)
        if known:
            break
        scale *= (target / s) ** (1.0 / d)
    best = min(sizes, key=lambda c: abs(sizes[c] - target))
    step = 1.0 / max(base)
    bscale = best[int(np.argmax(base))] / max(base)
    for k in range(-4, 5):
        size(cells_at(bscale + k * step))
    return min(sizes, key=lambda c: abs(sizes[c] - target))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python3 -m kangaroo.synthetic",
        description="Write a synthetic AMReX plotfile with analytic fields.",
    )
    p.add_argument("out_dir", help="plotfile directory to create")
    p.add_argument(
        "--cells",
        default="64",
        help="level-0 cells: one number (same on every axis) or a comma list",
    )
    p.add_argument("--dims", type=int, default=None, help="spacedim (1, 2 or 3)")
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--ref-ratio", type=int, default=2)
    p.add_argument("--max-grid", type=int, default=32, help="max_grid_size")
    p.add_argument("--fields", default=",".join(DEFAULT_FIELDS))
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument(
        "--target-bytes",
        type=float,
        default=None,
        help="pick the level-0 resolution (scaling --cells) for about this size",
    )
    p.add_argument("--particles", type=int, default=0, help="number of particles")
    p.add_argument("--time", type=float, default=0.0)
    p.add_argument("--step", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace an existing plotfile")
    args = p.parse_args(argv)

    try:
        cells = tuple(int(v) for v in args.cells.split(","))
        dims = args.dims if args.dims is not None else (3 if len(cells) == 1 else len(cells))
        if len(cells) == 1:
            cells = cells * dims
        n_cells, lo, hi = _normalise_geometry(cells, (0.0,) * 3, (1.0,) * 3, dims)
        fields = _normalise_fields(args.fields)
        plan_kw = dict(
            levels=args.levels,
            ref_ratio=args.ref_ratio,
            max_grid_size=args.max_grid,
            prob_lo=lo,
            prob_hi=hi,
            fields=fields,
            dtype=args.dtype,
            time=args.time,
            step=args.step,
            particles=args.particles or None,
        )
        if args.target_bytes is not None:
            if args.target_bytes <= 0:
                raise ValueError("--target-bytes must be positive")
            n_cells = _choose_cells(args.target_bytes, n_cells, plan_kw)
        layout = write_plotfile(
            args.out_dir, n_cells=n_cells, seed=args.seed, overwrite=args.force, **plan_kw
        )
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(layout.summary())
    rate = layout.nbytes / layout.seconds / 1e6 if layout.seconds > 0 else float("inf")
    print(f"  wrote in {layout.seconds:.2f} s ({rate:.0f} MB/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
