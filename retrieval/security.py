"""Who may write to the photo search: a bearer token for REST writes and gRPC calls, TLS (optionally
mutual) for the index services, and two rules: nothing listens beyond loopback without a token, and
a token never crosses the network in clear (a gRPC address beyond loopback with a token needs TLS).

The token comes from a file (`auth.token_file`, read once at start) or an environment variable
(`auth.token_env`, default `SPNAS_SERVE_TOKEN`); tokens are compared in constant time. gRPC clients
send it as `authorization: Bearer <token>` metadata; the health service stays open so Kubernetes'
gRPC probes work without it.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import socket
from pathlib import Path
from typing import Any, Callable

from spnas_core.errors import ConfigError, InputNotFoundError

from .config import AuthConfig, TlsConfig

HEALTH_PREFIX = "/grpc.health.v1.Health/"


def load_token(auth: AuthConfig) -> str | None:
    """The bearer token from `auth.token_file` or the `auth.token_env` variable; None when neither is set."""
    if auth.token_file:
        p = Path(auth.token_file).expanduser()
        if not p.is_file():
            raise InputNotFoundError(f"auth.token_file={p} does not exist; write the token there (e.g. "
                                     f"`openssl rand -hex 32 > {p}`) or unset it to use ${auth.token_env}")
        token = p.read_text().strip()
    else:
        token = os.environ.get(auth.token_env, "").strip()
    if token and len(token) < 16:
        raise ConfigError(f"the bearer token is {len(token)} characters; use at least 16 (e.g. `openssl rand -hex 32`)")
    return token or None


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) only reaches this machine."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None))
        except (socket.gaierror, ValueError):
            return False


def check_bind(host: str, token: str | None, what: str) -> None:
    """Refuse to listen beyond loopback without a token: anyone on the network could write listings."""
    if not is_loopback(host) and not token:
        raise ConfigError(f"{what} would listen on {host}, beyond this machine, without a bearer token: set "
                          f"$SPNAS_SERVE_TOKEN (or auth.token_file=<file>), or bind 127.0.0.1")


def check_grpc(host: str, token: str | None, tls: TlsConfig, what: str) -> None:
    """A gRPC address beyond loopback needs a token (`check_bind`), and a token there needs TLS: in
    plaintext anyone on the path could read it and call the services."""
    check_bind(host, token, what)
    if token and not tls.cert and not is_loopback(host):
        raise ConfigError(f"{what} at {host} would carry the bearer token in plaintext beyond this machine: set "
                          f"tls.cert, tls.key and tls.ca (or use 127.0.0.1)")


def token_ok(given: str | None, token: str | None) -> bool:
    """`Bearer <token>` matches (the scheme is required, its case is not: RFC 6750); always true when no
    token is configured."""
    if token is None:
        return True
    scheme, _, credentials = (given or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return False
    return hmac.compare_digest(credentials.strip().encode(), token.encode())


def _read(path: str | None, what: str) -> bytes | None:
    if not path:
        return None
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputNotFoundError(f"{what} {p} does not exist")
    return p.read_bytes()


def server_credentials(tls: TlsConfig) -> Any:
    """gRPC server credentials for TLS (mutual when `tls.mutual`), or None for plaintext (loopback)."""
    if not tls.cert:
        return None
    import grpc

    ca = _read(tls.ca, "tls.ca") if tls.mutual else None
    return grpc.ssl_server_credentials([(_read(tls.key, "tls.key"), _read(tls.cert, "tls.cert"))],
                                       root_certificates=ca, require_client_auth=tls.mutual)


def channel(address: str, tls: TlsConfig, options: list[tuple[str, Any]]) -> Any:
    """A channel to an index service: TLS verified against `tls.ca` when one is set (a client needs the CA
    only, never the services' private key; `tls.client_cert`/`client_key` for mutual TLS)."""
    import grpc

    if not tls.ca:
        return grpc.insecure_channel(address, options=options)
    creds = grpc.ssl_channel_credentials(root_certificates=_read(tls.ca, "tls.ca"),
                                         private_key=_read(tls.client_key, "tls.client_key"),
                                         certificate_chain=_read(tls.client_cert, "tls.client_cert"))
    if tls.server_name:
        options = [*options, ("grpc.ssl_target_name_override", tls.server_name)]
    return grpc.secure_channel(address, creds, options=options)


class TokenInterceptor:
    """A gRPC server interceptor: every call but health checks needs `authorization: Bearer <token>`."""

    def __new__(cls, token: str) -> Any:
        import grpc

        class _Interceptor(grpc.ServerInterceptor):
            def __init__(self) -> None:
                def deny(request: Any, context: Any) -> Any:
                    context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                  "missing or wrong bearer token (metadata 'authorization: Bearer <token>')")

                self._deny = grpc.unary_unary_rpc_method_handler(deny)

            def intercept_service(self, continuation: Callable, details: Any) -> Any:
                if details.method.startswith(HEALTH_PREFIX):
                    return continuation(details)
                given = dict(details.invocation_metadata or ()).get("authorization")
                return continuation(details) if token_ok(given, token) else self._deny

        return _Interceptor()
