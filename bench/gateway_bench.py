#!/usr/bin/python3
"""Gateway latency and polling throughput, with Dask's client round trip as the peer.

Everything runs on this machine in one invocation:

1. a local cluster started with `kangaroo up` (temporary state and client
   config; TLS with its self-signed certificate) over a small synthetic
   plotfile;
2. submit -> first task started: client clock at `POST /v1/jobs` to the job
   record's `started` time (same host clock), over --jobs jobs;
3. small-job round trip, warm: `Array.slice(...).compute()` through the SDK
   (lowering, submit, progress events, manifest, .npy download) over --jobs
   jobs, p50/p99;
4. Dask: `distributed.Client.submit(f, x).result()` round trip against a
   1-worker LocalCluster (processes) in the same run, p50/p99;
5. status polling: `wrk` with --connections concurrent keep-alive TLS
   connections against `GET /v1/jobs/<id>` for --duration seconds; requests/s
   and latency percentiles from wrk, and the gateway's RSS sampled every second.

    /usr/bin/python3 bench/gateway_bench.py --build-dir build [--jobs 200] [--connections 500] [--duration 60]
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "python-sdk"))

import numpy as np  # noqa: E402


def pct(values, q):
    v = sorted(values)
    if not v:
        return float("nan")
    i = min(len(v) - 1, max(0, int(round(q / 100.0 * (len(v) - 1)))))
    return v[i]


def summary(name, seconds):
    ms = [s * 1e3 for s in seconds]
    return {"name": name, "n": len(ms), "p50_ms": pct(ms, 50), "p99_ms": pct(ms, 99),
            "mean_ms": statistics.fmean(ms) if ms else float("nan")}


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def dask_round_trip(n):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        def inc(x):
            return x + 1
        for i in range(10):  # warm
            client.submit(inc, i, pure=False).result()
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            client.submit(inc, i, pure=False).result()
            times.append(time.perf_counter() - t0)
        return times


def parse_wrk(text):
    out = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["requests_per_s"] = float(m.group(1)) if m else None
    for q in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if m:
            scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
            out[f"p{q}_ms"] = float(m.group(1)) * scale
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    out["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["socket_errors"] = [int(x) for x in m.groups()] if m else [0, 0, 0, 0]
    m = re.search(r"(\d+) requests in", text)
    out["requests"] = int(m.group(1)) if m else None
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build"))
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--connections", type=int, default=500)
    ap.add_argument("--duration", type=int, default=60)
    ap.add_argument("--wrk-threads", type=int, default=1)
    ap.add_argument("--skip-dask", action="store_true")
    ap.add_argument("--skip-wrk", action="store_true")
    ap.add_argument("--json", help="write the results here as JSON")
    args = ap.parse_args()

    build = os.path.abspath(args.build_dir)
    gateway = os.path.join(build, "gateway", "kangaroo-gateway")
    worker = os.path.join(build, "worker", "kangaroo-worker")
    for b in (gateway, worker):
        if not os.access(b, os.X_OK):
            sys.exit(f"{b} not found: build first (bash scripts/build.sh)")
    if not args.skip_wrk and shutil.which("wrk") is None:
        sys.exit("wrk not found: bash scripts/bootstrap.sh installs it (or pass --skip-wrk)")

    tmp = tempfile.mkdtemp(prefix="kangaroo-gwbench-")
    env = dict(os.environ, KANGAROO_STATE_DIR=os.path.join(tmp, "state"),
               KANGAROO_CONFIG=os.path.join(tmp, "client.json"), KANGAROO_GATEWAY_BIN=gateway,
               KANGAROO_WORKER_BIN=worker, PYTHONPATH=os.path.join(REPO, "python-sdk"))
    os.environ.update({k: env[k] for k in ("KANGAROO_STATE_DIR", "KANGAROO_CONFIG")})
    data = os.path.join(tmp, "data")
    os.makedirs(data)
    results = {"machine": os.uname().nodename, "cpus": os.cpu_count()}
    py = "/usr/bin/python3"
    try:
        subprocess.run([py, "-m", "kangaroo.synthetic", os.path.join(data, "small"), "--cells", "32",
                        "--levels", "2", "--fields", "density"], check=True, env=env, stdout=subprocess.DEVNULL)
        up = subprocess.run([py, "-m", "kangaroo", "up", "--data-root", data, "--port", "0"], env=env,
                            capture_output=True, text=True)
        if up.returncode != 0:
            sys.exit(f"kangaroo up failed:\n{up.stderr}")
        url = up.stdout.strip().splitlines()[-1]
        pid = int(open(os.path.join(tmp, "state", "gateway.pid")).read().split()[0]) \
            if os.path.exists(os.path.join(tmp, "state", "gateway.pid")) else None

        import kangaroo as kr
        client = kr.Client()
        ds = client.open_dataset("small")
        img = ds["density"].slice(axis=2)
        img.compute()  # warm: worker binary in the page cache, connection open

        # submit -> first task started
        frag_plan = None
        from kangaroo import lowering as lw
        rm = lw.runmeta_from_metadata(client.dataset_metadata("small"))
        frag = lw.slice_plan(rm, 1, 2, 0.5, (0.0, 0.0, 1.0, 1.0), (64, 64), 2)
        frag_plan = frag.plan()
        starts = []
        for _ in range(args.jobs):
            t0 = time.time()
            job = client.submit(frag_plan, dataset="small", fields={1: "density"}, outputs=[[2, 0]])
            done = client.wait(job["id"])
            starts.append(done["started"] - t0)
        results["submit_to_start"] = summary("submit -> first task started", starts)

        rtt = []
        last = None
        for _ in range(args.jobs):
            t0 = time.perf_counter()
            last = img.compute()
            rtt.append(time.perf_counter() - t0)
        if not (isinstance(last, np.ndarray) and last.ndim == 2 and np.isfinite(last).any()):
            sys.exit('unexpected slice result: %r' % (type(last),))
        results["sdk_round_trip"] = summary("SDK slice round trip (warm)", rtt)

        if not args.skip_dask:
            results["dask_round_trip"] = summary("Dask Client.submit round trip", dask_round_trip(args.jobs))

        if not args.skip_wrk:
            cfg = json.load(open(os.path.join(tmp, "client.json")))
            job_id = client.jobs()[0]["id"]
            samples = []
            stop = threading.Event()

            def sample():
                while not stop.is_set():
                    if pid:
                        samples.append(rss_kib(pid))
                    stop.wait(1.0)
            th = threading.Thread(target=sample)
            th.start()
            wrk = subprocess.run(["wrk", "-t", str(args.wrk_threads), "-c", str(args.connections), "-d",
                                  f"{args.duration}s", "--timeout", "5s", "--latency", "-H",
                                  f"Authorization: Bearer {cfg['token']}", f"{url}/v1/jobs/{job_id}"],
                                 capture_output=True, text=True)
            stop.set()
            th.join()
            if wrk.returncode != 0:
                sys.exit(f"wrk failed:\n{wrk.stdout}\n{wrk.stderr}")
            w = parse_wrk(wrk.stdout)
            s = [x for x in samples if x]
            w["rss_kib_series"] = s
            w["rss_kib_at_5s"] = s[5] if len(s) > 5 else None
            w["rss_kib_first"] = s[0] if s else None
            w["rss_kib_last"] = s[-1] if s else None
            w["rss_kib_max"] = max(s) if s else None
            w["connections"] = args.connections
            w["duration_s"] = args.duration
            results["polling"] = w
            results["wrk_output"] = wrk.stdout
    finally:
        subprocess.run([py, "-m", "kangaroo", "down"], env=env, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)

    print("\n| measurement | n | p50 ms | p99 ms | mean ms |\n|---|---|---|---|---|")
    for k in ("submit_to_start", "sdk_round_trip", "dask_round_trip"):
        if k in results:
            r = results[k]
            print(f"| {r['name']} | {r['n']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['mean_ms']:.2f} |")
    if "dask_round_trip" in results:
        print(f"\nSDK round trip p50 / Dask p50 = "
              f"{results['sdk_round_trip']['p50_ms'] / results['dask_round_trip']['p50_ms']:.2f}")
    if "polling" in results:
        w = results["polling"]
        print(f"\npolling: {w['connections']} connections, {w['duration_s']} s: {w['requests_per_s']} req/s, "
              f"p50 {w.get('p50_ms')} ms, p99 {w.get('p99_ms')} ms, non-2xx {w['non_2xx']}, "
              f"socket errors {w['socket_errors']}, gateway RSS before/at 5 s/last/max "
              f"{w['rss_kib_first']}/{w['rss_kib_at_5s']}/{w['rss_kib_last']}/{w['rss_kib_max']} KiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
