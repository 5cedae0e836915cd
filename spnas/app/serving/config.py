"""Command configs of the photo search: `spnas-serve` (one machine, or one gateway) and `spnas-index`
(builds, one index service, fetch, listing and retention of versions). Their groups live in
`retrieval.config`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from retrieval.config import (AuthConfig, Backend, BuildConfig, DeltaConfig, Granularity, Limits, Locations, PartialResults,
                              RetentionConfig, SearchParams, TlsConfig)
from spnas.app.base import RunConfig
from spnas_core.config import opt
from training.config import DataConfig
from spnas_core.errors import ConfigError


class ServeCommand(enum.Enum):
    """What `spnas-serve` runs (its first word)."""

    all = ("seed an empty store, build what is due, serve each ready version and the gateway on this machine, "
           "and build again every build_every_s")
    gateway = "the stateless REST gateway alone (workers processes), finding index services through `resolver`"


class SeedTimes(enum.Enum):
    """The listing times an empty store is seeded with (what the page's time window selects)."""

    photo = "each photo's own time: EXIF DateTimeOriginal, else the file's modification time"
    spread = "spread at random over the past seed_hours (a demo of hourly versions; the times mean nothing)"


class IndexCommand(enum.Enum):
    """What `spnas-index` does (its first word; build-due may be written with a dash)."""

    build = "build the version of one period (granularity=hour|day|month period=...)"
    build_due = "build every finished period that needs it, then apply retention (what a CronJob runs)"
    serve = "serve one version (version=<folder or repository URL>) over gRPC until SIGTERM"
    fetch = "copy a version from the repository into dest=<folder> and verify it (an initContainer)"
    list = "print the versions in the repository"
    retain = "apply retention alone"


@dataclass
class ServeAppConfig(RunConfig):
    """`spnas-serve`: the photo search (gateway + index services of the ready versions) on one machine."""

    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"data": None}, {"experiment": None}])
    data: Optional[DataConfig] = opt(None, "the photos an empty listing store is seeded with: data=folder "
                                           "data.root=<your photos> (every photo), data=grocery (its train split); "
                                           "null: the photos the bundle was evaluated on (its manifest's "
                                           "data_source)")
    bundle: str = opt(MISSING, "the bundle to search with (a folder written by spnas-export)")
    previous_bundles: list[str] = opt(factory=list, help="bundles it replaces, newest first: searched until "
                                                         "`bundle`'s versions cover what they cover")
    backend: Backend = opt(Backend.litert, "embedder of queries and new listings")
    threads: Optional[int] = opt(1, "embedder threads")
    command: ServeCommand = opt(ServeCommand.all, "all | gateway (or as the first word: spnas-serve gateway)")
    root: str = opt("runs/serve", "folder of the listing store, photos, repository and service announcements")
    locations: Locations = opt(factory=Locations, help="store / repository / photos URLs (default under root)")
    resolver: Optional[str] = opt(None, "how the gateway finds index services: dir:<folder> (default "
                                        "<root>/services), file:<yaml>, kubernetes[:<namespace>] (EndpointSlices "
                                        "through the Kubernetes API), <module>:<Class>")
    seed_index: bool = opt(True, "fill an empty listing store with the data set's train photos")
    seed_limit: Optional[int] = opt(None, "seed at most this many listings")
    seed_times: SeedTimes = opt(SeedTimes.photo, "photo (EXIF DateTimeOriginal, else file time) | spread")
    seed_hours: int = opt(48, "seed_times=spread: spread seeded listings over the past hours")
    host: str = opt("127.0.0.1", "gateway address (beyond loopback only with a token)")
    port: int = opt(8000, "gateway port (0: any free port)")
    workers: int = opt(1, "gateway worker processes")
    grpc_host: str = opt("127.0.0.1", "address the index services listen on (beyond loopback: token and TLS)")
    build_every_s: float = opt(60.0, "command=all: how often due builds run and services follow the repository")
    limits: Limits = opt(factory=Limits, help="request limits")
    auth: AuthConfig = opt(factory=AuthConfig, help="bearer token")
    tls: TlsConfig = opt(factory=TlsConfig, help="TLS of the index services")
    delta: DeltaConfig = opt(factory=DeltaConfig, help="the gateway's index of listings newer than the versions")
    retention: RetentionConfig = opt(factory=RetentionConfig, help="versions kept")
    build: BuildConfig = opt(factory=BuildConfig, help="index builds")
    search: SearchParams = opt(factory=SearchParams, help="index service search knobs and caps")
    partial: PartialResults = opt(PartialResults.allow, "allow | fail: a search when part of its window has no answer")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.port <= 65535 or self.workers < 1 or self.build_every_s <= 0 or self.seed_hours < 1:
            raise ConfigError("port must be 0..65535, workers >= 1, build_every_s > 0 and seed_hours >= 1")


@dataclass
class IndexAppConfig(RunConfig):
    """`spnas-index`: index versions, built from the listing store and served one per service."""

    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"experiment": None}])
    command: IndexCommand = opt(IndexCommand.list, "build | build-due | serve | fetch | list | retain "
                                                   "(or as the first word: spnas-index build-due)")
    bundle: Optional[str] = opt(None, "build, build-due: the bundle whose embeddings the versions hold")
    backend: Backend = opt(Backend.litert, "embedder of photos missing from the embedding cache")
    threads: Optional[int] = opt(None, "FAISS and embedder threads (null: all cores)")
    root: str = opt("runs/serve", "default home of the store, photos and repository")
    locations: Locations = opt(factory=Locations, help="store / repository / photos URLs (default under root)")
    granularity: Optional[Granularity] = opt(None, "build: hour | day | month")
    period: Optional[str] = opt(None, "build: the period, e.g. 2026-11-26T15, 2026-11-26 or 2026-11 (UTC)")
    now: Optional[int] = opt(None, "build-due, retain: the time (unix seconds) to act for (default: now)")
    version: Optional[str] = opt(None, "serve, fetch: a version folder or its repository URL")
    dest: Optional[str] = opt(None, "fetch: local folder to copy the version into")
    host: str = opt("127.0.0.1", "serve: listen address (beyond loopback: token and TLS)")
    port: int = opt(0, "serve: port (0: any free port)")
    announce_dir: Optional[str] = opt(None, "serve: folder to announce the address in while serving (for a "
                                            "directory resolver); build-due, retain: versions announced there "
                                            "are in use and kept")
    follow_s: float = opt(1.0, "serve: how often the listing store's changes are read")
    source: Optional[str] = opt(None, "serve: the repository URL of version=<folder>: a copy that fails "
                                      "verification is fetched again from it")
    verify_every_s: float = opt(3600.0, "serve: sha256 of the served files this often (0: at load only); a copy "
                                        "that no longer matches is taken out and the process exits 7")
    stop_grace_s: float = opt(15.0, "serve: on SIGTERM, calls in flight get this long to finish")
    drain_s: float = opt(0.0, "serve: on SIGTERM, keep answering this long after turning NOT_SERVING (where no "
                              "preStop hook waits for the endpoints to update)")
    lock_timeout_s: float = opt(600.0, "build-due, retain: wait this long for another job's retention lock, then "
                                       "leave retention to it")
    health_port: Optional[int] = opt(None, "serve: also answer the standard gRPC health service alone, in plaintext, "
                                           "on this port (kubelet's gRPC probes speak no TLS)")
    granularities: Optional[list[Granularity]] = opt(None, "build-due: build only these (e.g. [hour] for the hourly "
                                                           "CronJob); null: all")
    servings: Optional[str] = opt(None, "build-due: then make the IndexServing resources match the versions the "
                                        "planner uses: kubernetes (this pod's namespace) or kubernetes:<namespace>")
    servings_wait_s: float = opt(300.0, "build-due with servings: how long retired servings wait for the new ones "
                                        "to be available before the next build retires them")
    progress: bool = opt(True, "show progress bars (rate, ETA) of long builds")
    build: BuildConfig = opt(factory=BuildConfig, help="index builds")
    retention: RetentionConfig = opt(factory=RetentionConfig, help="versions kept")
    search: SearchParams = opt(factory=SearchParams, help="search knobs and caps of a served version")
    auth: AuthConfig = opt(factory=AuthConfig, help="serve: bearer token")
    tls: TlsConfig = opt(factory=TlsConfig, help="serve: TLS")

    def __post_init__(self) -> None:
        super().__post_init__()
        c = self.command
        if c in (IndexCommand.build, IndexCommand.build_due) and not self.bundle:
            raise ConfigError(f"spnas-index {c.name.replace('_', '-')} needs bundle=<folder written by spnas-export>")
        if c is IndexCommand.build and (self.granularity is None or not self.period):
            raise ConfigError("spnas-index build needs granularity=hour|day|month and period=<...>")
        if c in (IndexCommand.serve, IndexCommand.fetch) and not self.version:
            raise ConfigError(f"spnas-index {c.name} needs version=<version folder or repository URL>")
        if c is IndexCommand.fetch and not self.dest:
            raise ConfigError("spnas-index fetch needs dest=<folder>")
        if not 0 <= self.port <= 65535 or self.follow_s <= 0:
            raise ConfigError("port must be 0..65535 and follow_s > 0")
        if self.verify_every_s < 0 or self.stop_grace_s < 0 or self.drain_s < 0 or self.lock_timeout_s < 0:
            raise ConfigError("verify_every_s, stop_grace_s, drain_s and lock_timeout_s must be >= 0")
        if self.servings is not None and self.servings.partition(":")[0] != "kubernetes":
            raise ConfigError(f"servings={self.servings}: kubernetes or kubernetes:<namespace>")
