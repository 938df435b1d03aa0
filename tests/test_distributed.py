"""Multi-rank runs of ``kangaroo-worker`` (seed §4, OWN-1..4, EXEC-10).

One plan runs on 1, 2 and 4 ranks (local processes joined over UCX, started
with ``--ranks N``); every result file must be byte-for-byte the same as the
1-rank run's. Plans come from the SDK lowering: slices, projections,
histograms and a chained field expression on real plotfiles, and graph
reductions with several fan-in levels on memory datasets. Failures: a task
error on another rank, a rank killed mid-job and a rank that never joins all
end the job with an error naming the rank.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "python-sdk"))

np = pytest.importorskip("numpy", reason="numpy (python3-numpy) is needed to write seed chunks")

from kangaroo import ir  # noqa: E402
from kangaroo import lowering as lw  # noqa: E402

BUILD_DIR = os.environ.get("KANGAROO_BUILD_DIR") or os.path.join(REPO, "build")
if not os.path.isabs(BUILD_DIR):
    BUILD_DIR = os.path.join(REPO, BUILD_DIR)
WORKER = os.path.join(BUILD_DIR, "worker", "kangaroo-worker")
DATA = os.path.join(REPO, "..", "shared", "data", "amrex")

pytestmark = pytest.mark.skipif(not os.access(WORKER, os.X_OK), reason=f"kangaroo-worker not built at {WORKER}")

# Shared memory between local ranks; TCP is covered by one case below.
ENV = dict(os.environ, UCX_TLS=os.environ.get("KANGAROO_TEST_UCX_TLS", "sm,self"), UCX_WARN_UNUSED_ENV_VARS="n")


def worker(*args, env=None, timeout=300):
    return subprocess.run([WORKER, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=env or ENV)


def write_json(path, doc):
    with open(path, "w") as f:
        json.dump(doc, f)
    return str(path)


def result_files(out):
    """{file name: bytes} of a result directory, the manifest without timings."""
    files = {}
    for name in sorted(os.listdir(out)):
        with open(os.path.join(out, name), "rb") as f:
            data = f.read()
        if name == "manifest.json":
            doc = json.loads(data)
            for k in ("seconds", "ranks", "memory"):
                doc.pop(k, None)
            data = json.dumps(doc, sort_keys=True).encode()
        files[name] = data
    return files


def run_ranks(tmp_path, tag, args, ranks):
    """Runs `args` on each rank count; returns {ranks: files}."""
    outs = {}
    for n in ranks:
        out = tmp_path / f"{tag}_out{n}"
        r = worker("run", *args, "--out", out, "--ranks", n)
        assert r.returncode == 0, f"{n} rank(s) failed:\n{r.stderr[-4000:]}"
        outs[n] = result_files(out)
    return outs


def assert_identical(outs):
    base_n = min(outs)
    base = outs[base_n]
    assert len(base) > 1, "the run produced no results"
    for n, files in outs.items():
        assert sorted(files) == sorted(base), f"{n} ranks wrote other files than {base_n}"
        for name in base:
            assert files[name] == base[name], f"{name} differs between {base_n} and {n} ranks"


# ---------------------------------------------------------------------------
# plotfiles


def plotfile_plan(tmp_path, path, fields, world_size):
    uri = "amrex://" + os.path.abspath(path)
    r = worker("metadata", "--dataset", uri)
    assert r.returncode == 0, r.stderr
    runmeta = lw.runmeta_from_metadata(json.loads(r.stdout), step=0)
    s = runmeta.steps[0]
    g0 = s.levels[0].geom
    lo = [min(b.lo[a] for b in s.levels[0].boxes) for a in range(3)]
    hi = [max(b.hi[a] for b in s.levels[0].boxes) for a in range(3)]
    elo = [g0.lower_edge(a, lo[a]) for a in range(3)]
    ehi = [g0.lower_edge(a, hi[a] + 1) for a in range(3)]
    alloc = lw.FieldAllocator(5000)
    ids = {name: 1 + i for i, name in enumerate(fields)}
    frags = []
    for name, fid in ids.items():
        for axis in range(3):
            u, v = lw.plane_axes(axis)
            if hi[axis] == lo[axis]:
                continue
            rect = (elo[u], elo[v], ehi[u], ehi[v])
            coord = elo[axis] + 0.37 * (ehi[axis] - elo[axis])
            res = (48, 40)
            kw = dict(alloc_field=alloc, world_size=world_size)
            frags.append(lw.slice_plan(runmeta, fid, axis, coord, rect, res, alloc(), name=f"s{fid}{axis}", **kw))
            frags.append(lw.projection_plan(runmeta, fid, axis, (elo[axis], ehi[axis]), rect, res, alloc(),
                                            name=f"p{fid}{axis}", **kw))
    first = fields[0]
    frags.append(lw.histogram1d_plan(runmeta, ids[first], (-1e30, 1e30), 16, alloc(), weight_mode="cell_volume",
                                     alloc_field=alloc, world_size=world_size, name="h1"))
    expr = lw.field_expr_plan(runmeta, "a*a+1", ["a"], [ids[first]], alloc(), name="sq")
    frags.append(lw.slice_plan(runmeta, expr.out_field, 2, 0.5 * (elo[2] + ehi[2]), (elo[0], elo[1], ehi[0], ehi[1]),
                               (32, 32), alloc(), alloc_field=alloc, producers={expr.out_field: expr.tail},
                               world_size=world_size, name="ssq"))
    plan = frags[0].plan(*frags[1:])
    args = ["--plan", write_json(tmp_path / f"plan{world_size}.json", plan.to_dict()),
            "--runmeta", write_json(tmp_path / "runmeta.json", runmeta.to_dict()), "--dataset", uri]
    for name, fid in ids.items():
        args += ["--field", f"{fid}={name}"]
    return args


@pytest.mark.parametrize("lowered_for", [1, 4])
def test_plotfile_results_identical_on_1_2_4_ranks(tmp_path, lowered_for):
    """OWN-4 / EXEC-10 on a 3-level PeleLMeX plotfile; the plan is lowered for
    one rank and for four (reductions grouped by home rank, LOW-6)."""
    path = os.path.join(DATA, "pelelmex_3d_small")
    if not os.path.isdir(path):
        pytest.skip(f"{path} is not present")
    args = plotfile_plan(tmp_path, path, ["Y(H2)", "Y(O2)"], lowered_for)
    assert_identical(run_ranks(tmp_path, "pf", args, [1, 2, 4]))


def test_2d_plotfile_identical_on_tcp(tmp_path):
    path = os.path.join(DATA, "amrex_singlevortex2d_tracer", "plt00000")
    if not os.path.isdir(path):
        pytest.skip(f"{path} is not present")
    r = worker("metadata", "--dataset", "amrex://" + os.path.abspath(path))
    assert r.returncode == 0, r.stderr
    field = json.loads(r.stdout)["var_names"][0]
    args = plotfile_plan(tmp_path, path, [field], 2)
    outs = {1: None, 3: None}
    for n in outs:
        out = tmp_path / f"tcp_out{n}"
        r = worker("run", *args, "--out", out, "--ranks", n, env=dict(ENV, UCX_TLS="tcp,self"))
        assert r.returncode == 0, r.stderr[-4000:]
        outs[n] = result_files(out)
    assert_identical(outs)


# ---------------------------------------------------------------------------
# memory datasets


def memory_case(tmp_path, nblocks=24, n=6, seed=3, expression="3*a - 1"):
    """`nblocks` blocks of one level: field 1 random, field 2 = 3*field1 - 1
    (an expression stage), then block reductions of field 2 with fan-in 3
    (several tree levels), as the SDK lowers them."""
    rng = np.random.default_rng(seed)
    seed_dir = tmp_path / "seed"
    seed_dir.mkdir()
    boxes = []
    for b in range(nblocks):
        np.save(seed_dir / f"s0_l0_f1_v0_b{b}.npy", rng.standard_normal((n, n, n)))
        boxes.append([[b * n, 0, 0], [b * n + n - 1, n - 1, n - 1]])
    meta = {"steps": [{"step": 0, "levels": [{"geom": {"x0": [0.0] * 3, "dx": [1.0] * 3, "index_origin": [0, 0, 0],
                                                       "ref_ratio": 1, "is_periodic": [False] * 3},
                                              "boxes": boxes}]}],
            "particle_species": {}, "coord_sys": 0}
    meta_path = write_json(tmp_path / "runmeta.json", meta)
    expr = ir.Stage("expr")
    expr.map_blocks("e", "field_expr", ir.Domain(0, 0), inputs=[ir.FieldRef(1)],
                    outputs=[ir.OutputRef(ir.FieldRef(2), ir.BufferSpec("f64", ir.BlockShape()))],
                    params=ir.FieldExprParams(expression=expression, variables=["a"]))
    stages, _ = ir.block_reduction_stages(2, list(range(nblocks)), buffer=ir.BufferSpec("f64", ir.FixedShape((n, n, n)), "zero"),
                                          alloc_field=lw.FieldAllocator(100), step=0, level=0, fan_in=3,
                                          normalize=False, world_size=1, after=[expr], name="sum")
    plan = ir.Plan([expr, *stages])
    return ["--plan", write_json(tmp_path / "plan.json", plan.to_dict()), "--runmeta", meta_path,
            "--dataset", "memory://", "--seed", str(seed_dir), "--output", "2"]


def test_memory_dataset_identical_on_1_2_4_ranks(tmp_path):
    args = memory_case(tmp_path)
    outs = run_ranks(tmp_path, "mem", args, [1, 2, 4])
    assert_identical(outs)
    # --output 2 keeps every intermediate block: all 24 came back to rank 0
    assert sum(1 for f in outs[4] if "_f2_" in f) == 24


# ---------------------------------------------------------------------------
# failures


def test_task_error_on_another_rank_names_it(tmp_path):
    """Block 5's chunk is missing only from the dataset: the task that reads
    it fails on its home rank, and rank 0 reports that rank's error."""
    args = memory_case(tmp_path)
    os.remove(tmp_path / "seed" / "s0_l0_f1_v0_b5.npy")
    r = worker("run", *args, "--out", tmp_path / "out", "--ranks", 4)
    assert r.returncode == 3, r.stderr
    assert "chunk is not available" in r.stderr and "b5" in r.stderr, r.stderr
    assert "run failed: rank " in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_coordinator_is_an_explicit_error():
    port = free_port()
    r = worker("run", "--plan", "x.json", "--dataset", "memory://", "--out", "/nonexistent",
               "--rank", 1, "--world-size", 2, "--coordinator", f"127.0.0.1:{port}", "--connect-timeout", 1)
    # the plan file is missing: usage error before any connection
    assert r.returncode == 1
    assert "x.json" in r.stderr


def test_rank_that_never_joins(tmp_path):
    args = memory_case(tmp_path)
    port = free_port()
    t0 = time.monotonic()
    r = worker("run", *args, "--out", tmp_path / "out", "--rank", 0, "--world-size", 3,
               "--coordinator", f"127.0.0.1:{port}", "--connect-timeout", 2)
    assert r.returncode == 3
    assert "rank(s) 1, 2 did not join within 2 s" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 30
    r = worker("run", *args, "--out", tmp_path / "out", "--rank", 1, "--world-size", 3,
               "--coordinator", f"127.0.0.1:{port}", "--connect-timeout", 1)
    assert r.returncode == 3
    assert "cannot reach rank 0 (the coordinator)" in r.stderr, r.stderr


def disturb_one_of_three_ranks(tmp_path, victim, sig, extra=()):
    """Starts three ranks by hand (as pods would be) on a job of about 10 s
    of sines, sends `sig` to rank `victim` a second in, and returns rank 0's
    exit status and stderr, the seconds it took to end after the signal, and
    the exit status of the remaining rank."""
    args = memory_case(tmp_path, nblocks=64, n=24, expression="+".join(["sin(a)"] * 400))
    port = free_port()
    common = [WORKER, "run", *map(str, args), "--world-size", "3", "--coordinator", f"127.0.0.1:{port}",
              "--threads", "1", *extra]
    procs = [subprocess.Popen(common + ["--rank", str(r), "--out", str(tmp_path / f"out{r}")], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(3)]
    try:
        time.sleep(1.0)
        if procs[0].poll() is not None:
            pytest.fail("the job ended before a rank could be disturbed: " + procs[0].stderr.read())
        procs[victim].send_signal(sig)
        t0 = time.monotonic()
        _, err = procs[0].communicate(timeout=60)
        elapsed = time.monotonic() - t0
        other = procs[3 - victim]
        other.wait(timeout=30)
        return procs[0].returncode, err, elapsed, other.returncode
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait()


def test_killed_rank_fails_the_job_naming_it(tmp_path):
    """Rank 2 is killed while the job runs: rank 0 fails within seconds, naming it."""
    rc, err, elapsed, other_rc = disturb_one_of_three_ranks(tmp_path, 2, signal.SIGKILL)
    assert rc == 3, err
    assert "rank 2" in err and "stopped while the job was running" in err, err
    assert elapsed < 10, f"rank 0 took {elapsed:.1f} s to notice"
    assert other_rc == 3


def test_hung_rank_fails_the_job_after_the_heartbeat_timeout(tmp_path):
    """A stopped rank keeps its connections open; its silence (no heartbeat)
    must still end the job, naming it."""
    rc, err, elapsed, other_rc = disturb_one_of_three_ranks(tmp_path, 1, signal.SIGSTOP,
                                                            ["--heartbeat-timeout", "3"])
    assert rc == 3, err
    assert "rank 1 stopped responding" in err, err
    assert elapsed < 15, f"rank 0 took {elapsed:.1f} s to give up on rank 1"
    assert other_rc == 3


# ---------------------------------------------------------------------------
# metrics


def scrape(port):
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return r.read().decode()
    except OSError:
        return None


def metric(text, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
            seen = True
    return total if seen else None


def test_every_rank_serves_metrics_while_running(tmp_path):
    """seed §8: per-rank Prometheus text on PORT+rank during the run."""
    args = memory_case(tmp_path, nblocks=64, n=24, expression="+".join(["sin(a)"] * 200))
    port = free_port()
    p = subprocess.Popen([WORKER, "run", *map(str, args), "--out", str(tmp_path / "out"), "--ranks", "2",
                          "--metrics-listen", f"127.0.0.1:{port}"], env=ENV, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    seen = {0: None, 1: None}
    try:
        deadline = time.monotonic() + 120
        while p.poll() is None and time.monotonic() < deadline:
            for r in seen:
                text = scrape(port + r)
                if text and (metric(text, "kangaroo_worker_tasks_completed_total", state="ok") or 0) > 0:
                    seen[r] = text
            time.sleep(0.2)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    for r, text in seen.items():
        assert text is not None, f"rank {r} served no metrics with finished tasks while the job ran"
        for family in ("kangaroo_worker_tasks", "kangaroo_worker_task_seconds_bucket", "kangaroo_worker_memory_bytes",
                       "kangaroo_worker_queue_wait_seconds_count", "kangaroo_worker_cache_hits_total",
                       "kangaroo_worker_sync_wait_seconds_total", "kangaroo_worker_stream_bytes_total"):
            assert metric(text, family) is not None, f"rank {r} lacks {family}"
        other = str(1 - r)
        assert metric(text, "kangaroo_worker_peer_bytes_total", peer=other, direction="sent") is not None
        assert metric(text, "kangaroo_worker_rank", world_size="2") == r
    assert scrape(port) is None, "the endpoint outlived the run"
