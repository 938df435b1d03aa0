"""Datasets opened through a gateway (API-10..16).

A :class:`Dataset` is an immutable view of ``(uri, step, level)`` on the
cluster side, bound to a :class:`~kangaroo.client.Client`. Opening one reads
the dataset's metadata from the gateway (``GET /v1/datasets/metadata``),
synthesizes its RunMeta on the client (COORD-4) unless one is given, and
allocates a field ID for every field name (API-12). The IDs are bound to the
dataset's variables in each job submission (the ``fields`` member of
``POST /v1/jobs``).

Each dataset owns one graph-building context: every lazy value built from it
shares the field-ID allocator and the record of which plan stages produce
which field, so values built from one dataset can be combined and computed
together (API-26, API-35). The context also records persisted fields (the
job holding each one, LOW-23) and the largest particle chunk count used so
far, which sizes the virtual particle level of each job (PMETA-3).
"""

from __future__ import annotations

import difflib
import html
import types
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

from . import ir
from . import lowering as lw
from . import particle_lowering as pl

__all__ = ["Dataset", "Geometry", "UnknownNameError", "NameMapping", "synthesize_runmeta"]


class UnknownNameError(KeyError):
    """An unknown field or species name (API-11); the message lists what exists."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def unknown_name_message(kind: str, key: Any, names: Sequence[str]) -> str:
    shown = ", ".join(names[:8]) + (f", ... ({len(names) - 8} more)" if len(names) > 8 else "")
    close = difflib.get_close_matches(str(key), list(names), n=3, cutoff=0.6)
    return (f"unknown {kind} {key!r}; available: {shown or '(none)'}; "
            f"close matches: {', '.join(close) if close else '(none)'}")


class NameMapping(Mapping):
    """Read-only mapping of names to lazily built values, in first-appearance order."""

    def __init__(self, kind: str, names: Sequence[str], build: Callable[[str], Any]) -> None:
        self._kind = kind
        self._names = list(dict.fromkeys(names))
        self._build = build
        self._cache: Dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key not in self._cache:
            if not isinstance(key, str) or key not in self._names:
                raise UnknownNameError(unknown_name_message(self._kind, key, self._names))
            self._cache[key] = self._build(key)
        return self._cache[key]

    def __contains__(self, key: object) -> bool:
        return key in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"<{self._kind}s: {', '.join(self._names)}>"


class Geometry:
    """Geometry helpers of a dataset (API-15), computed from its metadata at its level."""

    def __init__(self, dataset: "Dataset") -> None:
        self._dataset = dataset

    def plane(self, *, axis: Any, coord: Optional[float] = None, zoom: float = 1.0,
              resolution: Any = None) -> lw.PlaneGeometry:
        """Default ``coord`` (middle cell center), ``rect`` (whole plane, shrunk by
        ``zoom`` about its center), ``resolution`` (cell counts), axis labels and
        bounds of the plane normal to ``axis``."""
        ds = self._dataset
        return lw.plane_geometry(ds.metadata, axis=axis, level=ds.level, coord=coord, zoom=zoom,
                                 resolution=resolution)

    def __repr__(self) -> str:
        return f"Geometry(level={self._dataset.level})"


def _field_names(meta: Mapping[str, Any]) -> List[str]:
    """API-12: ``var_names`` plus every ``component_names`` entry, first appearance kept."""
    names: List[str] = [n for n in meta.get("var_names") or [] if isinstance(n, str)]
    info = meta.get("variable_info") or {}
    if isinstance(info, Mapping):
        for entry in info.values():
            if isinstance(entry, Mapping):
                names += [n for n in entry.get("component_names") or [] if isinstance(n, str)]
    return list(dict.fromkeys(names))


def _field_dtypes(meta: Mapping[str, Any]) -> Dict[str, str]:
    out: Dict[str, str] = {}
    info = meta.get("variable_info") or {}
    if isinstance(info, Mapping):
        for var, entry in info.items():
            if not isinstance(entry, Mapping):
                continue
            dtype = "float32" if entry.get("type") in ("float32", "f32") else "float64"
            out.setdefault(var, dtype)
            for comp in entry.get("component_names") or []:
                out.setdefault(comp, dtype)
    return out


def _species_names(meta: Mapping[str, Any]) -> List[str]:
    names = []
    for entry in meta.get("particle_types") or []:
        if isinstance(entry, str):
            names.append(entry)
        elif isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
            names.append(entry["name"])
    info = meta.get("particle_info")
    if isinstance(info, Mapping):
        names += [n for n in info if isinstance(n, str)]
    return list(dict.fromkeys(names))


def _particle_info(meta: Mapping[str, Any], species: str) -> Mapping[str, Any]:
    info = meta.get("particle_info")
    entry = info.get(species) if isinstance(info, Mapping) else None
    return entry if isinstance(entry, Mapping) else {}


def dataset_particle_chunks(meta: Mapping[str, Any]) -> Dict[str, int]:
    """Per species the chunk count the metadata reports (species without one are left out)."""
    out: Dict[str, int] = {}
    info = meta.get("particle_info")
    if isinstance(info, Mapping):
        for name, entry in info.items():
            n = entry.get("chunk_count") if isinstance(entry, Mapping) else None
            if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
                out[name] = n
    return out


def synthesize_runmeta(meta: Mapping[str, Any], step: int) -> lw.RunMeta:
    """COORD-4 RunMeta with the species' chunk counts from the metadata (PMETA-2)."""
    return lw.runmeta_from_metadata(meta, step=step, particle_species=dataset_particle_chunks(meta))


class _GraphContext:
    """Field-ID allocation, stage provenance and persisted fields shared by a dataset's lazy values."""

    def __init__(self, first_temporary: int) -> None:
        self.alloc = lw.FieldAllocator(first_temporary)
        self.producers: Dict[int, ir.Stage] = {}
        #: persisted field -> the job whose results hold it
        self.persisted: Dict[int, str] = {}
        #: stages whose every output is persisted, by id (kept alive by the value)
        self.forgotten: Dict[int, ir.Stage] = {}
        #: largest particle chunk count used so far (0: no particle operation yet)
        self.particle_chunks = 0

    def record(self, field: int, stage: ir.Stage) -> None:
        self.producers[field] = stage

    def persist(self, targets: Sequence[Any], job_id: str) -> None:
        """LOW-23: ``targets`` ((field, producer) pairs) now live in ``job_id``'s results;
        their producers are forgotten, so later plans read the fields as sources."""
        for field, _ in targets:
            self.persisted[field] = job_id
            self.producers.pop(field, None)
        for _, stage in targets:
            if stage is None:
                continue
            written = {o.field.field for t in stage.templates for o in t.outputs}
            if written and written <= set(self.persisted):
                self.forgotten[id(stage)] = stage

    def job_stages(self, tails: Sequence[ir.Stage]) -> List[ir.Stage]:
        """``tails`` with their ancestry minus forgotten stages. Values built before a
        persist still hold ``after`` edges to the forgotten producers, so the graph is
        copied with those edges dropped; the stages themselves stay untouched."""
        if not self.forgotten:
            return list(tails)
        copies: Dict[int, ir.Stage] = {}

        def copy(stage: ir.Stage) -> ir.Stage:
            c = copies.get(id(stage))
            if c is None:
                c = ir.Stage(stage.name, stage.plane,
                             after=[copy(a) for a in stage.after if id(a) not in self.forgotten],
                             templates=list(stage.templates))
                copies[id(stage)] = c
            return c

        return [copy(t) for t in tails]


class Dataset:
    """A dataset on the cluster side, as seen by one client (API-10..16).

    Build with :func:`kangaroo.open_dataset` or :meth:`Client.open_dataset`."""

    def __init__(self, client: Any, uri: str, *, step: int, level: int, metadata: Mapping[str, Any],
                 runmeta: lw.RunMeta, world_size: int, runmeta_given: bool = False) -> None:
        self._client = client
        self._runmeta_given = runmeta_given
        self._uri = uri
        self._metadata = types.MappingProxyType(dict(metadata))
        self._runmeta = runmeta
        self._world_size = world_size
        self._step_meta = runmeta.step_meta(step)
        self._step = self._step_meta.step
        nlev = len(self._step_meta.levels)
        if not 0 <= level < nlev:
            raise ValueError(f"level {level} is outside the dataset's levels 0..{nlev - 1}")
        self._level = level
        names = _field_names(metadata)
        self._field_ids = {name: 1 + i for i, name in enumerate(names)}
        self._field_dtypes = _field_dtypes(metadata)
        self._graph = _GraphContext(max(1000, len(names) + 1))
        from .lazy import Array  # local: the lazy-value modules build on this one

        self._fields = NameMapping("field", names, lambda n: Array._source(self, n))
        self._particles = NameMapping("particle species", _species_names(metadata), self._species)
        self._meshes = NameMapping("mesh", [m for m in metadata.get("mesh_names") or [] if isinstance(m, str)],
                                   lambda n: n)

    # -- identity ---------------------------------------------------------

    @property
    def uri(self) -> str:
        return self._uri

    @property
    def client(self) -> Any:
        return self._client

    @property
    def step(self) -> int:
        return self._step

    @property
    def level(self) -> int:
        return self._level

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self._metadata

    @property
    def runmeta(self) -> lw.RunMeta:
        return self._runmeta

    @property
    def world_size(self) -> int:
        return self._world_size

    @property
    def geometry(self) -> Geometry:
        return Geometry(self)

    # -- names ------------------------------------------------------------

    @property
    def fields(self) -> NameMapping:
        return self._fields

    @property
    def particles(self) -> NameMapping:
        return self._particles

    @property
    def meshes(self) -> NameMapping:
        """Mesh names of multi-mesh formats (empty for AMReX plotfiles)."""
        return self._meshes

    def __getitem__(self, name: str) -> Any:
        return self._fields[name]

    # -- particles (PMETA-2, PMETA-3) ----------------------------------------

    def _species(self, name: str) -> Any:
        from .particles import ParticleSpecies

        info = _particle_info(self._metadata, name)
        fields = [f for f in info.get("fields") or [] if isinstance(f, str)]
        chunks = pl.species_chunk_count(self._runmeta, name, info.get("chunk_count"))
        return ParticleSpecies(self, name, fields, chunks)

    def _use_particle_chunks(self, chunks: int) -> None:
        self._graph.particle_chunks = max(self._graph.particle_chunks, int(chunks))

    def _particle_step(self) -> int:
        """Step label of the virtual particle level in this dataset's jobs."""
        return pl.particle_step_label(self._runmeta)

    def _job_runmeta(self) -> lw.RunMeta:
        """The RunMeta submitted with a job: the mesh RunMeta, plus the virtual particle
        level once a particle operation was built (see :mod:`kangaroo.particle_lowering`)."""
        return pl.job_runmeta(self._runmeta, self._graph.particle_chunks)

    def field_id(self, name: str) -> int:
        """The field ID bound to ``name`` in every job of this dataset."""
        if name not in self._field_ids:
            raise UnknownNameError(unknown_name_message("field", name, list(self._field_ids)))
        return self._field_ids[name]

    def field_bindings(self, field_ids: Optional[Sequence[int]] = None) -> Dict[str, str]:
        """The ``fields`` member of a job submission: field ID -> variable name,
        restricted to ``field_ids`` when given. Persisted fields come from their
        job's results (``seed_jobs``) and are never bound to dataset variables."""
        wanted = None if field_ids is None else set(field_ids)
        persisted = self._graph.persisted
        return {str(fid): name for name, fid in self._field_ids.items()
                if (wanted is None or fid in wanted) and fid not in persisted}

    # -- selection (API-16) ------------------------------------------------

    def select(self, *, step: Optional[int] = None, level: Optional[int] = None) -> "Dataset":
        """A new dataset view (with a fresh graph context) at another step or level."""
        runmeta = self._runmeta
        if step is None:
            step = self._step
        elif self._runmeta_given:
            step = resolve_step(self._metadata, runmeta, step)
        elif step != self._step:
            step = resolve_step(self._metadata, None, step)
            runmeta = synthesize_runmeta(self._metadata, step)
        return Dataset(self._client, self._uri, step=step, level=self._level if level is None else level,
                       metadata=self._metadata, runmeta=runmeta, world_size=self._world_size,
                       runmeta_given=self._runmeta_given)

    def __repr__(self) -> str:
        return (f"Dataset({self._uri!r}, step={self._step}, level={self._level}, "
                f"levels={len(self._step_meta.levels)}, fields={len(self._fields)})")

    def _repr_html_(self) -> str:
        rows = [("uri", self._uri), ("step", self._step), ("level", self._level),
                ("levels", len(self._step_meta.levels)),
                ("blocks", sum(len(lv.boxes) for lv in self._step_meta.levels)),
                ("fields", ", ".join(self._fields)), ("particles", ", ".join(self._particles) or "-")]
        body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in rows)
        return f"<div><b>Dataset</b><table>{body}</table></div>"


def resolve_step(meta: Mapping[str, Any], runmeta: Optional[lw.RunMeta], step: int) -> int:
    """The step label to lower against. A synthesized RunMeta holds one step; a
    plotfile answers to its own step number (the Header's) and to 0."""
    if isinstance(step, bool) or not isinstance(step, int):
        raise TypeError(f"step must be an integer, got {step!r}")
    if runmeta is not None:
        labels = [s.step for s in runmeta.steps]
        if step not in labels:
            raise ValueError(f"step {step} is not in the given RunMeta (steps: {labels})")
        return step
    own = meta.get("step")
    if step == 0 or (isinstance(own, int) and step == own):
        return step
    raise ValueError(f"step {step} is not in the dataset (it holds step {own}, also addressable as 0)")


def runmeta_for(meta: Mapping[str, Any], runmeta: Union[None, lw.RunMeta, Mapping[str, Any]],
                step: int) -> lw.RunMeta:
    if runmeta is None:
        return lw.runmeta_from_metadata(meta, step=step)
    if isinstance(runmeta, lw.RunMeta):
        return runmeta
    if isinstance(runmeta, Mapping):
        return lw.RunMeta.from_dict(runmeta, mapped_mesh=bool(meta.get("mapped_mesh", False)))
    raise TypeError(f"runmeta must be a RunMeta or a RunMeta document, got {type(runmeta).__name__}")
