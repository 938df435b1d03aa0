"""Materialized results (API-39, API-40): immutable containers of NumPy arrays.

Bounded mesh arrays come back as plain ``numpy.ndarray``; histograms as
:class:`HistogramResult` / :class:`Histogram2DResult`; unbounded AMR fields as
an :class:`AMRChunkedArray` holding one :class:`AMRChunk` per block of every
level; particle arrays and masks as a :class:`ChunkedArray` (one array per
chunk); top-k modes as :class:`TopKResult`.
"""

from __future__ import annotations

import html
from typing import Any, Iterator, NamedTuple, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "HistogramResult",
    "Histogram2DResult",
    "AMRChunk",
    "AMRChunkedArray",
    "ChunkedArray",
    "TopKResult",
    "check_max_bytes",
]


def check_max_bytes(nbytes: int, max_bytes: Optional[int]) -> None:
    """API-40: ``MemoryError`` when ``nbytes`` exceeds ``max_bytes``."""
    if max_bytes is not None and nbytes > max_bytes:
        raise MemoryError(f"gather would materialize {nbytes} bytes, exceeding max_bytes={max_bytes}")


def _readonly(a: Any) -> np.ndarray:
    arr = np.asarray(a)
    arr.flags.writeable = False
    return arr


def _table(title: str, rows: Sequence[Tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in rows)
    return f"<div><b>{html.escape(title)}</b><table>{body}</table></div>"


class HistogramResult(NamedTuple):
    """Counts of a 1-D histogram and its ``bins + 1`` edges."""

    counts: np.ndarray
    edges: np.ndarray

    def _repr_html_(self) -> str:
        return _table("HistogramResult", [("bins", len(self.counts)), ("range", (self.edges[0], self.edges[-1])),
                                          ("total", float(np.sum(self.counts)))])


class Histogram2DResult(NamedTuple):
    """Counts ``(nx, ny)`` indexed ``[ix, iy]`` and the edges of both axes."""

    counts: np.ndarray
    x_edges: np.ndarray
    y_edges: np.ndarray

    def _repr_html_(self) -> str:
        return _table("Histogram2DResult", [("bins", tuple(self.counts.shape)),
                                            ("x range", (self.x_edges[0], self.x_edges[-1])),
                                            ("y range", (self.y_edges[0], self.y_edges[-1])),
                                            ("total", float(np.sum(self.counts)))])


class TopKResult(NamedTuple):
    """The ``k`` most frequent values (count descending, ties by value descending) and
    their counts, both float64; two empty arrays when the result holds fewer than
    ``2k`` entries (API-39)."""

    values: np.ndarray
    counts: np.ndarray

    def _repr_html_(self) -> str:
        return _table("TopKResult", [("k", len(self.values)), ("values", list(self.values)),
                                     ("counts", list(self.counts))])


class AMRChunk(NamedTuple):
    """One block of an AMR field: its values, where it sits (``step``, ``level``,
    ``block``), its index ``box`` ``((lo...), (hi...))`` and the level geometry."""

    values: np.ndarray
    step: int
    level: int
    block: int
    box: Any
    geometry: Any


class AMRChunkedArray:
    """Per-block arrays of an unbounded AMR field, finest information kept as is.

    There is no single array to gather an AMR hierarchy into, so :meth:`gather`
    raises ``ValueError``; iterate, index or use :meth:`level` instead."""

    def __init__(self, chunks: Sequence[AMRChunk]) -> None:
        self._chunks = tuple(chunks)

    @property
    def chunks(self) -> Tuple[AMRChunk, ...]:
        return self._chunks

    @property
    def nbytes(self) -> int:
        return sum(int(c.values.nbytes) for c in self._chunks)

    @property
    def levels(self) -> Tuple[int, ...]:
        return tuple(sorted({c.level for c in self._chunks}))

    def level(self, level: int) -> Tuple[AMRChunk, ...]:
        return tuple(c for c in self._chunks if c.level == level)

    def gather(self, max_bytes: Optional[int] = None) -> np.ndarray:
        raise ValueError("gather is not defined for an AMR hierarchy: iterate the chunks or select one level's blocks")

    def __len__(self) -> int:
        return len(self._chunks)

    def __iter__(self) -> Iterator[AMRChunk]:
        return iter(self._chunks)

    def __getitem__(self, i: int) -> AMRChunk:
        return self._chunks[i]

    def __repr__(self) -> str:
        return f"AMRChunkedArray(chunks={len(self._chunks)}, levels={list(self.levels)}, nbytes={self.nbytes})"

    def _repr_html_(self) -> str:
        per_level = [(f"level {L}", f"{len(self.level(L))} blocks") for L in self.levels]
        return _table("AMRChunkedArray", [("chunks", len(self._chunks)), ("bytes", self.nbytes), *per_level])


class ChunkedArray:
    """Chunks of a 1-D value (particle data); :meth:`gather` concatenates them."""

    def __init__(self, chunks: Sequence[np.ndarray]) -> None:
        self._chunks = tuple(_readonly(c) for c in chunks)

    @property
    def chunks(self) -> Tuple[np.ndarray, ...]:
        return self._chunks

    @property
    def nbytes(self) -> int:
        return sum(int(c.nbytes) for c in self._chunks)

    def gather(self, max_bytes: Optional[int] = None) -> np.ndarray:
        check_max_bytes(self.nbytes, max_bytes)
        if not self._chunks:
            return np.empty(0, dtype=np.float64)
        return np.concatenate(self._chunks)

    def __len__(self) -> int:
        return len(self._chunks)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self._chunks)

    def __repr__(self) -> str:
        return f"ChunkedArray(chunks={len(self._chunks)}, nbytes={self.nbytes})"
