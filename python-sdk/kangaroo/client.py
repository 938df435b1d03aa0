"""The gateway client (API-6, API-8) and the job flow behind ``compute``.

A :class:`Client` talks to one ``kangaroo-gateway`` over HTTPS (the REST API
of ``docs/api.md``). Plans are lowered on the client for the gateway's world
size (``GET /v1/info``, fetched once); a computation is one job:

1. ``POST /v1/jobs`` with the plan, the dataset URI, the RunMeta the plan was
   lowered against, the field bindings (field ID -> variable name) and the
   fields to keep; every submission carries a fresh ``Idempotency-Key``,
   reused when the request is retried, so a retry never creates a second job;
2. progress follows the job's server-sent events (a progress bar with
   ``progress=True``), falling back to polling ``GET /v1/jobs/{id}``;
3. the result manifest is read and the ``.npy`` chunks are downloaded (in
   parallel, each resumable) and loaded with NumPy.

Server errors raise the exception classes of :mod:`kangaroo.errors` (API-5).
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import sys
import threading
import time
import urllib.parse
import uuid
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import config as _config
from . import ir
from . import lowering as lw
from .dataset import Dataset, resolve_step, runmeta_for, synthesize_runmeta
from .errors import (AuthenticationError, GatewayError, GatewayUnavailableError, JobCancelledError, JobFailedError,
                     JobNotFoundError, ServerError)
from .transport import Transport

__all__ = ["Client", "open_dataset", "get_default_client", "set_default_client", "JobResults", "TERMINAL_STATES"]

TERMINAL_STATES = ("succeeded", "failed", "cancelled")


class _Progress:
    """A tqdm bar when tqdm is installed, else a one-line counter on stderr."""

    def __init__(self, enabled: bool, desc: str) -> None:
        self._bar = None
        self._plain = False
        self._desc = desc
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            self._plain = True
            return
        self._bar = tqdm(total=None, desc=desc, unit="task", leave=False)

    def update(self, progress: Any) -> None:
        if not isinstance(progress, Mapping):
            return
        done, total = progress.get("done"), progress.get("total")
        if not isinstance(done, int):
            return
        if self._bar is not None:
            if isinstance(total, int) and total != self._bar.total:
                self._bar.total = total
            self._bar.n = done
            self._bar.refresh()
        elif self._plain:
            sys.stderr.write(f"\r{self._desc}: {done}/{total if total is not None else '?'} tasks")
            sys.stderr.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._plain:
            sys.stderr.write("\n")


class JobResults:
    """The result manifest of a succeeded job, with chunk lookup and download."""

    def __init__(self, client: "Client", job_id: str, manifest: Mapping[str, Any]) -> None:
        self.client = client
        self.job_id = job_id
        self.manifest = dict(manifest)
        self._index: Dict[Tuple[int, int, int, int], Dict[str, Any]] = {}
        for c in self.manifest.get("chunks") or []:
            key = (c.get("field"), c.get("step"), c.get("level"), c.get("block"))
            if c.get("version", 0) == 0 or key not in self._index:
                self._index[key] = c

    @property
    def chunks(self) -> List[Dict[str, Any]]:
        return list(self.manifest.get("chunks") or [])

    def chunk(self, field: int, step: int, level: int, block: int) -> Dict[str, Any]:
        c = self._index.get((field, step, level, block))
        if c is None:
            raise ServerError(f"job {self.job_id} produced no chunk for field {field} at step {step}, level {level}, "
                              f"block {block} ({len(self._index)} chunks in its manifest)")
        return c

    def arrays(self, chunks: Sequence[Mapping[str, Any]]) -> List[np.ndarray]:
        """Downloads and loads ``chunks`` (in parallel for several)."""
        if len(chunks) <= 1:
            return [self.client.fetch_array(self.job_id, c) for c in chunks]
        pool = self.client._download_pool()
        return list(pool.map(lambda c: self.client.fetch_array(self.job_id, c), chunks))


class Client:
    """A connection to one Kangaroo gateway.

    ``url``, ``token`` and ``ca_cert`` default to ``KANGAROO_URL`` /
    ``KANGAROO_TOKEN`` / ``KANGAROO_CA_CERT``, then to the client file that
    ``kangaroo up`` writes (:mod:`kangaroo.config`). ``progress`` is the default
    for ``compute``; ``timeout`` bounds each socket operation; ``retries``
    bounds the attempts after connection failures (with exponential backoff).
    """

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None, ca_cert: Optional[str] = None, *,
                 progress: bool = False, timeout: float = 30.0, retries: int = 5, backoff: float = 0.2,
                 download_threads: int = 4, outage_timeout: float = 120.0) -> None:
        conn = _config.resolve_connection(url, token, ca_cert)
        if not conn["url"]:
            raise ValueError("no gateway URL: pass Client(url, token, ca_cert), set KANGAROO_URL, or run "
                             f"'kangaroo up' (which writes {_config.client_config_path()})")
        self.url: str = conn["url"]
        self.token = conn["token"]
        self.ca_cert = conn["ca_cert"]
        self.progress = progress
        self.download_threads = max(1, int(download_threads))
        self.outage_timeout = outage_timeout
        self._transport = Transport(self.url, self.token, self.ca_cert, timeout=timeout, retries=retries,
                                    backoff=backoff)
        self._info: Optional[Dict[str, Any]] = None
        self._info_lock = threading.Lock()
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None

    @property
    def transport(self) -> Transport:
        return self._transport

    def _download_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        """Download threads, kept with their keep-alive connections across jobs."""
        with self._info_lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.download_threads,
                                                                   thread_name_prefix="kangaroo-download")
            return self._pool

    def close(self) -> None:
        """Stops the download threads and closes every connection."""
        with self._info_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self._transport.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # -- plain REST calls -------------------------------------------------

    def _json(self, method: str, path: str, *, what: str = "", body: Any = None,
              headers: Optional[Mapping[str, str]] = None, idempotent: Optional[bool] = None) -> Any:
        data = None if body is None else json.dumps(body, allow_nan=False).encode("utf-8")
        resp = self._transport.request(method, path, body=data, headers=headers, idempotent=idempotent, what=what)
        try:
            return json.loads(resp.body.decode("utf-8"))
        except ValueError:
            raise ServerError(f"{method} {path}: the gateway answered {resp.status} with a body that is not JSON",
                              status=resp.status) from None

    def health(self) -> Dict[str, Any]:
        """``GET /healthz`` (no token needed)."""
        return self._json("GET", "/healthz")

    def info(self, refresh: bool = False) -> Dict[str, Any]:
        """``GET /v1/info``, cached after the first call."""
        with self._info_lock:
            if self._info is None or refresh:
                self._info = self._json("GET", "/v1/info")
            return dict(self._info)

    @property
    def world_size(self) -> int:
        ws = self.info().get("world_size", 1)
        return ws if isinstance(ws, int) and ws >= 1 else 1

    def dataset_metadata(self, uri: str) -> Dict[str, Any]:
        """The dataset's metadata dictionary (META-1); a missing dataset is a ``FileNotFoundError``."""
        return self._json("GET", "/v1/datasets/metadata?uri=" + urllib.parse.quote(uri, safe=""), what="dataset")

    def submit(self, plan: Union[ir.Plan, Mapping[str, Any]], *, dataset: str,
               runmeta: Union[None, lw.RunMeta, Mapping[str, Any]] = None, fields: Optional[Mapping[Any, str]] = None,
               outputs: Optional[Sequence[Sequence[int]]] = None, all_outputs: bool = False,
               resources: Optional[Mapping[str, Any]] = None, idempotency_key: Optional[str] = None,
               seed_jobs: Optional[Sequence[str]] = None) -> Dict[str, Any]:
        """``POST /v1/jobs``; returns the job record. A key is generated when none
        is given; the same key is sent on every retry of this call. ``seed_jobs``
        names earlier succeeded jobs whose result chunks the plan reads."""
        body: Dict[str, Any] = {"plan": plan.to_dict() if isinstance(plan, ir.Plan) else dict(plan),
                                "dataset": dataset}
        if runmeta is not None:
            body["runmeta"] = runmeta.to_dict() if isinstance(runmeta, lw.RunMeta) else dict(runmeta)
        if fields:
            body["fields"] = {str(k): v for k, v in fields.items()}
        if outputs is not None:
            body["outputs"] = [[int(f), int(v)] for f, v in outputs]
        if all_outputs:
            body["all_outputs"] = True
        if resources:
            body["resources"] = dict(resources)
        if seed_jobs:
            body["seed_jobs"] = [str(j) for j in seed_jobs]
        key = idempotency_key or f"kpy-{uuid.uuid4()}"
        return self._json("POST", "/v1/jobs", body=body, headers={"Idempotency-Key": key}, idempotent=True)

    def job(self, job_id: str) -> Dict[str, Any]:
        """``GET /v1/jobs/{id}``; an unknown (or another tenant's) job is a ``KeyError``."""
        return self._json("GET", f"/v1/jobs/{_job_path(job_id)}", what="job")

    def jobs(self) -> List[Dict[str, Any]]:
        """The caller's jobs, newest first."""
        return list(self._json("GET", "/v1/jobs").get("jobs") or [])

    def cancel(self, job_id: str) -> Dict[str, Any]:
        """Cancels a queued or running job (a finished one is returned unchanged)."""
        return self._json("POST", f"/v1/jobs/{_job_path(job_id)}/cancel", what="job", idempotent=True)

    def events(self, job_id: str, *, read_timeout: Optional[float] = None) -> Iterator[Tuple[str, Dict[str, Any]]]:
        """The job's server-sent events as ``(event, document)`` pairs."""
        with self._transport.open_events(f"/v1/jobs/{_job_path(job_id)}/events", what="job",
                                         read_timeout=read_timeout) as stream:
            for event, data in stream:
                try:
                    doc = json.loads(data)
                except ValueError:
                    continue
                if isinstance(doc, dict):
                    yield event, doc

    def wait(self, job_id: str, *, progress: Optional[bool] = None, timeout: Optional[float] = None,
             poll_interval: float = 0.5) -> Dict[str, Any]:
        """Blocks until the job finishes and returns its record; a failed job
        raises :class:`JobFailedError` with the worker's message, a cancelled one
        :class:`JobCancelledError`. Ctrl-C cancels the job before re-raising."""
        bar = _Progress(self.progress if progress is None else progress, f"job {job_id}")
        try:
            job = self._follow(job_id, bar, timeout, poll_interval)
        except KeyboardInterrupt:
            try:
                self.cancel(job_id)
            except GatewayError:
                pass
            raise
        finally:
            bar.close()
        return _check_outcome(job)

    def _follow(self, job_id: str, bar: _Progress, timeout: Optional[float], poll_interval: float) -> Dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        use_events = True
        outage_since: Optional[float] = None
        delay = poll_interval
        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} did not finish within {timeout} s")
            try:
                if use_events:
                    try:
                        for event, doc in self.events(job_id, read_timeout=max(self._transport.timeout, 30.0)):
                            outage_since = None
                            if event == "progress":
                                bar.update(doc)
                            elif event == "state":
                                bar.update(doc.get("progress"))
                                if doc.get("state") in TERMINAL_STATES:
                                    return doc
                            if deadline is not None and time.monotonic() > deadline:
                                break
                    except (AuthenticationError, JobNotFoundError):
                        raise
                    except GatewayUnavailableError:
                        raise
                    except GatewayError:
                        use_events = False  # the stream is refused: poll instead
                    except OSError:
                        pass  # stream cut or idle too long: check the state, then reopen
                job = self.job(job_id)
                outage_since = None
                bar.update(job.get("progress"))
                if job.get("state") in TERMINAL_STATES:
                    return job
            except GatewayUnavailableError:
                # The gateway may be restarting; its state directory keeps the job.
                now = time.monotonic()
                outage_since = outage_since or now
                if now - outage_since > self.outage_timeout:
                    raise
            # Not finished: the stream ended early, was refused, or the gateway is away.
            time.sleep(delay)
            delay = min(delay * 1.5, 5.0)

    def results(self, job_id: str) -> Dict[str, Any]:
        """The result manifest of a succeeded job (409 ``ConflictError`` before that)."""
        return self._json("GET", f"/v1/jobs/{_job_path(job_id)}/results", what="job")

    def download(self, job_id: str, name: str, *, expected_bytes: Optional[int] = None) -> bytes:
        """One result file, resumed with ``Range`` after a dropped connection."""
        path = f"/v1/jobs/{_job_path(job_id)}/results/{urllib.parse.quote(name, safe='')}"
        return self._transport.download(path, expected_bytes=expected_bytes, what="job")

    def fetch_array(self, job_id: str, chunk: Mapping[str, Any]) -> np.ndarray:
        """Downloads a manifest chunk and loads it (``.npy``; opaque ``.bin`` chunks are ``TypeError``)."""
        name = chunk["name"]
        if not name.endswith(".npy"):
            raise TypeError(f"chunk {name} is opaque; download it with Client.download")
        data = self.download(job_id, name, expected_bytes=chunk.get("file_bytes"))
        arr = np.load(io.BytesIO(data), allow_pickle=False)
        shape = chunk.get("shape")
        if shape is not None and list(arr.shape) != list(shape):
            raise ServerError(f"chunk {name}: the file holds shape {list(arr.shape)}, the manifest lists {shape}")
        return arr

    def run(self, plan: Union[ir.Plan, Mapping[str, Any]], *, dataset: str, progress: Optional[bool] = None,
            timeout: Optional[float] = None, **submit_kwargs: Any) -> JobResults:
        """Submits a plan, waits for it and returns its results (lower-level than ``compute``)."""
        job = self.submit(plan, dataset=dataset, **submit_kwargs)
        self.wait(job["id"], progress=progress, timeout=timeout)
        return JobResults(self, job["id"], self.results(job["id"]))

    # -- datasets and lazy values -----------------------------------------

    def open_dataset(self, uri: str, *, step: int = 0, level: Optional[int] = None,
                     runmeta: Union[None, lw.RunMeta, Mapping[str, Any]] = None) -> Dataset:
        """Opens a dataset on the cluster side (``uri``: a path or ``amrex://``
        URI under one of the gateway's data roots). ``level=None`` is level 0."""
        meta = self.dataset_metadata(uri)
        given = None if runmeta is None else runmeta_for(meta, runmeta, step)
        step = resolve_step(meta, given, step)
        rm = given if given is not None else synthesize_runmeta(meta, step)
        return Dataset(self, uri, step=step, level=0 if level is None else level, metadata=meta, runmeta=rm,
                       world_size=self.world_size, runmeta_given=runmeta is not None)

    def execute(self, dataset: Dataset, values: Sequence[Any], options: Sequence[Dict[str, Any]], *,
                progress: Optional[bool] = None) -> List[Any]:
        """Runs the producer stages of ``values`` as one job and materializes each
        (the engine of :func:`kangaroo.compute`)."""
        return self.run_values(dataset, values, options, progress=progress)[0]

    def run_values(self, dataset: Dataset, values: Sequence[Any], options: Sequence[Dict[str, Any]], *,
                   progress: Optional[bool] = None) -> Tuple[List[Any], Optional[str]]:
        """:meth:`execute`, also returning the ID of the job it submitted (``None``
        when every value was already at hand).

        The plan is the union of the values' producer stages and their ancestors
        (LOW-22) minus the producers of persisted fields (LOW-23); mesh and
        particle stages share the job, whose RunMeta carries the virtual particle
        level as an extra step. Persisted fields the plan reads come from the
        results of the jobs that persisted them (``seed_jobs``)."""
        out: List[Any] = [v._persisted for v in values]
        graph = dataset._graph
        run: List[int] = []
        for i, v in enumerate(values):
            if v._persisted is not None:
                continue
            fields = [f for f, _ in v._targets()]
            if fields and all(f in graph.persisted for f in fields):
                # Another view (a rename) of a persisted value: read it where it was kept.
                results = JobResults(self, graph.persisted[fields[0]], self.results(graph.persisted[fields[0]]))
                out[i] = v._materialize(results, options[i])
            else:
                run.append(i)
        if not run:
            return out, None
        targets = [t for i in run for t in values[i]._targets()]
        tails = list(dict.fromkeys(t for _, t in targets if t is not None))
        plan_doc = ir.Plan(graph.job_stages(tails)).to_dict()
        read = sorted({ref["field"] for st in plan_doc["stages"] for t in st["templates"] for ref in t["inputs"]})
        seeds = sorted({graph.persisted[f] for f in read if f in graph.persisted})
        job = self.submit(plan_doc, dataset=dataset.uri, runmeta=dataset._job_runmeta(),
                          fields=dataset.field_bindings(read),
                          outputs=[[f, 0] for f in dict.fromkeys(f for f, _ in targets)], seed_jobs=seeds)
        self.wait(job["id"], progress=progress)
        results = JobResults(self, job["id"], self.results(job["id"]))
        for i in run:
            out[i] = values[i]._materialize(results, options[i])
        return out, job["id"]


def _job_path(job_id: str) -> str:
    if not isinstance(job_id, str) or not job_id:
        raise TypeError(f"job ids are non-empty strings, got {job_id!r}")
    return urllib.parse.quote(job_id, safe="")


def _check_outcome(job: Dict[str, Any]) -> Dict[str, Any]:
    state = job.get("state")
    if state == "succeeded":
        return job
    err = job.get("error") if isinstance(job.get("error"), dict) else {}
    message = err.get("message") or f"job {job.get('id')} ended in state {state}"
    if state == "cancelled":
        raise JobCancelledError(f"job {job.get('id')} was cancelled" + (f": {message}" if err else ""), job=job,
                                kind=err.get("kind"))
    raise JobFailedError(message, job=job, kind=err.get("kind"))


# ---------------------------------------------------------------------------
# process-wide default client (API-8)

_default_client: Optional[Client] = None
_default_lock = threading.Lock()


def get_default_client() -> Client:
    """The process-local client, created on first use from the environment or the client file."""
    global _default_client
    with _default_lock:
        if _default_client is None:
            _default_client = Client()
        return _default_client


def set_default_client(client: Optional[Client]) -> None:
    """Replaces the default client (``None`` resets it; anything else than a ``Client`` is a ``TypeError``)."""
    global _default_client
    if client is not None and not isinstance(client, Client):
        raise TypeError(f"set_default_client takes a Client or None, got {type(client).__name__}")
    with _default_lock:
        _default_client = client


def open_dataset(uri: str, *, step: int = 0, level: Optional[int] = None,
                 runmeta: Union[None, lw.RunMeta, Mapping[str, Any]] = None,
                 client: Optional[Client] = None) -> Dataset:
    """Opens ``uri`` through ``client`` (default: :func:`get_default_client`)."""
    return (client or get_default_client()).open_dataset(uri, step=step, level=level, runmeta=runmeta)
