"""A Hugging Face Hub stand-in for the tests: the HTTP endpoints that `huggingface_hub` 2.4, `transformers` 5.23 and
`datasets` 5.2 really call to create a repo, commit files (regular and LFS), read repo info, list files and
download them. The real client code then runs unchanged against 127.0.0.1.

Why the standard library (`http.server.ThreadingHTTPServer` in a thread): the protocol is a dozen JSON and file
routes; a framework would add a dependency and an event loop for nothing the tests need.

Storage, under one folder on disk:
- `blobs/<sha256>`: every file's bytes, content-addressed (shared by all repos and revisions);
- `repos/<type>/<namespace>/<name>.json`: the repo's commits (sha -> parent, message, and the full file table:
  path -> blob, size, git oid, LFS or not) and its branches (name -> commit sha). A commit is a snapshot, so every
  old commit sha stays resolvable.

What is not here: pull requests, tags, deleting repos or branches, pagination, Xet storage (the tests
set HF_HUB_DISABLE_XET=1), and any route nobody calls. An unknown route answers 404 `X-Error-Code: NotImplemented`
and is kept in `server.unknown_requests`, so a client call we lack shows up in a failing test.
"""

import base64
import fnmatch
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml
from conftest import REPO_ROOT

logger = logging.getLogger(__name__)

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
# Files the Hub's default .gitattributes sends to LFS (the ones our clients upload), and its size limit for plain git.
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.parquet", "*.arrow", "*.h5", "*.onnx", "*.zip")
LFS_SIZE_LIMIT = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in LFS_PATTERNS).encode()


def git_blob_oid(content: bytes) -> str:
    """What git names a blob: sha1 of "blob <size>\\0" + content."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The pointer file git stores for an LFS file; its git oid is the file's `oid` in listings."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


class HubError(Exception):
    """An HTTP error the way the Hub sends it: status, `X-Error-Code` (which the client maps to an exception
    class) and a JSON body with `error`."""

    def __init__(self, status: int, message: str, code: str | None = None, body: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.body = status, message, code, body


class RepoStore:
    """Repos, commits and blobs on disk. One lock: commits to a repo are serialized, as on the Hub."""

    def __init__(self, root: Path):
        self.root = root
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()

    # Blobs --------------------------------------------------------------------------------------------------------

    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def has_blob(self, sha256: str, size: int) -> bool:
        path = self.blob_path(sha256)
        return path.is_file() and path.stat().st_size == size

    def put_blob(self, content: bytes) -> str:
        sha256 = hashlib.sha256(content).hexdigest()
        path = self.blob_path(sha256)
        if not path.is_file():
            with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as staged:
                staged.write(content)
            os.replace(staged.name, path)  # a blob is complete or absent
        return sha256

    # Repos --------------------------------------------------------------------------------------------------------

    def repo_path(self, repo_type: str, repo_id: str) -> Path:
        return self.root / "repos" / repo_type / f"{repo_id}.json"

    def load(self, repo_type: str, repo_id: str) -> dict | None:
        path = self.repo_path(repo_type, repo_id)
        return json.loads(path.read_text()) if path.is_file() else None

    def save(self, repo_type: str, repo_id: str, repo: dict) -> None:
        path = self.repo_path(repo_type, repo_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_suffix(".tmp")
        staged.write_text(json.dumps(repo))
        os.replace(staged, path)

    def create(self, repo_type: str, repo_id: str, private: bool) -> bool:
        """A new repo with the Hub's first commit (a .gitattributes). False if it exists."""
        with self.lock:
            if self.load(repo_type, repo_id) is not None:
                return False
            repo = {"private": private, "commits": {}, "branches": {}}
            self.add_commit(
                repo, "main", {".gitattributes": self.entry_for(GITATTRIBUTES, lfs=False)}, "initial commit"
            )
            self.save(repo_type, repo_id, repo)
            return True

    def entry_for(self, content: bytes, lfs: bool) -> dict:
        return {"blob": self.put_blob(content), "size": len(content), "lfs": lfs, "git_oid": git_blob_oid(content)}

    @staticmethod
    def add_commit(repo: dict, branch: str, files: dict, message: str) -> str:
        parent = repo["branches"].get(branch)
        record = {"parent": parent, "message": message, "date": time.time(), "files": files}
        sha = hashlib.sha1(json.dumps(record, sort_keys=True).encode()).hexdigest()
        repo["commits"][sha] = record
        repo["branches"][branch] = sha
        return sha

    @staticmethod
    def resolve(repo: dict, revision: str) -> str:
        """A branch name or a full commit sha -> the commit sha."""
        if revision in repo["branches"]:
            return repo["branches"][revision]
        if revision in repo["commits"]:
            return revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


def file_oid(entry: dict) -> str:
    """The git oid the Hub lists for a file (for an LFS file, that of its pointer)."""
    return git_blob_oid(lfs_pointer(entry["blob"], entry["size"])) if entry["lfs"] else entry["git_oid"]


def tree_item(path: str, entry: dict) -> dict:
    item = {"type": "file", "oid": file_oid(entry), "size": entry["size"], "path": path}
    if entry["lfs"]:
        item["lfs"] = {"oid": entry["blob"], "size": entry["size"], "pointerSize": len(lfs_pointer(entry["blob"], 0))}
    return item


def folder_item(path: str) -> dict:
    return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the clients' connection pools expect
    server: "HubServer"

    # Dispatch -----------------------------------------------------------------------------------------------------

    def do_GET(self):
        self.dispatch("GET")

    def do_HEAD(self):
        self.dispatch("HEAD")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        # Split before unquoting: a revision such as refs%2Fpr%2F1 is one segment.
        segments = [unquote(segment) for segment in url.path.strip("/").split("/")]
        self.body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if method in ("POST", "PUT") else b""
        self.server.requests.append((method, url.path))
        try:
            route = self.route(method, segments)
            if route is None:
                self.server.unknown_requests.append(f"{method} {self.path}")
                logger.error("hub_server: no route for %s %s", method, self.path)
                raise HubError(404, f"hub_server does not implement {method} {url.path}", "NotImplemented")
            handler, arguments = route
            if self.server.fail_on is not None and self.server.fail_on(method, url.path):
                self.close_connection = True  # the server "dies": no answer, then it stops listening
                self.server.fail_on = None
                threading.Thread(target=self.server.shutdown, daemon=True).start()
                return
            handler(*arguments)
        except HubError as error:
            self.send_error_json(error)

    def route(self, method: str, segments: list[str]):
        """(handler, arguments) for a request, or None."""
        if method == "POST" and segments == ["api", "repos", "create"]:
            return self.create_repo, ()
        if method == "POST" and segments == ["api", "validate-yaml"]:
            return self.validate_yaml, ()
        if method == "GET" and segments == ["api", "whoami-v2"]:
            return self.whoami, ()
        if len(segments) >= 4 and segments[0] == "api" and segments[1] in REPO_TYPES:
            repo_type, repo_id, rest = REPO_TYPES[segments[1]], "/".join(segments[2:4]), segments[4:]
            if method == "GET" and not rest:
                return self.repo_info, (repo_type, repo_id, "main")
            if method == "GET" and len(rest) == 2 and rest[0] == "revision":
                return self.repo_info, (repo_type, repo_id, rest[1])
            if method == "GET" and len(rest) >= 2 and rest[0] == "tree":
                return self.tree, (repo_type, repo_id, rest[1], "/".join(rest[2:]))
            if method == "POST" and len(rest) == 2 and rest[0] == "paths-info":
                return self.paths_info, (repo_type, repo_id, rest[1])
            if method == "POST" and len(rest) == 2 and rest[0] == "preupload":
                return self.preupload, (repo_type, repo_id, rest[1])
            if method == "POST" and len(rest) == 2 and rest[0] == "commit":
                return self.commit, (repo_type, repo_id, rest[1])
            if method == "POST" and len(rest) == 2 and rest[0] == "branch":
                return self.create_branch, (repo_type, repo_id, rest[1])
        # /{prefix}{namespace}/{name}.git/info/lfs/objects/batch
        if method == "POST" and segments[-4:] == ["info", "lfs", "objects", "batch"]:
            repo_type, repo_segments = self.split_repo_url(segments[:-4])
            if len(repo_segments) == 2 and repo_segments[1].endswith(".git"):
                return self.lfs_batch, (repo_type, f"{repo_segments[0]}/{repo_segments[1][:-4]}")
        if segments[:1] == ["_lfs"] and len(segments) == 2:
            if method == "PUT":
                return self.lfs_put, (segments[1],)
            if method == "POST":
                return self.lfs_verify, ()
        # /{prefix}{namespace}/{name}/resolve/{revision}/{path}
        if method in ("GET", "HEAD"):
            repo_type, repo_segments = self.split_repo_url(segments)
            if len(repo_segments) >= 5 and repo_segments[2] == "resolve":
                repo_id = "/".join(repo_segments[:2])
                return self.resolve_file, (method, repo_type, repo_id, repo_segments[3], "/".join(repo_segments[4:]))
        return None

    @staticmethod
    def split_repo_url(segments: list[str]) -> tuple[str, list[str]]:
        if segments[:1] == ["datasets"]:
            return "dataset", segments[1:]
        if segments[:1] == ["spaces"]:
            return "space", segments[1:]
        return "model", segments

    # Replies ------------------------------------------------------------------------------------------------------

    def send_json(self, value, status: int = 200, headers: dict | None = None) -> None:
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, header in (headers or {}).items():
            self.send_header(name, header)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_error_json(self, error: HubError) -> None:
        headers = {"X-Error-Message": error.message}
        if error.code:
            headers["X-Error-Code"] = error.code
        headers.update(getattr(error, "extra_headers", {}))
        self.send_json(error.body or {"error": error.message}, error.status, headers)

    def log_message(self, format, *args):  # quiet: the tests read `server.requests`; never log headers (the token)
        pass

    # Auth ---------------------------------------------------------------------------------------------------------

    def token(self) -> str | None:
        value = self.headers.get("Authorization", "")
        return value[len("Bearer ") :] if value.startswith("Bearer ") else None

    def require_write_token(self) -> None:
        if self.token() is None:
            raise HubError(401, "Unauthorized: no token")
        if self.token() != self.server.token:
            raise HubError(401, "Invalid credentials in Authorization header")

    def read_repo(self, repo_type: str, repo_id: str) -> dict:
        """The repo, or 404 RepoNotFound (also for a private repo asked without the token, as the Hub does)."""
        repo = self.server.store.load(repo_type, repo_id)
        if repo is None or (repo["private"] and self.token() != self.server.token):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    # Routes -------------------------------------------------------------------------------------------------------

    def whoami(self) -> None:
        self.require_write_token()
        self.send_json({"type": "user", "name": self.server.user, "auth": {"accessToken": {"role": "write"}}})

    def create_repo(self) -> None:
        self.require_write_token()
        payload = json.loads(self.body)
        repo_type = payload.get("type") or "model"
        namespace = payload.get("organization") or self.server.user
        if namespace != self.server.user:  # the token's user belongs to no organization here
            message = f'You don\'t have the rights to create a {repo_type} under the namespace "{namespace}"'
            raise HubError(403, message)
        repo_id = f"{namespace}/{payload['name']}"
        url = f"{self.server.url}/{URL_PREFIXES[repo_type]}{repo_id}"
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        if not self.server.store.create(repo_type, repo_id, private):
            # The client reads `url` from a 409 too when it is told exist_ok.
            raise HubError(
                409, "You already created this repo", body={"error": "You already created this repo", "url": url}
            )
        self.send_json({"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]})

    def validate_yaml(self) -> None:
        content = json.loads(self.body).get("content", "")
        match = re.match(r"^---\n(.*?)\n---", content, re.DOTALL)
        try:
            metadata = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as error:
            raise HubError(400, "Invalid YAML", body={"errors": [{"message": str(error)}], "warnings": []}) from error
        if match and not isinstance(metadata, dict):
            raise HubError(
                400, "Invalid YAML", body={"errors": [{"message": "metadata is not a mapping"}], "warnings": []}
            )
        self.send_json({"errors": [], "warnings": []})

    def repo_info(self, repo_type: str, repo_id: str, revision: str) -> None:
        repo = self.read_repo(repo_type, repo_id)
        sha = RepoStore.resolve(repo, revision)
        commit = repo["commits"][sha]
        siblings = []
        for path, entry in sorted(commit["files"].items()):
            sibling = {"rfilename": path, "size": entry["size"], "blobId": file_oid(entry)}
            if entry["lfs"]:
                sibling["lfs"] = {"size": entry["size"], "sha256": entry["blob"], "pointerSize": 134}
            siblings.append(sibling)
        modified = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(commit["date"]))
        card_data = self.card_data(commit)
        info = {"_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id, "author": repo_id.split("/")[0],
                "sha": sha, "lastModified": modified, "createdAt": modified, "private": repo["private"],
                "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": card_data.get("tags", []),
                "siblings": siblings, "cardData": card_data}  # fmt: skip
        if repo_type == "model":
            info.update(modelId=repo_id, library_name=card_data.get("library_name"))
            info["pipeline_tag"] = card_data.get("pipeline_tag")
        self.send_json(info)

    def card_data(self, commit: dict) -> dict:
        """The README's YAML front matter, as the Hub parses it into `cardData`."""
        entry = commit["files"].get("README.md")
        if entry is None:
            return {}
        text = self.server.store.blob_path(entry["blob"]).read_text(encoding="utf-8", errors="replace")
        match = re.match(r"^---\n(.*?)\n---", text, re.DOTALL)
        try:
            data = yaml.safe_load(match.group(1)) if match else None
        except yaml.YAMLError:
            data = None
        return data if isinstance(data, dict) else {}

    def commit_files(self, repo_type: str, repo_id: str, revision: str) -> tuple[str, dict]:
        repo = self.read_repo(repo_type, repo_id)
        sha = RepoStore.resolve(repo, revision)
        return sha, repo["commits"][sha]["files"]

    def tree(self, repo_type: str, repo_id: str, revision: str, folder: str) -> None:
        _, files = self.commit_files(repo_type, repo_id, revision)
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = f"{folder}/" if folder else ""
        if folder and not any(path.startswith(prefix) for path in files):
            raise HubError(404, f"{folder} does not exist on {revision}", "EntryNotFound")
        items, folders = [], set()
        for path, entry in sorted(files.items()):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            for depth in range(1, len(parts)):  # the folders on the way to the file
                sub_folder = prefix + "/".join(parts[:depth])
                if (recursive or depth == 1) and sub_folder not in folders:
                    folders.add(sub_folder)
                    items.append(folder_item(sub_folder))
            if recursive or len(parts) == 1:
                items.append(tree_item(path, entry))
        self.send_json(items)

    def paths_info(self, repo_type: str, repo_id: str, revision: str) -> None:
        _, files = self.commit_files(repo_type, repo_id, revision)
        if self.headers.get("Content-Type", "").startswith("application/json"):
            paths = json.loads(self.body).get("paths", [])
        else:  # the client posts a form: paths=a&paths=b&expand=True
            paths = parse_qs(self.body.decode()).get("paths", [])
        items = []
        for path in paths:
            path = path.strip("/")
            if path in files:
                items.append(tree_item(path, files[path]))
            elif any(name.startswith(f"{path}/") for name in files):
                items.append(folder_item(path))
        self.send_json(items)

    def preupload(self, repo_type: str, repo_id: str, revision: str) -> None:
        self.require_write_token()
        repo = self.read_repo(repo_type, repo_id)
        files = repo["commits"][RepoStore.resolve(repo, revision)]["files"]
        answers = []
        for file in json.loads(self.body)["files"]:
            sample = base64.b64decode(file["sample"])
            lfs = (
                any(fnmatch.fnmatch(os.path.basename(file["path"]), pattern) for pattern in LFS_PATTERNS)
                or file["size"] > LFS_SIZE_LIMIT
                or b"\0" in sample
            )
            existing = files.get(file["path"])
            # The oid the client compares with its own to skip unchanged files: sha256 for LFS, git sha1 otherwise.
            oid = None if existing is None else (existing["blob"] if existing["lfs"] else existing["git_oid"])
            answers.append({"path": file["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                            "oid": oid})  # fmt: skip
        self.send_json({"files": answers, "commitOid": RepoStore.resolve(repo, revision)})

    def lfs_batch(self, repo_type: str, repo_id: str) -> None:
        self.require_write_token()
        self.read_repo(repo_type, repo_id)
        payload = json.loads(self.body)
        objects = []
        for item in payload["objects"]:
            answer = {"oid": item["oid"], "size": item["size"], "authenticated": True}
            if not self.server.store.has_blob(item["oid"], item["size"]):
                answer["actions"] = {
                    "upload": {"href": f"{self.server.url}/_lfs/{item['oid']}", "header": {}},
                    "verify": {"href": f"{self.server.url}/_lfs/verify", "header": {}},
                }
            objects.append(answer)
        self.send_json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def lfs_put(self, oid: str) -> None:
        if hashlib.sha256(self.body).hexdigest() != oid:
            raise HubError(400, f"The uploaded content does not hash to {oid}")
        self.server.store.put_blob(self.body)
        self.send_json({})

    def lfs_verify(self) -> None:
        self.require_write_token()
        payload = json.loads(self.body)
        if not self.server.store.has_blob(payload["oid"], payload["size"]):
            raise HubError(404, f"LFS object {payload['oid']} was not uploaded", "EntryNotFound")
        self.send_json({})

    def commit(self, repo_type: str, repo_id: str, revision: str) -> None:
        self.require_write_token()
        if self.query.get("create_pr"):
            raise HubError(400, "hub_server does not implement pull requests")
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        header = next((line["value"] for line in lines if line["key"] == "header"), {})
        store = self.server.store
        with store.lock:
            repo = self.read_repo(repo_type, repo_id)
            if revision not in repo["branches"]:
                raise HubError(404, f"Invalid rev id: {revision} is not a branch", "RevisionNotFound")
            head = repo["branches"][revision]
            if header.get("parentCommit") not in (None, head):
                raise HubError(412, f"A commit has happened since {header['parentCommit']}: the head is {head}")
            files = dict(repo["commits"][head]["files"])
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "file":
                    content = (
                        base64.b64decode(value["content"])
                        if value.get("encoding") == "base64"
                        else value["content"].encode()
                    )
                    files[value["path"]] = store.entry_for(content, lfs=False)
                elif key == "lfsFile":
                    if not store.has_blob(value["oid"], value["size"]):
                        raise HubError(422, f"{value['path']}: LFS object {value['oid']} was never uploaded")
                    pointer = lfs_pointer(value["oid"], value["size"])
                    files[value["path"]] = {"blob": value["oid"], "size": value["size"], "lfs": True,
                                            "git_oid": git_blob_oid(pointer)}  # fmt: skip
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {path: entry for path, entry in files.items() if not path.startswith(prefix)}
                elif key != "header":
                    raise HubError(400, f"hub_server does not implement commit operation {key!r}")
            message = header.get("summary", "") + ("\n\n" + header["description"] if header.get("description") else "")
            sha = store.add_commit(repo, revision, files, message)
            store.save(repo_type, repo_id, repo)
        url = f"{self.server.url}/{URL_PREFIXES[repo_type]}{repo_id}/commit/{sha}"
        self.send_json({"success": True, "commitOid": sha, "commitUrl": url, "pullRequestUrl": None})

    def create_branch(self, repo_type: str, repo_id: str, branch: str) -> None:
        self.require_write_token()
        starting_point = json.loads(self.body or b"{}").get("startingPoint") or "main"
        store = self.server.store
        with store.lock:
            repo = self.read_repo(repo_type, repo_id)
            if branch in repo["branches"]:
                raise HubError(409, f"Branch {branch} already exists")
            repo["branches"][branch] = RepoStore.resolve(repo, starting_point)
            store.save(repo_type, repo_id, repo)
        self.send_json({})

    def resolve_file(self, method: str, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        repo = self.read_repo(repo_type, repo_id)
        sha = RepoStore.resolve(repo, revision)
        entry = repo["commits"][sha]["files"].get(path)
        if entry is None:
            error = HubError(404, f"{path} does not exist on {revision}", "EntryNotFound")
            error.extra_headers = {"X-Repo-Commit": sha}  # lets the client cache that the file is absent
            raise error
        content_path = self.server.store.blob_path(entry["blob"])
        size = entry["size"]
        etag = entry["blob"] if entry["lfs"] else entry["git_oid"]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if entry["lfs"]:
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(size)})
        start, end, status = 0, size - 1, 200
        range_header = self.headers.get("Range")
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", range_header or "")
        if match and size > 0:
            first, last = match.groups()
            if first == "":  # bytes=-N: the last N bytes
                start = max(0, size - int(last))
            else:
                start, end = int(first), min(int(last), size - 1) if last else size - 1
            if start >= size:
                error = HubError(416, f"Range {range_header} is outside the {size} bytes of {path}")
                error.extra_headers = {"Content-Range": f"bytes */{size}"}
                raise error
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = max(0, end - start + 1)
        self.send_response(status)
        self.send_header("Content-Length", str(length))  # the true length, on HEAD too
        self.send_header("Content-Type", "application/octet-stream")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if method == "GET" and length:
            with content_path.open("rb") as file:
                file.seek(start)
                self.wfile.write(file.read(length))


class HubServer(ThreadingHTTPServer):
    """The server, serving from a thread. `fail_on(method, path) -> bool`, when set, makes the first matching
    request go unanswered and the server stop, as if it died mid-push."""

    daemon_threads = True

    def __init__(self, root: Path, token: str, user: str = "user", port: int = 0):
        super().__init__(("127.0.0.1", port), HubHandler)
        self.store = RepoStore(Path(root))
        self.token, self.user = token, user
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.requests: list[tuple[str, str]] = []
        self.unknown_requests: list[str] = []
        self.fail_on = None
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    def start(self) -> "HubServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


# What the tests that use the server share: its token, and child processes that talk to it. Every Hub call runs in
# a child: the HF libraries read HF_ENDPOINT, HF_HOME and the token when they are imported.
TOKEN = "hf_dummy_token_for_the_test_hub"


def hub_env(server: HubServer, home: Path, token: str | None = TOKEN) -> dict:
    """The environment of a child process that talks to `server`, with its own empty cache in `home`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(
        HF_ENDPOINT=server.url,
        HF_HOME=str(home),
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        OMP_NUM_THREADS="1",
    )
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def run(
    arguments: list, env: dict, check: bool = True, cwd: Path = REPO_ROOT, timeout: int = 300
) -> subprocess.CompletedProcess:
    """`python <arguments>` in a child with `env`; with `check`, a failure shows the end of its stderr."""
    completed = subprocess.run(
        [sys.executable, *map(str, arguments)], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert completed.returncode == 0, completed.stderr[-4000:]
    return completed


def run_python(code: str, env: dict, *arguments, cwd: Path = REPO_ROOT) -> dict:
    """Run `code` in a child; it prints one JSON line last, returned."""
    completed = run(["-c", textwrap.dedent(code), *arguments], env, cwd=cwd)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def files_at_head(server: HubServer, repo_id: str, repo_type: str = "model") -> set[str]:
    repo = server.store.load(repo_type, repo_id)
    return set(repo["commits"][repo["branches"]["main"]]["files"])
