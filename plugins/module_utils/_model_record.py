# Copyright: burst.golden_ami contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a models root holds: the name of each model's directory, its record, and the manifest of them all.

Private to this collection. Standard library only: ``model_download`` (on the
builder's tools virtualenv), ``modelcar_image`` and the ``model_dir_name``
filter all import it.

Layout under the root::

    <root>/<name>/                   the model, read-only (0444 files, 0555 dirs)
    <root>/<name>/.burst-model.json  its record: source, version, every file
    <root>/manifest.json             every model's record, keyed by name
    <root>/.staging/<name>/          a download in progress (resumable)

``model_dir_name`` is the one rule that names ``<name>``; ``load_record`` the
one reader of a record.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from ansible_collections.burst.golden_ami.plugins.module_utils._files import read_json, sha256_file, write_json_atomic

RECORD_NAME = ".burst-model.json"
MANIFEST_NAME = "manifest.json"
STAGING_DIR = ".staging"
STAGING_STATE = ".burst-staging.json"
PARTIAL_DIR = ".burst-partial"
RECORD_FORMAT = 1

FILE_MODE = 0o444
DIR_MODE = 0o555

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ModelCacheError(Exception):
    """An error the module reports as is: it names the model and the problem."""


def model_dir_name(model):
    """The directory of a model under the models root, from its entry as ``model_cache_models`` lists it.

    Its ``name`` when it has one; else, for a Hub repository (``source`` hub, the default), ``org/name``
    becomes ``org--name``; for an S3 prefix, the prefix's last part. A URL has no default: it needs a name.
    Raises ``ModelCacheError`` when the entry gives no name.
    """
    if model.get("name"):
        return model["name"]
    kind = model.get("source") or "hub"
    if kind == "hub":
        repo_id = model.get("repo_id")
        if not isinstance(repo_id, str) or not REPO_ID.match(repo_id):
            raise ModelCacheError("repo_id %r is not of the form 'org/name'" % (repo_id,))
        return repo_id.replace("/", "--")
    if kind == "s3":
        base = str(model.get("prefix") or "").strip("/").rsplit("/", 1)[-1]
        if not base:
            raise ModelCacheError("an s3 source with an empty prefix needs a name")
        return base
    raise ModelCacheError("a %s source needs a name" % kind)


def redact_url(url):
    """``url`` as it may be recorded or shown: no user, password, query string or fragment.

    Signed URLs (S3 presigned, Azure SAS, CDN tokens) carry their credential in the query string.
    """
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = "[%s]" % host
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host + (":%d" % port if port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def url_secrets(url):
    """The parts of ``url`` that ``redact_url`` drops and that must never be shown (for ``no_log_values``)."""
    if not url:
        return []
    parts = urlsplit(url)
    found = [parts.query, parts.fragment, parts.password or "", parts.username or ""]
    found += [value for _name, value in parse_qsl(parts.query, keep_blank_values=True)]
    return sorted({value for value in found if len(value) >= 4})


def clean_record(record):
    """A model record (or manifest entry) with its URLs redacted; the record itself when there is nothing to redact."""
    if not isinstance(record, dict):
        return record
    cleaned = dict(record)
    if isinstance(cleaned.get("url"), str):
        cleaned["url"] = redact_url(cleaned["url"])
    identity = cleaned.get("identity")
    if isinstance(identity, dict) and isinstance(identity.get("url"), str):
        cleaned["identity"] = dict(identity, url=redact_url(identity["url"]))
    return cleaned if cleaned != record else record


def load_record(model_dir, required=False):
    """The record of the model in ``model_dir``.

    Without ``required``: None when there is none, or when it is damaged or of another format (the model is
    then fetched again). With ``required``: the record, which must list files and a version; otherwise
    ``ModelCacheError`` says what is wrong.
    """
    path = os.path.join(model_dir, RECORD_NAME)
    if not required:
        record = read_json(path)
        if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
            return None
        return record
    try:
        record = read_json(path, strict=True)
    except FileNotFoundError as exc:
        raise ModelCacheError(
            f"{model_dir} holds no model record ({RECORD_NAME}): install it with model_cache first"
        ) from exc
    except ValueError as exc:
        raise ModelCacheError(f"the model record {path} is not JSON: {exc}") from exc
    if not isinstance(record, dict) or not isinstance(record.get("files"), list) or not record.get("version"):
        raise ModelCacheError(f"the model record {path} is not one model_cache wrote")
    return record


def intact_files(model_dir, record, verify_checksums=False):
    """Paths of the recorded files that are in place with their size (and sha256 when asked)."""
    intact = set()
    for entry in record.get("files", []):
        path = os.path.join(model_dir, entry["path"])
        try:
            if os.path.getsize(path) != entry["size"]:
                continue
        except OSError:
            continue
        if verify_checksums and sha256_file(path) != entry["sha256"]:
            continue
        intact.add(entry["path"])
    return intact


def record_matches_local(model_dir, record, verify_checksums=False):
    """True when every recorded file is in place with its size (and sha256 when asked)."""
    return len(intact_files(model_dir, record, verify_checksums)) == len(record.get("files", []))


def rewrite_record(target, record):
    """Replace the record of an installed (read-only) model directory."""
    os.chmod(target, 0o700)
    try:
        write_json_atomic(os.path.join(target, RECORD_NAME), record, mode=FILE_MODE)
    finally:
        os.chmod(target, DIR_MODE)


@contextlib.contextmanager
def _locked(directory):
    """An exclusive lock held on a directory (no lock file left behind)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - not POSIX
            pass
        yield
    finally:
        os.close(fd)


def update_manifest(root, name, record, check_mode=False):
    """Set (or with ``record=None`` drop) one model's entry in ``<root>/manifest.json``; True if it changed.

    In check mode, only tells whether it would change.
    """
    path = os.path.join(root, MANIFEST_NAME)
    if check_mode:
        manifest = read_json(path)
        models = manifest.get("models") if isinstance(manifest, dict) else None
        return (
            not isinstance(models, dict)
            or models.get(name) != record
            or any(clean_record(entry) is not entry for entry in models.values())
        )
    with _locked(root):
        manifest = read_json(path)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("models"), dict):
            manifest = {"format": RECORD_FORMAT, "models": {}}
        before = json.dumps(manifest, sort_keys=True)
        if record is None:
            manifest["models"].pop(name, None)
        else:
            manifest["models"][name] = record
        # Entries written before URLs were recorded without their query string lose it now.
        manifest["models"] = {key: clean_record(entry) for key, entry in manifest["models"].items()}
        if json.dumps(manifest, sort_keys=True) == before and os.path.exists(path):
            return False
        write_json_atomic(path, manifest, mode=FILE_MODE)
        return True
