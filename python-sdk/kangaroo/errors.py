"""Exceptions of the gateway client and their mapping from HTTP errors (API-5).

Server errors surface as the Python exception classes a local call would raise:
a rejected plan is a ``ValueError`` (:class:`PlanValidationError`), a missing
dataset a ``FileNotFoundError``, an unknown job a ``KeyError``, a bad token a
``PermissionError`` and a failed run a ``RuntimeError``. Every class also
derives from :class:`GatewayError`, which carries the HTTP status, the
gateway's error ``kind`` and its message unchanged.

The mapping lives in one function, :func:`error_from_response`.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional

__all__ = [
    "GatewayError",
    "AuthenticationError",
    "PlanValidationError",
    "BadRequestError",
    "RequestTooLargeError",
    "DatasetNotFoundError",
    "JobNotFoundError",
    "NotFoundError",
    "ConflictError",
    "DatasetError",
    "ServerError",
    "GatewayUnavailableError",
    "JobFailedError",
    "JobCancelledError",
    "DownloadError",
    "error_from_response",
]


class GatewayError(Exception):
    """Base of every error reported by (or about) the gateway.

    ``status`` is the HTTP status (``None`` when no response arrived), ``kind``
    the gateway's error kind (``validation``, ``not_found``, ...) and
    ``message`` its message as sent."""

    def __init__(self, message: str, *, status: Optional[int] = None, kind: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.kind = kind

    def __str__(self) -> str:
        # KeyError quotes its argument; every subclass shows the plain message instead.
        return self.message


class AuthenticationError(GatewayError, PermissionError):
    """401: no token, or one the gateway does not know."""


class PlanValidationError(GatewayError, ValueError):
    """400 ``validation``: the gateway's core library rejected the plan or RunMeta.

    ``issues`` lists dicts with ``stage``, ``template`` (-1 outside one),
    ``path`` (JSON pointer) and ``message``; the exception message names the
    first offending stage and template."""

    def __init__(self, message: str, *, issues: Optional[List[Dict[str, Any]]] = None,
                 status: Optional[int] = 400, kind: Optional[str] = "validation") -> None:
        super().__init__(message, status=status, kind=kind)
        self.issues = list(issues or [])


class BadRequestError(GatewayError, ValueError):
    """400 ``bad_request``: a malformed request, or a dataset path outside every data root."""


class RequestTooLargeError(GatewayError, ValueError):
    """413 ``too_large``: the request body exceeds the gateway's ``max_body``."""


class NotFoundError(GatewayError, KeyError):
    """404 for anything that is neither a dataset nor a job."""


class JobNotFoundError(NotFoundError):
    """404 for a job id the caller's tenant does not own (or that does not exist)."""


class DatasetNotFoundError(GatewayError, FileNotFoundError):
    """404 for a dataset URI that names nothing under the data roots."""


class ConflictError(GatewayError, RuntimeError):
    """409: the request does not fit the job's state (results before success)."""


class DatasetError(GatewayError, RuntimeError):
    """422 ``dataset``: the dataset exists but could not be read."""


class ServerError(GatewayError, RuntimeError):
    """5xx, or a response the client cannot interpret."""


class GatewayUnavailableError(GatewayError, ConnectionError):
    """No usable response after every retry (connection refused, reset, 502..504)."""


class JobFailedError(GatewayError, RuntimeError):
    """The job ran and failed; ``job`` is the final job record and ``kind``
    the failure kind (``validation``, ``run``, ``dataset``, ``internal``)."""

    def __init__(self, message: str, *, job: Optional[Mapping[str, Any]] = None, kind: Optional[str] = None) -> None:
        super().__init__(message, kind=kind)
        self.job = dict(job or {})


class JobCancelledError(JobFailedError):
    """The job was cancelled before it finished."""


class DownloadError(GatewayError, RuntimeError):
    """A result download came back inconsistent (length or ETag changed between parts)."""


def _decode_error_body(body: bytes) -> Dict[str, Any]:
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}
    err = doc.get("error") if isinstance(doc, dict) else None
    return err if isinstance(err, dict) else {}


def _validation_message(message: str, issues: List[Dict[str, Any]]) -> str:
    """The gateway's message, made to name the stage and template of the first
    issue when it does not already."""
    if not issues:
        return message
    first = issues[0]
    stage, template = first.get("stage", -1), first.get("template", -1)
    where = []
    if isinstance(stage, int) and stage >= 0:
        where.append(f"stage {stage}")
    if isinstance(template, int) and template >= 0:
        where.append(f"template {template}")
    if not where or message.startswith(" ".join(where)):
        return message
    more = f" (and {len(issues) - 1} more issue(s))" if len(issues) > 1 else ""
    detail = first.get("message") or message
    path = first.get("path")
    loc = " ".join(where) + (f" at {path}" if path else "")
    if detail in message:
        return f"{loc}: {message}{more}"
    return f"{loc}: {detail}{more} [{message}]"


def error_from_response(status: int, body: bytes, *, what: str = "") -> GatewayError:
    """The exception for an error response (the one place HTTP errors are mapped).

    ``what`` tells 404s apart: ``"dataset"`` gives :class:`DatasetNotFoundError`,
    ``"job"`` :class:`JobNotFoundError`."""
    err = _decode_error_body(body)
    kind = err.get("kind") if isinstance(err.get("kind"), str) else None
    message = err.get("message") if isinstance(err.get("message"), str) else ""
    if not message:
        text = body.decode("utf-8", "replace").strip()
        message = f"HTTP {status}" + (f": {text[:500]}" if text else "")
    if status == 401 or kind == "unauthorized":
        return AuthenticationError(message, status=status, kind=kind)
    if kind == "validation":
        issues = [i for i in err.get("issues") or [] if isinstance(i, dict)]
        return PlanValidationError(_validation_message(message, issues), issues=issues, status=status, kind=kind)
    if status == 413 or kind == "too_large":
        return RequestTooLargeError(message, status=status, kind=kind)
    if status == 404 or kind == "not_found":
        if what == "dataset":
            return DatasetNotFoundError(message, status=status, kind=kind)
        if what == "job":
            return JobNotFoundError(message, status=status, kind=kind)
        return NotFoundError(message, status=status, kind=kind)
    if status == 409 or kind == "conflict":
        return ConflictError(message, status=status, kind=kind)
    if kind == "dataset" or status == 422:
        return DatasetError(message, status=status, kind=kind)
    if status in (502, 503, 504) or kind == "unavailable":
        return GatewayUnavailableError(message, status=status, kind=kind)
    if 400 <= status < 500:
        return BadRequestError(message, status=status, kind=kind)
    return ServerError(message, status=status, kind=kind)
