"""Tokens, TLS and mutual TLS of the index services, the loopback rule, and bundle files verified at load."""

import json
import shutil
import subprocess
import time

import numpy as np
import pytest

from retrieval.config import GrpcTlsConfig, ServeAuthConfig
from spnas_core.errors import ConfigError, InputError

D = 8
BUNDLE = "c" * 64


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 / localhost and a client certificate, made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=spnas test CA", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN=spnas {name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return d


def _store(tmp_path):
    from retrieval.partitions import PartitionedStore, partition_key

    s = PartitionedStore(tmp_path / "store", BUNDLE, D, factory="Flat")
    now = int(time.time())
    x = np.random.default_rng(0).standard_normal((5, D)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    s.add(np.arange(5), x, np.full(5, now))
    return s, partition_key(now), x


def test_tls_service_with_token(tmp_path, pki):
    import grpc

    from retrieval.service import IndexClient, serve_partition

    s, key, x = _store(tmp_path)
    tls = GrpcTlsConfig(cert=str(pki / "server.pem"), key=str(pki / "server.key"), ca=str(pki / "ca.pem"))
    token = "t" * 32
    server, addr = serve_partition(s, key, "127.0.0.1", 0, token=token, tls=tls)
    try:
        c = IndexClient(addr, 5, token=token, tls=tls)
        assert c.search(x[:1], 2, bundle=BUNDLE).results[0].hits[0].id == 0
        with pytest.raises(grpc.RpcError) as e:  # right channel, no token
            IndexClient(addr, 5, tls=tls).search(x[:1], 2, bundle=BUNDLE)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as e:  # a plaintext client cannot talk to a TLS service
            IndexClient(addr, 2, token=token).search(x[:1], 2, bundle=BUNDLE)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(0)


def test_mutual_tls_requires_a_client_certificate(tmp_path, pki):
    import grpc

    from retrieval.service import IndexClient, serve_partition

    s, key, x = _store(tmp_path)
    mtls = GrpcTlsConfig(cert=str(pki / "server.pem"), key=str(pki / "server.key"), ca=str(pki / "ca.pem"),
                         mutual=True, client_cert=str(pki / "client.pem"), client_key=str(pki / "client.key"))
    server, addr = serve_partition(s, key, "127.0.0.1", 0, tls=mtls)
    try:
        assert IndexClient(addr, 5, tls=mtls).search(x[:1], 1, bundle=BUNDLE).results[0].hits[0].id == 0
        one_way = GrpcTlsConfig(cert=str(pki / "server.pem"), key=str(pki / "server.key"), ca=str(pki / "ca.pem"))
        with pytest.raises(grpc.RpcError) as e:
            IndexClient(addr, 3, tls=one_way).search(x[:1], 1, bundle=BUNDLE)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(0)


def test_tls_config_is_checked_at_compose_time():
    with pytest.raises(ConfigError, match="go together"):
        GrpcTlsConfig(cert="a.pem")
    with pytest.raises(ConfigError, match="needs tls.ca"):
        GrpcTlsConfig(cert="a.pem", key="a.key")
    with pytest.raises(ConfigError, match="mutual"):
        GrpcTlsConfig(cert="a.pem", key="a.key", ca="ca.pem", mutual=True)


def test_no_bind_beyond_loopback_without_a_token(tmp_path, monkeypatch):
    from retrieval.security import check_bind, is_loopback, load_token

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    with pytest.raises(ConfigError, match="without a bearer token"):
        check_bind("0.0.0.0", None, "the gateway")
    check_bind("0.0.0.0", "x" * 32, "the gateway")
    check_bind("127.0.0.1", None, "the gateway")
    monkeypatch.setenv("SPNAS_TEST_TOKEN", "short")
    with pytest.raises(ConfigError, match="at least 16"):
        load_token(ServeAuthConfig(token_env="SPNAS_TEST_TOKEN"))
    (tmp_path / "tok").write_text("f" * 40 + "\n")
    assert load_token(ServeAuthConfig(token_env="SPNAS_TEST_TOKEN", token_file=str(tmp_path / "tok"))) == "f" * 40
    monkeypatch.delenv("SPNAS_TEST_TOKEN")
    assert load_token(ServeAuthConfig(token_env="SPNAS_TEST_TOKEN")) is None


def test_spnas_serve_refuses_a_public_gateway_without_token(small_bundle, tmp_path, monkeypatch):
    from spnas.app.serve import start

    from ..conftest import compose

    monkeypatch.delenv("SPNAS_SERVE_TOKEN", raising=False)
    cfg = compose("serve", [f"bundle={small_bundle}", "host=0.0.0.0", f"index_dir={tmp_path / 'i'}"])
    with pytest.raises(ConfigError, match="beyond this machine"):
        start(cfg)
    assert not (tmp_path / "i").exists(), "refused before anything was created"


def test_bundle_files_are_verified_and_identity_comes_from_them(small_bundle, tmp_path):
    from export.bundle import bundle_id, load_manifest
    from retrieval.embedders import make_embedder

    b = tmp_path / "bundle"
    shutil.copytree(small_bundle, b)
    ident = bundle_id(b)
    assert ident == make_embedder("litert", b).bundle_sha256
    assert ident != load_manifest(b)["files"]["embedder.tflite"]["sha256"], "not the manifest's own word"
    # editing the manifest's hashes (files untouched) refuses the bundle instead of changing its identity
    m = json.loads((b / "manifest.json").read_text())
    m["files"]["embedder.tflite"]["sha256"] = "0" * 64
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(InputError, match="does not match the manifest"):
        make_embedder("litert", b)
    shutil.copy(small_bundle / "manifest.json", b / "manifest.json")
    # a file changed after export is refused by every backend that loads the bundle
    data = bytearray((b / "weights.pt").read_bytes())
    data[-100] ^= 0xFF
    (b / "weights.pt").write_bytes(bytes(data))
    for backend in ("litert", "torch"):
        with pytest.raises(InputError, match="weights.pt"):
            make_embedder(backend, b)


def test_loopback_without_a_token_still_needs_one_for_writes(tmp_path):
    """No token configured: spnas-serve makes one (owner-only file, kept across restarts) instead of
    leaving writes open."""
    from retrieval.security import load_token
    from spnas.app.serve import local_token

    auth = local_token(tmp_path / "gw")
    p = tmp_path / "gw" / "token"
    assert auth.token_file == str(p) and (p.stat().st_mode & 0o777) == 0o600
    token = load_token(auth)
    assert token and len(token) == 64
    assert load_token(local_token(tmp_path / "gw")) == token
