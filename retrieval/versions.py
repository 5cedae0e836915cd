"""The artifact repository of index versions, on any fsspec filesystem (`file://` by default).

    <root>/<bundle_id>/<hour|day|month>/<period>/<version>/
        index.<sha>.faiss    the FAISS index (its ids are row positions, rows in listing-time order)
        ids.<sha>.npy        the listing id of each row (int64)
        ts.<sha>.npy         the listing time of each row (int64, ascending)
        manifest.json        written last: what the version is, and the sha256 of every file

A version is named by its inputs (`inputs_digest`: bundle, period, factory and every listing's id,
time and photo hash), so the same inputs name the same version and a build that finds it does
nothing. Versions are immutable; data files are named by their own content, so two builds racing on
one version never mix their files: the manifest that lands last names its own. Until the manifest
exists nothing of a version is visible; `retain` removes what killed builds leave behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from spnas_core.errors import InputNotFoundError, VersionCorruptError
from spnas_core.files import sha256_file

from .config import Granularity, RetentionConfig
from .faults import failpoint
from .periods import latest_finished, parent

FORMAT = "spnas.index-version/1"
MANIFEST = "manifest.json"
ROLES = ("index", "ids", "ts")


@dataclasses.dataclass
class VersionInfo:
    """A version's manifest (and, once found, where it is)."""

    bundle_id: str
    granularity: str
    period: str
    version: str
    start_ts: int
    end_ts: int
    count: int
    dim: int
    factory: str
    snapshot_seq: int
    inputs_sha256: str
    files: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    created: str = ""
    build_s: float = 0.0
    format: str = FORMAT
    url: str = ""

    @property
    def g(self) -> Granularity:
        return Granularity[self.granularity]

    @property
    def key(self) -> str:
        return f"{self.bundle_id[:12]}/{self.granularity}/{self.period}/{self.version}"

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("url")
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], url: str = "") -> "VersionInfo":
        if d.get("format") != FORMAT:
            raise VersionCorruptError(f"{url or 'manifest'}: not an index version manifest ({d.get('format')!r})")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names and k != "url"}, url=url)


def inputs_digest(bundle: str, g: Granularity, period: str, factory: str, params: dict[str, Any],
                  ids: np.ndarray, ts: np.ndarray, photos: list[str]) -> str:
    """sha256 of everything a version is built from: equal inputs, equal version."""
    h = hashlib.sha256(json.dumps([FORMAT, bundle, g.name, period, factory, params], sort_keys=True).encode())
    h.update(np.ascontiguousarray(ids, "<i8").tobytes())
    h.update(np.ascontiguousarray(ts, "<i8").tobytes())
    h.update("\n".join(photos).encode())
    return h.hexdigest()


def verify(folder: Path, info: VersionInfo) -> None:
    """Every file of the version present with its manifest's sha256; `VersionCorruptError` otherwise."""
    for role in ROLES:
        f = info.files.get(role)
        p = folder / f["name"] if f else None
        if p is None or not p.is_file() or p.stat().st_size != f["size"] or sha256_file(p) != f["sha256"]:
            raise VersionCorruptError(
                f"version {info.key}: {f['name'] if f else role} in {folder} does not match its manifest (missing, "
                f"truncated or changed); refusing to serve it: fetch it again, or rebuild with spnas-index build "
                f"granularity={info.granularity} period={info.period}")


class Repository:
    """Index versions under one fsspec URL."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.url = url
        self.fs, self.root = fsspec.core.url_to_fs(url)
        self.root = self.root.rstrip("/")
        self.protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]

    def prefix(self, bundle: str, g: Granularity | str, period: str, version: str) -> str:
        return f"{self.root}/{bundle}/{getattr(g, 'name', g)}/{period}/{version}"

    def _url(self, path: str) -> str:
        return path if self.protocol in ("file", "local") else f"{self.protocol}://{path.lstrip('/')}"

    # ------------------------------------------------------------------ reading
    def versions(self, bundle: str | None = None) -> list[VersionInfo]:
        """Every published version (those with a manifest), oldest period first."""
        pattern = f"{self.root}/{bundle or '*'}/*/*/*/{MANIFEST}"
        out = []
        for p in sorted(self.fs.glob(pattern)):
            try:
                out.append(VersionInfo.from_json(json.loads(self.fs.cat_file(p)), self._url(p.rsplit("/", 1)[0])))
            except (FileNotFoundError, ValueError, VersionCorruptError):
                continue  # removed meanwhile, or not ours
        return sorted(out, key=lambda v: (v.start_ts, -v.end_ts, v.snapshot_seq))

    def get(self, bundle: str, g: Granularity, period: str, version: str) -> VersionInfo | None:
        path = f"{self.prefix(bundle, g, period, version)}/{MANIFEST}"
        try:
            return VersionInfo.from_json(json.loads(self.fs.cat_file(path)), self._url(path.rsplit("/", 1)[0]))
        except FileNotFoundError:
            return None

    def local_folder(self, info: VersionInfo) -> Path | None:
        """The version's folder when the repository is this machine's filesystem (served in place)."""
        if self.protocol not in ("file", "local"):
            return None
        return Path(self.prefix(info.bundle_id, info.granularity, info.period, info.version))

    def fetch(self, info: VersionInfo, dest: str | Path) -> Path:
        """Copy a version into a local folder and verify it (see `fetch`)."""
        return fetch(self.fs, self.prefix(info.bundle_id, info.granularity, info.period, info.version), info,
                     Path(dest))

    # ------------------------------------------------------------------ writing
    def publish(self, local: Path, info: VersionInfo) -> VersionInfo:
        """Upload a built version from `local` (files `index.faiss`, `ids.npy`, `ts.npy`): data files under
        content names first, then the manifest, the only step that makes the version visible."""
        dst = self.prefix(info.bundle_id, info.granularity, info.period, info.version)
        self.fs.makedirs(dst, exist_ok=True)
        for role, local_name in zip(ROLES, ("index.faiss", "ids.npy", "ts.npy")):
            p = local / local_name
            sha = sha256_file(p)
            name = f"{p.stem}.{sha[:16]}{p.suffix}"
            info.files[role] = {"name": name, "sha256": sha, "size": p.stat().st_size}
            if not self.fs.exists(f"{dst}/{name}"):
                tmp = f"{dst}/.{name}.{uuid.uuid4().hex}.tmp"
                self.fs.put_file(str(p), tmp)
                self.fs.mv(tmp, f"{dst}/{name}")
        failpoint("build.before_manifest")
        tmp = f"{dst}/.{MANIFEST}.{uuid.uuid4().hex}.tmp"
        self.fs.pipe_file(tmp, (json.dumps(info.to_json(), indent=2) + "\n").encode())
        self.fs.mv(tmp, f"{dst}/{MANIFEST}")
        info.url = self._url(dst)
        return info

    def remove(self, info: VersionInfo) -> None:
        """Unpublish (manifest first, so nobody picks it up meanwhile), then delete the files."""
        dst = self.prefix(info.bundle_id, info.granularity, info.period, info.version)
        self.fs.rm_file(f"{dst}/{MANIFEST}")
        self.fs.rm(dst, recursive=True)

    def _age_s(self, path: str) -> float | None:
        try:
            t = self.fs.modified(path)
            return time.time() - t.timestamp()
        except (NotImplementedError, FileNotFoundError, AttributeError, OSError):
            return None

    def remove_incomplete(self, older_than_s: float) -> list[str]:
        """Files of builds that never published (no manifest, or not named by it), older than the limit."""
        removed = []
        for folder in self.fs.glob(f"{self.root}/*/*/*/*"):
            if not self.fs.isdir(folder):
                continue
            try:
                keep = {f["name"] for f in json.loads(self.fs.cat_file(f"{folder}/{MANIFEST}"))["files"].values()}
                keep.add(MANIFEST)
            except (FileNotFoundError, ValueError, KeyError):
                keep = set()
            for f in self.fs.ls(folder, detail=False):
                age = self._age_s(f)
                if f.rsplit("/", 1)[-1] not in keep and (older_than_s <= 0 or (age is not None and age > older_than_s)):
                    self.fs.rm(f, recursive=True)
                    removed.append(f)
        return removed


def _remote(source: str) -> tuple[Any, str, VersionInfo, bool]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(source)
    try:
        info = VersionInfo.from_json(json.loads(fs.cat_file(f"{path.rstrip('/')}/{MANIFEST}")), source)
    except FileNotFoundError:
        raise InputNotFoundError(f"{source} is not a published index version (no {MANIFEST}); list them with "
                                 f"spnas-index list") from None
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return fs, path.rstrip("/"), info, proto in ("file", "local")


def open_version(source: str, cache_dir: str | Path) -> tuple[Path, VersionInfo]:
    """(local folder, manifest) of a version given as a folder or a repository URL: served in place when
    it is on this machine, else fetched into `cache_dir/<bundle>/<granularity>/<period>/<version>`."""
    if Path(source).is_dir():
        return Path(source), read_local(source)
    fs, path, info, local = _remote(source)
    if local:
        return Path(path), info
    dest = Path(cache_dir) / info.bundle_id / info.granularity / info.period / info.version
    if (dest / MANIFEST).is_file():
        return dest, read_local(dest)
    return fetch(fs, path, info, dest), info


def fetch_url(source: str, dest: str | Path) -> tuple[Path, VersionInfo]:
    """Copy the version at a repository URL into `dest` and verify it."""
    fs, path, info, _ = _remote(source)
    return fetch(fs, path, info, Path(dest)), info


def fetch(fs: Any, src: str, info: VersionInfo, dest: Path) -> Path:
    """Copy a version's files from `fs:src` into the local folder `dest` and verify them; the manifest
    is copied last, so a half-fetched folder is never taken for a version (what an initContainer runs)."""
    dest.mkdir(parents=True, exist_ok=True)
    for role in ROLES:
        name = info.files[role]["name"]
        if not (dest / name).is_file() or (dest / name).stat().st_size != info.files[role]["size"]:
            tmp = dest / f".{name}.{uuid.uuid4().hex}.tmp"
            fs.get_file(f"{src}/{name}", str(tmp))
            tmp.replace(dest / name)
    verify(dest, info)
    (dest / MANIFEST).write_text(json.dumps(info.to_json(), indent=2) + "\n")
    return dest


def read_local(folder: str | Path) -> VersionInfo:
    """The manifest of a version folder on this machine."""
    p = Path(folder) / MANIFEST
    if not p.is_file():
        raise InputNotFoundError(f"{folder} is not an index version (no {MANIFEST}); fetch one with spnas-index fetch")
    return VersionInfo.from_json(json.loads(p.read_text()), str(folder))


def retain(repo: Repository, cfg: RetentionConfig, now: int, bundle: str | None = None) -> list[VersionInfo]:
    """Keep the newest version of each period within the last N periods of its granularity; remove the
    rest. An hour or day past its window goes only once a coarser version covers it (a month past its
    window goes regardless: those listings leave the search). Returns what was removed."""
    keep_n = {Granularity.hour: cfg.hours, Granularity.day: cfg.days, Granularity.month: cfg.months}
    oldest = {g: latest_finished(g, now, n)[-1][1] for g, n in keep_n.items()}
    vs = repo.versions(bundle)
    have = {(v.bundle_id, v.granularity, v.period) for v in vs}
    newest: dict[tuple[str, str, str], VersionInfo] = {}
    for v in vs:
        k = (v.bundle_id, v.granularity, v.period)
        if k not in newest or (v.snapshot_seq, v.created) > (newest[k].snapshot_seq, newest[k].created):
            newest[k] = v
    removed = []
    for v in vs:
        replaced = newest[(v.bundle_id, v.granularity, v.period)] is not v
        expired = v.start_ts < oldest[v.g]
        up = parent(v.g, v.period)
        covered = up is None or (v.bundle_id, up[0].name, up[1]) in have
        if replaced or (expired and covered):
            repo.remove(v)
            removed.append(v)
    repo.remove_incomplete(cfg.incomplete_after_s)
    return removed
