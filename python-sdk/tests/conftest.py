"""Fixtures shared by the SDK tests that talk to the in-process fake gateway.

``certs`` (a certificate, its key and an unrelated certificate) and ``gw``
(a started FakeGateway) are requested by name; ``isolated_settings`` keeps a
test away from the user's own connection file and environment and is taken
with ``pytest.mark.usefixtures``.
"""

import os
import shutil
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command makes the test certificate")
    from fake_gateway import make_certificate

    folder = tmp_path_factory.mktemp("certs")
    cert, key = make_certificate(str(folder))
    other_cert, _ = make_certificate(str(folder), "other")
    return cert, key, other_cert


@pytest.fixture
def gw(certs):
    from fake_gateway import FakeGateway

    g = FakeGateway(certs[0], certs[1]).start()
    yield g
    g.stop()


@pytest.fixture
def isolated_settings(tmp_path, monkeypatch):
    """No test reads the user's own connection file or environment."""
    import kangaroo as kg

    monkeypatch.setenv("KANGAROO_CONFIG", str(tmp_path / "client.json"))
    for var in ("KANGAROO_URL", "KANGAROO_TOKEN", "KANGAROO_CA_CERT"):
        monkeypatch.delenv(var, raising=False)
    kg.set_default_client(None)
    yield
    kg.set_default_client(None)
