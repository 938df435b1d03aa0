"""End-to-end tests of ``kangaroo-gateway`` (docs/api.md) through the Python SDK.

A gateway is started on a free port with a throw-away certificate, two tenants
and the AMReX sample plotfiles of ``<repo>/../shared/data/amrex`` as its data
root. The tests check that SDK results equal ``kangaroo-worker run`` of the
same lowered plans, authentication and tenant isolation, robustness against
malformed and oversized requests, dataset path confinement, idempotent
submission, a gateway killed and restarted mid-job, plan validation errors,
resumed downloads over a connection cut mid-body, a port-forwarded connection
(as through ``ssh -L``) and ``kangaroo up/status/down``.

Skipped when the gateway (``build/gateway/kangaroo-gateway`` or
``$KANGAROO_BUILD_DIR/gateway/kangaroo-gateway``) or the worker is not built.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SDK = os.path.join(REPO, "python-sdk")
sys.path.insert(0, SDK)

np = pytest.importorskip("numpy", reason="numpy (python3-numpy) is needed by the SDK")

BUILD_DIR = os.environ.get("KANGAROO_BUILD_DIR") or os.path.join(REPO, "build")
if not os.path.isabs(BUILD_DIR):
    BUILD_DIR = os.path.join(REPO, BUILD_DIR)
GATEWAY = os.path.join(BUILD_DIR, "gateway", "kangaroo-gateway")
WORKER = os.path.join(BUILD_DIR, "worker", "kangaroo-worker")
DATA = os.path.realpath(os.path.join(REPO, "..", "shared", "data", "amrex"))

pytestmark = [
    pytest.mark.skipif(not os.access(GATEWAY, os.X_OK),
                       reason=f"kangaroo-gateway not built at {GATEWAY} (build it with scripts/build.sh or set "
                              "KANGAROO_BUILD_DIR)"),
    pytest.mark.skipif(not os.access(WORKER, os.X_OK), reason=f"kangaroo-worker not built at {WORKER}"),
    pytest.mark.skipif(not os.path.isdir(DATA), reason=f"sample plotfiles missing at {DATA}"),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command makes the test certificate"),
]

import kangaroo as kg  # noqa: E402
from kangaroo import ir  # noqa: E402

TOKEN_A, TOKEN_B = "token-alpha-0123456789", "token-beta-9876543210"
MAX_BODY = 1 << 20
SMALL = "pelelmex_3d_small"


# ---------------------------------------------------------------------------
# gateway process


def make_certificate(folder):
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-addext", "keyUsage=critical,digitalSignature,keyCertSign"],
        check=True, capture_output=True)
    return cert, key


class Gateway:
    """One gateway process; ``restart`` reuses the state folder and the port."""

    def __init__(self, folder):
        self.folder = folder
        self.cert, self.key = make_certificate(folder)
        self.tokens = os.path.join(folder, "tokens")
        with open(self.tokens, "w") as f:
            f.write(f"# test tenants\n{TOKEN_A} alpha\n{TOKEN_B} beta\n")
        self.state = os.path.join(folder, "state")
        self.extra_root = os.path.join(folder, "root2")
        os.makedirs(self.extra_root)
        os.symlink("/etc", os.path.join(self.extra_root, "escape"))
        os.symlink(os.path.join(DATA, SMALL), os.path.join(self.extra_root, "small_link"))
        self.log_path = os.path.join(folder, "gateway.log")
        self.proc = None
        self.port = 0
        self.url = None

    def start(self):
        ready = os.path.join(self.folder, "ready")
        if os.path.exists(ready):
            os.unlink(ready)
        cmd = [GATEWAY, "--listen", f"127.0.0.1:{self.port}", "--cert", self.cert, "--key", self.key,
               "--tokens", self.tokens, "--state-dir", self.state, "--data-root", DATA,
               "--data-root", self.extra_root, "--worker-bin", WORKER, "--workers", "2",
               "--max-body", str(MAX_BODY), "--ready-file", ready]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if os.path.exists(ready):
                text = open(ready).read().strip()
                if text:
                    self.url = text.splitlines()[0]
                    self.port = int(self.url.rsplit(":", 1)[1])
                    return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"gateway did not become ready; log:\n{self.log_tail()}")

    def log_tail(self):
        with open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-40:])

    def kill(self, sig=signal.SIGKILL):
        self.proc.send_signal(sig)
        self.proc.wait(30)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self, token=TOKEN_A, url=None, **kw):
        kw.setdefault("backoff", 0.05)
        return kg.Client(url or self.url, token, self.cert, **kw)

    def raw(self, method, path, body=None, headers=None, port=None):
        """One request on a fresh connection: (status, headers, body)."""
        ctx = ssl.create_default_context(cafile=self.cert)
        conn = http.client.HTTPSConnection("127.0.0.1", port or self.port, context=ctx, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def gw():
    folder = tempfile.mkdtemp(prefix="kangaroo_gw_")
    g = Gateway(folder).start()
    yield g
    g.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_user_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("KANGAROO_CONFIG", str(tmp_path / "client.json"))
    for var in ("KANGAROO_URL", "KANGAROO_TOKEN", "KANGAROO_CA_CERT"):
        monkeypatch.delenv(var, raising=False)


def worker_run(plan_doc, runmeta_doc, uri, bindings, outputs, tmp):
    """The same plan through ``kangaroo-worker run``: {(field, level, block): array}."""
    plan_path, rm_path = os.path.join(tmp, "plan.json"), os.path.join(tmp, "runmeta.json")
    with open(plan_path, "w") as f:
        json.dump(plan_doc, f)
    with open(rm_path, "w") as f:
        json.dump(runmeta_doc, f)
    out = os.path.join(tmp, "out")
    cmd = [WORKER, "run", "--plan", plan_path, "--runmeta", rm_path, "--dataset", uri, "--out", out]
    for fid, name in bindings.items():
        cmd += ["--field", f"{fid}={name}"]
    for fid in outputs:
        cmd += ["--output", str(fid)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    arrays = {}
    for name in os.listdir(out):
        if name.endswith(".npy"):
            s, l, fld, v, b = (int(p[1:]) for p in name[:-4].split("_"))
            arrays[fld, l, b] = np.load(os.path.join(out, name))
    return arrays


# ---------------------------------------------------------------------------
# results equal the worker's


@pytest.mark.parametrize("dataset,field", [(SMALL, "Y(H2)"), ("eb_3d", "density")])
def test_sdk_results_equal_worker_run(gw, dataset, field, tmp_path):
    c = gw.client()
    ds = c.open_dataset(dataset)
    f = ds[field]
    g = ds.geometry.plane(axis="z")
    img = f.slice(axis="z", resolution=(48, 40))
    col = (f * 2.0).project(axis="x", resolution=(32, 24))
    lo, hi = (0.0, 1.0) if field != "density" else (0.0, 2.0)
    hist = f.histogram(bins=16, range=(lo, hi))
    got_img, got_col, got_hist = kg.compute(img, col, hist)
    assert got_img.shape == (40, 48) and got_col.shape == (24, 32)
    assert g.plane == "xy"

    targets = [v._target() for v in (img, col, hist)]
    plan_doc = ir.Plan([t for _, t in targets]).to_dict()
    read = {ref["field"] for st in plan_doc["stages"] for t in st["templates"] for ref in t["inputs"]}
    bindings = {int(k): v for k, v in ds.field_bindings(sorted(read)).items()}
    ref = worker_run(plan_doc, ds.runmeta.to_dict(), "amrex://" + os.path.join(DATA, dataset), bindings,
                     [fid for fid, _ in targets], str(tmp_path))
    np.testing.assert_array_equal(got_img, ref[img._field, ds.level, 0])
    np.testing.assert_array_equal(got_col, ref[col._field, ds.level, 0])
    np.testing.assert_array_equal(got_hist.counts, ref[hist._field, ds.level, 0])
    if dataset == SMALL:
        assert got_hist.counts.sum() > 0  # mass fractions lie in [0, 1]


def test_unbounded_field_comes_back_per_block(gw):
    ds = gw.client().open_dataset(SMALL)
    chunks = ds["Y(O2)"].compute()
    sm = ds.runmeta.step_meta(ds.step)
    assert len(chunks) == sum(len(lv.boxes) for lv in sm.levels)
    for ch in chunks:
        assert ch.values.size == sm.levels[ch.level].boxes[ch.block].cells
    with pytest.raises(MemoryError):
        ds["Y(O2)"].compute(max_bytes=10)


def test_plotfile_step_label_and_levels(gw):
    c = gw.client()
    ds = c.open_dataset(SMALL)
    own = ds.metadata["step"]
    at_label = c.open_dataset(SMALL, step=own)
    assert at_label.step == own
    a = ds["Y(H2)"].histogram(bins=8, range=(0.0, 1.0)).compute()
    b = at_label["Y(H2)"].histogram(bins=8, range=(0.0, 1.0)).compute()
    np.testing.assert_array_equal(a.counts, b.counts)
    with pytest.raises(ValueError, match="step"):
        c.open_dataset(SMALL, step=own + 1)
    fine = ds.select(level=1)["Y(H2)"].slice(axis="y", resolution=(16, 16)).compute()
    assert fine.shape == (16, 16) and np.isfinite(fine).all()


# ---------------------------------------------------------------------------
# authentication and tenants


def test_tokens_and_tenants(gw):
    status, _, body = gw.raw("GET", "/v1/info")
    assert status == 401 and json.loads(body)["error"]["kind"] == "unauthorized"
    status, _, _ = gw.raw("GET", "/v1/info", headers={"Authorization": "Bearer nope"})
    assert status == 401
    status, _, _ = gw.raw("GET", "/v1/info", headers={"Authorization": f"Basic {TOKEN_A}"})
    assert status == 401
    assert gw.raw("GET", "/healthz")[0] == 200
    with pytest.raises(kg.AuthenticationError):
        gw.client(token=None).info()
    with pytest.raises(PermissionError):
        gw.client(token="wrong-token").info()

    a, b = gw.client(TOKEN_A), gw.client(TOKEN_B)
    ds = a.open_dataset(SMALL)
    h = ds["Y(H2)"].histogram(bins=4, range=(0.0, 1.0))
    h.compute()
    jid = a.jobs()[0]["id"]
    for call in (b.job, b.results, b.cancel):
        with pytest.raises(KeyError):
            call(jid)
    with pytest.raises(KeyError):
        list(b.events(jid))
    own = gw.raw("GET", f"/v1/jobs/{jid}", headers={"Authorization": f"Bearer {TOKEN_B}"})
    missing = gw.raw("GET", "/v1/jobs/j-does-not-exist", headers={"Authorization": f"Bearer {TOKEN_B}"})
    assert own[0] == missing[0] == 404
    assert json.loads(own[2])["error"]["kind"] == json.loads(missing[2])["error"]["kind"]
    assert jid not in [j["id"] for j in b.jobs()]


# ---------------------------------------------------------------------------
# malformed and oversized requests


def test_malformed_and_oversized_requests_leave_the_server_serving(gw):
    auth = {"Authorization": f"Bearer {TOKEN_A}", "Content-Type": "application/json"}
    status, _, body = gw.raw("POST", "/v1/jobs", body=b"{not json", headers=auth)
    assert 400 <= status < 500 and json.loads(body)["error"]["kind"] in ("bad_request", "validation")
    status, _, body = gw.raw("POST", "/v1/jobs", body=b'{"plan": 3}', headers=auth)
    assert 400 <= status < 500
    try:
        status, _, _ = gw.raw("POST", "/v1/jobs", body=b"x" * (MAX_BODY + 1024), headers=auth)
        assert status == 413
    except (ConnectionError, ssl.SSLError):
        pass  # closing the connection on an oversized body is acceptable too
    status, _, _ = gw.raw("POST", "/v1/jobs", body=b"{}", headers={**auth, "Idempotency-Key": "bad key!"})
    assert status == 400

    # Not HTTP at all, inside TLS and outside it.
    ctx = ssl.create_default_context(cafile=gw.cert)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
            t.sendall(b"\x00\xffGARBAGE / HTTP/9.9\r\n\r\n")
            try:
                t.recv(1024)
            except (OSError, ssl.SSLError):
                pass
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            s.recv(1024)
        except OSError:
            pass
    assert gw.raw("GET", "/healthz")[0] == 200
    assert gw.client().info()["max_body"] == MAX_BODY


# ---------------------------------------------------------------------------
# dataset paths stay inside the data roots


def test_dataset_paths_are_confined(gw):
    c = gw.client()
    for uri in ("../etc", f"{SMALL}/../../..", "/etc", "amrex:///etc", "escape", "escape/passwd",
                "amrex://" + os.path.join(gw.extra_root, "escape")):
        with pytest.raises(kg.errors.BadRequestError) as e:
            c.dataset_metadata(uri)
        assert e.value.status == 400, uri
    with pytest.raises(FileNotFoundError):
        c.open_dataset("no_such_plotfile")
    # Links that stay inside a root, absolute paths inside a root and amrex:// URIs work.
    assert c.dataset_metadata("small_link")["var_names"]
    assert c.dataset_metadata(os.path.join(DATA, SMALL))["var_names"]
    assert c.dataset_metadata("amrex://" + os.path.join(DATA, SMALL))["var_names"]


# ---------------------------------------------------------------------------
# submission


def _small_plan(ds):
    h = ds["Y(H2)"].histogram(bins=4, range=(0.0, 1.0))
    field, tail = h._target()
    return h, ir.Plan([tail]).to_dict(), field


def test_same_idempotency_key_same_job(gw):
    c = gw.client()
    ds = c.open_dataset(SMALL)
    _, plan, field = _small_plan(ds)
    kwargs = dict(dataset=SMALL, runmeta=ds.runmeta, fields=ds.field_bindings(), outputs=[[field, 0]])
    first = c.submit(plan, idempotency_key="test-key-1", **kwargs)
    second = c.submit(plan, idempotency_key="test-key-1", **kwargs)
    assert first["id"] == second["id"] and first["idempotency_key"] == "test-key-1"
    body = json.dumps({"plan": plan, "dataset": SMALL, "runmeta": ds.runmeta.to_dict(),
                       "fields": ds.field_bindings(), "outputs": [[field, 0]]}).encode()
    status, _, raw = gw.raw("POST", "/v1/jobs", body=body, headers={
        "Authorization": f"Bearer {TOKEN_A}", "Content-Type": "application/json", "Idempotency-Key": "test-key-1"})
    assert status == 200 and json.loads(raw)["id"] == first["id"]
    third = c.submit(plan, **kwargs)
    assert third["id"] != first["id"]
    assert c.wait(first["id"])["state"] == "succeeded"


def test_invalid_plan_names_the_stage(gw):
    c = gw.client()
    ds = c.open_dataset(SMALL)
    _, plan, field = _small_plan(ds)
    plan["stages"][0]["after"] = [99]
    with pytest.raises(kg.PlanValidationError) as e:
        c.submit(plan, dataset=SMALL, runmeta=ds.runmeta, fields=ds.field_bindings(), outputs=[[field, 0]])
    assert isinstance(e.value, ValueError)
    assert "stage 0" in str(e.value)
    assert e.value.issues and e.value.issues[0]["stage"] == 0


def test_job_survives_a_gateway_restart(gw):
    """SIGKILL the gateway while a job runs; restarted on the same state folder
    it still reports the job and runs it to completion."""
    from kangaroo import synthetic

    name = "synthetic_restart"
    path = os.path.join(gw.extra_root, name)
    if not os.path.exists(path):
        synthetic.write_plotfile(path, n_cells=128, levels=2, max_grid_size=32)
    c = gw.client(outage_timeout=60)
    ds = c.open_dataset(name)
    values = []
    for f in ("density", "temperature", "velx"):
        values += [ds[f].project(axis=a, resolution=(512, 512)) for a in "xyz"]
        values.append(ds[f].histogram(bins=64, range=(0.0, 2.0), weight_mode="cell_volume"))
    plan = ir.Plan([v._target()[1] for v in values])
    job = c.submit(plan, dataset=name, runmeta=ds.runmeta, fields=ds.field_bindings(),
                   outputs=[[v._field, 0] for v in values])
    deadline = time.monotonic() + 60
    while c.job(job["id"])["state"] == "queued" and time.monotonic() < deadline:
        time.sleep(0.02)
    state_at_kill = c.job(job["id"])["state"]
    gw.kill(signal.SIGKILL)
    assert state_at_kill == "running", "the job finished before the gateway could be killed mid-run"
    gw.start()  # same state folder, same port
    record = c.job(job["id"])
    assert record["id"] == job["id"] and record["state"] in ("queued", "running", "succeeded")
    done = c.wait(job["id"], timeout=300)
    assert done["state"] == "succeeded"
    results = kg.JobResults(c, job["id"], c.results(job["id"]))
    (counts,) = results.arrays([results.chunk(values[3]._field, ds.step, ds.level, 0)])
    assert counts.sum() == pytest.approx(1.0)  # cell volumes of the unit cube, all density values in range
    assert {v._field for v in values} <= {ch["field"] for ch in results.chunks}


# ---------------------------------------------------------------------------
# downloads cut mid-body, and port forwarding


class CuttingProxy:
    """TCP forwarder to the gateway that, when armed, closes the connection
    after forwarding ``cut_after`` more bytes towards the client."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.cut_after = None
        self.cuts = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, n):
        with self.lock:
            self.cut_after = n

    def _accept(self):
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(down, up, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(up, down, True), daemon=True).start()

    def _pipe(self, src, dst, towards_client):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if towards_client:
                    with self.lock:
                        if self.cut_after is not None:
                            if len(data) >= self.cut_after:
                                data = data[: self.cut_after]
                                self.cut_after = None
                                self.cuts += 1
                                dst.sendall(data)
                                raise ConnectionAbortedError
                            self.cut_after -= len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self):
        self.listener.close()


def test_download_resumes_after_the_connection_is_cut(gw):
    proxy = CuttingProxy(gw.port)
    try:
        c = gw.client(url=f"https://127.0.0.1:{proxy.port}")
        ds = c.open_dataset(SMALL)
        img = ds["Y(H2)"].slice(axis="z", resolution=(512, 512))  # a 2 MiB result
        field, tail = img._target()
        results = c.run(ir.Plan([tail]), dataset=SMALL, runmeta=ds.runmeta, fields=ds.field_bindings(),
                        outputs=[[field, 0]])
        chunk = results.chunk(field, ds.step, ds.level, 0)
        whole = gw.client().download(results.job_id, chunk["name"])
        retries_before = c.transport.retries_taken
        proxy.arm(300_000)
        data = c.download(results.job_id, chunk["name"], expected_bytes=chunk["file_bytes"])
        assert proxy.cuts == 1
        assert c.transport.retries_taken > retries_before
        assert data == whole
    finally:
        proxy.close()


@pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed (scripts/bootstrap.sh installs it)")
def test_client_through_a_forwarded_port(gw):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    socat = subprocess.Popen(["socat", f"TCP-LISTEN:{port},fork,reuseaddr,bind=127.0.0.1",
                              f"TCP:127.0.0.1:{gw.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "socat did not start listening"
                time.sleep(0.05)
        c = kg.Client(f"https://127.0.0.1:{port}", TOKEN_A, gw.cert)
        ds = c.open_dataset(SMALL)
        direct = gw.client().open_dataset(SMALL)["Y(H2)"].histogram(bins=8, range=(0.0, 1.0)).compute()
        tunneled = ds["Y(H2)"].histogram(bins=8, range=(0.0, 1.0)).compute()
        np.testing.assert_array_equal(direct.counts, tunneled.counts)
    finally:
        socat.terminate()
        socat.wait(10)


# ---------------------------------------------------------------------------
# kangaroo up / status / down


def test_kangaroo_up_status_down(tmp_path):
    env = dict(os.environ, PYTHONPATH=SDK, KANGAROO_STATE_DIR=str(tmp_path / "state"),
               KANGAROO_CONFIG=str(tmp_path / "client.json"), KANGAROO_GATEWAY_BIN=GATEWAY,
               KANGAROO_WORKER_BIN=WORKER)

    def kangaroo(*args):
        return subprocess.run([sys.executable, "-m", "kangaroo", *args], env=env, capture_output=True, text=True,
                              timeout=120)

    up = kangaroo("up", "--port", "0", "--data-root", DATA, "--workers", "1")
    assert up.returncode == 0, up.stderr
    try:
        st = kangaroo("status")
        assert st.returncode == 0, st.stdout + st.stderr
        assert kangaroo("up", "--port", "0").stdout.startswith("kangaroo: gateway already up")
        c = kg.Client(*(json.load(open(tmp_path / "client.json"))[k] for k in ("url", "token", "ca_cert")))
        assert c.url == up.stdout.strip()
        res = c.open_dataset(SMALL)["Y(H2)"].histogram(bins=4, range=(0.0, 1.0)).compute()
        assert res.counts.sum() > 0
    finally:
        down = kangaroo("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert kangaroo("status").returncode == 1


def test_local_backend_runs_jobs_on_n_ranks_under_a_memory_cap(tmp_path):
    """`kangaroo up --ranks 2 --mem-cap B`: the gateway reports world_size 2,
    the SDK lowers for it, each job runs on two worker ranks with the cap, and
    the results equal a one-rank `kangaroo-worker run` of the same plan."""
    env = dict(os.environ, PYTHONPATH=SDK, KANGAROO_STATE_DIR=str(tmp_path / "state"),
               KANGAROO_CONFIG=str(tmp_path / "client.json"), KANGAROO_GATEWAY_BIN=GATEWAY,
               KANGAROO_WORKER_BIN=WORKER, UCX_TLS="sm,self", UCX_WARN_UNUSED_ENV_VARS="n")

    def kangaroo(*args):
        return subprocess.run([sys.executable, "-m", "kangaroo", *args], env=env, capture_output=True, text=True,
                              timeout=120)

    up = kangaroo("up", "--port", "0", "--data-root", DATA, "--workers", "1", "--ranks", "2",
                  "--mem-cap", str(64 << 20))
    assert up.returncode == 0, up.stderr
    try:
        c = kg.Client(*(json.load(open(tmp_path / "client.json"))[k] for k in ("url", "token", "ca_cert")))
        assert c.world_size == 2
        ds = c.open_dataset(SMALL)
        f = ds["Y(H2)"]
        img = f.slice(axis="z", resolution=(48, 40))
        col = f.project(axis="x", resolution=(32, 24))
        hist = f.histogram(bins=8, range=(0.0, 1.0))
        got_img, got_col, got_hist = kg.compute(img, col, hist)
        targets = [v._target() for v in (img, col, hist)]
        plan_doc = ir.Plan([t for _, t in targets]).to_dict()
        bindings = {int(k): v for k, v in ds.field_bindings(sorted(
            {ref["field"] for st in plan_doc["stages"] for t in st["templates"] for ref in t["inputs"]})).items()}
        ref = worker_run(plan_doc, ds.runmeta.to_dict(), "amrex://" + os.path.join(DATA, SMALL), bindings,
                         [fid for fid, _ in targets], str(tmp_path))
        np.testing.assert_array_equal(got_img, ref[img._field, ds.level, 0])
        np.testing.assert_array_equal(got_col, ref[col._field, ds.level, 0])
        np.testing.assert_array_equal(got_hist.counts, ref[hist._field, ds.level, 0])
        manifests = []
        for root, _, files in os.walk(tmp_path / "state"):
            if "manifest.json" in files:
                manifests.append(json.load(open(os.path.join(root, "manifest.json"))))
        assert manifests and all(m["ranks"] == 2 for m in manifests), manifests
        assert all(m["memory"]["cap_bytes"] == 64 << 20 for m in manifests)
    finally:
        down = kangaroo("down")
    assert down.returncode == 0, down.stdout + down.stderr
