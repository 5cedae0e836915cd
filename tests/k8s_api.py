"""A Kubernetes API server played back from recorded responses, under the official `kubernetes`
client: its urllib3 pool manager is replaced by one that answers each request with the next
scripted fixture (a JSON body, or a watch stream of one JSON event per line, in the API's own wire
format) and records what was asked. The client's own code then parses, deserializes and streams
exactly as it does against a real API server.

No cluster can run on these machines, so the fixtures in tests/retrieval/fixtures/k8s/ (named
`recorded-*`: the responses the fake plays back) were written in the API's wire format as its
reference documents it for Kubernetes 1.32 (EndpointSliceList, watch events one per line, BOOKMARK,
the 410 Expired Status), not captured from a live API server.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

FIXTURES = Path(__file__).resolve().parent / "retrieval" / "fixtures" / "k8s"


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    body: Any = None

    def _parts(self) -> tuple[str, list[str]]:
        parts = self.path.strip("/").split("/")
        group = "" if parts[0] == "api" else parts[1]
        rest = parts[2:] if parts[0] == "api" else parts[3:]
        if rest and rest[0] == "namespaces":
            rest = rest[2:]
        return group, rest  # [plural], [plural, name] or [plural, name, subresource]

    @property
    def verb(self) -> str:
        """The RBAC verb the API server authorizes this request as."""
        if self.method == "GET":
            if self.query.get("watch", "").lower() in ("true", "1"):
                return "watch"
            return "list" if len(self._parts()[1]) == 1 else "get"
        return {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[self.method]

    @property
    def resource(self) -> tuple[str, str]:
        """(API group, resource) of the request, e.g. ("discovery.k8s.io", "endpointslices")."""
        group, rest = self._parts()
        return group, "/".join([rest[0], rest[2]]) if len(rest) > 2 else rest[0]


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"{}"

    @classmethod
    def fixture(cls, name: str, status: int = 200) -> "Reply":
        return cls(status, (FIXTURES / name).read_bytes())

    @classmethod
    def json(cls, obj: Any, status: int = 200) -> "Reply":
        return cls(status, json.dumps(obj).encode())


class _Body(io.BytesIO):
    """A response body that reports itself closed once read to the end, as http.client's does (urllib3
    streams until then)."""

    def isclosed(self) -> bool:
        return self.tell() >= len(self.getbuffer())


@dataclass
class FakePoolManager:
    """Answers requests in order with `replies`; `calls` records them."""

    replies: list[Reply]
    calls: list[Call] = field(default_factory=list)

    def request(self, method: str, url: str, fields: Any = None, body: Any = None, preload_content: bool = True,
                timeout: Any = None, headers: Any = None, **_: Any) -> Any:
        import urllib3

        u = urlparse(url)
        query = {k: v[-1] for k, v in parse_qs(u.query).items()}
        query.update({k: str(v) for k, v in (fields or [])})
        self.calls.append(Call(method, u.path, query, json.loads(body) if isinstance(body, (str, bytes)) and body
                               else body))
        if not self.replies:
            raise AssertionError(f"no scripted reply left for {method} {url}")
        r = self.replies.pop(0)
        return urllib3.HTTPResponse(body=_Body(r.body), status=r.status, preload_content=preload_content,
                                    headers={"Content-Type": "application/json"})

    def verbs(self) -> set[tuple[str, str, str]]:
        """(group, resource, verb) of every request made."""
        return {(*c.resource, c.verb) for c in self.calls}


def api_client(replies: list[Reply]) -> tuple[Any, FakePoolManager]:
    """A kubernetes ApiClient whose requests the returned fake answers."""
    from kubernetes import client

    cfg = client.Configuration(host="https://kubernetes.default.svc")
    api = client.ApiClient(cfg)
    fake = FakePoolManager(list(replies))
    api.rest_client.pool_manager = fake
    return api, fake


def rbac_rules(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(group, resource, verb) a Role grants."""
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


# ------------------------------------------------------------------------------------ over a real socket
@dataclass
class Hang:
    """A scripted request the server never finishes: with `headers`, it sends `200` and chunked-encoding
    headers, then nothing (a half-open watch); without, nothing at all (an API server that hangs)."""

    headers: bool = True
    delay_s: float = 0.0  # before the headers: a watch whose response has not begun yet


class ScriptedApiServer:
    """An HTTP server on loopback that answers each request with the next scripted `Reply` (sent whole) or
    `Hang`, for what a client's timeouts do: a half-open watch, a list that never answers. `client()` is a
    kubernetes ApiClient pointed at it; `requests` records (method, path?query) as they arrive."""

    def __init__(self, script: list[Any]) -> None:
        import http.server
        import threading

        self.script, self.requests = list(script), []
        self.release = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.requests.append(self.path)
                step = outer.script.pop(0) if outer.script else Hang(False)
                if isinstance(step, Hang):
                    if step.delay_s:
                        outer.release.wait(step.delay_s)
                    if step.headers:
                        self.send_response(200)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Transfer-Encoding", "chunked")
                        self.end_headers()
                        self.wfile.flush()
                    outer.release.wait(60)
                    self.close_connection = True
                    return
                self.send_response(step.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(step.body)))
                self.end_headers()
                self.wfile.write(step.body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "ScriptedApiServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def client(self) -> Any:
        from kubernetes import client

        return client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{self.server.server_address[1]}"))
