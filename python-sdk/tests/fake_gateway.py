"""A small in-process HTTPS stand-in for ``kangaroo-gateway`` (docs/api.md).

It implements the endpoints the client uses, with canned results, and can be
told to misbehave per route: drop the connection before answering, answer
503, or cut a body after some bytes. Tests read what it saw (requests,
headers, connections). Run as a script it serves until SIGTERM, taking the
gateway's command-line flags, so ``kangaroo up`` can be tested without the
real binary.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import io
import itertools
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np


def make_certificate(folder: str, name: str = "gw") -> Tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 / localhost (as ``kangaroo up`` makes)."""
    cert, key = os.path.join(folder, f"{name}.crt"), os.path.join(folder, f"{name}.key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-addext", "keyUsage=critical,digitalSignature,keyCertSign"],
        check=True, capture_output=True)
    return cert, key


def small_metadata() -> Dict[str, Any]:
    """Two levels on the unit cube: level 0 is 16^3 in two x-halves, level 1
    (32^3) refines [0.25, 0.75)^3 with one block. Step 7, three variables."""
    return {
        "var_names": ["density", "temperature", "velx"],
        "finest_level": 1,
        "step": 7,
        "spacedim": 3,
        "coord_sys": 0,
        "mapped_mesh": False,
        "prob_lo": [0.0, 0.0, 0.0],
        "prob_hi": [1.0, 1.0, 1.0],
        "cell_size": [[1 / 16] * 3, [1 / 32] * 3],
        "prob_domain": [[[0, 0, 0], [15, 15, 15]], [[0, 0, 0], [31, 31, 31]]],
        "level_boxes": [[[[0, 0, 0], [7, 15, 15]], [[8, 0, 0], [15, 15, 15]]], [[[8, 8, 8], [23, 23, 23]]]],
        "variable_info": {
            "density": {"num_components": 1, "component_names": ["density"], "type": "float64"},
            "temperature": {"num_components": 1, "component_names": ["temperature"], "type": "float32"},
            "velx": {"num_components": 1, "component_names": ["velx"], "type": "float64"},
        },
        "particle_types": ["electrons"],
        "particle_info": {"electrons": {"fields": ["x", "y", "z", "mass"], "chunk_count": 3,
                                        "grids_per_level": [2, 1], "dim": 3, "stored_dtype": "float64",
                                        "count": 30}},
    }


def _npy(arr: np.ndarray) -> bytes:
    b = io.BytesIO()
    np.save(b, arr)
    return b.getvalue()


_DTYPES = {"f64": np.float64, "f32": np.float32, "u8": np.uint8, "i64": np.int64}


class FakeGateway:
    """Serves on 127.0.0.1:<free port>; ``url``, ``cert`` for the client."""

    def __init__(self, cert: str, key: str, *, tokens: Optional[Dict[str, str]] = None,
                 metadata: Optional[Dict[str, Any]] = None, port: int = 0) -> None:
        self.cert = cert
        self.tokens = dict(tokens if tokens is not None else {"tok-a": "alpha", "tok-b": "beta"})
        self.metadata = metadata or small_metadata()
        self.datasets = {"plt00007": self.metadata, "amrex://plt00007": self.metadata}
        self.lock = threading.Lock()
        self.requests: List[Dict[str, Any]] = []
        self.faults: Dict[str, List[Any]] = {}
        self.jobs: Dict[str, Dict[str, Any]] = {}
        self.bodies: Dict[str, Dict[str, Any]] = {}
        self.files: Dict[str, Dict[str, bytes]] = {}
        self.keys: Dict[Tuple[str, str], str] = {}
        self.events_status: Optional[int] = None  # answer /events with this status instead of a stream
        self.job_outcome: Dict[str, Any] = {"state": "succeeded"}
        self.result_factory: Optional[Callable[[int, Dict[str, Any], Tuple[int, int, int]], np.ndarray]] = None
        self.counter = itertools.count(1)
        self.connections = 0

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert, key)
        gateway = self

        class Handler(_Handler):
            gw = gateway

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):
                sock, addr = self.socket.accept()
                gateway.connections += 1
                return ctx.wrap_socket(sock, server_side=True), addr

        self.server = Server(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)

    def start(self) -> "FakeGateway":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fault(self, route: str, *actions: Any) -> None:
        """Queues actions for the next requests whose path starts with ``route``:
        ``"drop"`` (close without answering), ``"drop-after"`` (handle, then close
        without answering), an int status, ``("cut", n)`` (send n body bytes, then
        close), ``("etag", tag)`` (answer with another ETag)."""
        self.faults.setdefault(route, []).extend(actions)

    def take_fault(self, path: str) -> Any:
        with self.lock:
            for route, actions in self.faults.items():
                if path.startswith(route) and actions:
                    return actions.pop(0)
        return None

    def seen(self, method: str, prefix: str) -> List[Dict[str, Any]]:
        return [r for r in self.requests if r["method"] == method and r["path"].startswith(prefix)]

    # -- job model --------------------------------------------------------

    def create_job(self, tenant: str, body: Dict[str, Any], key: Optional[str]) -> Tuple[Dict[str, Any], bool]:
        with self.lock:
            if key and (tenant, key) in self.keys:
                return self.jobs[self.keys[tenant, key]], False
            jid = f"j-{next(self.counter):04d}"
            job = {"id": jid, "tenant": tenant, "state": "queued", "dataset": body.get("dataset"),
                   "idempotency_key": key, "created": time.time(), "started": None, "finished": None,
                   "progress": {"done": 0, "total": 4}, "error": None, "results": None}
            self.jobs[jid] = job
            self.bodies[jid] = body
            if key:
                self.keys[tenant, key] = jid
            return job, True

    def finish_job(self, jid: str) -> Dict[str, Any]:
        job = self.jobs[jid]
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        outcome = dict(self.job_outcome)
        job.update(state=outcome["state"], started=time.time(), finished=time.time(),
                   progress={"done": 4, "total": 4}, error=outcome.get("error"))
        if job["state"] == "succeeded":
            self.files[jid] = self._results(self.bodies[jid])
            job["results"] = len(self.files[jid])
        return job

    def _results(self, body: Dict[str, Any]) -> Dict[str, bytes]:
        """Canned chunks for every requested output, shaped from the plan's output specs."""
        plan = body["plan"]
        runmeta = body.get("runmeta") or {}
        steps = {s["step"]: s["levels"] for s in runmeta.get("steps") or []}
        wanted = {f for f, _ in body.get("outputs") or []}
        files: Dict[str, bytes] = {}
        for stage in plan["stages"]:
            for t in stage["templates"]:
                for out in t["outputs"]:
                    field = out["field"]["field"] if isinstance(out["field"], dict) else out["field"]
                    if field not in wanted:
                        continue
                    buf = out["buffer"]
                    dom = t["domain"]
                    step, level = dom["step"], dom["level"]
                    levels = steps.get(step, [])
                    if t.get("graph_reduce") is not None:
                        blocks = t["graph_reduce"].get("output_blocks") or [0]
                    else:
                        blocks = dom["blocks"] if dom["blocks"] is not None else range(len(levels[level]["boxes"]))
                    for b in blocks:
                        shape = buf["shape"]
                        if shape["kind"] == "fixed":
                            dims = tuple(shape["extents"])
                        elif shape["kind"] == "dynamic":
                            dims = (10,)
                        elif levels:
                            lo, hi = levels[level]["boxes"][b]
                            dims = tuple(h - l + 1 for l, h in zip(lo, hi))
                        else:
                            dims = (1,)
                        dtype = _DTYPES.get(buf["dtype"], np.float64)
                        if self.result_factory is not None:
                            arr = self.result_factory(field, buf, (step, level, b))
                        else:
                            arr = (np.arange(int(np.prod(dims)), dtype=np.float64) + 100 * level + b).reshape(dims)
                        files[f"s{step}_l{level}_f{field}_v0_b{b}.npy"] = _npy(np.asarray(arr).astype(dtype))
        return files


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    gw: FakeGateway

    def log_message(self, *args: Any) -> None:
        pass

    # -- plumbing ---------------------------------------------------------

    def _send(self, status: int, body: bytes, ctype: str = "application/json",
              headers: Optional[Dict[str, str]] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, doc: Any, headers: Optional[Dict[str, str]] = None) -> None:
        self._send(status, json.dumps(doc).encode(), headers=headers)

    def _error(self, status: int, kind: str, message: str, **extra: Any) -> None:
        self._json(status, {"error": {"kind": kind, "message": message, **extra}})

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _tenant(self) -> Optional[str]:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return None
        return self.gw.tokens.get(auth[len("Bearer "):].strip())

    def _read_body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    # -- routing ----------------------------------------------------------

    def _handle(self, method: str) -> None:
        gw = self.gw
        parts = urllib.parse.urlsplit(self.path)
        path = parts.path
        body = self._read_body() if method == "POST" else b""
        with gw.lock:
            gw.requests.append({"method": method, "path": path, "query": parts.query,
                                "headers": dict(self.headers.items()), "body": body,
                                "client": self.client_address})
        action = gw.take_fault(path)
        if action == "drop":
            return self._drop()
        if isinstance(action, int):
            return self._error(action, "unavailable" if action >= 500 else "bad_request", f"injected {action}")
        if path == "/healthz":
            return self._json(200, {"status": "ok"})
        tenant = self._tenant()
        if tenant is None:
            return self._error(401, "unauthorized", "missing or unknown bearer token")
        m = re.fullmatch(r"/v1/jobs/([^/]+)(/.*)?", path)
        if path == "/v1/info":
            self._json(200, {"version": "fake", "workers": 1, "world_size": 1, "data_roots": ["/data"],
                             "max_body": 1 << 20})
        elif path == "/v1/datasets/metadata":
            uri = urllib.parse.parse_qs(parts.query).get("uri", [""])[0]
            if ".." in uri.split("/"):
                self._error(400, "bad_request", f"dataset path {uri!r} leaves every data root")
            elif uri not in gw.datasets:
                self._error(404, "not_found", f"dataset {uri!r} does not exist")
            else:
                self._json(200, gw.datasets[uri])
        elif path == "/v1/jobs" and method == "POST":
            try:
                doc = json.loads(body)
            except ValueError:
                return self._error(400, "bad_request", "body is not JSON")
            if doc.get("plan", {}).get("stages") == []:
                return self._error(400, "validation", "stage 0 template 0 at /stages/0/templates/0/kernel: "
                                   "unknown kernel 'nope'",
                                   issues=[{"stage": 0, "template": 0, "path": "/stages/0/templates/0/kernel",
                                            "message": "unknown kernel 'nope'"}])
            job, created = gw.create_job(tenant, doc, self.headers.get("Idempotency-Key"))
            if action == "drop-after":
                return self._drop()
            self._json(201 if created else 200, _public(job), headers={"Location": f"/v1/jobs/{job['id']}"})
        elif path == "/v1/jobs" and method == "GET":
            self._json(200, {"jobs": [_public(j) for j in gw.jobs.values() if j["tenant"] == tenant][::-1]})
        elif m:
            job = gw.jobs.get(m.group(1))
            if job is None or job["tenant"] != tenant:
                return self._error(404, "not_found", f"job {m.group(1)} does not exist")
            self._job_route(job, m.group(2) or "", method, action)
        else:
            self._error(404, "not_found", f"no route {path}")

    def _job_route(self, job: Dict[str, Any], rest: str, method: str, action: Any) -> None:
        gw = self.gw
        if rest == "" and method == "GET":
            gw.finish_job(job["id"])
            return self._json(200, _public(job))
        if rest == "/cancel" and method == "POST":
            if job["state"] in ("queued", "running"):
                job["state"] = "cancelled"
            return self._json(200, _public(job))
        if rest == "/events":
            if gw.events_status is not None:
                return self._error(gw.events_status, "bad_request", "no event streams here")
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            running = dict(_public(job), state="running")
            self.wfile.write(f"event: state\ndata: {json.dumps(running)}\n\n".encode())
            self.wfile.write(b": keep-alive comment\n\n")
            for done in (1, 2, 3):
                self.wfile.write(f"event: progress\ndata: {json.dumps({'done': done, 'total': 4})}\n\n".encode())
            if action == "drop":
                return
            gw.finish_job(job["id"])
            self.wfile.write(f"event: state\ndata: {json.dumps(_public(job))}\n\n".encode())
            return
        if rest == "/results":
            if job["state"] != "succeeded":
                return self._error(409, "conflict", f"job {job['id']} is {job['state']}")
            chunks = []
            for name, data in sorted(gw.files[job["id"]].items()):
                s, l, f, v, b = (int(x) for x in re.findall(r"-?\d+", name)[:5])
                arr = np.load(io.BytesIO(data))
                chunks.append({"name": name, "step": s, "level": l, "field": f, "version": v, "block": b,
                               "dtype": str(arr.dtype), "shape": list(arr.shape), "bytes": int(arr.nbytes),
                               "file_bytes": len(data)})
            return self._json(200, {"chunks": chunks, "tasks_total": 4, "seconds": 0.01})
        if rest.startswith("/results/"):
            name = urllib.parse.unquote(rest[len("/results/"):])
            data = gw.files.get(job["id"], {}).get(name)
            if data is None:
                return self._error(404, "not_found", f"no result {name}")
            etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
            if isinstance(action, tuple) and action[0] == "etag":
                etag = action[1]
            start = 0
            rng = self.headers.get("Range")
            if rng:
                mm = re.fullmatch(r"bytes=(\d+)-", rng)
                start = int(mm.group(1)) if mm else 0
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            part = data[start:]
            self.send_response(206 if rng else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(part)))
            self.send_header("ETag", etag)
            self.send_header("Accept-Ranges", "bytes")
            if rng:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if isinstance(action, tuple) and action[0] == "cut":
                self.wfile.write(part[: action[1]])
                self.wfile.flush()
                return self._drop()
            self.wfile.write(part)
            return
        self._error(404, "not_found", f"no route {rest}")


def _public(job: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in job.items() if k != "tenant"}


def _main(argv: Optional[List[str]] = None) -> int:
    """Command-line stand-in for the gateway (the flags ``kangaroo up`` passes)."""
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--tokens", required=True)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--data-root", action="append", default=[])
    p.add_argument("--ready-file")
    p.add_argument("--worker-bin")
    p.add_argument("--workers")
    p.add_argument("--queue")
    p.add_argument("--mem-cap")
    p.add_argument("--max-body")
    args = p.parse_args(argv)
    tokens = {}
    with open(args.tokens) as f:
        for line in f:
            line = line.split("#", 1)[0].split()
            if len(line) == 2:
                tokens[line[0]] = line[1]
    port = int(args.listen.rsplit(":", 1)[1])
    gw = FakeGateway(args.cert, args.key, tokens=tokens, port=port)
    url = gw.url
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(url + "\n")
        os.replace(tmp, args.ready_file)
    print(url, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    gw.server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
