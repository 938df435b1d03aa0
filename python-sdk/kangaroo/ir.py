"""Plan and buffer model (API-2, API-44) and the plan document encoder (PLAN-13).

A :class:`Plan` is a list of :class:`Stage` objects; each stage holds
:class:`TaskTemplate` objects that the runtime expands into tasks. Stages refer
to their prerequisites as stage objects (``after=[other_stage]``); the encoder
orders them topologically (PLAN-14) and turns the references into positions.

Everything here is plain Python: building and encoding a plan needs neither
numpy nor a runtime. Invalid values are rejected when the objects are built:
``TypeError`` for wrong types and unsupported dtype tags (PLAN-10/11),
``ValueError`` for out-of-range values (PLAN-7, VAL-3..8, DAG-2).

The module also implements the client-side lowering helpers that decide plan
shape: the home-rank function (OWN-2), block reductions (LOW-5/6), level
combination (LOW-7) and the final stage (LOW-8).
"""

from __future__ import annotations

import enum
import json
import math
import numbers
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

__all__ = [
    "PLAN_SCHEMA",
    "PLANES",
    "DType",
    "InitPolicy",
    "BlockShape",
    "FixedShape",
    "LikeInputShape",
    "DynamicShape",
    "DynamicUpperBound",
    "BufferSpec",
    "Domain",
    "FieldRef",
    "OutputRef",
    "DependencyRule",
    "GraphReduceSpec",
    "Params",
    "params",
    "PARAM_TYPES",
    "COVERAGE_PARAM_TYPES",
    "TaskTemplate",
    "Stage",
    "Plan",
    "home_rank",
    "default_fan_in",
    "resolve_fan_in",
    "block_reduction_stages",
    "LevelValue",
    "level_combination_stages",
    "final_stage",
]

#: Schema identifier written into every plan document (PLAN-15).
PLAN_SCHEMA = "kangaroo.plan/1"

#: Execution planes of stages and templates (PLAN-2/3).
PLANES = ("chunk", "graph", "mixed")

_U64_MASK = 0xFFFFFFFFFFFFFFFF
_INT32_MIN = -(1 << 31)
_INT32_MAX = (1 << 31) - 1


# ---------------------------------------------------------------------------
# small value checks


def _as_int(value: Any, what: str) -> int:
    """An integer (Python or numpy); bools and floats are rejected."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an integer, got bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an integer, got {type(value).__name__}") from None


def _as_int32(value: Any, what: str) -> int:
    v = _as_int(value, what)
    if not _INT32_MIN <= v <= _INT32_MAX:
        raise ValueError(f"{what} must fit in int32, got {v}")
    return v


def _as_float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{what} must be finite, got {v}")
    return v


def _as_str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}")
    return value


def _as_bool(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral) and int(value) in (0, 1):
        return bool(int(value))
    if type(value).__name__ == "bool_":  # numpy.bool_
        return bool(value)
    raise TypeError(f"{what} must be a boolean (or 0/1), got {value!r}")


def _as_sequence(value: Any, what: str) -> Sequence[Any]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise TypeError(f"{what} must be a sequence, got {type(value).__name__}")
    return list(value)


# ---------------------------------------------------------------------------
# dtypes, init policies, shapes, buffer specifications (PLAN-10/11)


class DType(str, enum.Enum):
    """Chunk scalar tags (BUF-1). ``DType("float64")`` and friends resolve aliases."""

    OPAQUE = "opaque"
    U8 = "u8"
    I64 = "i64"
    F32 = "f32"
    F64 = "f64"

    @classmethod
    def _missing_(cls, value: object) -> Optional["DType"]:
        if isinstance(value, str):
            alias = _DTYPE_ALIASES.get(value)
            if alias is not None:
                return cls(alias)
        return None

    @classmethod
    def parse(cls, value: Any) -> "DType":
        """Resolves a tag, alias, ``DType`` or numpy dtype; anything else is a ``TypeError``."""
        if isinstance(value, DType):
            return value
        name = value
        if not isinstance(value, str):
            # numpy dtypes and numpy scalar types expose their name through numpy.dtype
            is_numpy = isinstance(value, type) or type(value).__module__.split(".")[0] == "numpy"
            if not is_numpy:
                raise TypeError(f"unsupported dtype tag {value!r}")
            try:
                import numpy  # local import: numpy is optional here

                name = numpy.dtype(value).name
            except Exception:  # noqa: BLE001 - anything unparseable is an unsupported tag
                raise TypeError(f"unsupported dtype tag {value!r}") from None
        try:
            return cls(name)
        except ValueError:
            raise TypeError(
                f"unsupported dtype tag {name!r} (expected one of opaque, u8, i64, f32, f64 "
                "or the aliases uint8, int64, float32, float64)"
            ) from None

    @property
    def itemsize(self) -> int:
        """Element width in bytes (opaque counts bytes)."""
        return {"opaque": 1, "u8": 1, "i64": 8, "f32": 4, "f64": 8}[self.value]

    def __str__(self) -> str:
        return self.value


_DTYPE_ALIASES = {"uint8": "u8", "int64": "i64", "float32": "f32", "float64": "f64"}


class InitPolicy(str, enum.Enum):
    """Initial contents of an output buffer (PLAN-10)."""

    UNINITIALIZED = "uninitialized"
    ZERO = "zero"

    @classmethod
    def parse(cls, value: Any) -> "InitPolicy":
        if value is None:
            return cls.UNINITIALIZED
        if isinstance(value, InitPolicy):
            return value
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"unknown init policy {value!r} (expected 'uninitialized' or 'zero')") from None

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class BlockShape:
    """The task block's box, with ``components`` values per cell (rank 3, or rank 4 when > 1)."""

    components: int = 1

    def __post_init__(self) -> None:
        c = _as_int(self.components, "BlockShape.components")
        if c < 1:
            raise ValueError(f"BlockShape.components must be >= 1, got {c}")
        object.__setattr__(self, "components", c)

    def to_json(self) -> Dict[str, Any]:
        return {"kind": "block", "components": self.components}


@dataclass(frozen=True)
class FixedShape:
    """A C-order buffer of exactly ``extents`` (rank 1..4, each extent > 0)."""

    extents: Tuple[int, ...]

    def __post_init__(self) -> None:
        raw = self.extents
        if isinstance(raw, numbers.Integral) and not isinstance(raw, bool):
            raw = (raw,)
        ext = tuple(_as_int(e, "FixedShape extent") for e in _as_sequence(raw, "FixedShape.extents"))
        if not 1 <= len(ext) <= 4:
            raise ValueError(f"FixedShape rank must be 1..4, got {len(ext)}")
        for e in ext:
            if e <= 0:
                raise ValueError(f"FixedShape extents must be > 0, got {list(ext)}")
        object.__setattr__(self, "extents", ext)

    @property
    def rank(self) -> int:
        return len(self.extents)

    def to_json(self) -> Dict[str, Any]:
        return {"kind": "fixed", "extents": list(self.extents)}


@dataclass(frozen=True)
class LikeInputShape:
    """Same rank and extents as input ``input_index`` of the task."""

    input_index: int = 0

    def __post_init__(self) -> None:
        i = _as_int(self.input_index, "LikeInputShape.input_index")
        if i < 0:
            raise ValueError(f"LikeInputShape.input_index must be >= 0, got {i}")
        object.__setattr__(self, "input_index", i)

    def to_json(self) -> Dict[str, Any]:
        return {"kind": "like_input", "input_index": self.input_index}


_BOUND_KINDS = ("literal", "like_input", "backend_chunk", "amr_subbox_pack")


@dataclass(frozen=True)
class DynamicUpperBound:
    """Capacity of a dynamic buffer: use the constructors ``literal``, ``like_input``,
    ``backend_chunk`` and ``amr_subbox_pack``."""

    kind: str
    value: Optional[int] = None
    input_index: Optional[int] = None

    def __post_init__(self) -> None:
        if self.kind not in _BOUND_KINDS:
            raise ValueError(f"unknown dynamic bound kind {self.kind!r} (expected one of {', '.join(_BOUND_KINDS)})")
        value, index = self.value, self.input_index
        if self.kind == "literal":
            if value is None:
                raise ValueError("a literal dynamic bound needs a value")
            value = _as_int(value, "DynamicUpperBound.value")
            if value < 0:
                raise ValueError(f"DynamicUpperBound.value must be >= 0, got {value}")
            if index is not None:
                raise ValueError("a literal dynamic bound takes no input_index")
        else:
            if value is not None:
                raise ValueError(f"a {self.kind} dynamic bound takes no value")
            if self.kind == "like_input" and index is None:
                raise ValueError("a like_input dynamic bound needs an input_index")
            if self.kind == "backend_chunk" and index is None:
                index = 0
            if self.kind == "amr_subbox_pack" and index is not None:
                raise ValueError("an amr_subbox_pack dynamic bound takes no input_index")
            if index is not None:
                index = _as_int(index, "DynamicUpperBound.input_index")
                if index < 0:
                    raise ValueError(f"DynamicUpperBound.input_index must be >= 0, got {index}")
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "input_index", index)

    @classmethod
    def literal(cls, value: int) -> "DynamicUpperBound":
        return cls("literal", value=value)

    @classmethod
    def like_input(cls, input_index: int) -> "DynamicUpperBound":
        return cls("like_input", input_index=input_index)

    @classmethod
    def backend_chunk(cls, input_index: int = 0) -> "DynamicUpperBound":
        return cls("backend_chunk", input_index=input_index)

    @classmethod
    def amr_subbox_pack(cls) -> "DynamicUpperBound":
        return cls("amr_subbox_pack")

    def to_json(self) -> Dict[str, Any]:
        if self.kind == "literal":
            return {"kind": "literal", "value": self.value}
        if self.kind == "amr_subbox_pack":
            return {"kind": "amr_subbox_pack"}
        return {"kind": self.kind, "input_index": self.input_index}


@dataclass(frozen=True)
class DynamicShape:
    """Rank-1 buffer with a capacity; the kernel commits the final length once (BUF-6).
    An integer ``upper_bound`` means ``DynamicUpperBound.literal(n)``."""

    upper_bound: DynamicUpperBound

    def __post_init__(self) -> None:
        bound = self.upper_bound
        if isinstance(bound, numbers.Integral) and not isinstance(bound, bool):
            bound = DynamicUpperBound.literal(int(bound))
        if not isinstance(bound, DynamicUpperBound):
            raise TypeError(f"DynamicShape.upper_bound must be a DynamicUpperBound, got {type(bound).__name__}")
        object.__setattr__(self, "upper_bound", bound)

    def to_json(self) -> Dict[str, Any]:
        return {"kind": "dynamic", "upper_bound": self.upper_bound.to_json()}


Shape = Union[BlockShape, FixedShape, LikeInputShape, DynamicShape]
_SHAPE_TYPES = (BlockShape, FixedShape, LikeInputShape, DynamicShape)


@dataclass(frozen=True)
class BufferSpec:
    """Type, shape and initial contents of one output (PLAN-10/11).

    ``dtype`` accepts the tags, the aliases ``uint8, int64, float32, float64``
    and numpy dtypes; other tags raise ``TypeError``. ``opaque`` combines only
    with a rank-1 ``FixedShape`` or a ``DynamicShape`` (``TypeError``).
    """

    dtype: DType
    shape: Shape
    init: InitPolicy = InitPolicy.UNINITIALIZED

    def __post_init__(self) -> None:
        dtype = DType.parse(self.dtype)
        if not isinstance(self.shape, _SHAPE_TYPES):
            raise TypeError(
                "BufferSpec.shape must be BlockShape, FixedShape, LikeInputShape or DynamicShape, "
                f"got {type(self.shape).__name__}"
            )
        if dtype is DType.OPAQUE:
            if isinstance(self.shape, (BlockShape, LikeInputShape)):
                raise TypeError(f"opaque buffers cannot use a {type(self.shape).__name__} (PLAN-11)")
            if isinstance(self.shape, FixedShape) and self.shape.rank != 1:
                raise TypeError(f"an opaque FixedShape must have rank 1, got rank {self.shape.rank} (PLAN-11)")
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "init", InitPolicy.parse(self.init))

    def to_json(self) -> Dict[str, Any]:
        return {"dtype": self.dtype.value, "shape": self.shape.to_json(), "init": self.init.value}


# ---------------------------------------------------------------------------
# domains, field references, dependency rules, reduction specs


def _blocks_tuple(blocks: Any, what: str) -> Optional[Tuple[int, ...]]:
    if blocks is None:
        return None
    if isinstance(blocks, numbers.Integral) and not isinstance(blocks, bool):
        blocks = (blocks,)
    return tuple(_as_int32(b, f"{what} entry") for b in _as_sequence(blocks, what))


@dataclass(frozen=True)
class Domain:
    """Where tasks run (PLAN-4): a step label, a level and optionally a block list
    (``None``: every block of the level; a list: exactly those, in order)."""

    step: int
    level: int
    blocks: Optional[Tuple[int, ...]] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "step", _as_int32(self.step, "Domain.step"))
        level = _as_int(self.level, "Domain.level")
        if not 0 <= level <= 32767:
            raise ValueError(f"Domain.level must be in 0..32767, got {level}")
        object.__setattr__(self, "level", level)
        object.__setattr__(self, "blocks", _blocks_tuple(self.blocks, "Domain.blocks"))

    def to_json(self) -> Dict[str, Any]:
        return {"step": self.step, "level": self.level, "blocks": None if self.blocks is None else list(self.blocks)}


@dataclass(frozen=True)
class FieldRef:
    """A template input (PLAN-5): field, version and an optional domain override."""

    field: int
    version: int = 0
    domain: Optional[Domain] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "field", _as_int32(self.field, "FieldRef.field"))
        object.__setattr__(self, "version", _as_int32(self.version, "FieldRef.version"))
        if self.domain is not None and not isinstance(self.domain, Domain):
            raise TypeError(f"FieldRef.domain must be a Domain or None, got {type(self.domain).__name__}")

    def to_json(self) -> Dict[str, Any]:
        return {
            "field": self.field,
            "version": self.version,
            "domain": None if self.domain is None else self.domain.to_json(),
        }


def _field_ref(value: Any, what: str) -> FieldRef:
    if isinstance(value, FieldRef):
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return FieldRef(int(value))
    raise TypeError(f"{what} must be a FieldRef or a field id, got {type(value).__name__}")


@dataclass(frozen=True)
class OutputRef:
    """A template output (PLAN-6): the field (and version) it writes and its buffer spec.
    Outputs carry no domain; ``field`` may be a ``FieldRef`` without override or a field id."""

    field: FieldRef
    buffer: BufferSpec

    def __post_init__(self) -> None:
        ref = _field_ref(self.field, "OutputRef.field")
        if ref.domain is not None:
            raise ValueError("outputs carry no domain (PLAN-6); drop the FieldRef's domain")
        if not isinstance(self.buffer, BufferSpec):
            raise TypeError(f"OutputRef.buffer must be a BufferSpec, got {type(self.buffer).__name__} (PLAN-12)")
        object.__setattr__(self, "field", ref)

    def to_json(self) -> Dict[str, Any]:
        return {"field": self.field.field, "version": self.field.version, "buffer": self.buffer.to_json()}


_DEP_KINDS = ("None", "FaceNeighbors")


@dataclass(frozen=True)
class DependencyRule:
    """Neighbor dependencies (PLAN-7): kind ``"None"`` or ``"FaceNeighbors"``, hop
    ``width >= 0``, six face flags (Xm, Xp, Ym, Yp, Zm, Zp) and halo input indices."""

    kind: str = "None"
    width: int = 0
    faces: Tuple[bool, ...] = (True, True, True, True, True, True)
    halo_inputs: Tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in _DEP_KINDS:
            raise ValueError(f"unknown dependency kind {self.kind!r} (expected 'None' or 'FaceNeighbors')")
        width = _as_int(self.width, "DependencyRule.width")
        if width < 0:
            raise ValueError(f"DependencyRule.width must be >= 0, got {width}")
        faces = _as_sequence(self.faces, "DependencyRule.faces")
        if len(faces) != 6:
            raise ValueError(f"DependencyRule.faces must have exactly 6 entries (Xm, Xp, Ym, Yp, Zm, Zp), got {len(faces)}")
        faces_t = tuple(_as_bool(f, "DependencyRule.faces entry") for f in faces)
        halo = tuple(_as_int32(h, "DependencyRule.halo_inputs entry") for h in _as_sequence(self.halo_inputs, "DependencyRule.halo_inputs"))
        for h in halo:
            if h < 0:
                raise ValueError(f"DependencyRule.halo_inputs entries must be >= 0, got {h}")
        object.__setattr__(self, "width", width)
        object.__setattr__(self, "faces", faces_t)
        object.__setattr__(self, "halo_inputs", halo)

    def to_json(self) -> Dict[str, Any]:
        return {"kind": self.kind, "width": self.width, "faces": list(self.faces), "halo_inputs": list(self.halo_inputs)}


@dataclass(frozen=True)
class GraphReduceSpec:
    """Grouping of a graph template (PLAN-8, RED-1..5), validated per VAL-7."""

    fan_in: int = 1
    num_inputs: int = 0
    input_base: int = 0
    output_base: int = 0
    input_blocks: Tuple[int, ...] = ()
    output_blocks: Tuple[int, ...] = ()
    group_offsets: Tuple[int, ...] = ()

    def __post_init__(self) -> None:
        fan_in = _as_int(self.fan_in, "GraphReduceSpec.fan_in")
        num_inputs = _as_int(self.num_inputs, "GraphReduceSpec.num_inputs")
        if fan_in < 1:
            raise ValueError(f"GraphReduceSpec.fan_in must be >= 1, got {fan_in}")
        if num_inputs < 1:
            raise ValueError(f"GraphReduceSpec.num_inputs must be >= 1, got {num_inputs}")
        input_blocks = tuple(_as_int32(b, "input_blocks entry") for b in _as_sequence(self.input_blocks, "input_blocks"))
        output_blocks = tuple(_as_int32(b, "output_blocks entry") for b in _as_sequence(self.output_blocks, "output_blocks"))
        offsets = tuple(_as_int(o, "group_offsets entry") for o in _as_sequence(self.group_offsets, "group_offsets"))
        if input_blocks and len(input_blocks) != num_inputs:
            raise ValueError(f"input_blocks must have num_inputs={num_inputs} entries, got {len(input_blocks)}")
        if offsets:
            if offsets[0] != 0 or offsets[-1] != num_inputs:
                raise ValueError(f"group_offsets must start at 0 and end at num_inputs={num_inputs}, got {list(offsets)}")
            if any(b <= a for a, b in zip(offsets, offsets[1:])) or len(offsets) < 2:
                raise ValueError(f"group_offsets must be strictly increasing, got {list(offsets)}")
        object.__setattr__(self, "fan_in", fan_in)
        object.__setattr__(self, "num_inputs", num_inputs)
        object.__setattr__(self, "input_base", _as_int(self.input_base, "GraphReduceSpec.input_base"))
        object.__setattr__(self, "output_base", _as_int(self.output_base, "GraphReduceSpec.output_base"))
        object.__setattr__(self, "input_blocks", input_blocks)
        object.__setattr__(self, "group_offsets", offsets)
        if output_blocks and len(output_blocks) != self.num_groups:
            raise ValueError(f"output_blocks must have one entry per group ({self.num_groups}), got {len(output_blocks)}")
        object.__setattr__(self, "output_blocks", output_blocks)

    @property
    def num_groups(self) -> int:
        """RED-1."""
        if self.group_offsets:
            return len(self.group_offsets) - 1
        return -(-self.num_inputs // self.fan_in)

    def group_range(self, g: int) -> Tuple[int, int]:
        """Input positions ``[start, end)`` of group ``g`` (RED-2)."""
        if not 0 <= g < self.num_groups:
            raise IndexError(f"group {g} out of range (spec has {self.num_groups} groups)")
        if self.group_offsets:
            return self.group_offsets[g], self.group_offsets[g + 1]
        start = g * self.fan_in
        return start, min(start + self.fan_in, self.num_inputs)

    def input_block(self, position: int) -> int:
        """RED-4."""
        return self.input_blocks[position] if self.input_blocks else self.input_base + position

    def output_block(self, g: int) -> int:
        """RED-3."""
        return self.output_blocks[g] if self.output_blocks else self.output_base + g

    def groups(self) -> List[Tuple[int, List[int]]]:
        """``[(output block, [input blocks...]), ...]`` for every group."""
        out = []
        for g in range(self.num_groups):
            start, end = self.group_range(g)
            out.append((self.output_block(g), [self.input_block(p) for p in range(start, end)]))
        return out

    def to_json(self) -> Dict[str, Any]:
        return {
            "fan_in": self.fan_in,
            "num_inputs": self.num_inputs,
            "input_base": self.input_base,
            "output_base": self.output_base,
            "input_blocks": list(self.input_blocks),
            "output_blocks": list(self.output_blocks),
            "group_offsets": list(self.group_offsets),
        }


# ---------------------------------------------------------------------------
# typed kernel parameters (PARAM-1..3)

# Field kinds: "int", "uint", "f64", "str", "bool", ("list", kind), ("array", kind, n).
# Each entry: name -> (kind, required, nullable)
_P = Tuple[Any, bool, bool]


def _opt(kind: Any, nullable: bool = False) -> _P:
    return (kind, False, nullable)


def _req(kind: Any) -> _P:
    return (kind, True, False)


PARAM_TYPES: Dict[str, Dict[str, _P]] = {
    "AmrSubboxPackParams": {
        "input_field": _opt("int"), "input_version": _opt("int"), "input_step": _opt("int"),
        "input_level": _opt("int"), "halo_cells": _opt("int"),
    },
    "GradStencilParams": {
        "input_field": _opt("int"), "input_version": _opt("int"), "input_step": _opt("int"),
        "input_level": _opt("int"), "stencil_radius": _opt("int"),
    },
    "PlotfileLoadParams": {"plotfile": _req("str"), "level": _opt("int"), "comp": _opt("int")},
    "FluxSurfaceParams": {
        "radii": _req(("list", "f64")), "radius_indices": _req(("list", "int")),
        "temperature_bins": _opt(("list", "f64")), "num_radii": _req("uint"), "gamma": _opt("f64"),
    },
    "CylindricalFluxParams": {
        "radius": _req("f64"), "heights": _req(("list", "f64")), "height_indices": _req(("list", "int")),
        "temperature_bins": _opt(("list", "f64")), "num_heights": _req("uint"), "gamma": _opt("f64"),
    },
    "ToomreProfileParams": {
        "radial_edges": _opt(("list", "f64")), "z_bounds": _opt(("array", "f64", 2)),
        "center": _opt(("array", "f64", 3)),
    },
    "UniformSliceCellParams": {
        "axis": _opt("int"), "coord": _req("f64"), "plane_index": _opt("int", nullable=True),
        "rect": _req(("array", "f64", 4)), "resolution": _req(("array", "int", 2)),
    },
    "UniformProjectionParams": {
        "axis": _opt("int"), "axis_bounds": _req(("array", "f64", 2)),
        "rect": _req(("array", "f64", 4)), "resolution": _req(("array", "int", 2)),
    },
    "FieldExprParams": {"expression": _req("str"), "variables": _req(("list", "str"))},
    "UniformSliceParams": {
        "axis": _opt("int"), "coord": _req("f64"), "rect": _req(("array", "f64", 4)),
        "resolution": _req(("array", "int", 2)),
    },
    "Histogram1DParams": {"range": _req(("array", "f64", 2)), "bins": _opt("int"), "weight_mode": _opt("str")},
    "Histogram2DParams": {
        "x_range": _req(("array", "f64", 2)), "y_range": _req(("array", "f64", 2)),
        "bins": _req(("array", "int", 2)), "weight_mode": _opt("str"),
    },
    "ParticleFieldParams": {"particle_type": _req("str"), "field_name": _req("str")},
    "ParticleCicGridParams": {
        "particle_type": _req("str"), "level_index": _opt("int"), "axis": _opt("int"),
        "axis_bounds": _req(("array", "f64", 2)), "mass_field": _opt("str"), "mass_max": _opt("f64", nullable=True),
    },
    "ParticleCicProjectionParams": {
        "particle_type": _req("str"), "level_index": _opt("int"), "axis": _opt("int"),
        "axis_bounds": _req(("array", "f64", 2)), "rect": _req(("array", "f64", 4)),
        "resolution": _req(("array", "int", 2)), "mass_field": _opt("str"), "mass_max": _opt("f64", nullable=True),
    },
    "ScalarParams": {"scalar": _opt("f64")},
    "ValuesParams": {"values": _req(("list", "f64"))},
    "FiniteOnlyParams": {"finite_only": _opt("bool")},
    "ParticleHistogramParams": {"edges": _req(("list", "f64")), "density": _opt("bool")},
    "TopKModesParams": {"k": _req("int")},
    "SliceFinalizeParams": {"pixel_area": _opt("f64")},
}

#: Alternatives whose templates receive the coverage list of ``covered_boxes_ref`` (PLAN-9).
COVERAGE_PARAM_TYPES = frozenset({
    "FluxSurfaceParams", "CylindricalFluxParams", "ToomreProfileParams", "UniformSliceCellParams",
    "UniformProjectionParams", "Histogram1DParams", "Histogram2DParams", "ParticleCicGridParams",
    "ParticleCicProjectionParams",
})


def _convert_param(kind: Any, value: Any, what: str) -> Any:
    if kind == "int":
        return _as_int(value, what)
    if kind == "uint":
        v = _as_int(value, what)
        if v < 0:
            raise ValueError(f"{what} must be >= 0, got {v}")
        return v
    if kind == "f64":
        return _as_float(value, what)
    if kind == "str":
        return _as_str(value, what)
    if kind == "bool":
        return _as_bool(value, what)
    if kind[0] == "list":
        return [_convert_param(kind[1], v, f"{what} entry") for v in _as_sequence(value, what)]
    if kind[0] == "array":
        items = _as_sequence(value, what)
        if len(items) != kind[2]:
            raise ValueError(f"{what} must have exactly {kind[2]} entries, got {len(items)}")
        return [_convert_param(kind[1], v, f"{what} entry") for v in items]
    raise AssertionError(f"unknown parameter kind {kind!r}")


@dataclass(frozen=True, eq=False)
class Params:
    """Typed kernel parameters: the alternative's name and its (checked) fields.
    Build them with :func:`params` or the per-alternative helpers, e.g.
    ``FieldExprParams(expression="a*b", variables=["a", "b"])``."""

    type: str
    fields: Mapping[str, Any]

    def to_json(self) -> Dict[str, Any]:
        return {"type": self.type, **json.loads(json.dumps(dict(self.fields)))}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Params) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_json(), sort_keys=True))

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]


def params(type_name: str, **fields: Any) -> Params:
    """Typed parameters of alternative ``type_name`` (PARAM-1).

    Only the given fields are encoded; omitted optional fields take the
    runtime's defaults. Unknown alternatives raise ``ValueError``; unknown
    fields and values of the wrong type ``TypeError``; a fixed-length array
    of the wrong length or a missing required field ``ValueError`` naming it.
    ``None`` for a nullable field (``plane_index``, ``mass_max``) omits it.
    """
    table = PARAM_TYPES.get(type_name)
    if table is None:
        raise ValueError(f"unknown parameter alternative {type_name!r}")
    out: Dict[str, Any] = {}
    for name, value in fields.items():
        spec = table.get(name)
        if spec is None:
            raise TypeError(f"{type_name} has no field {name!r} (fields: {', '.join(table)})")
        kind, _required, nullable = spec
        if value is None and nullable:
            continue
        out[name] = _convert_param(kind, value, f"{type_name}.{name}")
    missing = [n for n, (_k, req, _n) in table.items() if req and n not in out]
    if missing:
        raise ValueError(f"{type_name} requires field(s) {', '.join(missing)}")
    return Params(type_name, out)


def _make_param_factory(type_name: str) -> Callable[..., Params]:
    def factory(**fields: Any) -> Params:
        return params(type_name, **fields)

    factory.__name__ = factory.__qualname__ = type_name
    factory.__doc__ = f"``params({type_name!r}, **fields)``; fields: {', '.join(PARAM_TYPES[type_name])}."
    return factory


for _name in PARAM_TYPES:
    globals()[_name] = _make_param_factory(_name)
    __all__.append(_name)
del _name


def _params_of(value: Any) -> Optional[Params]:
    if value is None or isinstance(value, Params):
        return value
    if isinstance(value, Mapping):
        if not value or value.get("type") == "none":
            if len(value) > 1:
                raise ValueError("parameters of type 'none' take no fields")
            return None
        if "type" not in value:
            raise ValueError("a parameter mapping needs a 'type' discriminator (PARAM-3)")
        rest = {k: v for k, v in value.items() if k != "type"}
        return params(value["type"], **rest)
    raise TypeError(f"params must be Params, a mapping or None, got {type(value).__name__}")


# ---------------------------------------------------------------------------
# coverage boxes


Box = Tuple[Tuple[int, int, int], Tuple[int, int, int]]


def _coverage_list(boxes: Any, what: str = "coverage list") -> Tuple[Box, ...]:
    out = []
    for box in _as_sequence(boxes, what):
        corners = _as_sequence(box, f"{what} box")
        if len(corners) != 2:
            raise ValueError(f"{what}: a box is [lo, hi], got {box!r}")
        lo = _as_sequence(corners[0], f"{what} box lo")
        hi = _as_sequence(corners[1], f"{what} box hi")
        if len(lo) != 3 or len(hi) != 3:
            raise ValueError(f"{what}: box corners need 3 entries, got {box!r}")
        out.append((tuple(_as_int32(v, "box corner") for v in lo), tuple(_as_int32(v, "box corner") for v in hi)))
    return tuple(out)


def _coverage_json(boxes: Tuple[Box, ...]) -> List[List[List[int]]]:
    return [[list(lo), list(hi)] for lo, hi in boxes]


# ---------------------------------------------------------------------------
# templates, stages, plans


@dataclass
class TaskTemplate:
    """A task family (PLAN-3).

    The plane is ``"graph"`` exactly when ``graph_reduce`` is given (VAL-6): an
    explicit ``plane="graph"`` without a spec, or a spec on another plane,
    raises ``ValueError``. Coverage is given either as ``covered_boxes_ref``
    (index into :attr:`Plan.shared_covered_boxes`) or as an inline
    ``covered_boxes`` list that the encoder stores once in the shared lists.
    """

    name: str
    kernel: str
    domain: Domain
    inputs: List[FieldRef] = field(default_factory=list)
    outputs: List[OutputRef] = field(default_factory=list)
    deps: DependencyRule = field(default_factory=DependencyRule)
    params: Optional[Params] = None
    covered_boxes_ref: int = -1
    graph_reduce: Optional[GraphReduceSpec] = None
    plane: Optional[str] = None
    covered_boxes: Optional[Tuple[Box, ...]] = None

    def __post_init__(self) -> None:
        _as_str(self.name, "TaskTemplate.name")
        if not _as_str(self.kernel, "TaskTemplate.kernel"):
            raise ValueError("TaskTemplate.kernel must not be empty")
        if not isinstance(self.domain, Domain):
            raise TypeError(f"TaskTemplate.domain must be a Domain, got {type(self.domain).__name__}")
        self.inputs = [_field_ref(i, "TaskTemplate input") for i in _as_sequence(self.inputs, "inputs")]
        outs = _as_sequence(self.outputs, "outputs")
        self.outputs = []
        for o in outs:
            if isinstance(o, OutputRef):
                self.outputs.append(o)
            elif isinstance(o, tuple) and len(o) == 2:
                self.outputs.append(OutputRef(o[0], o[1]))
            else:
                raise TypeError(f"outputs must be OutputRef (or (field, BufferSpec) pairs), got {o!r}")
        if self.deps is None:
            self.deps = DependencyRule()
        if not isinstance(self.deps, DependencyRule):
            raise TypeError(f"TaskTemplate.deps must be a DependencyRule, got {type(self.deps).__name__}")
        self.params = _params_of(self.params)
        if self.graph_reduce is not None and not isinstance(self.graph_reduce, GraphReduceSpec):
            raise TypeError(f"graph_reduce must be a GraphReduceSpec, got {type(self.graph_reduce).__name__}")
        if self.plane is None:
            self.plane = "graph" if self.graph_reduce is not None else "chunk"
        if self.plane not in PLANES:
            raise ValueError(f"unknown plane {self.plane!r} (expected chunk, graph or mixed)")
        if self.plane == "graph" and self.graph_reduce is None:
            raise ValueError(f"template '{self.name}': a graph template needs a GraphReduceSpec (VAL-6)")
        if self.plane != "graph" and self.graph_reduce is not None:
            raise ValueError(f"template '{self.name}': only graph templates carry a GraphReduceSpec (VAL-6)")
        if self.deps.kind == "FaceNeighbors":
            if not self.inputs:
                raise ValueError(f"template '{self.name}': FaceNeighbors needs at least one input (VAL-4)")
            for h in self.deps.halo_inputs:
                if h >= len(self.inputs):
                    raise ValueError(f"template '{self.name}': halo input {h} is not an input index (VAL-4)")
        if self.plane == "graph":
            if self.deps.kind != "None":
                raise ValueError(f"template '{self.name}': graph tasks do not support deps (RED-6)")
            if not self.inputs or not self.outputs:
                raise ValueError(f"template '{self.name}': graph templates must specify inputs and outputs (RED-6)")
        ref = _as_int(self.covered_boxes_ref, "covered_boxes_ref")
        if ref < -1:
            raise ValueError(f"covered_boxes_ref must be -1 or a valid index, got {ref}")
        self.covered_boxes_ref = ref
        if self.covered_boxes is not None:
            if ref != -1:
                raise ValueError(f"template '{self.name}': give covered_boxes or covered_boxes_ref, not both")
            self.covered_boxes = _coverage_list(self.covered_boxes, f"template '{self.name}' covered_boxes")

    def to_json(self, covered_boxes_ref: Optional[int] = None) -> Dict[str, Any]:
        return {
            "name": self.name,
            "plane": self.plane,
            "kernel": self.kernel,
            "domain": self.domain.to_json(),
            "inputs": [i.to_json() for i in self.inputs],
            "outputs": [o.to_json() for o in self.outputs],
            "deps": self.deps.to_json(),
            "params": {} if self.params is None else self.params.to_json(),
            "covered_boxes_ref": self.covered_boxes_ref if covered_boxes_ref is None else covered_boxes_ref,
            "graph_reduce": None if self.graph_reduce is None else self.graph_reduce.to_json(),
        }


@dataclass(eq=False)
class Stage:
    """A stage (PLAN-2): templates of one plane, run after the stages in ``after``
    (stage objects; the encoder turns them into positions)."""

    name: str
    plane: str = "chunk"
    after: List["Stage"] = field(default_factory=list)
    templates: List[TaskTemplate] = field(default_factory=list)

    def __post_init__(self) -> None:
        _as_str(self.name, "Stage.name")
        if self.plane not in PLANES:
            raise ValueError(f"unknown plane {self.plane!r} (expected chunk, graph or mixed)")
        after = list(_as_sequence(self.after, "Stage.after"))
        for a in after:
            if not isinstance(a, Stage):
                raise TypeError(f"Stage.after holds Stage objects, got {type(a).__name__}")
        self.after = after
        templates = list(_as_sequence(self.templates, "Stage.templates"))
        self.templates = []
        for t in templates:
            self.add_template(t)

    def add_template(self, template: TaskTemplate) -> TaskTemplate:
        """Appends ``template``; its plane must be the stage's (EXEC-1)."""
        if not isinstance(template, TaskTemplate):
            raise TypeError(f"Stage.templates holds TaskTemplate objects, got {type(template).__name__}")
        if self.plane != "mixed" and template.plane != self.plane:
            raise ValueError(f"{self.plane} stage '{self.name}' cannot hold {template.plane} template '{template.name}'")
        self.templates.append(template)
        return template

    def map_blocks(self, name: str, kernel: str, domain: Domain, **kwargs: Any) -> TaskTemplate:
        """Builds a template of this stage's plane from the keyword arguments of
        :class:`TaskTemplate`, appends and returns it."""
        if self.plane != "mixed":
            kwargs.setdefault("plane", self.plane)
        return self.add_template(TaskTemplate(name=name, kernel=kernel, domain=domain, **kwargs))

    def depends_on(self, *stages: "Stage") -> "Stage":
        for s in stages:
            if not isinstance(s, Stage):
                raise TypeError(f"Stage.after holds Stage objects, got {type(s).__name__}")
            if s not in self.after:
                self.after.append(s)
        return self


@dataclass(eq=False)
class Plan:
    """A plan (PLAN-1): stages plus shared coverage lists."""

    stages: List[Stage] = field(default_factory=list)
    shared_covered_boxes: List[Tuple[Box, ...]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stages = list(_as_sequence(self.stages, "Plan.stages"))
        for s in self.stages:
            if not isinstance(s, Stage):
                raise TypeError(f"Plan.stages holds Stage objects, got {type(s).__name__}")
        self.shared_covered_boxes = [
            _coverage_list(c, f"shared_covered_boxes[{i}]") for i, c in enumerate(_as_sequence(self.shared_covered_boxes, "shared_covered_boxes"))
        ]

    def add_stage(self, stage: Stage) -> Stage:
        if not isinstance(stage, Stage):
            raise TypeError(f"Plan.stages holds Stage objects, got {type(stage).__name__}")
        self.stages.append(stage)
        return stage

    def add_coverage(self, boxes: Any) -> int:
        """Index of ``boxes`` in the shared lists, appending it when new (COV-7)."""
        canon = _coverage_list(boxes)
        for i, existing in enumerate(self.shared_covered_boxes):
            if existing == canon:
                return i
        self.shared_covered_boxes.append(canon)
        return len(self.shared_covered_boxes) - 1

    def topo_stages(self) -> List[Stage]:
        """Stages in a dependency-respecting order: depth-first over ``after``
        from each listed stage in list order, ancestors included (DAG-2).
        Raises ``ValueError("stage dependency cycle at '<name>'")``."""
        order: List[Stage] = []
        state: Dict[int, int] = {}  # id -> 1 visiting, 2 done
        for root in self.stages:
            if state.get(id(root)) == 2:
                continue
            stack: List[Tuple[Stage, int]] = [(root, 0)]
            state[id(root)] = 1
            while stack:
                node, i = stack[-1]
                if i < len(node.after):
                    stack[-1] = (node, i + 1)
                    dep = node.after[i]
                    st = state.get(id(dep))
                    if st == 1:
                        raise ValueError(f"stage dependency cycle at '{dep.name}'")
                    if st is None:
                        state[id(dep)] = 1
                        stack.append((dep, 0))
                else:
                    stack.pop()
                    state[id(node)] = 2
                    order.append(node)
        return order

    def order_after(self, stage_name: str, producer_name: str) -> int:
        """Makes every stage named ``stage_name`` also wait for every stage named
        ``producer_name`` (DAG-3), e.g. histograms that must not start before all
        of several field expressions exist. Stages reachable through ``after``
        count. Returns the number of stages that gained a dependency; raises
        ``ValueError`` when either name matches no stage or a cycle results."""
        order = self.topo_stages()
        waiting = [s for s in order if s.name == stage_name]
        producers = [s for s in order if s.name == producer_name]
        for name, found in ((stage_name, waiting), (producer_name, producers)):
            if not found:
                raise ValueError(f"order_after: no stage named '{name}'")
        changed = 0
        for s in waiting:
            new = [p for p in producers if all(p is not a for a in s.after)]
            if new:
                s.after.extend(new)
                changed += 1
        self.topo_stages()  # DAG-2: a producer that waited on a waiting stage is a cycle
        return changed

    def to_dict(self) -> Dict[str, Any]:
        """The PLAN-13 document as a JSON-ready dict."""
        order = self.topo_stages()
        position = {id(s): i for i, s in enumerate(order)}
        shared = list(self.shared_covered_boxes)
        base = len(shared)
        stages_json = []
        for s in order:
            templates_json = []
            for t in s.templates:
                ref = t.covered_boxes_ref
                if t.covered_boxes is not None:
                    ref = next((i for i, c in enumerate(shared) if c == t.covered_boxes), -1)
                    if ref < 0:
                        shared.append(t.covered_boxes)
                        ref = len(shared) - 1
                elif ref >= base:
                    raise ValueError(
                        f"template '{t.name}' of stage '{s.name}': covered_boxes_ref {ref} is out of range "
                        f"({base} shared coverage lists) (VAL-5)"
                    )
                templates_json.append(t.to_json(covered_boxes_ref=ref))
            after: List[int] = []
            for a in s.after:
                p = position[id(a)]
                if p not in after:
                    after.append(p)
            stages_json.append({"name": s.name, "plane": s.plane, "after": after, "templates": templates_json})
        return {
            "schema": PLAN_SCHEMA,
            "stages": stages_json,
            "shared_covered_boxes": [_coverage_json(c) for c in shared],
        }

    def to_json(self, **dumps_kwargs: Any) -> str:
        """The PLAN-13 document as a JSON string (``json.dumps`` keyword arguments pass through)."""
        dumps_kwargs.setdefault("allow_nan", False)
        return json.dumps(self.to_dict(), **dumps_kwargs)


# ---------------------------------------------------------------------------
# placement (OWN-2)


def home_rank(step: int, level: int, block: int, world_size: int) -> int:
    """Home rank of ``(step, level, block)`` among ``world_size`` ranks (OWN-2):
    FNV-style mixing with 64-bit wrap-around, each value sign-extended."""
    ws = _as_int(world_size, "world_size")
    if ws < 1:
        raise ValueError(f"world_size must be >= 1, got {ws}")
    h = 0xCBF29CE484222325
    for v in (step, level, block):
        u = _as_int(v, "home_rank coordinate") & _U64_MASK  # two's complement = sign extension
        h ^= (u + 0x9E3779B97F4A7C15 + ((h << 6) & _U64_MASK) + (h >> 2)) & _U64_MASK
        h &= _U64_MASK
    return h % ws


# ---------------------------------------------------------------------------
# lowering helpers (LOW-5..8)


def default_fan_in(n: int) -> int:
    """LOW-5 default: ``max(2, min(8, floor(sqrt(max(1, n)))))``."""
    return max(2, min(8, math.isqrt(max(1, _as_int(n, "n")))))


def resolve_fan_in(n: int, configured: Optional[int] = None) -> int:
    """A configured fan-in must be an integer >= 2 (LOW-5); else the default for ``n``."""
    if configured is None:
        return default_fan_in(n)
    f = _as_int(configured, "reduce_fan_in")
    if f < 2:
        raise ValueError("reduce_fan_in must be >= 2 when provided")
    return f


HomeFn = Callable[[int, int, int], int]


def block_reduction_stages(
    field: int,
    blocks: Sequence[int],
    *,
    buffer: BufferSpec,
    alloc_field: Optional[Callable[[], int]] = None,
    kernel: str = "uniform_slice_reduce",
    step: int = 0,
    level: int = 0,
    fan_in: Optional[int] = None,
    normalize: bool = False,
    world_size: int = 1,
    home: Optional[HomeFn] = None,
    after: Sequence[Stage] = (),
    name: str = "reduce",
    params: Any = None,
    version: int = 0,
) -> Tuple[List[Stage], Tuple[int, int]]:
    """Block reduction of ``field`` over ``blocks`` on ``level`` (LOW-6).

    Returns the graph stages (first one ordered after ``after``) and the
    ``(field, block)`` holding the result. ``alloc_field()`` supplies
    temporary field ids for multi-group rounds; ``home(step, level, block)``
    overrides the home-rank function (default :func:`home_rank` with
    ``world_size``). ``fan_in`` defaults per LOW-5.
    """
    B = [_as_int32(b, "block") for b in _as_sequence(blocks, "blocks")]
    if not B:
        raise ValueError("block reduction needs at least one block")
    f = default_fan_in(len(B)) if fan_in is None else _as_int(fan_in, "fan_in")
    if len(B) > 1 and f < 2:
        raise ValueError("fan_in must be >= 2 for multi-block reductions")
    ws = _as_int(world_size, "world_size")
    if home is None:
        def home(s: int, lv: int, b: int) -> int:  # noqa: E306
            return home_rank(s, lv, b, ws)
    stages: List[Stage] = []
    prev: List[Stage] = list(after)
    cur_field, cur_version = field, version
    rnd = 0
    while len(B) > 1 or (normalize and len(B) == 1 and B[0] != 0):
        rnd += 1
        q = f if len(B) > 1 else 1
        groups = [B[i:i + q] for i in range(0, len(B), q)]
        if ws > 1 and len(B) > 1 and q > 1:
            buckets: Dict[int, List[int]] = {}
            for b in B:
                buckets.setdefault(home(step, level, b), []).append(b)
            bucketed = [lst[i:i + q] for r in sorted(buckets) for lst in (buckets[r],) for i in range(0, len(lst), q)]
            if len(bucketed) < len(B):
                groups = bucketed
        input_blocks = [b for g in groups for b in g]
        offsets = [0]
        for g in groups:
            offsets.append(offsets[-1] + len(g))
        single = len(groups) == 1
        output_blocks = [0] if single else [g[0] for g in groups]
        if single:
            out_field, out_version = cur_field, cur_version
        else:
            if alloc_field is None:
                raise ValueError("block_reduction_stages needs alloc_field for a multi-group round")
            out_field, out_version = alloc_field(), 0
        stage = Stage(f"{name}_r{rnd}", plane="graph", after=prev)
        stage.map_blocks(
            f"{name}_r{rnd}",
            kernel,
            Domain(step, level),
            inputs=[FieldRef(cur_field, cur_version)],
            outputs=[OutputRef(FieldRef(out_field, out_version), buffer)],
            params=params,
            graph_reduce=GraphReduceSpec(
                fan_in=q,
                num_inputs=len(B),
                input_blocks=input_blocks,
                output_blocks=output_blocks,
                group_offsets=offsets,
            ),
        )
        stages.append(stage)
        prev = [stage]
        cur_field, cur_version = out_field, out_version
        B = output_blocks
    return stages, (cur_field, B[0])


@dataclass(frozen=True)
class LevelValue:
    """A per-level (or combined) result chunk and the stage producing it (None: a source)."""

    field: int
    level: int
    block: int = 0
    producer: Optional[Stage] = None
    version: int = 0


def level_combination_stages(
    values: Sequence[LevelValue],
    *,
    buffer: BufferSpec,
    alloc_field: Callable[[], int],
    step: int = 0,
    dataset_level: int = 0,
    kernel: str = "uniform_slice_add",
    preserve_location: bool = False,
    home_order: bool = False,
    world_size: int = 1,
    home: Optional[HomeFn] = None,
    name: str = "combine",
) -> Tuple[List[Stage], LevelValue]:
    """Pairwise combination of per-level results (LOW-7); returns the stages and the combined value."""
    vals = list(values)
    if not vals:
        raise ValueError("level combination needs at least one value")
    ws = _as_int(world_size, "world_size")
    if home is None:
        def home(s: int, lv: int, b: int) -> int:  # noqa: E306
            return home_rank(s, lv, b, ws)
    stages: List[Stage] = []
    counter = 0
    while len(vals) > 1:
        if home_order and ws > 1 and len(vals) > 2:
            by_rank: Dict[int, List[LevelValue]] = {}
            for v in vals:
                by_rank.setdefault(home(step, v.level, v.block), []).append(v)
            head: List[LevelValue] = []
            tail: List[LevelValue] = []
            for r in sorted(by_rank):
                lst = by_rank[r]
                even = len(lst) - len(lst) % 2
                head.extend(lst[:even])
                tail.extend(lst[even:])
            vals = head + tail
        nxt: List[LevelValue] = []
        for i in range(0, len(vals) - 1, 2):
            left, right = vals[i], vals[i + 1]
            if preserve_location:
                if left.block != right.block:
                    raise ValueError("location-preserving reductions require matching blocks")
                o = left.block
                domain = Domain(step, left.level, [left.block])
                spec = GraphReduceSpec(fan_in=1, num_inputs=1, input_base=o, output_base=o, output_blocks=[o])
                overrides = [Domain(step, v.level, [v.block]) for v in (left, right)]
            else:
                o = 0
                domain = Domain(step, dataset_level)
                spec = GraphReduceSpec(fan_in=1, num_inputs=1, input_base=0, output_base=0)
                overrides = [Domain(step, v.level) for v in (left, right)]
            out_field = alloc_field()
            counter += 1
            producers = [p for p in (left.producer, right.producer) if p is not None]
            stage = Stage(f"{name}_{counter}", plane="graph", after=list(dict.fromkeys(producers)))
            stage.map_blocks(
                f"{name}_{counter}",
                kernel,
                domain,
                inputs=[FieldRef(left.field, left.version, overrides[0]), FieldRef(right.field, right.version, overrides[1])],
                outputs=[OutputRef(FieldRef(out_field), buffer)],
                graph_reduce=spec,
            )
            stages.append(stage)
            nxt.append(LevelValue(out_field, domain.level, o, stage))
        if len(vals) % 2:
            nxt.append(vals[-1])
        vals = nxt
    return stages, vals[0]


def final_stage(
    inputs: Sequence[LevelValue],
    *,
    out_field: int,
    buffer: BufferSpec,
    kernel: str = "uniform_slice_reduce",
    step: int = 0,
    dataset_level: int = 0,
    params: Any = None,
    name: str = "finalize",
) -> Stage:
    """The final stage of a reduced mesh result (LOW-8): one graph template at
    ``(step, dataset_level)`` reading each input at its own level, writing
    ``out_field`` at block 0."""
    ins = list(inputs)
    if not ins:
        raise ValueError("the final stage needs at least one input")
    if any(v.block != ins[0].block for v in ins):
        raise ValueError("the final stage's inputs must sit at the same block")
    producers = [v.producer for v in ins if v.producer is not None]
    stage = Stage(name, plane="graph", after=list(dict.fromkeys(producers)))
    stage.map_blocks(
        name,
        kernel,
        Domain(step, dataset_level),
        inputs=[FieldRef(v.field, v.version, Domain(step, v.level)) for v in ins],
        outputs=[OutputRef(FieldRef(out_field), buffer)],
        params=params,
        graph_reduce=GraphReduceSpec(fan_in=1, num_inputs=1, input_base=ins[0].block),
    )
    return stage
