"""``kangaroo up / status / down`` with a stand-in gateway (tests/fake_gateway.py run
as a program taking the gateway's flags): certificate and token made once with
safe permissions, daemonised start, ready-file wait, client settings, idempotent
``up``, clean ``down``."""

import os
import shutil
import stat
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SDK = os.path.dirname(HERE)
sys.path.insert(0, SDK)

pytest.importorskip("numpy")
pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="kangaroo up needs the openssl command")

import kangaroo as kg  # noqa: E402


def _kangaroo(env, *args, timeout=60):
    return subprocess.run([sys.executable, "-m", "kangaroo", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def env(tmp_path, monkeypatch):
    e = dict(os.environ)
    e["PYTHONPATH"] = SDK + os.pathsep + HERE
    e["KANGAROO_STATE_DIR"] = str(tmp_path / "state")
    e["KANGAROO_CONFIG"] = str(tmp_path / "client.json")
    for var in ("KANGAROO_URL", "KANGAROO_TOKEN", "KANGAROO_CA_CERT", "KANGAROO_GATEWAY_BIN"):
        e.pop(var, None)
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KANGAROO_CONFIG", e["KANGAROO_CONFIG"])
    return e


@pytest.fixture
def fake_binary(tmp_path):
    path = tmp_path / "bin" / "kangaroo-gateway"
    path.parent.mkdir()
    path.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {HERE!r})\n"
                    "from fake_gateway import _main\nsys.exit(_main())\n")
    path.chmod(0o755)
    return str(path)


def test_up_status_down(env, fake_binary, tmp_path):
    state = tmp_path / "state"
    assert _kangaroo(env, "status").returncode == 1
    up = _kangaroo(env, "up", "--port", "0", "--gateway-bin", fake_binary, "--data-root", str(tmp_path))
    assert up.returncode == 0, up.stderr
    url = up.stdout.strip()
    assert url.startswith("https://127.0.0.1:")
    try:
        assert stat.S_IMODE(os.stat(state / "tls" / "key.pem").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(state / "tokens").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(env["KANGAROO_CONFIG"]).st_mode) == 0o600
        c = kg.Client()  # everything from the written settings
        assert c.url == url and c.info()["version"] == "fake"
        token = c.token

        st = _kangaroo(env, "status")
        assert st.returncode == 0, st.stdout + st.stderr
        assert "up at " + url in st.stdout

        again = _kangaroo(env, "up", "--port", "0", "--gateway-bin", fake_binary)
        assert again.returncode == 0 and "already up" in again.stdout
    finally:
        down = _kangaroo(env, "down")
    assert down.returncode == 0 and "stopped" in down.stdout
    assert not (state / "gateway.pid").exists()
    assert _kangaroo(env, "status").returncode == 1
    assert _kangaroo(env, "down").returncode == 0  # idempotent

    # A second start keeps the certificate and token.
    cert_before = (state / "tls" / "cert.pem").read_bytes()
    up = _kangaroo(env, "up", "--port", "0", "--gateway-bin", fake_binary, "--data-root", str(tmp_path))
    try:
        assert up.returncode == 0, up.stderr
        assert (state / "tls" / "cert.pem").read_bytes() == cert_before
        assert kg.Client().token == token
    finally:
        _kangaroo(env, "down")


def test_up_reports_a_gateway_that_dies(env, tmp_path):
    broken = tmp_path / "kangaroo-gateway"
    broken.write_text("#!/bin/sh\necho 'cannot bind 127.0.0.1: address in use' >&2\nexit 3\n")
    broken.chmod(0o755)
    r = _kangaroo(env, "up", "--gateway-bin", str(broken), "--data-root", str(tmp_path))
    assert r.returncode == 1
    assert "exited with status 3" in r.stderr and "address in use" in r.stderr


def test_up_without_a_gateway_binary(env, tmp_path):
    if os.path.exists(os.path.join(os.path.dirname(SDK), "build", "gateway", "kangaroo-gateway")):
        pytest.skip("the source tree has a built gateway, which up would find")
    env["PATH"] = "/nonexistent"
    env["KANGAROO_BUILD_DIR"] = str(tmp_path / "nobuild")
    r = _kangaroo(env, "up", "--data-root", str(tmp_path))
    if "already up" in r.stdout:
        pytest.skip("a gateway is running from this state folder")
    assert r.returncode == 1 and "kangaroo-gateway not found" in r.stderr
