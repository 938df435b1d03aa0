"""Tests of the gateway client against an in-process fake HTTPS gateway.

Covers the transport (keep-alive, retries with backoff, idempotency keys
reused across retries, resumable downloads), the mapping of server errors to
Python exceptions (API-5), the connection settings, datasets and lazy values
(API-8..27: lowering without execution, explain/visualize), and the job flow
of ``compute`` (one job for several values, API-35; results API-39/40).
"""

import json
import os
import shutil
import stat
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

np = pytest.importorskip("numpy")

import kangaroo as kg  # noqa: E402
from kangaroo import config as kconfig  # noqa: E402
from kangaroo.errors import DownloadError  # noqa: E402

pytestmark = [pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command makes the test certificate"),
              pytest.mark.usefixtures("isolated_settings")]



def client(gw, token="tok-a", **kw):
    kw.setdefault("backoff", 0.01)
    return kg.Client(gw.url, token, gw.cert, **kw)


# ---------------------------------------------------------------------------
# connection settings


def test_settings_come_from_arguments_then_environment_then_file(tmp_path, monkeypatch, gw):
    path = kconfig.write_client_config({"url": "https://127.0.0.1:1", "token": "file-token", "ca_cert": "ca.pem"})
    assert path == str(tmp_path / "client.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = kconfig.load_client_config()
    assert loaded["ca_cert"] == str(tmp_path / "ca.pem")  # relative to the file's folder
    monkeypatch.setenv("KANGAROO_TOKEN", "env-token")
    got = kconfig.resolve_connection(url="https://127.0.0.1:2")
    assert got == {"url": "https://127.0.0.1:2", "token": "env-token", "ca_cert": str(tmp_path / "ca.pem")}

    kconfig.write_client_config({"url": gw.url, "token": "tok-a", "ca_cert": gw.cert})
    monkeypatch.delenv("KANGAROO_TOKEN")
    c = kg.Client()
    assert (c.url, c.token, c.ca_cert) == (gw.url, "tok-a", gw.cert)
    assert c.info()["world_size"] == 1


def test_config_path_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("KANGAROO_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert kconfig.client_config_path() == str(tmp_path / "xdg" / "kangaroo" / "client.json")
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert kconfig.client_config_path() == str(tmp_path / "home" / ".config" / "kangaroo" / "client.json")


def test_missing_url_and_bad_file_are_explained(tmp_path):
    with pytest.raises(ValueError, match="kangaroo up"):
        kg.Client()
    (tmp_path / "client.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        kg.Client()
    (tmp_path / "client.json").unlink()
    with pytest.raises(ValueError, match="https"):
        kg.Client("http://127.0.0.1:1", "t")


def test_default_client(gw, monkeypatch):
    with pytest.raises(TypeError):
        kg.set_default_client("not a client")
    monkeypatch.setenv("KANGAROO_URL", gw.url)
    monkeypatch.setenv("KANGAROO_TOKEN", "tok-a")
    monkeypatch.setenv("KANGAROO_CA_CERT", gw.cert)
    c = kg.get_default_client()
    assert kg.get_default_client() is c
    ds = kg.open_dataset("plt00007")
    assert ds.client is c
    other = client(gw)
    kg.set_default_client(other)
    assert kg.get_default_client() is other


# ---------------------------------------------------------------------------
# transport


def test_keep_alive_reuses_one_connection(gw):
    c = client(gw)
    for _ in range(5):
        c.info(refresh=True)
        c.health()
    assert gw.connections == 1
    assert c.transport.connections_opened == 1


def test_tls_is_verified_against_the_given_ca(gw, certs):
    c = kg.Client(gw.url, "tok-a", certs[2], backoff=0.01)
    with pytest.raises(kg.GatewayError, match="TLS verification"):
        c.info()
    assert c.transport.retries_taken == 0  # a certificate problem is not retried
    ok = kg.Client(gw.url.replace("127.0.0.1", "localhost"), "tok-a", gw.cert)
    assert ok.health() == {"status": "ok"}


def test_get_is_retried_after_dropped_connections(gw):
    gw.fault("/v1/info", "drop", "drop", 503)
    c = client(gw)
    assert c.info()["version"] == "fake"
    assert c.transport.retries_taken == 3
    assert len(gw.seen("GET", "/v1/info")) == 4


def test_closed_keep_alive_connection_reconnects_at_once(gw):
    c = client(gw)
    c.info()
    gw.fault("/v1/info", "drop")  # as a server closing an idle connection
    c.info(refresh=True)
    assert c.transport.stale_reconnects == 1 and c.transport.retries_taken == 0


def test_retries_are_bounded(gw):
    gw.fault("/v1/info", *["drop"] * 10)
    c = client(gw, retries=2)
    with pytest.raises(kg.GatewayUnavailableError) as e:
        c.info()
    assert isinstance(e.value, ConnectionError)
    assert "3 attempt" in str(e.value)


def test_submission_retry_reuses_the_idempotency_key(gw):
    # The first attempt creates the job, then the connection drops before the answer.
    gw.fault("/v1/jobs", "drop-after")
    c = client(gw)
    job = c.submit({"schema": "kangaroo.plan/1", "stages": [{"name": "s"}]}, dataset="plt00007")
    posts = gw.seen("POST", "/v1/jobs")
    assert len(posts) == 2
    keys = {p["headers"]["Idempotency-Key"] for p in posts}
    assert len(keys) == 1 and next(iter(keys)).startswith("kpy-")
    assert len(gw.jobs) == 1 and job["id"] in gw.jobs
    # A new submission gets a new key, hence a new job.
    c.submit({"schema": "kangaroo.plan/1", "stages": [{"name": "s"}]}, dataset="plt00007")
    assert len(gw.jobs) == 2
    # The same explicit key returns the first job.
    again = c.submit({"stages": [{"name": "s"}]}, dataset="plt00007", idempotency_key=job["idempotency_key"])
    assert again["id"] == job["id"]


def _finished_job(gw, c, outputs=((1000, 0),)):
    from kangaroo import lowering as lw

    rm = lw.runmeta_from_metadata(gw.metadata, step=0)
    frag = lw.slice_plan(rm, 1, "z", 0.5, (0, 0, 1, 1), (64, 48), 1000)
    job = c.submit(frag.plan(), dataset="plt00007", runmeta=rm, fields={1: "density"}, outputs=outputs)
    c.wait(job["id"])
    return job["id"], c.results(job["id"])


def test_download_resumes_after_a_cut_connection(gw):
    c = client(gw)
    jid, manifest = _finished_job(gw, c)
    (chunk,) = manifest["chunks"]
    name = chunk["name"]
    expected = gw.files[jid][name]
    gw.fault(f"/v1/jobs/{jid}/results/{name}", ("cut", 1000), ("cut", 5000))
    arr = c.fetch_array(jid, chunk)
    assert arr.shape == (48, 64)
    gets = gw.seen("GET", f"/v1/jobs/{jid}/results/{name}")
    assert [g["headers"].get("Range") for g in gets] == [None, "bytes=1000-", "bytes=6000-"]
    assert c.download(jid, name) == expected


def test_download_refuses_a_changed_file(gw):
    c = client(gw)
    jid, manifest = _finished_job(gw, c)
    name = manifest["chunks"][0]["name"]
    gw.fault(f"/v1/jobs/{jid}/results/{name}", ("cut", 100), ("etag", '"different"'))
    with pytest.raises(DownloadError, match="changed"):
        c.download(jid, name)


# ---------------------------------------------------------------------------
# error mapping (API-5)


def test_authentication_errors(gw):
    for token in (None, "wrong"):
        with pytest.raises(kg.AuthenticationError) as e:
            kg.Client(gw.url, token, gw.cert).info()
        assert isinstance(e.value, PermissionError)
        assert e.value.status == 401 and "token" in str(e.value)


def test_other_tenants_jobs_are_not_found(gw):
    a, b = client(gw, "tok-a"), client(gw, "tok-b")
    jid, _ = _finished_job(gw, a)
    with pytest.raises(kg.JobNotFoundError) as e:
        b.job(jid)
    assert isinstance(e.value, KeyError)
    assert str(e.value) == f"job {jid} does not exist"  # the server's message, not KeyError's repr
    with pytest.raises(KeyError):
        b.results(jid)
    assert [j["id"] for j in b.jobs()] == []
    assert [j["id"] for j in a.jobs()] == [jid]


def test_dataset_errors(gw):
    c = client(gw)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        c.open_dataset("missing/plt")
    with pytest.raises(ValueError, match="leaves every data root"):
        c.open_dataset("../etc")


def test_validation_error_names_the_stage(gw):
    c = client(gw)
    with pytest.raises(kg.PlanValidationError) as e:
        c.submit({"schema": "kangaroo.plan/1", "stages": []}, dataset="plt00007")
    assert isinstance(e.value, ValueError)
    assert "stage 0 template 0" in str(e.value)
    assert e.value.issues[0]["path"] == "/stages/0/templates/0/kernel"


def test_failed_and_cancelled_jobs(gw):
    c = client(gw)
    ds = c.open_dataset("plt00007")
    gw.job_outcome = {"state": "failed", "error": {"kind": "run", "message": "stage 3 template 0 block 1: boom"}}
    with pytest.raises(kg.JobFailedError) as e:
        ds["density"].histogram(bins=4, range=(0, 1)).compute()
    assert isinstance(e.value, RuntimeError)
    assert "boom" in str(e.value) and e.value.kind == "run" and e.value.job["state"] == "failed"
    gw.job_outcome = {"state": "cancelled"}
    with pytest.raises(kg.JobCancelledError):
        ds["density"].histogram(bins=4, range=(0, 1)).compute()


def test_results_before_success_conflict(gw):
    c = client(gw)
    job = c.submit({"stages": [{"name": "x"}]}, dataset="plt00007")
    with pytest.raises(kg.errors.ConflictError):
        c.results(job["id"])


# ---------------------------------------------------------------------------
# datasets (API-10..16)


def test_dataset_surface(gw):
    ds = client(gw).open_dataset("plt00007")
    assert list(ds.fields) == ["density", "temperature", "velx"]
    assert ds["density"] is ds.fields["density"]
    assert ds.step == 0 and ds.level == 0
    assert ds["temperature"].dtype == "float32"
    assert list(ds.particles) == ["electrons"] and list(ds.meshes) == []
    assert isinstance(ds.particles["electrons"]["mass"], kg.ParticleArray)
    with pytest.raises(KeyError, match="unknown particle field 'mas'"):
        ds.particles["electrons"]["mas"]
    with pytest.raises(KeyError) as e:
        ds["densty"]
    assert str(e.value).startswith("unknown field 'densty'; available: density, temperature, velx; "
                                   "close matches: density")
    with pytest.raises(TypeError):
        ds.metadata["step"] = 3
    g = ds.geometry.plane(axis="z")
    assert g.rect == (0.0, 0.0, 1.0, 1.0) and g.resolution == (16, 16) and g.coord == pytest.approx(7.5 / 16)
    assert ds.select(step=7).step == 7 and ds.select(level=1).level == 1
    with pytest.raises(ValueError, match="step 3"):
        ds.select(step=3)
    with pytest.raises(ValueError, match="level 5"):
        ds.select(level=5)
    assert "<table>" in ds._repr_html_()


# ---------------------------------------------------------------------------
# lazy values (API-17..27, API-37/38): built and explained without execution


def test_building_and_explaining_runs_nothing(gw):
    ds = client(gw).open_dataset("plt00007")
    rho, vx = ds["density"], ds["velx"]
    expr = (rho * 2.0 + vx) / 3.0 - 1.0
    mask = (expr > 0.5) & (rho < 2.0)
    img = expr.slice(axis="z", resolution=(32, 24))
    col = rho.project(axis="x", zoom=2.0)
    h = rho.histogram(bins=8, range=(0.0, 1.0), weight_mode="cell_volume")
    h2 = rho.histogram2d(vx, bins=(4, 5), range=((0, 1), (-1, 1)))
    assert gw.seen("POST", "/v1/jobs") == []

    assert img.shape == (24, 32) and img.domain == "Regular(shape=(24, 32))" and img.dtype == "float64"
    assert rho.domain == "AMR(2 levels)" and rho.shape is None
    assert rho.chunks == ((0, 2, 16 ** 3), (1, 1, 16 ** 3))
    assert mask.dtype == "bool" and isinstance(mask, kg.MeshMask)
    assert ds["temperature"].slice(axis="x").dtype == "float32"
    assert col.dtype == "float64" and col.shape == (16, 16)
    assert h.domain == "Histogram(bins=8)" and np.allclose(h.edges, np.linspace(0, 1, 9))
    assert h2.domain == "Histogram2D(bins=(4, 5))"

    text = img.explain()
    assert text.startswith("Array(name=") and "domain=Regular(shape=(24, 32))" in text
    assert "localities=1" in text and "uniform_slice_finalize" in text and "field_expr" in text
    assert "estimated_storage=>=" not in text  # block and fixed outputs are sized exactly
    assert "estimated_storage=>=" in (img * 2.0).explain()  # a LikeInput output is not
    assert rho.explain().endswith("stages=0, estimated_tasks=0, estimated_storage=0 bytes, reductions=0, "
                                  "localities=1, kernels=[])")
    dot = img.visualize()
    assert dot.startswith("digraph kangaroo {") and "->" in dot
    assert "estimated tasks" in h._repr_html_()
    assert gw.seen("POST", "/v1/jobs") == []


def test_lazy_value_rules(gw):
    ds = client(gw).open_dataset("plt00007")
    other = client(gw).open_dataset("plt00007")
    rho = ds["density"]
    img = rho.slice(axis="z")
    with pytest.raises(ValueError, match="only defined for unbounded AMR arrays"):
        img.slice(axis="x")
    with pytest.raises(ValueError, match="different dataset contexts"):
        rho + other["density"]
    with pytest.raises(ValueError, match="different domains or shapes"):
        rho + img
    with pytest.raises(ValueError, match="non-finite"):
        rho * float("nan")
    with pytest.raises(TypeError):
        rho + "x"
    mask = rho > 1
    with pytest.raises(TypeError):
        mask + 1
    with pytest.raises(TypeError, match="bitwise-and"):
        rho & rho
    with pytest.raises(TypeError):
        mask.astype("float32")
    with pytest.raises(TypeError):
        rho.astype("int64")
    assert rho.astype("float32").dtype == "float32"
    assert (ds["temperature"] + rho).dtype == "float64"
    assert (ds["temperature"] * 2).dtype == "float32"
    with pytest.raises(ValueError):
        rho.rename("")
    assert rho.rename("rho").name == "rho"
    with pytest.raises(ValueError, match="positive"):
        rho.slice(axis="z", resolution=(0, 4))
    with pytest.raises(ValueError, match="zoom"):
        rho.slice(axis="z", zoom=0)
    with pytest.raises(ValueError, match="bounded array"):
        img.histogram(bins=4, range=(0, 1), weight_mode="cell_volume")
    with pytest.raises(TypeError, match="compute"):
        bool(rho)
    with pytest.raises(TypeError, match="unexpected compute options"):
        img.compute(colour="red")
    with pytest.raises(ValueError, match="unbounded AMR hierarchy"):
        rho.compute(gather=True)
    with pytest.raises(ValueError, match="share one dataset"):
        kg.compute(img, other["density"].slice(axis="z"))
    with pytest.raises(TypeError):
        rho.histogram(bins=4, range=(0, 1)).compute(gather=True)
    assert kg.compute() == ()
    assert gw.seen("POST", "/v1/jobs") == []


def test_expressions_follow_api20(gw):
    ds = client(gw).open_dataset("plt00007")
    rho, vx = ds["density"], ds["velx"]
    exprs = []
    for v in (rho + vx, rho ** 2, 2.5 - rho, -rho, rho >= vx, 1.0 / rho):
        (t,) = v._fragment.tail.templates[:1]
        exprs.append(t.params["expression"])
    assert exprs == ["a + b", "pow(a, 2.0)", "2.5 - a", "a * -1.0", "a >= b", "1.0 / a"]


def test_fan_in_option_reaches_the_lowering(gw):
    ds = client(gw).open_dataset("plt00007")
    with kg.config.set({"reduction.fan_in": 2}):
        assert kg.config.get("reduction.fan_in") == 2
        h = ds["density"].histogram(bins=4, range=(0, 1))
    assert kg.config.get("reduction.fan_in") is None
    reduces = [t for s in h._ancestry() for t in s.templates if t.graph_reduce is not None]
    assert any(t.graph_reduce.fan_in == 2 for t in reduces)
    with pytest.raises(TypeError):
        with kg.config.set(["reduction.fan_in"]):
            pass


# ---------------------------------------------------------------------------
# compute: one job, results (API-27, API-35, API-39, API-40)


def test_compute_submits_one_job_for_several_values(gw):
    ds = client(gw).open_dataset("plt00007")
    rho = ds["density"]
    img = (rho * 2.0).slice(axis="z", resolution=(8, 6))
    col = rho.project(axis="y")
    h = ds["velx"].histogram(bins=5, range=(-1.0, 1.0))
    a, b, hist = kg.compute(img, col, h)
    posts = gw.seen("POST", "/v1/jobs")
    assert len(posts) == 1
    body = json.loads(posts[0]["body"])
    assert body["dataset"] == "plt00007"
    assert body["fields"] == {"1": "density", "3": "velx"}  # only the fields the plan reads
    assert sorted(f for f, _ in body["outputs"]) == sorted([img._field, col._field, h._field])
    assert body["runmeta"]["steps"][0]["step"] == 0
    assert isinstance(a, np.ndarray) and a.shape == (6, 8)
    assert b.shape == (16, 16)
    assert isinstance(hist, kg.HistogramResult) and hist.counts.shape == (5,)
    assert np.allclose(hist.edges, np.linspace(-1, 1, 6))
    assert img.is_materialized and h.is_materialized
    # the SSE stream was followed (no polling needed)
    assert len(gw.seen("GET", "/v1/jobs/")) >= 1


def test_compute_falls_back_to_polling(gw):
    gw.events_status = 501
    ds = client(gw).open_dataset("plt00007")
    h2 = ds["density"].histogram2d(ds["velx"], bins=3, range=((0, 1), (0, 1)))
    res = h2.compute(progress=True)
    assert isinstance(res, kg.Histogram2DResult) and res.counts.shape == (3, 3)
    job_gets = [r for r in gw.seen("GET", "/v1/jobs/") if r["path"].count("/") == 3]
    assert job_gets, "the job record was polled"


def test_events_stream_cut_is_survived(gw):
    ds = client(gw).open_dataset("plt00007")
    h = ds["density"].histogram(bins=3, range=(0, 1))
    gw.fault("/v1/jobs/j-0001/events", "drop")
    assert h.compute().counts.shape == (3,)


def test_unbounded_arrays_come_back_per_block(gw):
    ds = client(gw).open_dataset("plt00007")
    chunked = (ds["density"] > 0.5).compute()
    assert isinstance(chunked, kg.AMRChunkedArray)
    assert [(c.level, c.block) for c in chunked] == [(0, 0), (0, 1), (1, 0)]
    assert chunked[0].values.dtype == bool and chunked[2].box.lo == (8, 8, 8)
    with pytest.raises(ValueError, match="AMR hierarchy"):
        chunked.gather()
    blocks = list(ds["density"].iter_chunks())
    assert [b.shape for b in blocks] == [c.values.shape for c in chunked]
    (image,) = ds["density"].slice(axis="x", resolution=(4, 4)).iter_chunks()
    assert image.shape == (4, 4)
    src = ds["velx"].compute()
    assert len(src) == 3 and src.nbytes == (2 * 8 * 16 * 16 + 16 ** 3) * 8
    assert "AMRChunkedArray" in src._repr_html_()


def test_max_bytes_is_checked_before_downloading(gw):
    ds = client(gw).open_dataset("plt00007")
    img = ds["density"].slice(axis="z", resolution=(10, 10))
    with pytest.raises(MemoryError, match="exceeding max_bytes=100"):
        img.compute(max_bytes=100)
    assert not [r for r in gw.seen("GET", "/v1/jobs/") if "/results/" in r["path"]]
    assert img.compute(gather=True, max_bytes=800).shape == (10, 10)


def test_persist_keeps_the_result(gw):
    ds = client(gw).open_dataset("plt00007")
    h = ds["density"].histogram(bins=3, range=(0, 1))
    assert h.persist() is h and h.is_materialized
    first = h.compute()
    assert len(gw.seen("POST", "/v1/jobs")) == 1
    assert np.array_equal(first.counts, h.compute().counts)
    with pytest.raises(TypeError, match="unexpected persist options"):
        h.persist(gather=True)


def test_ctrl_c_cancels_the_job(gw, monkeypatch):
    c = client(gw)
    job = c.submit({"stages": [{"name": "x"}]}, dataset="plt00007")

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(c, "_follow", interrupt)
    with pytest.raises(KeyboardInterrupt):
        c.wait(job["id"])
    assert gw.jobs[job["id"]]["state"] == "cancelled"
