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

Integrity: a version is served from a verified private copy (`open_version` copies it, `fetch` checks
every file's sha256 and copies again what does not match), so a file changed in place in the repository
never reaches a running service. `Repository.check` verifies the repository's own copy; a build that
finds its version there corrupt builds it again, and `publish` replaces a content-named file whose
bytes no longer match its name. An unreadable manifest is reported (`Repository.problems`) and skipped.
`retain` never removes a version that a running service still uses (`in_use`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
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

log = logging.getLogger(__name__)
FORMAT = "spnas.index-version/1"
MANIFEST = "manifest.json"
ROLES = ("index", "ids", "ts")
OPTIONAL_ROLES = ("vectors",)  # the exact vectors of a compressed index, re-ranked from disk (`factory.py`)
LOCAL_NAMES = {"index": "index.faiss", "ids": "ids.npy", "ts": "ts.npy", "vectors": "vectors.npy"}
VersionRef = tuple  # (bundle_id, granularity, period, version): what "in use" names

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

    @property
    def ref(self) -> VersionRef:
        """What names this version wherever it is stored (services in use name it so)."""
        return (self.bundle_id, self.granularity, self.period, self.version)

    def roles(self) -> tuple[str, ...]:
        """The files this version has (`vectors` only for indexes re-ranked from disk)."""
        return ROLES + tuple(r for r in OPTIONAL_ROLES if r in self.files)

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
                  ids: np.ndarray, ts: np.ndarray, photos: Any) -> str:
    """sha256 of everything a version is built from: equal inputs, equal version. `photos`: a list of str,
    or an `S64` array (hashed in chunks, the same bytes as the joined list)."""
    h = hashlib.sha256(json.dumps([FORMAT, bundle, g.name, period, factory, params], sort_keys=True).encode())
    h.update(np.ascontiguousarray(ids, "<i8").tobytes())
    h.update(np.ascontiguousarray(ts, "<i8").tobytes())
    step = 100_000
    for i in range(0, len(photos), step):
        chunk = photos[i:i + step]
        part = b"\n".join(chunk.tolist()) if isinstance(chunk, np.ndarray) else "\n".join(chunk).encode()
        h.update((b"\n" if i else b"") + part)
    return h.hexdigest()


def corrupt_error(info: VersionInfo, name: str, where: Any) -> VersionCorruptError:
    return VersionCorruptError(
        f"version {info.key}: {name} in {where} does not match its manifest (missing, truncated or changed); "
        f"refusing to serve it: fetch it again (spnas-index fetch copies what does not match), or rebuild it "
        f"(spnas-index build granularity={info.granularity} period={info.period} or the next build-due, which "
        f"verify the repository and replace the files that do not match)")


def sizes_ok(folder: Path, info: VersionInfo) -> bool:
    """Every file present with its manifest's size (a cheap check, e.g. against a truncated file)."""
    for role in info.roles():
        f = info.files.get(role)
        p = folder / f["name"] if f else None
        if p is None or not p.is_file() or p.stat().st_size != f["size"]:
            return False
    return True


def verify(folder: Path, info: VersionInfo) -> None:
    """Every file of the version present with its manifest's sha256; `VersionCorruptError` otherwise."""
    for role in info.roles():
        f = info.files.get(role)
        p = folder / f["name"] if f else None
        if p is None or not p.is_file() or p.stat().st_size != f["size"] or sha256_file(p) != f["sha256"]:
            raise corrupt_error(info, f["name"] if f else role, folder)


def _sha256_fs(fs: Any, path: str, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def _matches(fs: Any, path: str, want: dict[str, Any]) -> bool:
    """Whether the file at `fs:path` has the size and sha256 of `want` (absent: False)."""
    try:
        if fs.size(path) != want["size"]:
            return False
    except (FileNotFoundError, OSError):
        return False
    return _sha256_fs(fs, path) == want["sha256"]


class Repository:
    """Index versions under one fsspec URL."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.url = url
        self.fs, self.root = fsspec.core.url_to_fs(url)
        self.root = self.root.rstrip("/")
        self.protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self.problems: dict[str, str] = {}  # manifest path -> why it was skipped (unreadable, not ours)

    def prefix(self, bundle: str, g: Granularity | str, period: str, version: str) -> str:
        return f"{self.root}/{bundle}/{getattr(g, 'name', g)}/{period}/{version}"

    def _url(self, path: str) -> str:
        return path if self.protocol in ("file", "local") else f"{self.protocol}://{path.lstrip('/')}"

    # ------------------------------------------------------------------ reading
    def _read_manifest(self, path: str) -> VersionInfo | None:
        """The manifest at `path`; None when it is gone (removed meanwhile) or unreadable (reported in
        `problems`: a truncated or foreign manifest is a skipped version, never a crash)."""
        try:
            info = VersionInfo.from_json(json.loads(self.fs.cat_file(path)), self._url(path.rsplit("/", 1)[0]))
            for role in ROLES:
                f = info.files[role]
                if not (isinstance(f["name"], str) and isinstance(f["sha256"], str) and isinstance(f["size"], int)):
                    raise ValueError(f"the entry of {role} is malformed")
        except FileNotFoundError:
            self.problems.pop(path, None)
            return None
        except (ValueError, KeyError, TypeError, VersionCorruptError) as e:
            if path not in self.problems:
                log.warning("skipping %s: an unreadable manifest (%s); the next build of its period writes it again",
                            path, str(e)[:120])
            self.problems[path] = f"unreadable manifest ({type(e).__name__}: {str(e)[:120]})"
            return None
        self.problems.pop(path, None)
        return info

    def versions(self, bundle: str | None = None) -> list[VersionInfo]:
        """Every published version (those with a readable manifest), oldest period first; unreadable
        manifests are skipped and listed in `problems`."""
        pattern = f"{self.root}/{bundle or '*'}/*/*/*/{MANIFEST}"
        out = [v for p in sorted(self.fs.glob(pattern)) if (v := self._read_manifest(p)) is not None]
        return sorted(out, key=lambda v: (v.start_ts, -v.end_ts, v.snapshot_seq))

    def get(self, bundle: str, g: Granularity, period: str, version: str) -> VersionInfo | None:
        """The version's manifest; None when it has none, or an unreadable one (in `problems`)."""
        return self._read_manifest(f"{self.prefix(bundle, g, period, version)}/{MANIFEST}")

    def check(self, info: VersionInfo) -> None:
        """Verify the repository's own copy of a version (size and sha256 of every file, read through
        fsspec); `VersionCorruptError` naming the first file that does not match."""
        dst = self.prefix(info.bundle_id, info.granularity, info.period, info.version)
        for role in info.roles():
            f = info.files[role]
            if not _matches(self.fs, f"{dst}/{f['name']}", f):
                raise corrupt_error(info, f["name"], self._url(dst))

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
        """Upload a built version from `local` (files `index.faiss`, `ids.npy`, `ts.npy`, and `vectors.npy`
        when the index is re-ranked from disk): data files under content names first, then the manifest,
        the only step that makes the version visible. A content-named file already there is kept only when
        its bytes still match its name (a corrupt one is replaced)."""
        dst = self.prefix(info.bundle_id, info.granularity, info.period, info.version)
        self.fs.makedirs(dst, exist_ok=True)
        for role in ROLES + OPTIONAL_ROLES:
            p = local / LOCAL_NAMES[role]
            if role in OPTIONAL_ROLES and not p.is_file():
                continue
            sha = sha256_file(p)
            name = f"{p.stem}.{sha[:16]}{p.suffix}"
            info.files[role] = {"name": name, "sha256": sha, "size": p.stat().st_size}
            if not _matches(self.fs, f"{dst}/{name}", info.files[role]):
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

    def remove_incomplete(self, older_than_s: float, keep: set[str] = frozenset()) -> list[str]:
        """Files of builds that never published (no manifest, or not named by it), older than the limit
        (a folder in `keep`, one in use, is left whole)."""
        removed = []
        for folder in self.fs.glob(f"{self.root}/*/*/*/*"):
            if not self.fs.isdir(folder) or folder.rstrip("/") in keep:
                continue
            try:
                named = {f["name"] for f in json.loads(self.fs.cat_file(f"{folder}/{MANIFEST}"))["files"].values()}
                named.add(MANIFEST)
            except (FileNotFoundError, ValueError, KeyError, TypeError, AttributeError):
                named = set()
            for f in self.fs.ls(folder, detail=False):
                age = self._age_s(f)
                if f.rsplit("/", 1)[-1] not in named and (older_than_s <= 0 or (age is not None and age > older_than_s)):
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
    except ValueError as e:
        raise VersionCorruptError(f"{source}: its {MANIFEST} is unreadable ({str(e)[:120]}); the next build of its "
                                  f"period writes it again (spnas-index build-due)") from None
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return fs, path.rstrip("/"), info, proto in ("file", "local")


def open_version(source: str, cache_dir: str | Path) -> tuple[Path, VersionInfo]:
    """(local folder, manifest) of a version given as a repository URL, local or not, or as a folder:
    copied into `cache_dir/<bundle>/<granularity>/<period>/<version>` and verified (`fetch`), so a file
    changed in place in the repository never reaches the service that serves it. A folder already in
    `cache_dir` is that copy (verified by whoever loads it)."""
    if Path(source).is_dir():
        folder = Path(source).resolve()
        info = read_local(folder)
        if folder.is_relative_to(Path(cache_dir).resolve()):
            return folder, info
        import fsspec

        fs, path = fsspec.filesystem("file"), str(folder)
    else:
        fs, path, info, _ = _remote(source)
    dest = Path(cache_dir) / info.bundle_id / info.granularity / info.period / info.version
    return fetch(fs, path, info, dest), info


def fetch_url(source: str, dest: str | Path) -> tuple[Path, VersionInfo]:
    """Copy the version at a repository URL into `dest` and verify it."""
    fs, path, info, _ = _remote(source)
    return fetch(fs, path, info, Path(dest)), info


def fetch(fs: Any, src: str, info: VersionInfo, dest: Path) -> Path:
    """Copy a version's files from `fs:src` into the local folder `dest` and verify them; the manifest
    is copied last, so a half-fetched folder is never taken for a version (what an initContainer runs).
    A file already in `dest` is kept only when its sha256 matches; anything else is copied again, so a
    corrupt copy heals. A repository copy that does not match raises `VersionCorruptError`."""
    dest.mkdir(parents=True, exist_ok=True)
    for role in info.roles():
        f = info.files[role]
        p = dest / f["name"]
        if not (p.is_file() and p.stat().st_size == f["size"] and sha256_file(p) == f["sha256"]):
            (dest / MANIFEST).unlink(missing_ok=True)  # not a verified copy until every file is
            tmp = dest / f".{f['name']}.{uuid.uuid4().hex}.tmp"
            fs.get_file(f"{src}/{f['name']}", str(tmp))
            if tmp.stat().st_size != f["size"] or sha256_file(tmp) != f["sha256"]:
                tmp.unlink(missing_ok=True)
                raise corrupt_error(info, f["name"], src)
            tmp.replace(p)
    (dest / MANIFEST).write_text(json.dumps(info.to_json(), indent=2) + "\n")
    return dest


def read_local(folder: str | Path) -> VersionInfo:
    """The manifest of a version folder on this machine."""
    p = Path(folder) / MANIFEST
    if not p.is_file():
        raise InputNotFoundError(f"{folder} is not an index version (no {MANIFEST}); fetch one with spnas-index fetch")
    try:
        return VersionInfo.from_json(json.loads(p.read_text()), str(folder))
    except (ValueError, KeyError, TypeError) as e:  # truncated or not ours: the same clear error as a fetch
        raise VersionCorruptError(f"{folder}: its {MANIFEST} is unreadable ({str(e)[:120]}); fetch the version "
                                  f"again (spnas-index fetch) or let the next build of its period write it "
                                  f"(spnas-index build-due)") from None


def retain(repo: Repository, cfg: RetentionConfig, now: int, bundle: str | None = None,
           in_use: set[VersionRef] | frozenset = frozenset(), damaged: set[VersionRef] | frozenset = frozenset()
           ) -> list[VersionInfo]:
    """Keep the newest version of each period within the last N periods of its granularity; remove the
    rest. An hour or day past its window goes only once a coarser version covers it (a month past its
    window goes regardless: those listings leave the search). A version in `in_use` (a running service
    serves it, or may restart with it: `VersionInfo.ref`) is not removed; it goes at a later run, once
    no service uses it; unless it is replaced and `damaged` (its files do not match: no restart could
    use it, and its inputs are gone). Returns what was removed."""
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
        if v.ref in in_use and not (replaced and v.ref in damaged):
            if replaced or (expired and covered):
                log.info("keeping %s: a service still uses it", v.key)
            continue
        if replaced or (expired and covered):
            repo.remove(v)
            removed.append(v)
    repo.remove_incomplete(cfg.incomplete_after_s, {repo.prefix(*ref) for ref in in_use})
    return removed
