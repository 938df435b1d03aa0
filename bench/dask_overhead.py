#!/usr/bin/python3
"""Executor-overhead peer measurement: the Kangaroo overhead workloads run through Dask.

Three graph shapes made of no-op tasks, so that only scheduling cost is measured:

  independent  one stage of N tasks without dependencies
  tree         a fan-in reduction tree over N leaves (each inner node combines up to
               --fan-in results of the level below, until one root remains)
  chain        C tasks, each depending on the one before (C single-task stages)

Two Dask schedulers run each shape:

  threaded       dask.threaded.get on the raw task-graph dict (--threads worker threads)
  local_cluster  distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                 processes=True) driven through Client.get

Output: one JSON object on stdout, a readable table on stderr. Time per repeat covers
the scheduler call only (graph construction is excluded); the reported time is the
median over repeats, with min and max as spread. Peak RSS is sampled with psutil
while a workload runs, for this process (which hosts the LocalCluster scheduler and
nannies) and, for local_cluster, every process the cluster started (the workers).

Run with the Debian interpreter, which sees python3-dask and python3-distributed:
    /usr/bin/python3 bench/dask_overhead.py [--n 10000 --chain 2000 ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from typing import Callable

import psutil


# --- task bodies (module level so worker processes can unpickle them) -------------


def noop() -> None:
    return None


def combine(*parts: object) -> None:
    del parts
    return None


def chain_step(previous: object) -> None:
    del previous
    return None


# --- graphs -----------------------------------------------------------------------


# Every graph gets a tag in its key names: the distributed scheduler may still hold
# the results of the previous repeat, and reusing a key would skip its work.


def independent_graph(n: int, tag: str = "") -> tuple[dict, list[str]]:
    graph = {f"ind{tag}-{i}": (noop,) for i in range(n)}
    return graph, list(graph)


def tree_graph(n_leaves: int, fan_in: int, tag: str = "") -> tuple[dict, list[str]]:
    graph: dict = {}
    level = [f"tree{tag}-0-{i}" for i in range(n_leaves)]
    for key in level:
        graph[key] = (noop,)
    depth = 0
    while len(level) > 1:
        depth += 1
        parents = []
        for g in range(0, len(level), fan_in):
            key = f"tree{tag}-{depth}-{g // fan_in}"
            graph[key] = (combine, *level[g:g + fan_in])
            parents.append(key)
        level = parents
    return graph, level


def chain_graph(length: int, tag: str = "") -> tuple[dict, list[str]]:
    graph: dict = {f"chain{tag}-0": (noop,)}
    for i in range(1, length):
        graph[f"chain{tag}-{i}"] = (chain_step, f"chain{tag}-{i - 1}")
    return graph, [f"chain{tag}-{length - 1}"]


def build_graph(
    workload: str, n: int, chain: int, fan_in: int, tag: str = ""
) -> tuple[dict, list[str]]:
    if workload == "independent":
        return independent_graph(n, tag)
    if workload == "tree":
        return tree_graph(n, fan_in, tag)
    if workload == "chain":
        return chain_graph(chain, tag)
    raise ValueError(f"unknown workload {workload!r}")


# --- peak RSS sampling ------------------------------------------------------------


class RssSampler:
    """Polls the RSS of a fixed set of processes from a background thread.

    Sampling cannot see spikes shorter than the interval; the workloads here are
    long enough (and their memory grows steadily) that the error is small.
    """

    def __init__(self, processes: dict[str, psutil.Process], interval_s: float = 0.01):
        self._processes = processes
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.peak: dict[str, int] = {label: 0 for label in processes}
        self.peak_total = 0

    def _sample(self) -> None:
        total = 0
        for label, proc in self._processes.items():
            try:
                rss = proc.memory_info().rss
            except psutil.Error:  # process ended: keep its earlier peak
                continue
            total += rss
            if rss > self.peak[label]:
                self.peak[label] = rss
        self.peak_total = max(self.peak_total, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._interval_s)

    def __enter__(self) -> "RssSampler":
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


# --- measurement ------------------------------------------------------------------


def measure(
    run_graph: Callable[[dict, list[str]], object],
    make_graph: Callable[[str], tuple[dict, list[str]]],
    repeats: int,
    processes: dict[str, psutil.Process],
) -> dict:
    times = []
    tasks = 0
    with RssSampler(processes) as sampler:
        for repeat in range(repeats):
            graph, keys = make_graph(f"r{repeat}")
            tasks = len(graph)
            start = time.perf_counter()
            run_graph(graph, keys)
            times.append(time.perf_counter() - start)
            del graph, keys
    median = statistics.median(times)
    return {
        "tasks": tasks,
        "repeats": repeats,
        "seconds": {"median": median, "min": min(times), "max": max(times), "all": times},
        "tasks_per_s": tasks / median if median > 0 else None,
        "per_task_us": median / tasks * 1e6,
        "peak_rss_bytes": {
            "by_process": dict(sampler.peak),
            "total": sampler.peak_total,
        },
    }


def run_threaded(args: argparse.Namespace) -> dict:
    import dask
    import dask.threaded

    def run_graph(graph: dict, keys: list[str]) -> object:
        return dask.threaded.get(graph, keys, num_workers=args.threads)

    # Creates and caches the thread pool before anything is timed.
    warm_graph, warm_keys = independent_graph(100, "warmup")
    run_graph(warm_graph, warm_keys)

    processes = {"client": psutil.Process()}
    results: dict = {
        "scheduler": f"dask.threaded.get (num_workers={args.threads})",
        "dask_version": dask.__version__,
        "workloads": {},
    }
    for workload in args.workloads:
        def make_graph(tag: str, workload: str = workload) -> tuple[dict, list[str]]:
            return build_graph(workload, args.n, args.chain, args.fan_in, tag)

        results["workloads"][workload] = measure(run_graph, make_graph, args.repeats, processes)
    return results


def run_local_cluster(args: argparse.Namespace) -> dict:
    import distributed
    from distributed import Client, LocalCluster

    scratch = tempfile.TemporaryDirectory(prefix="dask-overhead-")
    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        local_directory=scratch.name,
        silence_logs=logging.ERROR,
    )
    client = Client(cluster)
    try:
        client.wait_for_workers(2)
        worker_pids = client.run(os.getpid)  # {worker address: pid}
        processes = {"client_and_scheduler": psutil.Process()}
        for i, pid in enumerate(sorted(worker_pids.values())):
            processes[f"worker{i}"] = psutil.Process(pid)
        # Any other process the cluster started (e.g. multiprocessing's resource
        # tracker) also belongs to its cost. The nannies run inside this process.
        for proc in psutil.Process().children(recursive=True):
            if proc.pid not in worker_pids.values():
                processes[f"other-{proc.pid}"] = proc

        def run_graph(graph: dict, keys: list[str]) -> object:
            return client.get(graph, keys)

        warm_graph, warm_keys = independent_graph(50, "warmup")
        run_graph(warm_graph, warm_keys)

        results: dict = {
            "scheduler": "distributed.LocalCluster(n_workers=2, threads_per_worker=1, "
            "processes=True) + Client.get",
            "distributed_version": distributed.__version__,
            "workloads": {},
        }
        for workload in args.workloads:
            def make_graph(tag: str, workload: str = workload) -> tuple[dict, list[str]]:
                return build_graph(
                    workload, args.cluster_n, args.cluster_chain, args.fan_in, tag
                )

            results["workloads"][workload] = measure(
                run_graph, make_graph, args.cluster_repeats, processes
            )
        return results
    finally:
        client.close()
        cluster.close()
        scratch.cleanup()


# --- reporting --------------------------------------------------------------------


def print_table(report: dict) -> None:
    header = (
        f"{'scheduler':<14} {'workload':<12} {'tasks':>8} {'median s':>10} "
        f"{'min..max s':>17} {'tasks/s':>10} {'us/task':>9} {'peak RSS MiB':>14}"
    )
    print(header, file=sys.stderr)
    print("-" * len(header), file=sys.stderr)
    for scheduler in ("threaded", "local_cluster"):
        section = report.get(scheduler)
        if not section:
            continue
        for workload, r in section["workloads"].items():
            s = r["seconds"]
            spread = f"{s['min']:.3f}..{s['max']:.3f}"
            rss_mib = r["peak_rss_bytes"]["total"] / 2**20
            print(
                f"{scheduler:<14} {workload:<12} {r['tasks']:>8} {s['median']:>10.3f} "
                f"{spread:>17} {r['tasks_per_s']:>10.0f} {r['per_task_us']:>9.1f} "
                f"{rss_mib:>14.1f}",
                file=sys.stderr,
            )
    print(
        "peak RSS: sum over the sampled processes (local_cluster: client with scheduler "
        "and nannies, both workers, helper processes)",
        file=sys.stderr,
    )


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure Dask's per-task scheduling overhead on no-op task graphs."
    )
    parser.add_argument("--n", type=positive_int, default=10000,
                        help="tasks in 'independent' and leaves in 'tree' (threaded)")
    parser.add_argument("--chain", type=positive_int, default=2000,
                        help="length of 'chain' (threaded)")
    parser.add_argument("--cluster-n", type=positive_int, default=2000,
                        help="tasks / leaves for local_cluster")
    parser.add_argument("--cluster-chain", type=positive_int, default=500,
                        help="chain length for local_cluster")
    parser.add_argument("--fan-in", type=int, default=8, help="fan-in of the reduction tree")
    parser.add_argument("--threads", type=positive_int, default=2,
                        help="worker threads of the threaded scheduler")
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="timed repeats per workload (threaded)")
    parser.add_argument("--cluster-repeats", type=positive_int, default=3,
                        help="timed repeats per workload (local_cluster)")
    parser.add_argument("--schedulers", default="threaded,local_cluster",
                        help="comma-separated subset of: threaded,local_cluster")
    parser.add_argument("--workloads", default="independent,tree,chain",
                        help="comma-separated subset of: independent,tree,chain")
    args = parser.parse_args(argv)
    if args.fan_in < 2:
        parser.error("--fan-in must be at least 2")
    args.schedulers = [s for s in args.schedulers.split(",") if s]
    args.workloads = [w for w in args.workloads.split(",") if w]
    for s in args.schedulers:
        if s not in ("threaded", "local_cluster"):
            parser.error(f"unknown scheduler {s!r}")
    for w in args.workloads:
        if w not in ("independent", "tree", "chain"):
            parser.error(f"unknown workload {w!r}")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    report: dict = {
        "peer": "dask",
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "config": {
            "n": args.n,
            "chain": args.chain,
            "cluster_n": args.cluster_n,
            "cluster_chain": args.cluster_chain,
            "fan_in": args.fan_in,
            "threads": args.threads,
            "repeats": args.repeats,
            "cluster_repeats": args.cluster_repeats,
        },
    }
    if "threaded" in args.schedulers:
        report["threaded"] = run_threaded(args)
    if "local_cluster" in args.schedulers:
        report["local_cluster"] = run_local_cluster(args)
    report["wall_seconds"] = time.perf_counter() - started
    print_table(report)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
