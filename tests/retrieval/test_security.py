"""Tokens, TLS and mutual TLS of the index services, the loopback rules (no listening beyond it without a
token, no token beyond it without TLS), and bundle files verified at load."""

import json
import shutil
import subprocess

import pytest

from retrieval.config import AuthConfig, TlsConfig
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


def _service(tmp_path, **kw):
    """A started index service over a small built version (Flat), and its catalogue."""
    from retrieval.build import build_period
    from retrieval.config import BuildConfig, Granularity
    from retrieval.periods import period_range
    from retrieval.service import IndexService
    from retrieval.version_index import VersionIndex
    from retrieval.versions import open_version

    from .conftest import make_catalogue

    c = make_catalogue(tmp_path, 5, period_range(Granularity.hour, "2026-11-26T15")[0], 3600, dim=D, bundle=BUNDLE)
    info, _ = build_period(c.store, None, c.repo, c.embedder, Granularity.hour, "2026-11-26T15", BuildConfig())
    svc = IndexService(VersionIndex.load(*open_version(info.url, tmp_path / "cache")), c.store, **kw).start()
    svc.wait_serving(30)
    return svc, c


def test_tls_service_with_token(tmp_path, pki):
    import grpc

    from retrieval.service import IndexClient

    tls = TlsConfig(cert=str(pki / "server.pem"), key=str(pki / "server.key"), ca=str(pki / "ca.pem"))
    token = "t" * 32
    svc, c = _service(tmp_path, token=token, tls=tls)
    try:
        cl = IndexClient(svc.address, 5, token=token, tls=tls)
        assert cl.search(c.vecs[:1], 2, bundle=BUNDLE)[1][0, 0] == c.ids[0]
        client_only = TlsConfig(ca=str(pki / "ca.pem"))  # what the gateway holds: the CA, not the services' key
        assert IndexClient(svc.address, 5, token=token, tls=client_only).search(c.vecs[:1], 2, bundle=BUNDLE)[1][
            0, 0] == c.ids[0]
        assert IndexClient(svc.address, 5, tls=tls).serving(), "health stays open: probes send no token"
        with pytest.raises(grpc.RpcError) as e:  # right channel, no token
            IndexClient(svc.address, 5, tls=tls).search(c.vecs[:1], 2, bundle=BUNDLE)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as e:  # a plaintext client cannot talk to a TLS service
            IndexClient(svc.address, 2, token=token).search(c.vecs[:1], 2, bundle=BUNDLE)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        svc.stop(0)


def test_a_tls_service_answers_health_alone_in_plaintext_on_its_health_port(tmp_path, pki):
    """kubelet's gRPC probes speak no TLS: `health_port` serves the standard health service (readiness
    "" and "liveness") in plaintext, and nothing else: the index service is not reachable there."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from retrieval.service import LIVENESS, IndexClient

    tls = TlsConfig(cert=str(pki / "server.pem"), key=str(pki / "server.key"), ca=str(pki / "ca.pem"))
    svc, c = _service(tmp_path, token="t" * 32, tls=tls, health_port=0)
    try:
        health = IndexClient(svc.health_address, 5)  # plaintext
        stub = health_pb2_grpc.HealthStub(health.channel)
        serving = health_pb2.HealthCheckResponse.SERVING
        for name in ("", LIVENESS):
            assert stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status == serving
        with pytest.raises(grpc.RpcError) as e:
            health.info()
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        svc.stop(0)
    assert not IndexClient(svc.health_address, 1).serving()


def test_mutual_tls_requires_a_client_certificate(tmp_path, pki):
    import grpc

    from retrieval.service import IndexClient

    mtls = TlsConfig(cert=str(pki / "server.pem"), key=str(pki / "server.key"), ca=str(pki / "ca.pem"),
                     mutual=True, client_cert=str(pki / "client.pem"), client_key=str(pki / "client.key"))
    svc, c = _service(tmp_path, tls=mtls)
    try:
        assert IndexClient(svc.address, 5, tls=mtls).search(c.vecs[:1], 1, bundle=BUNDLE)[1][0, 0] == c.ids[0]
        one_way = TlsConfig(cert=str(pki / "server.pem"), key=str(pki / "server.key"), ca=str(pki / "ca.pem"))
        with pytest.raises(grpc.RpcError) as e:
            IndexClient(svc.address, 3, tls=one_way).search(c.vecs[:1], 1, bundle=BUNDLE)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        svc.stop(0)


def test_tls_config_is_checked_at_compose_time():
    TlsConfig(ca="ca.pem")  # a client: the CA alone
    with pytest.raises(ConfigError, match="go together"):
        TlsConfig(ca="ca.pem", client_cert="c.pem")
    with pytest.raises(ConfigError, match="go together"):
        TlsConfig(cert="a.pem")
    with pytest.raises(ConfigError, match="needs tls.ca"):
        TlsConfig(cert="a.pem", key="a.key")
    with pytest.raises(ConfigError, match="mutual"):
        TlsConfig(cert="a.pem", key="a.key", ca="ca.pem", mutual=True)


def test_no_bind_beyond_loopback_without_a_token_and_no_token_beyond_it_without_tls(tmp_path, monkeypatch):
    from retrieval.security import check_bind, check_grpc, is_loopback, load_token
    from retrieval.service import IndexClient

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    with pytest.raises(ConfigError, match="without a bearer token"):
        check_bind("0.0.0.0", None, "the gateway")
    check_bind("0.0.0.0", "x" * 32, "the gateway")
    check_bind("127.0.0.1", None, "the gateway")
    with pytest.raises(ConfigError, match="plaintext"):  # the gRPC token would cross the network in clear
        check_grpc("0.0.0.0", "x" * 32, TlsConfig(), "the index service")
    check_grpc("0.0.0.0", "x" * 32, TlsConfig(cert="c.pem", key="k.pem", ca="ca.pem"), "the index service")
    check_grpc("127.0.0.1", "x" * 32, TlsConfig(), "the index service")
    with pytest.raises(ConfigError, match="plaintext"):  # and a client does not send it there either
        IndexClient("10.1.2.3:50051", token="x" * 32)
    with pytest.raises(ConfigError, match="plaintext"):
        _service(tmp_path, host="0.0.0.0", token="x" * 32)
    monkeypatch.setenv("SPNAS_TEST_TOKEN", "short")
    with pytest.raises(ConfigError, match="at least 16"):
        load_token(AuthConfig(token_env="SPNAS_TEST_TOKEN"))
    (tmp_path / "tok").write_text("f" * 40 + "\n")
    assert load_token(AuthConfig(token_env="SPNAS_TEST_TOKEN", token_file=str(tmp_path / "tok"))) == "f" * 40
    monkeypatch.delenv("SPNAS_TEST_TOKEN")
    assert load_token(AuthConfig(token_env="SPNAS_TEST_TOKEN")) is None


def test_spnas_serve_refuses_a_public_gateway_without_token(small_bundle, tmp_path, monkeypatch):
    from spnas.app.serving.serve import start

    from ..conftest import compose

    monkeypatch.delenv("SPNAS_SERVE_TOKEN", raising=False)
    cfg = compose("serve", [f"bundle={small_bundle}", "host=0.0.0.0", f"root={tmp_path / 'i'}"])
    with pytest.raises(ConfigError, match="beyond this machine"):
        start(cfg)
    cfg = compose("serve", [f"bundle={small_bundle}", "grpc_host=0.0.0.0", f"root={tmp_path / 'i'}"])
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
    from spnas.app.serving.serve import local_token

    auth = local_token(tmp_path / "gw")
    p = tmp_path / "gw" / "token"
    assert auth.token_file == str(p) and (p.stat().st_mode & 0o777) == 0o600
    token = load_token(auth)
    assert token and len(token) == 64
    assert load_token(local_token(tmp_path / "gw")) == token


def test_one_plaintext_address_beyond_loopback_drops_that_address_only(tmp_path):
    """A resolver names a good service on loopback and one address beyond it that would carry the token
    in plaintext: that one is left out (and said why), the good one is planned."""
    from retrieval.backends import GrpcBackends

    token = "t" * 32
    svc, c = _service(tmp_path, token=token)

    class Two:
        def addresses(self):
            return ["10.1.2.3:50051", svc.address]

    try:
        b = GrpcBackends(Two(), token)
        ready = b()
        assert [r.version for r in ready] == [svc.vi.info.version]
        assert list(b.refused) == ["10.1.2.3:50051"] and "plaintext" in b.refused["10.1.2.3:50051"]
        assert [r.version for r in b()] == [svc.vi.info.version]  # and on every refresh
    finally:
        svc.stop(0)


def test_writes_and_grpc_calls_need_the_bearer_scheme():
    from retrieval.security import token_ok

    t = "s" * 32
    assert token_ok(f"Bearer {t}", t) and token_ok(f"bearer {t}", t) and token_ok(f"  Bearer   {t} ", t)
    for given in (t, f"Basic {t}", f"Token {t}", "Bearer", "", None, f"Bearer{t}"):
        assert not token_ok(given, t), given
