"""A tiny in-memory Hugging Face Hub for the test suite (test fixture, not product code).

`HubServer` speaks the subset of the Hub HTTP protocol that `huggingface_hub` 2.x and `transformers` use to
create repos, upload (regular + LFS) files, commit, list and download.  It runs on an ephemeral 127.0.0.1 port in
background threads.  The `hub_server` pytest fixture starts one with fresh storage, points the current process at it
(env vars *and* the module constants that huggingface_hub/transformers/datasets read at import time), blocks any
non-loopback connection, and exposes `hub_server.env` for subprocesses.  Xet is disabled (HF_HUB_DISABLE_XET), so
uploads use the legacy LFS batch protocol and downloads plain GETs on /resolve.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

TOKEN = "hf_testHubServerFakeToken0123456789"  # the only token accepted for writes
USER = "testuser"  # namespace used when create_repo() gets a bare name
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".parquet", ".arrow",
                ".npy", ".npz", ".gguf", ".pkl", ".zip", ".gz", ".tar")
LFS_MIN_SIZE = 10 * 1024 * 1024  # the Hub also routes any file >10MB (or binary sample) to LFS
PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
REPO = r"(?P<repo>[^/]+/[^/]+)"  # repo ids always have a namespace here
API = rf"/api/(?P<type>models|datasets|spaces)/{REPO}"
GIT = rf"/(?:(?P<type>datasets|spaces)/)?{REPO}"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def _git_sha1(data: bytes) -> str:  # == `git hash-object`, what the client compares for regular files
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class File:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.data)}\n".encode()

    @property
    def oid(self) -> str:  # git blob id (of the pointer file for LFS files)
        return _git_sha1(self.pointer if self.lfs else self.data)

    def entry(self, path: str) -> dict:  # shape of /tree and /paths-info items
        out = {"type": "file", "path": path, "size": len(self.data), "oid": self.oid}
        if self.lfs:
            out["lfs"] = {"oid": self.sha256, "size": len(self.data), "pointerSize": len(self.pointer)}
        return out


@dataclass
class Repo:
    type: str
    id: str
    private: bool = False
    refs: dict[str, str] = field(default_factory=dict)  # branch name -> commit sha
    snapshots: dict[str, dict[str, File]] = field(default_factory=dict)  # commit sha -> {path: File}
    commits: dict[str, dict] = field(default_factory=dict)  # commit sha -> metadata (incl. parents)
    created: str = field(default_factory=_now)

    def resolve(self, rev: str) -> str | None:
        if rev in self.refs:
            return self.refs[rev]
        hits = [sha for sha in self.snapshots if len(rev) >= 7 and sha.startswith(rev.lower())]
        return hits[0] if len(hits) == 1 else None

    def commit(self, branch: str, files: dict[str, File], title: str, message: str = "") -> str:
        parent = self.refs.get(branch)
        sha = hashlib.sha1(f"{parent}{uuid.uuid4()}".encode()).hexdigest()  # fresh 40-hex id per commit
        self.snapshots[sha] = files
        self.commits[sha] = {"id": sha, "title": title, "message": message, "date": _now(),
                             "authors": [{"user": USER}], "parents": [parent] if parent else []}
        self.refs[branch] = sha
        return sha


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers or {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real Hub; every response carries Content-Length
    server: HubServer

    ROUTES = [  # (method, path regex, handler); regexes match the raw (still %-encoded) path
        ("GET", r"/api/whoami-v2", "whoami"),
        ("POST", r"/api/repos/create", "create_repo"),
        ("DELETE", r"/api/repos/delete", "delete_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("GET", rf"{API}(?:/revision/(?P<rev>[^/]+))?", "repo_info"),
        ("GET", rf"{API}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "tree"),
        ("POST", rf"{API}/paths-info/(?P<rev>[^/]+)", "paths_info"),
        ("GET", rf"{API}/refs", "refs"),
        ("GET", rf"{API}/commits/(?P<rev>[^/]+)", "list_commits"),
        ("POST", rf"{API}/branch/(?P<rev>[^/]+)", "create_branch"),
        ("POST", rf"{API}/preupload/(?P<rev>[^/]+)", "preupload"),
        ("POST", rf"{API}/commit/(?P<rev>[^/]+)", "commit"),
        ("POST", rf"{GIT}\.git/info/lfs/objects/batch", "lfs_batch"),
        ("PUT", r"/_lfs/(?P<oid>[0-9a-f]{64})", "lfs_put"),  # upload URL handed out by lfs_batch (no auth)
        ("POST", r"/_lfs/(?P<oid>[0-9a-f]{64})/verify", "lfs_verify"),
        ("GET", rf"{GIT}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
    ]

    # ---- plumbing ----------------------------------------------------------------------------------------------
    def do_GET(self): self._dispatch("GET")  # noqa: E704
    def do_HEAD(self): self._dispatch("HEAD")  # noqa: E704
    def do_POST(self): self._dispatch("POST")  # noqa: E704
    def do_PUT(self): self._dispatch("PUT")  # noqa: E704
    def do_DELETE(self): self._dispatch("DELETE")  # noqa: E704

    def log_message(self, fmt, *args):  # keep pytest output clean; the request log is on server.requests
        pass

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.body = self._read_body()
        self.server.requests.append((method, unquote(url.path)))
        try:
            for verb, pattern, name in self.ROUTES:
                m = re.fullmatch(pattern, url.path)
                if m and (verb == method or (verb, method) == ("GET", "HEAD")):
                    groups = {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
                    return getattr(self, name)(**groups)
            self.server.unhandled.append((method, self.path))
            raise HubError(404, f"test hub: no route for {method} {url.path}")
        except HubError as e:
            headers = {"X-Error-Message": str(e), **e.headers, **({"X-Error-Code": e.code} if e.code else {})}
            self._send(e.status, {"error": str(e)}, headers)
        except Exception as e:  # a bug in the fake: surface it loudly (the fixture fails the test on teardown)
            self.server.errors.append(f"{method} {self.path}: {e!r}")
            self._send(500, {"error": repr(e)})

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes | dict | list = b"", headers: dict | None = None) -> None:
        ctype = "application/octet-stream"
        if not isinstance(body, bytes):
            body, ctype = json.dumps(body).encode(), "application/json"
        self.send_response(status)
        for k, v in {"Content-Type": ctype, "Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self):
        return json.loads(self.body or b"{}")

    def _require_auth(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            raise HubError(401, "Invalid credentials in Authorization header")

    def _repo(self, repo: str, type: str | None = None) -> Repo:
        repo_type = {"models": "model", "datasets": "dataset", "spaces": "space"}.get(type or "models")
        found = self.server.repos.get((repo_type, repo))
        if found is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return found

    def _sha(self, repo: Repo, rev: str) -> str:
        sha = repo.resolve(rev)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return sha

    def _url(self, repo: Repo) -> str:
        return f"{self.server.url}/{PREFIX[repo.type]}{repo.id}"

    # ---- account / repos ---------------------------------------------------------------------------------------
    def whoami(self):
        self._require_auth()
        self._send(200, {"type": "user", "id": "0" * 24, "name": USER, "fullname": "Test User", "orgs": [],
                         "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}})

    def create_repo(self):
        self._require_auth()
        p = self._json()
        repo_type, rid = p.get("type") or "model", f"{p.get('organization') or USER}/{p['name']}"
        with self.server.lock:
            if (repo_type, rid) in self.server.repos:
                url = self._url(self.server.repos[(repo_type, rid)])  # the client reads "url" even on 409
                return self._send(409, {"error": f"You already created this {repo_type} repo", "url": url})
            repo = self.server.repos[(repo_type, rid)] = Repo(repo_type, rid, p.get("visibility") == "private")
            attrs = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES).encode()
            repo.commit("main", {".gitattributes": File(attrs, False)}, "initial commit")
        self._send(200, {"url": self._url(repo), "name": rid, "id": rid})

    def delete_repo(self):
        self._require_auth()
        p = self._json()
        rid = f"{p.get('organization') or USER}/{p['name']}"
        if self.server.repos.pop((p.get("type") or "model", rid), None) is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        self._send(200, {})

    def validate_yaml(self):
        import yaml

        content = self._json().get("content", "")
        m = re.match(r"\s*---\r?\n(.*?)\r?\n---\s*(?:\r?\n|$)", content, re.S)
        if not m:
            return self._send(200, {"warnings": [{"message": "Empty or missing yaml metadata in repo card"}]})
        try:
            meta = yaml.safe_load(m.group(1))
        except yaml.YAMLError as e:
            return self._send(400, {"errors": [{"message": f"Invalid YAML in metadata: {e}"}]})
        if meta is not None and not isinstance(meta, dict):
            return self._send(400, {"errors": [{"message": "YAML metadata must be a mapping"}]})
        bad = [k for k in ("license", "library_name", "pipeline_tag") if k in (meta or {}) and not isinstance(meta[k], str)]
        if bad:  # one of the Hub's schema checks, enough to exercise the error path
            return self._send(400, {"errors": [{"message": f'"{k}" must be a string'} for k in bad]})
        self._send(200, {"warnings": []})

    def repo_info(self, type, repo, rev="main"):
        r = self._repo(repo, type)
        sha = self._sha(r, rev)
        siblings = [{"rfilename": p, "size": f.entry(p)["size"], "blobId": f.oid,
                     **({"lfs": {"sha256": f.sha256, "size": len(f.data), "pointerSize": len(f.pointer)}}
                        if f.lfs else {})} for p, f in sorted(r.snapshots[sha].items())]
        self._send(200, {"_id": r.id, "id": r.id, "modelId": r.id, "author": r.id.split("/")[0], "sha": sha,
                         "lastModified": r.commits[sha]["date"], "createdAt": r.created, "private": r.private,
                         "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
                         "siblings": siblings})

    def refs(self, type, repo):
        r = self._repo(repo, type)
        branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": s} for b, s in sorted(r.refs.items())]
        self._send(200, {"branches": branches, "converts": [], "tags": [], "pullRequests": []})

    def list_commits(self, type, repo, rev):
        r = self._repo(repo, type)
        sha, out = self._sha(r, rev), []
        while sha:
            out.append(r.commits[sha])
            sha = (r.commits[sha]["parents"] or [None])[0]
        self._send(200, out)

    def create_branch(self, type, repo, rev):
        self._require_auth()
        r = self._repo(repo, type)
        with self.server.lock:
            if rev in r.refs:
                raise HubError(409, f"Reference already exists: refs/heads/{rev}")
            r.refs[rev] = self._sha(r, self._json().get("startingPoint") or "main")
        self._send(200, {})

    # ---- listing -----------------------------------------------------------------------------------------------
    def _entries(self, files: dict[str, File], prefix: str, recursive: bool) -> list[dict]:
        pre = prefix.strip("/") + "/" if prefix.strip("/") else ""
        dirs, out = set(), []
        for path, f in sorted(files.items()):
            if not path.startswith(pre):
                continue
            parts = path[len(pre):].split("/")
            if len(parts) == 1 or recursive:
                out.append(f.entry(path))
            dirs.update(pre + "/".join(parts[:i]) for i in range(1, len(parts) if recursive else min(2, len(parts))))
        return [{"type": "directory", "path": d, "oid": _git_sha1(d.encode())} for d in sorted(dirs)] + out

    def tree(self, type, repo, rev, path=""):
        r = self._repo(repo, type)
        files = r.snapshots[self._sha(r, rev)]
        entries = self._entries(files, path, self.query.get("recursive", "").lower() in ("1", "true"))
        if path and not entries:
            raise HubError(404, f"{path} does not exist on {rev}", "EntryNotFound")
        self._send(200, entries)

    def paths_info(self, type, repo, rev):
        r = self._repo(repo, type)
        files = r.snapshots[self._sha(r, rev)]
        ctype = self.headers.get("Content-Type", "")
        paths = self._json()["paths"] if "json" in ctype else parse_qs(self.body.decode()).get("paths", [])
        out = []
        for p in paths:
            p = p.strip("/")
            if p in files:
                out.append(files[p].entry(p))
            elif any(f.startswith(p + "/") for f in files):
                out.append({"type": "directory", "path": p, "oid": _git_sha1(p.encode())})
        self._send(200, out)

    # ---- upload: preupload -> LFS batch + PUT (+verify) -> commit ----------------------------------------------
    def preupload(self, type, repo, rev):
        self._require_auth()
        r = self._repo(repo, type)
        files = r.snapshots[self._sha(r, rev)]
        out = []
        for f in self._json()["files"]:
            sample = base64.b64decode(f.get("sample", ""))
            lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] >= LFS_MIN_SIZE or b"\0" in sample
            old = files.get(f["path"])  # the client skips unchanged files when this oid matches its local one
            oid = None if old is None else (old.sha256 if old.lfs else old.oid)
            out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                        "oid": oid})
        self._send(200, {"files": out, "commitOid": self._sha(r, rev)})

    def lfs_batch(self, repo, type=None):
        self._require_auth()
        self._repo(repo, type)
        objects = []
        for o in self._json()["objects"]:
            obj = {"oid": o["oid"], "size": o["size"]}
            if o["oid"] not in self.server.lfs:  # already stored objects get no actions => client skips them
                base = f"{self.server.url}/_lfs/{o['oid']}"
                obj.update(authenticated=True, actions={"upload": {"href": base}, "verify": {"href": base + "/verify"}})
            objects.append(obj)
        self._send(200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"})

    def lfs_put(self, oid):
        if hashlib.sha256(self.body).hexdigest() != oid:
            raise HubError(400, "sha256 mismatch for uploaded LFS object")
        self.server.lfs[oid] = self.body
        self._send(200)

    def lfs_verify(self, oid):
        if len(self.server.lfs.get(oid, b"")) != self._json().get("size", -1) or oid not in self.server.lfs:
            raise HubError(404, f"LFS object {oid} not found")
        self._send(200, {})

    def commit(self, type, repo, rev):
        self._require_auth()
        r = self._repo(repo, type)
        if self.query.get("create_pr"):
            raise HubError(400, "test hub: create_pr is not supported")
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        header = lines[0]["value"]
        with self.server.lock:
            if rev not in r.refs:
                raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            if header.get("parentCommit") and r.resolve(header["parentCommit"]) != r.refs[rev]:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(r.snapshots[r.refs[rev]])
            for item in lines[1:]:
                key, v = item["key"], item["value"]
                if key == "file":
                    files[v["path"]] = File(base64.b64decode(v["content"]), False)
                elif key == "lfsFile":
                    if v["oid"] not in self.server.lfs:
                        raise HubError(422, f"LFS object {v['oid']} was never uploaded")
                    files[v["path"]] = File(self.server.lfs[v["oid"]], True)
                elif key == "deletedFile":
                    if files.pop(v["path"], None) is None:
                        raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                elif key == "deletedFolder":
                    files = {p: f for p, f in files.items() if not p.startswith(v["path"].rstrip("/") + "/")}
                else:
                    raise HubError(400, f"test hub: unsupported commit operation {key!r}")
            sha = r.commit(rev, files, header.get("summary", ""), header.get("description", ""))
        self._send(200, {"success": True, "commitOid": sha, "commitUrl": f"{self._url(r)}/commit/{sha}"})

    # ---- download ----------------------------------------------------------------------------------------------
    def resolve(self, repo, rev, path, type=None):
        r = self._repo(repo, type)
        sha = self._sha(r, rev)
        f = r.snapshots[sha].get(path)
        if f is None:  # X-Repo-Commit lets the client cache the non-existence (.no_exist)
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": sha})
        data, status = f.data, 200
        headers = {"X-Repo-Commit": sha, "ETag": f'"{f.sha256 if f.lfs else f.oid}"', "Accept-Ranges": "bytes"}
        if f.lfs:  # what the Hub sends for LFS files (on its redirect to the CDN; we serve the bytes directly)
            headers.update({"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(len(data))})
        rng = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if rng:  # resumed downloads
            start, end = int(rng[1]), int(rng[2]) if rng[2] else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{min(end, len(data) - 1)}/{len(data)}"
            data, status = data[start:end + 1], 206
        self._send(status, data, headers)


class HubServer(ThreadingHTTPServer):
    """The fake Hub. Usable as a context manager; `url`, `env`, `requests` (method, path) log, `repos`."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs: dict[str, bytes] = {}  # sha256 -> content, shared by all repos
        self.requests: list[tuple[str, str]] = []
        self.unhandled: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.env: dict[str, str] = {}
        self._conns: list[tuple[threading.Thread, socket.socket]] = []
        self._thread = threading.Thread(target=self.serve_forever, name="hub-server", daemon=True)

    def process_request(self, request, client_address):  # one named thread per connection, tracked for stop()
        t = threading.Thread(target=self.process_request_thread, args=(request, client_address),
                             name="hub-server-conn", daemon=True)
        self._conns.append((t, request))
        t.start()

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        try:  # drop huggingface_hub's pooled keep-alive connections to us
            from huggingface_hub.utils._http import close_session

            close_session()
        except ImportError:
            pass
        self.shutdown()
        for t, sock in self._conns:  # unblock handlers still waiting on idle keep-alive sockets
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            t.join(timeout=10)
        self.server_close()
        self._thread.join(timeout=10)

    def activate(self, monkeypatch: pytest.MonkeyPatch, hf_home: Path) -> None:
        """Point this process (env + import-time constants) at the server; `monkeypatch` undoes it all."""
        home = str(hf_home)
        paths = {"HF_HOME": home, "HF_HUB_CACHE": f"{home}/hub", "HF_ASSETS_CACHE": f"{home}/assets",
                 "HF_XET_CACHE": f"{home}/xet", "HF_TOKEN_PATH": f"{home}/token", "HF_MODULES_CACHE": f"{home}/modules",
                 "HF_DATASETS_CACHE": f"{home}/datasets"}
        flags = {"HF_ENDPOINT": self.url, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0",
                 "TRANSFORMERS_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1",
                 "DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                 "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        unset = ["HUGGINGFACE_CO_STAGING", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_CACHE", "HUGGINGFACE_ASSETS_CACHE",
                 "HF_HUB_DISABLE_IMPLICIT_TOKEN", "HF_OIDC_ID_TOKEN", "HF_OIDC_RESOURCE", "HF_STORED_TOKENS_PATH"]
        # Import these *before* touching os.environ: their import-time constants must keep the real values so that
        # monkeypatch restores them after the test (a first import under our env would bake the dead URL in forever).
        mods = {}
        for name in ("huggingface_hub.constants", "huggingface_hub.hf_api", "huggingface_hub.utils._cache_manager",
                     "huggingface_hub.utils._cache_assets", "huggingface_hub.utils._git_credential",
                     "transformers.utils.hub", "transformers.dynamic_module_utils", "datasets.config"):
            try:
                mods[name] = importlib.import_module(name)
            except ImportError:
                pass
        for k in unset:
            monkeypatch.delenv(k, raising=False)
        for k, v in {**paths, **flags}.items():
            monkeypatch.setenv(k, v)
        self.env = dict(os.environ)  # full environment for subprocess.run(..., env=hub_server.env)

        c = mods["huggingface_hub.constants"]
        patches = {
            "huggingface_hub.constants": dict(
                ENDPOINT=self.url, HUGGINGFACE_CO_URL_TEMPLATE=self.url + "/{repo_id}/resolve/{revision}/{filename}",
                HF_URL_HOSTS=c.HF_URL_HOSTS | {"127.0.0.1"}, HF_HUB_OFFLINE=False, HF_HUB_DISABLE_XET=True,
                HF_HUB_DISABLE_TELEMETRY=True, HF_HUB_DISABLE_IMPLICIT_TOKEN=False, HF_HUB_DISABLE_UPDATE_CHECK=True,
                HF_HOME=home, HF_HUB_CACHE=paths["HF_HUB_CACHE"], HUGGINGFACE_HUB_CACHE=paths["HF_HUB_CACHE"],
                HF_ASSETS_CACHE=paths["HF_ASSETS_CACHE"], HUGGINGFACE_ASSETS_CACHE=paths["HF_ASSETS_CACHE"],
                HF_XET_CACHE=paths["HF_XET_CACHE"], HF_TOKEN_PATH=paths["HF_TOKEN_PATH"],
                HF_STORED_TOKENS_PATH=f"{home}/stored_tokens", CHECK_FOR_UPDATE_DONE_PATH=f"{home}/.update_check",
                CHECK_FOR_SKILL_UPDATE_DONE_PATH=f"{home}/.skill_check", AGENT_HARNESSES_PATH=f"{home}/.agents.json"),
            "huggingface_hub.hf_api": {"api.endpoint": self.url},  # module-level HfApi() behind hf_api.create_repo...
            "huggingface_hub.utils._cache_manager": {"HF_HUB_CACHE": paths["HF_HUB_CACHE"]},
            "huggingface_hub.utils._cache_assets": {"HF_ASSETS_CACHE": paths["HF_ASSETS_CACHE"]},
            "huggingface_hub.utils._git_credential": {"ENDPOINT": self.url},
            "transformers.utils.hub": {"_hf_api": None, "HF_MODULES_CACHE": paths["HF_MODULES_CACHE"]},
            "transformers.dynamic_module_utils": {"HF_MODULES_CACHE": paths["HF_MODULES_CACHE"]},
            "datasets.config": dict(HF_ENDPOINT=self.url, HF_HUB_OFFLINE=False, HF_DATASETS_OFFLINE=False,
                                    HUB_DATASETS_URL=self.url + "/datasets/{repo_id}/resolve/{revision}/{path}",
                                    HF_CACHE_HOME=home, HF_DATASETS_CACHE=Path(paths["HF_DATASETS_CACHE"])),
        }
        for name, attrs in patches.items():
            for attr, value in attrs.items():
                obj = mods.get(name)
                *parents, leaf = attr.split(".")
                for p in parents:
                    obj = getattr(obj, p, None)
                if obj is not None and hasattr(obj, leaf):
                    monkeypatch.setattr(obj, leaf, value)
        _block_non_loopback(monkeypatch)


def _block_non_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to reach the real network (DNS or connect) fail loudly for the duration of the test."""
    local = {"127.0.0.1", "::1", "localhost"}
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in local:
            raise ConnectionRefusedError(f"hub_server fixture: blocked connection to {address}")
        return real_connect(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in local and host is not None:
            raise socket.gaierror(f"hub_server fixture: blocked DNS lookup of {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def hub_server(tmp_path, monkeypatch):
    """A fresh fake Hub for one test; this process (and `hub_server.env` subprocesses) talk only to it."""
    with HubServer() as server:
        server.activate(monkeypatch, tmp_path / "hf_home")
        yield server
    assert not server.errors, f"test hub server crashed: {server.errors}"
