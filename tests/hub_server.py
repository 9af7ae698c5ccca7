"""A tiny in-memory Hugging Face Hub for the test suite (a test fixture, not product code).

`HubServer` speaks the part of the Hub HTTP protocol that `huggingface_hub` 2.x and `transformers` use to create
repos, upload (inline + LFS) files, commit, list and download.  It serves on an ephemeral 127.0.0.1 port from
background threads.  The `hub_server` fixture starts one with empty storage, points this process at it (env vars
*and* the constants huggingface_hub/transformers/datasets computed from them at import time), blocks every
non-loopback connection, and offers `hub_server.env` for subprocesses.  Xet is switched off (HF_HUB_DISABLE_XET), so
uploads take the classic LFS batch protocol and downloads are plain GETs on /resolve.
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

TOKEN = "hf_testHubServerFakeToken0123456789"  # the only token accepted for writes (and whoami)
USER = "testuser"  # namespace given to create_repo("bare-name")
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".parquet", ".arrow",
                ".npy", ".npz", ".gguf", ".pkl", ".zip", ".gz", ".tar")
LFS_MIN_SIZE = 10 * 1024 * 1024  # like the Hub: big files (or a binary sample) go to LFS whatever their name
TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
API = r"/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"  # repo ids here always have a namespace
GIT = r"/(?:(?P<type>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def _git_sha1(data: bytes) -> str:  # == `git hash-object`: what the client compares for inline files
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
    def oid(self) -> str:  # git blob id; of the pointer file for LFS files
        return _git_sha1(self.pointer if self.lfs else self.data)

    def entry(self, path: str) -> dict:  # an item of /tree and /paths-info
        out = {"type": "file", "path": path, "size": len(self.data), "oid": self.oid}
        if self.lfs:
            out["lfs"] = {"oid": self.sha256, "size": len(self.data), "pointerSize": len(self.pointer)}
        return out


def _folder(path: str) -> dict:
    return {"type": "directory", "path": path, "oid": _git_sha1(path.encode())}


@dataclass
class Repo:
    type: str
    id: str
    private: bool = False
    refs: dict[str, str] = field(default_factory=dict)  # branch -> commit sha
    snapshots: dict[str, dict[str, File]] = field(default_factory=dict)  # commit sha -> {path: File}; all kept
    commits: dict[str, dict] = field(default_factory=dict)  # commit sha -> metadata, in /commits format
    created: str = field(default_factory=_now)

    def resolve(self, rev: str) -> str | None:  # branch name, full sha or unambiguous sha prefix
        if rev in self.refs:
            return self.refs[rev]
        hits = [sha for sha in self.snapshots if len(rev) >= 7 and sha.startswith(rev.lower())]
        return hits[0] if len(hits) == 1 else None

    def commit(self, branch: str, files: dict[str, File], title: str, message: str = "") -> str:
        parent = self.refs.get(branch)
        sha = hashlib.sha1(f"{parent}{uuid.uuid4()}".encode()).hexdigest()  # a fresh 40-hex id per commit
        self.snapshots[sha], self.refs[branch] = files, sha
        self.commits[sha] = {"id": sha, "title": title, "message": message, "date": _now(),
                             "authors": [{"user": USER}], "parents": [parent] if parent else []}
        return sha


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers or {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive like the Hub, so every response must carry Content-Length
    server: HubServer
    ROUTES = [  # (method, regex on the raw %-encoded path, handler); GET routes also answer HEAD
        ("GET", r"/api/whoami-v2", "whoami"),
        ("POST", r"/api/repos/create", "create_repo"),
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
        ("PUT", r"/_lfs/(?P<oid>[0-9a-f]{64})", "lfs_put"),  # the upload URL lfs_batch hands out (no auth)
        ("POST", r"/_lfs/(?P<oid>[0-9a-f]{64})/verify", "lfs_verify"),
        ("GET", rf"{GIT}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
    ]

    def do_GET(self): self._dispatch()  # noqa: E704
    do_HEAD = do_POST = do_PUT = do_GET

    def log_message(self, *args):  # keep test output clean: the log is server.requests
        pass

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.server.requests.append((self.command, unquote(url.path)))
        try:
            self.body = self._read_body()
            for method, pattern, name in self.ROUTES:
                m = re.fullmatch(pattern, url.path)
                if m and self.command in (method, "HEAD" if method == "GET" else method):
                    return getattr(self, name)(**{k: unquote(v) for k, v in m.groupdict().items() if v is not None})
            self.server.unhandled.append((self.command, self.path))
            raise HubError(404, f"test hub: no route for {self.command} {url.path}")
        except HubError as e:
            self._send(e.status, {"error": str(e)}, {"X-Error-Message": str(e), **e.headers,
                                                     **({"X-Error-Code": e.code} if e.code else {})})
        except Exception as e:  # a bug in the fake: the fixture fails the test at teardown
            self.server.errors.append(f"{self.command} {self.path}: {e!r}")
            self._send(500, {"error": repr(e)})

    def _read_body(self) -> bytes:  # huggingface_hub always sends Content-Length (never chunked bodies)
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True  # the unread body would desync this keep-alive connection
            raise HubError(411, "test hub: send a Content-Length")
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

    def _auth(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            raise HubError(401, "Invalid credentials in Authorization header")

    def _repo(self, repo: str, type: str | None) -> Repo:
        if (found := self.server.repos.get((TYPES[type or "models"], repo))) is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return found

    def _files(self, r: Repo, rev: str) -> tuple[str, dict[str, File]]:
        if (sha := r.resolve(rev)) is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return sha, r.snapshots[sha]

    def _url(self, r: Repo) -> str:
        return f"{self.server.url}/{PREFIX[r.type]}{r.id}"

    # ---- account, repos, refs ----------------------------------------------------------------------------------
    def whoami(self):
        self._auth()
        self._send(200, {"type": "user", "id": "0" * 24, "name": USER, "fullname": "Test User", "orgs": [],
                         "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}})

    def create_repo(self):
        self._auth()
        p = self._json()
        key = (p.get("type") or "model", f"{p.get('organization') or USER}/{p['name']}")
        with self.server.lock:
            if key in self.server.repos:  # the client reads "url" even from the 409 (exist_ok=True)
                url = self._url(self.server.repos[key])
                return self._send(409, {"error": "You already created this repo", "url": url})
            r = self.server.repos[key] = Repo(*key, private=p.get("visibility") == "private")
            attrs = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES).encode()
            r.commit("main", {".gitattributes": File(attrs, False)}, "initial commit")  # like the Hub
        self._send(200, {"url": self._url(r), "name": r.id, "id": r.id})

    def validate_yaml(self):  # HfApi reads JSON {"errors", "warnings"}; ModelCard.validate() asks for text/plain
        import yaml

        m = re.match(r"\s*---\r?\n(.*?)\r?\n---\s*(?:\r?\n|$)", self._json().get("content", ""), re.S)
        if not m:
            return self._send(200, {"warnings": [{"message": "Empty or missing yaml metadata in repo card"}]})
        try:
            meta = yaml.safe_load(m.group(1)) or {}
            errors = [] if isinstance(meta, dict) else ["YAML metadata must be a mapping"]
            errors += [f'"{k}" must be a string' for k in ("license", "library_name", "pipeline_tag")
                       if isinstance(meta, dict) and k in meta and not isinstance(meta[k], str)]  # a Hub schema rule
        except yaml.YAMLError as e:
            errors = [f"Invalid YAML in metadata: {e}"]
        if errors and "text/plain" in self.headers.get("Accept", ""):
            return self._send(400, "\n".join(errors).encode(), {"Content-Type": "text/plain"})
        self._send(400 if errors else 200, {"errors": [{"message": e} for e in errors], "warnings": []})

    def repo_info(self, type, repo, rev="main"):
        r = self._repo(repo, type)
        sha, files = self._files(r, rev)
        siblings = [{"rfilename": p, "size": len(f.data), "blobId": f.oid} | (
            {"lfs": {"sha256": f.sha256, "size": len(f.data), "pointerSize": len(f.pointer)}} if f.lfs else {})
            for p, f in sorted(files.items())]
        self._send(200, {"_id": r.id, "id": r.id, "modelId": r.id, "author": r.id.split("/")[0], "sha": sha,
                         "lastModified": r.commits[sha]["date"], "createdAt": r.created, "private": r.private,
                         "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
                         "siblings": siblings})

    def refs(self, type, repo):
        branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": sha}
                    for b, sha in sorted(self._repo(repo, type).refs.items())]
        self._send(200, {"branches": branches, "converts": [], "tags": [], "pullRequests": []})

    def list_commits(self, type, repo, rev):
        r = self._repo(repo, type)
        sha, history = self._files(r, rev)[0], []
        while sha:  # first-parent walk, newest first
            history.append(r.commits[sha])
            sha = (r.commits[sha]["parents"] or [None])[0]
        self._send(200, history)

    def create_branch(self, type, repo, rev):
        self._auth()
        r = self._repo(repo, type)
        with self.server.lock:
            if rev in r.refs:
                raise HubError(409, f"Reference already exists: refs/heads/{rev}")
            r.refs[rev] = self._files(r, self._json().get("startingPoint") or "main")[0]
        self._send(200, {})

    # ---- listing -----------------------------------------------------------------------------------------------
    def tree(self, type, repo, rev, path=""):
        files = self._files(self._repo(repo, type), rev)[1]
        recursive, pre = self.query.get("recursive", "").lower() in ("1", "true"), path.strip("/") + "/" * bool(path)
        folders, entries = set(), []
        for p, f in sorted(files.items()):
            if p.startswith(pre):
                parts = p[len(pre):].split("/")
                if recursive or len(parts) == 1:
                    entries.append(f.entry(p))
                depth = len(parts) - 1 if recursive else min(1, len(parts) - 1)  # folders above the file to list
                folders.update(pre + "/".join(parts[:i]) for i in range(1, depth + 1))
        if path and not entries:
            raise HubError(404, f"{path} does not exist on {rev}", "EntryNotFound")
        self._send(200, [_folder(d) for d in sorted(folders)] + entries)  # a single page: no Link header

    def paths_info(self, type, repo, rev):  # form-encoded: paths=a&paths=b&expand=False
        files = self._files(self._repo(repo, type), rev)[1]
        out = []
        for p in (p.strip("/") for p in parse_qs(self.body.decode()).get("paths", [])):
            if p in files:
                out.append(files[p].entry(p))
            elif any(f.startswith(p + "/") for f in files):
                out.append(_folder(p))
        self._send(200, out)  # missing paths are just left out, like on the Hub

    # ---- upload: preupload -> LFS batch -> PUT (+ verify) -> commit --------------------------------------------
    def preupload(self, type, repo, rev):
        self._auth()
        sha, files = self._files(self._repo(repo, type), rev)
        out = []
        for f in self._json()["files"]:
            binary = b"\0" in base64.b64decode(f["sample"])
            lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] >= LFS_MIN_SIZE or binary
            old = files.get(f["path"])  # the client drops unchanged files when this oid equals its own
            out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                        "oid": None if old is None else old.sha256 if old.lfs else old.oid})
        self._send(200, {"files": out, "commitOid": sha})

    def lfs_batch(self, repo, type=None):
        self._auth()
        self._repo(repo, type)
        objects = []
        for o in self._json()["objects"]:
            obj = {"oid": o["oid"], "size": o["size"]}
            if o["oid"] not in self.server.lfs:  # objects we already hold get no actions: the client skips them
                href = f"{self.server.url}/_lfs/{o['oid']}"
                obj.update(authenticated=True, actions={"upload": {"href": href}, "verify": {"href": href + "/verify"}})
            objects.append(obj)
        self._send(200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"})

    def lfs_put(self, oid):
        if hashlib.sha256(self.body).hexdigest() != oid:
            raise HubError(400, "sha256 mismatch for uploaded LFS object")
        self.server.lfs[oid] = self.body
        self._send(200)

    def lfs_verify(self, oid):
        if oid not in self.server.lfs or len(self.server.lfs[oid]) != self._json().get("size"):
            raise HubError(404, f"LFS object {oid} not found")
        self._send(200, {})

    def commit(self, type, repo, rev):  # ndjson: header, then file / lfsFile / deletedFile / deletedFolder lines
        self._auth()
        r = self._repo(repo, type)
        if self.query.get("create_pr"):
            raise HubError(400, "test hub: create_pr is not supported")
        header, *ops = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        with self.server.lock:
            if rev not in r.refs:
                raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            parent = header["value"].get("parentCommit")
            if parent and r.resolve(parent) != r.refs[rev]:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(r.snapshots[r.refs[rev]])
            for op in ops:
                key, v = op["key"], op["value"]
                if key == "file":
                    files[v["path"]] = File(base64.b64decode(v["content"]), lfs=False)
                elif key == "lfsFile":
                    if v["oid"] not in self.server.lfs:
                        raise HubError(422, f"LFS object {v['oid']} was never uploaded")
                    files[v["path"]] = File(self.server.lfs[v["oid"]], lfs=True)
                elif key == "deletedFile":
                    if files.pop(v["path"], None) is None:
                        raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                elif key == "deletedFolder":
                    files = {p: f for p, f in files.items() if not p.startswith(v["path"].rstrip("/") + "/")}
                else:
                    raise HubError(400, f"test hub: unsupported commit operation {key!r}")
            sha = r.commit(rev, files, header["value"].get("summary", ""), header["value"].get("description", ""))
        self._send(200, {"success": True, "commitOid": sha, "commitUrl": f"{self._url(r)}/commit/{sha}"})

    # ---- download ----------------------------------------------------------------------------------------------
    def resolve(self, repo, rev, path, type=None):
        sha, files = self._files(self._repo(repo, type), rev)
        if (f := files.get(path)) is None:  # X-Repo-Commit lets the client cache the miss (.no_exist)
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": sha})
        data, status = f.data, 200
        headers = {"X-Repo-Commit": sha, "ETag": f'"{f.sha256 if f.lfs else f.oid}"', "Accept-Ranges": "bytes"}
        if f.lfs:  # the Hub sends these on its redirect to the CDN; we serve the bytes directly (no X-Xet-* ever)
            headers.update({"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(len(data))})
        if rng := re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "")):  # resumed downloads
            start, end = int(rng[1]), min(int(rng[2] or len(data) - 1), len(data) - 1)
            data, status, headers["Content-Range"] = data[start:end + 1], 206, f"bytes {start}-{end}/{len(f.data)}"
        self._send(status, data, headers)


class HubServer(ThreadingHTTPServer):
    """The fake Hub, a context manager. Attributes: url, env, repos, lfs, requests, unhandled, errors."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.url, self.token, self.user = f"http://127.0.0.1:{self.server_address[1]}", TOKEN, USER
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}  # (repo type, repo id) -> Repo
        self.lfs: dict[str, bytes] = {}  # sha256 -> content, shared by all repos
        self.requests: list[tuple[str, str]] = []  # (method, unquoted path) of every request, in order
        self.unhandled: list[tuple[str, str]] = []  # requests no route matched (answered 404)
        self.errors: list[str] = []  # exceptions raised by the fake itself (answered 500)
        self.env: dict[str, str] = {}  # filled by activate()
        self._conns: list[tuple[threading.Thread, socket.socket]] = []
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), name="hub-server", daemon=True)

    def process_request(self, request, client_address):  # one tracked thread per connection, joined in stop()
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
        for t, sock in self._conns:  # wake handlers still blocked on idle keep-alive connections
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            t.join(timeout=10)
        self.server_close()
        self._thread.join(timeout=10)

    def activate(self, monkeypatch: pytest.MonkeyPatch, hf_home: Path) -> None:
        """Point this process at the server: env vars + import-time constants, all undone by `monkeypatch`."""
        home = str(hf_home)
        dirs = {"HF_HOME": home, "HF_HUB_CACHE": f"{home}/hub", "HF_ASSETS_CACHE": f"{home}/assets",
                "HF_XET_CACHE": f"{home}/xet", "HF_TOKEN_PATH": f"{home}/token", "HF_MODULES_CACHE": f"{home}/modules",
                "HF_DATASETS_CACHE": f"{home}/datasets"}
        env = {**dirs, "HF_ENDPOINT": self.url, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0",
               "TRANSFORMERS_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1",
               "HF_HUB_DISABLE_UPDATE_CHECK": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
               "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        # Import before touching os.environ, so that their constants hold the real values and monkeypatch puts those
        # back afterwards (a first import under our env would bake this soon-dead URL in for the whole session).
        mods = {}
        for name in ("huggingface_hub.constants", "huggingface_hub.hf_api", "huggingface_hub.utils._cache_manager",
                     "huggingface_hub.utils._cache_assets", "huggingface_hub.utils._git_credential",
                     "transformers.utils.hub", "transformers.dynamic_module_utils", "datasets.config"):
            try:
                mods[name] = importlib.import_module(name)
            except ImportError:
                pass
        for k in ("HUGGINGFACE_CO_STAGING", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_CACHE", "HF_OIDC_ID_TOKEN",
                  "HUGGINGFACE_ASSETS_CACHE", "HF_HUB_DISABLE_IMPLICIT_TOKEN"):
            monkeypatch.delenv(k, raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        self.env = dict(os.environ)  # the full environment, for subprocess.run(..., env=hub_server.env)

        hub_dirs = dict(HF_HOME=home, HF_HUB_CACHE=dirs["HF_HUB_CACHE"], HUGGINGFACE_HUB_CACHE=dirs["HF_HUB_CACHE"],
                        HF_ASSETS_CACHE=dirs["HF_ASSETS_CACHE"], HUGGINGFACE_ASSETS_CACHE=dirs["HF_ASSETS_CACHE"],
                        HF_XET_CACHE=dirs["HF_XET_CACHE"], HF_TOKEN_PATH=dirs["HF_TOKEN_PATH"],
                        HF_STORED_TOKENS_PATH=f"{home}/stored_tokens", AGENT_HARNESSES_PATH=f"{home}/agents.json",
                        CHECK_FOR_UPDATE_DONE_PATH=f"{home}/.update", CHECK_FOR_SKILL_UPDATE_DONE_PATH=f"{home}/.skill")
        patches = {  # module -> {attribute (dotted) -> value}; attributes a version lacks are skipped
            "huggingface_hub.constants": dict(
                hub_dirs, ENDPOINT=self.url,
                HUGGINGFACE_CO_URL_TEMPLATE=self.url + "/{repo_id}/resolve/{revision}/{filename}",
                HF_URL_HOSTS=mods["huggingface_hub.constants"].HF_URL_HOSTS | {"127.0.0.1"}, HF_HUB_OFFLINE=False,
                HF_HUB_DISABLE_XET=True, HF_HUB_DISABLE_TELEMETRY=True, HF_HUB_DISABLE_IMPLICIT_TOKEN=False,
                HF_HUB_DISABLE_UPDATE_CHECK=True),
            "huggingface_hub.hf_api": {"api.endpoint": self.url},  # the HfApi() behind huggingface_hub.upload_folder()
            "huggingface_hub.utils._cache_manager": {"HF_HUB_CACHE": dirs["HF_HUB_CACHE"]},
            "huggingface_hub.utils._cache_assets": {"HF_ASSETS_CACHE": dirs["HF_ASSETS_CACHE"]},
            "huggingface_hub.utils._git_credential": {"ENDPOINT": self.url},
            "transformers.utils.hub": {"_hf_api": None, "HF_MODULES_CACHE": dirs["HF_MODULES_CACHE"]},  # lazy HfApi
            "transformers.dynamic_module_utils": {"HF_MODULES_CACHE": dirs["HF_MODULES_CACHE"]},
            "datasets.config": dict(HF_ENDPOINT=self.url, HF_HUB_OFFLINE=False, HF_DATASETS_OFFLINE=False,
                                    HUB_DATASETS_URL=self.url + "/datasets/{repo_id}/resolve/{revision}/{path}",
                                    HF_CACHE_HOME=home, HF_DATASETS_CACHE=Path(dirs["HF_DATASETS_CACHE"])),
        }
        for name, attrs in patches.items():
            for attr, value in attrs.items():
                *parents, leaf = attr.split(".")
                obj = mods.get(name)
                for p in parents:
                    obj = getattr(obj, p, None)
                if obj is not None and hasattr(obj, leaf):
                    monkeypatch.setattr(obj, leaf, value)
        _block_non_loopback(monkeypatch)


def _block_non_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to reach the real network (DNS lookup or connect) fail loudly while the test runs."""
    local = {"127.0.0.1", "::1", "localhost"}
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in local:
            raise ConnectionRefusedError(f"hub_server fixture: blocked connection to {address}")
        return real_connect(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if host is not None and host not in local:
            raise socket.gaierror(f"hub_server fixture: blocked DNS lookup of {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def hub_server(tmp_path, monkeypatch):
    """A fresh, empty fake Hub for one test; this process and `hub_server.env` subprocesses talk only to it."""
    with HubServer() as server:
        server.activate(monkeypatch, tmp_path / "hf_home")
        yield server
    assert not server.errors, f"the test hub server crashed: {server.errors}"
    assert not [t for t in threading.enumerate() if t.name.startswith("hub-server")], "hub server threads left"
