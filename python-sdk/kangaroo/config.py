"""Configuration: graph-building options (API-9) and the client connection file.

Graph-building options::

    kangaroo.config.get("reduction.fan_in")          # None: the LOW-5 default
    with kangaroo.config.set({"reduction.fan_in": 4}):
        img = ds["density"].project(axis="z")        # built with fan-in 4

Overrides are context-local (``contextvars``) and restored on exit.

Connection settings (gateway URL, bearer token, CA certificate) come, in this
order, from the arguments of :class:`kangaroo.Client`, the environment
variables ``KANGAROO_URL``, ``KANGAROO_TOKEN`` and ``KANGAROO_CA_CERT``, and
the client file that ``kangaroo up`` writes: ``$KANGAROO_CONFIG`` when set,
else ``$XDG_CONFIG_HOME/kangaroo/client.json``, else
``~/.config/kangaroo/client.json`` (JSON ``{"url", "token", "ca_cert"}``).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import tempfile
from typing import Any, Dict, Iterator, Mapping, Optional

__all__ = [
    "get",
    "set",
    "client_config_path",
    "load_client_config",
    "write_client_config",
    "resolve_connection",
]

_DEFAULTS: Dict[str, Any] = {"reduction.fan_in": None}
_overrides: contextvars.ContextVar = contextvars.ContextVar("kangaroo_config", default={})


def get(key: str, default: Any = None) -> Any:
    """The current value of a graph-building option (``default`` when unset)."""
    current = _overrides.get()
    if key in current:
        return current[key]
    value = _DEFAULTS.get(key)
    return default if value is None else value


@contextlib.contextmanager
def set(options: Mapping[str, Any]) -> Iterator[None]:  # noqa: A001 - the API-9 name
    """Overrides options inside a ``with`` block (a non-mapping is a ``TypeError``)."""
    if not isinstance(options, Mapping):
        raise TypeError(f"kangaroo.config.set takes a mapping, got {type(options).__name__}")
    merged = dict(_overrides.get())
    merged.update(options)
    token = _overrides.set(merged)
    try:
        yield
    finally:
        _overrides.reset(token)


# ---------------------------------------------------------------------------
# client connection file

CONNECTION_KEYS = ("url", "token", "ca_cert")


def client_config_path() -> str:
    """Where the client connection file lives (see the module docstring)."""
    explicit = os.environ.get("KANGAROO_CONFIG")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "kangaroo", "client.json")


def load_client_config(path: Optional[str] = None) -> Dict[str, Any]:
    """The connection file as a dict (empty when it does not exist).

    A relative ``ca_cert`` is taken relative to the file's folder. A file that
    is not a JSON object is a ``ValueError`` naming it."""
    path = path or client_config_path()
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return {}
    except ValueError as e:
        raise ValueError(f"client configuration {path} is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"client configuration {path} must hold a JSON object")
    out = {k: doc[k] for k in CONNECTION_KEYS if doc.get(k)}
    ca = out.get("ca_cert")
    if isinstance(ca, str) and not os.path.isabs(ca):
        out["ca_cert"] = os.path.join(os.path.dirname(os.path.abspath(path)), ca)
    return out


def write_client_config(values: Mapping[str, Any], path: Optional[str] = None) -> str:
    """Writes the connection file atomically with mode 0600 (it holds a token); returns its path."""
    path = path or client_config_path()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    doc = {k: values[k] for k in CONNECTION_KEYS if values.get(k) is not None}
    fd, tmp = tempfile.mkstemp(prefix=".client-", suffix=".json", dir=folder)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def resolve_connection(url: Optional[str] = None, token: Optional[str] = None,
                       ca_cert: Optional[str] = None) -> Dict[str, Optional[str]]:
    """Arguments, then environment, then the connection file, key by key."""
    given = {"url": url, "token": token, "ca_cert": ca_cert}
    env = {"url": os.environ.get("KANGAROO_URL"), "token": os.environ.get("KANGAROO_TOKEN"),
           "ca_cert": os.environ.get("KANGAROO_CA_CERT")}
    out: Dict[str, Optional[str]] = {}
    file_values: Optional[Dict[str, Any]] = None
    for key in CONNECTION_KEYS:
        value = given[key] or env[key]
        if not value:
            if file_values is None:
                file_values = load_client_config()
            value = file_values.get(key)
        out[key] = value or None
    return out
