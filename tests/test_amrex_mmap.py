"""The opt-in memory-mapped FAB reads (KANGAROO_AMREX_MMAP=1) give the same
results as the default pread path on real plotfiles."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "python-sdk"))
from kangaroo import lowering as lw  # noqa: E402

BUILD = os.environ.get("KANGAROO_BUILD_DIR", os.path.join(REPO, "build"))
WORKER = os.path.join(BUILD, "worker", "kangaroo-worker")
DATA = os.path.join(REPO, "..", "shared", "data", "amrex")

pytestmark = [
    pytest.mark.skipif(not os.access(WORKER, os.X_OK), reason=f"kangaroo-worker not built at {WORKER}"),
    pytest.mark.skipif(not os.path.isdir(DATA), reason="shared AMReX data not found beside the project"),
]


@pytest.mark.parametrize("plotfile,field", [("pelelmex_3d_small", None), ("amrex_singlevortex3d_gpu/plt00100", "phi")])
def test_mapped_reads_match_pread(tmp_path, plotfile, field):
    path = os.path.join(DATA, plotfile)
    uri = "amrex://" + os.path.abspath(path)
    meta = json.loads(subprocess.run([WORKER, "metadata", "--dataset", uri], capture_output=True, text=True,
                                     check=True).stdout)
    field = field or meta["var_names"][0]
    runmeta = lw.runmeta_from_metadata(meta, step=0)
    lo = meta["prob_lo"] + [0.0] * (3 - len(meta["prob_lo"]))
    hi = meta["prob_hi"] + [1.0] * (3 - len(meta["prob_hi"]))
    n = [b[1][a] - b[0][a] + 1 for b in [meta["prob_domain"][-1]] for a in range(len(b[0]))]
    frag = lw.projection_plan(runmeta, 1, 2, (lo[2], hi[2]), (lo[0], lo[1], hi[0], hi[1]), (n[0], n[1]), 50)
    (tmp_path / "plan.json").write_text(frag.plan().to_json())
    (tmp_path / "runmeta.json").write_text(runmeta.to_json())
    results = []
    for mode in ("0", "1"):
        out = tmp_path / f"out{mode}"
        r = subprocess.run([WORKER, "run", "--plan", str(tmp_path / "plan.json"), "--runmeta",
                            str(tmp_path / "runmeta.json"), "--dataset", uri, "--field", f"1={field}", "--out",
                            str(out)], capture_output=True, text=True, env={**os.environ, "KANGAROO_AMREX_MMAP": mode})
        assert r.returncode == 0, r.stderr
        manifest = json.loads((out / "manifest.json").read_text())
        chunk = [c for c in manifest["chunks"] if c["field"] == 50][0]
        results.append(np.load(out / chunk["file"]))
    assert results[0].shape == (n[1], n[0])
    assert np.any(results[0] != 0)
    np.testing.assert_array_equal(results[0], results[1])
