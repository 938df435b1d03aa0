#!/usr/bin/python3
"""The Kangaroo demo: a local cluster and an analysis through the Python SDK.

    /usr/bin/python3 scripts/demo/gateway_demo.py --build-dir build [--out out/demo] [--keep-up]

1. writes a synthetic 3-level AMReX plotfile (analytic fields on [0, 1]^3)
   into OUT/data;
2. starts a local gateway with `kangaroo up` (state, certificate, token and
   client settings under OUT, so the user's own settings are untouched);
3. connects with `kr.Client()`, opens the dataset and computes, as one job,
   a z-slice and a z-projection of the density and two histograms of it over
   leaf cells (volume- and mass-weighted);
4. checks the results (the volume histogram adds up to the domain volume; the
   mass histogram and the projection give the same total mass) and writes
   slice.png, projection.png and histogram.png into OUT;
5. stops the gateway (unless --keep-up).

Exit status: 0 when every check passes; 1 setup problem; 2 the job failed;
3 a check failed.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SDK = os.path.join(REPO, "python-sdk")
sys.path.insert(0, SDK)

import numpy as np  # noqa: E402


def fail(code, message):
    print(f"demo: {message}", file=sys.stderr)
    sys.exit(code)


def write_pngs(out, slice_img, proj_img, rect, hist_v, hist_m):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    extent = (rect[0], rect[2], rect[1], rect[3])
    for name, img, label in (("slice", slice_img, "density at z = 0.3"),
                             ("projection", proj_img, "density integrated along z")):
        fig, ax = plt.subplots(figsize=(5, 4))
        im = ax.imshow(img, origin="lower", extent=extent, cmap="viridis")
        fig.colorbar(im, ax=ax, label=label)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_title(f"{name} ({img.shape[1]} x {img.shape[0]} pixels)")
        path = os.path.join(out, f"{name}.png")
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    fig, ax = plt.subplots(figsize=(5, 4))
    centers = 0.5 * (hist_v.edges[:-1] + hist_v.edges[1:])
    width = np.diff(hist_v.edges)
    ax.bar(centers, hist_v.counts / width, width=width, alpha=0.6, label="volume-weighted PDF")
    ax.bar(centers, hist_m.counts / width, width=width, alpha=0.6, label="mass-weighted PDF")
    ax.set_xlabel("density")
    ax.legend()
    path = os.path.join(out, "histogram.png")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    paths.append(path)
    return paths


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build"))
    ap.add_argument("--out", default=os.path.join(REPO, "out", "demo"))
    ap.add_argument("--cells", type=int, default=64, help="level-0 cells per axis (default 64)")
    ap.add_argument("--keep-up", action="store_true", help="leave the gateway running afterwards")
    args = ap.parse_args()

    build = os.path.abspath(args.build_dir)
    out = os.path.abspath(args.out)
    gateway = os.path.join(build, "gateway", "kangaroo-gateway")
    worker = os.path.join(build, "worker", "kangaroo-worker")
    for b in (gateway, worker):
        if not os.access(b, os.X_OK):
            fail(1, f"{b} not found: build first (bash scripts/build.sh)")
    os.makedirs(out, exist_ok=True)
    env = {"KANGAROO_STATE_DIR": os.path.join(out, "state"), "KANGAROO_CONFIG": os.path.join(out, "client.json"),
           "KANGAROO_GATEWAY_BIN": gateway, "KANGAROO_WORKER_BIN": worker}
    os.environ.update(env)
    child_env = dict(os.environ, PYTHONPATH=SDK)
    py = "/usr/bin/python3"

    data = os.path.join(out, "data")
    plotfile = os.path.join(data, "demo_plt")
    t0 = time.perf_counter()
    if os.path.isdir(plotfile):
        shutil.rmtree(plotfile)
    os.makedirs(data, exist_ok=True)
    subprocess.run([py, "-m", "kangaroo.synthetic", plotfile, "--cells", str(args.cells), "--levels", "3",
                    "--fields", "density,temperature"], check=True, env=child_env, stdout=subprocess.DEVNULL)
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(plotfile) for f in fs)
    print(f"demo: wrote a 3-level plotfile ({size / 2**20:.1f} MiB) to {plotfile}")

    up = subprocess.run([py, "-m", "kangaroo", "up", "--data-root", data, "--port", "0"], env=child_env,
                        capture_output=True, text=True)
    if up.returncode != 0:
        fail(1, f"kangaroo up failed:\n{up.stderr}")
    url = up.stdout.strip().splitlines()[-1]
    print(f"demo: local gateway at {url}")
    try:
        import kangaroo as kr

        client = kr.Client()
        ds = client.open_dataset("demo_plt")
        rho = ds["density"]
        plane = ds.geometry.plane(axis="z")
        sl = rho.slice(axis="z", coord=0.3, resolution=(256, 256))
        pr = rho.project(axis="z", resolution=(256, 256))
        hv = rho.histogram(bins=40, range=(0.45, 1.55), weight_mode="cell_volume")
        hm = rho.histogram(bins=40, range=(0.45, 1.55), weight_mode="cell_mass")
        t1 = time.perf_counter()
        try:
            slice_img, proj_img, hist_v, hist_m = kr.compute(sl, pr, hv, hm)
        except RuntimeError as e:
            fail(2, f"the job failed: {e}")
        t_job = time.perf_counter() - t1

        rect = plane.rect
        pixel_area = abs((rect[2] - rect[0]) / proj_img.shape[1]) * abs((rect[3] - rect[1]) / proj_img.shape[0])
        volume = float(np.sum(hist_v.counts))
        mass_hist = float(np.sum(hist_m.counts))
        mass_proj = float(np.sum(proj_img)) * pixel_area
        checks = [
            ("slice has a value in every pixel", bool(np.isfinite(slice_img).all())),
            ("volume histogram adds up to the domain volume 1", abs(volume - 1.0) < 1e-9),
            ("projection and mass histogram give the same mass", abs(mass_proj - mass_hist) <= 1e-9 * abs(mass_hist)),
            ("density stays within its analytic range [0.5, 1.5]",
             bool(np.nanmin(slice_img) >= 0.5 - 1e-12 and np.nanmax(slice_img) <= 1.5 + 1e-12)),
        ]
        pngs = write_pngs(out, slice_img, proj_img, rect, hist_v, hist_m)
        print(f"demo: one job computed slice {slice_img.shape}, projection {proj_img.shape} and two "
              f"{len(hist_v.counts)}-bin histograms in {t_job * 1e3:.0f} ms (submit to arrays in memory)")
        print(f"demo: slice density min/mean/max {np.nanmin(slice_img):.4f} / {np.nanmean(slice_img):.4f} / "
              f"{np.nanmax(slice_img):.4f}")
        print(f"demo: total mass {mass_proj:.9f} (projection) vs {mass_hist:.9f} (mass histogram); "
              f"volume {volume:.12f}")
        for name, ok in checks:
            print(f"demo: [{'ok' if ok else 'FAILED'}] {name}")
        print("demo: images " + ", ".join(pngs))
        print(f"demo: finished in {time.perf_counter() - t0:.1f} s")
        if not all(ok for _, ok in checks):
            sys.exit(3)
    finally:
        if not args.keep_up:
            subprocess.run([py, "-m", "kangaroo", "down"], env=child_env, capture_output=True)
        else:
            print(f"demo: the gateway keeps running; stop it with KANGAROO_STATE_DIR={env['KANGAROO_STATE_DIR']} "
                  f"python3 -m kangaroo down")


if __name__ == "__main__":
    main()
