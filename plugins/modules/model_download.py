#!/usr/bin/python
# Copyright: burst.golden_ami contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: model_download
short_description: Download model weights, pinned and verified, into a models directory
version_added: 0.1.0
description:
  - Ensures that C(<root>/<name>/) holds the files of a model from the Hugging Face Hub (a repository at
    a revision), from an S3 prefix, or from an HTTP(S) URL, every file verified against the digest its
    source publishes.
  - A Hub revision is resolved to its 40-hex commit sha, which is recorded. Files are listed with their
    sizes and digests, filtered with O(allow_patterns) and O(ignore_patterns), and the total is checked
    against the free space on the target filesystem plus O(disk_margin_mb) before anything is downloaded.
  - Files are downloaded into C(<root>/.staging/<name>/) on the same filesystem. A partial file is resumed
    with a Range request, within the run and on the next run. Each file is hashed while it arrives and
    checked against the Hub's LFS sha256 (large files), the git blob sha1 (small files), S3's full-object
    C(ChecksumSHA256), or the sha256 given; on a mismatch the file is deleted and the task fails naming it.
  - Once every file is verified, a record (C(.burst-model.json)) is written and the staging directory is
    renamed to C(<root>/<name>/); files become 0444 and directories 0555. C(<root>/manifest.json) holds
    every model's record. An interrupted run never leaves a model directory behind; the next run resumes.
  - A model already present with a matching record is not downloaded again and the module reports no
    change. When O(revision) is a full commit sha (or for a URL, whose sha256 is given), no network call is
    made at all.
  - The Hub token and S3 credentials live only in the module's process. They are C(no_log) arguments,
    which travel inside the module's payload (in Ansible's private temporary directory on the managed node,
    removed when the task or the asynchronous job ends), never on a command line or in an environment.
    huggingface_hub runs with a private, temporary C(HF_HOME) that is removed afterwards, so no token file or
    Hub/Xet cache is left.
  - A URL is recorded (C(.burst-model.json), the manifest, messages) without its user, password, query string
    and fragment, where signed URLs keep their signature; those parts are also masked in the module's result.
  - Requires C(huggingface_hub) (Hub sources) or C(boto3) (S3 sources) on the managed node. The
    C(model_cache) role runs this module with the Python of a tools virtualenv that holds them.
author:
  - burst.golden_ami contributors (@burst)
requirements:
  - python >= 3.9
  - huggingface_hub >= 1.0 (source C(hub))
  - boto3 (source C(s3))
options:
  source:
    description: Where the model comes from.
    type: str
    choices: [hub, s3, url]
    default: hub
  repo_id:
    description: Hub repository, C(org/name). Required when O(source=hub).
    type: str
  revision:
    description:
      - Branch, tag or commit of the Hub repository. A full 40-hex commit sha pins the model and lets a
        re-run skip the Hub entirely.
    type: str
    default: main
  hub_endpoint:
    description: Hub base URL. Defaults to C(HF_ENDPOINT) in the environment, else C(https://huggingface.co).
    type: str
  hub_token:
    description:
      - Hub access token for private or gated repositories. Never logged nor written to disk.
      - When unset, the token is taken from C(HF_TOKEN) in the module's environment, if set there. The
        C(model_cache) role passes it as this argument.
    type: str
  bucket:
    description: S3 bucket. Required when O(source=s3).
    type: str
  prefix:
    description: S3 key prefix of the model's files; file paths are taken relative to it.
    type: str
    default: ""
  s3_endpoint_url:
    description: S3 endpoint URL (an S3-compatible store, or a local stand-in).
    type: str
  region:
    description: AWS region of the bucket.
    type: str
  aws_access_key_id:
    description: AWS access key; when unset, boto3 finds credentials as usual (environment, instance role).
    type: str
  aws_secret_access_key:
    description: AWS secret key.
    type: str
  aws_session_token:
    description: AWS session token.
    type: str
  url:
    description:
      - HTTP(S) URL of a single file. Required when O(source=url).
      - A signed URL works; only its part before the C(?) is recorded or shown.
    type: str
  filename:
    description: Name of the downloaded file for O(source=url); defaults to the last component of O(url).
    type: str
  sha256:
    description:
      - For O(source=url), the sha256 (64 hex digits) the file must have. Required.
      - For O(source=s3), a map of file path (relative to O(prefix)) to sha256, used for objects that carry
        no S3 C(ChecksumSHA256).
    type: raw
  name:
    description:
      - Directory name of the model under O(root). Defaults to C(org--name) for a Hub repository and to
        the last component of O(prefix) for S3. Required when O(source=url).
    type: str
  root:
    description: Directory that holds the models.
    type: path
    default: /models
  allow_patterns:
    description:
      - Shell-style patterns of the files to download (C(*) crosses C(/); C(dir/) selects a folder).
      - Default, safetensors weights, C(*.json) configs, tokenizer files and the sentence-transformers
        folders (C(1_Pooling/), C(2_Normalize/), C(2_Dense/)); C(*.bin) weights only when the repository
        has no safetensors.
    type: list
    elements: str
  ignore_patterns:
    description:
      - Patterns of files never to download. Default, ONNX and OpenVINO exports, TF, Flax and GGUF weights.
    type: list
    elements: str
  disk_margin_mb:
    description: Free space, in MiB, that must remain on the target filesystem after the download.
    type: int
    default: 1024
  verify_local:
    description:
      - Re-hash the files already in place before trusting them (reads every byte). Without it, a present
        model is checked by its record, file list and sizes.
    type: bool
    default: false
  max_workers:
    description: Files downloaded in parallel.
    type: int
    default: 8
  progress_file:
    description:
      - Path of a JSON file the module rewrites every second while it downloads (bytes done of total, rate,
        files, and a C(line) for people). The C(model_cache) role follows it while the module runs
        asynchronously.
    type: path
attributes:
  check_mode:
    description:
      - Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: Reports what would be downloaded (it asks the source for its file list) and downloads nothing.
  diff_mode:
    description:
      - Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates
        no change.
    support: full
"""

EXAMPLES = r"""
- name: Ensure the embeddings model is in /models, pinned to a commit
  burst.golden_ami.model_download:
    repo_id: intfloat/multilingual-e5-large
    revision: 0dc5580a448e4284468b8909bae50fa925907bc5
  vars:
    ansible_python_interpreter: /opt/burst/tools/venv/bin/python

- name: Ensure the LLM is in /models, from a private Hub repository
  burst.golden_ami.model_download:
    repo_id: Qwen/Qwen2.5-14B-Instruct-AWQ
    revision: main
    hub_token: "{{ vault_hf_token }}"
    progress_file: /run/burst-model-qwen.json
  no_log: true

- name: Ensure a model copied to S3 is in /models
  burst.golden_ami.model_download:
    source: s3
    bucket: burst-models
    prefix: Qwen--Qwen2.5-14B-Instruct-AWQ/
    region: eu-central-1

- name: Ensure a single-file model is in /models
  burst.golden_ami.model_download:
    source: url
    name: tiny-gguf
    url: https://example.com/models/tiny.gguf
    sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
"""

RETURN = r"""
name:
  description: Directory name of the model under the root.
  returned: always
  type: str
  sample: intfloat--multilingual-e5-large
path:
  description: Path of the model directory.
  returned: always
  type: str
  sample: /models/intfloat--multilingual-e5-large
version:
  description:
    - What the model is pinned to, a Hub commit sha, for S3 a digest of the keys, sizes and ETags, for a URL the
      file's sha256.
  returned: success
  type: str
  sample: 0dc5580a448e4284468b8909bae50fa925907bc5
total_bytes:
  description: Size of the model's files.
  returned: success
  type: int
  sample: 2240000000
downloaded_bytes:
  description: Bytes transferred by this run (resumed bytes not counted again).
  returned: always
  type: int
  sample: 0
downloaded_files:
  description: Paths of the files this run transferred.
  returned: always
  type: list
  elements: str
  sample: [model.safetensors]
would_download:
  description: Paths of the files that a run would transfer (in check mode, what it would do).
  returned: when the model is not up to date
  type: list
  elements: str
  sample: [config.json, model.safetensors]
would_download_bytes:
  description: Bytes that a run would transfer.
  returned: when the model is not up to date
  type: int
  sample: 2240000000
files:
  description: The model's files, with C(path), C(size), C(sha256) and C(verified_with).
  returned: success
  type: list
  elements: dict
  sample:
    - path: model.safetensors
      size: 2240000000
      sha256: 4f0c1a0ea2e0f3a2f2b33a6f1b3e8c4e3f9f77b8f6e1b1d8a3b0d5a7c9e2f1a0
      verified_with: lfs-sha256
record:
  description: The record written to C(.burst-model.json) and to the manifest.
  returned: success and not in check mode
  type: dict
"""

import os  # noqa: E402 - Ansible modules put their documentation first
import shutil  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402

from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # noqa: E402

from ansible_collections.burst.golden_ami.plugins.module_utils._model_cache import ensure_model  # noqa: E402
from ansible_collections.burst.golden_ami.plugins.module_utils._model_record import (  # noqa: E402
    ModelCacheError,
    url_secrets,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._model_sources import (  # noqa: E402
    HubSource,
    S3Source,
    UrlSource,
)

# Whatever the caller's environment says, the download process must not be
# offline, must not read a stored token, and must not phone home.
_HF_ENV_DROP = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH")
_HF_ENV_SET = {
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "HF_HUB_DISABLE_XET": "1",
}


def argument_spec():
    return dict(
        source=dict(type="str", choices=["hub", "s3", "url"], default="hub"),
        repo_id=dict(type="str"),
        revision=dict(type="str", default="main"),
        hub_endpoint=dict(type="str"),
        hub_token=dict(type="str", no_log=True),
        bucket=dict(type="str"),
        prefix=dict(type="str", default=""),
        s3_endpoint_url=dict(type="str"),
        region=dict(type="str"),
        aws_access_key_id=dict(type="str", no_log=True),
        aws_secret_access_key=dict(type="str", no_log=True),
        aws_session_token=dict(type="str", no_log=True),
        url=dict(type="str"),
        filename=dict(type="str"),
        sha256=dict(type="raw"),
        name=dict(type="str"),
        root=dict(type="path", default="/models"),
        allow_patterns=dict(type="list", elements="str"),
        ignore_patterns=dict(type="list", elements="str"),
        disk_margin_mb=dict(type="int", default=1024),
        verify_local=dict(type="bool", default=False),
        max_workers=dict(type="int", default=8),
        progress_file=dict(type="path"),
    )


def build_source(params):
    """The source object for the module's parameters (ModelCacheError on a bad combination)."""
    kind = params["source"]
    if kind == "hub":
        if not params.get("repo_id"):
            raise ModelCacheError("source=hub needs repo_id")
        return HubSource(
            params["repo_id"],
            revision=params.get("revision") or "main",
            endpoint=params.get("hub_endpoint") or None,
            token=params.get("hub_token") or None,
            allow_patterns=params.get("allow_patterns"),
            ignore_patterns=params.get("ignore_patterns"),
        )
    if kind == "s3":
        if not params.get("bucket"):
            raise ModelCacheError("source=s3 needs bucket")
        sha256 = params.get("sha256")
        if sha256 is not None and not isinstance(sha256, dict):
            raise ModelCacheError("for source=s3, sha256 must be a map of file path to sha256")
        return S3Source(
            params["bucket"],
            prefix=params.get("prefix") or "",
            sha256=sha256,
            region=params.get("region"),
            endpoint_url=params.get("s3_endpoint_url"),
            access_key=params.get("aws_access_key_id"),
            secret_key=params.get("aws_secret_access_key"),
            session_token=params.get("aws_session_token"),
            allow_patterns=params.get("allow_patterns"),
            ignore_patterns=params.get("ignore_patterns"),
        )
    if not params.get("url"):
        raise ModelCacheError("source=url needs url")
    if not params.get("name"):
        raise ModelCacheError("source=url needs name")
    if not isinstance(params.get("sha256"), str):
        raise ModelCacheError("source=url needs sha256, the file's digest as 64 hex digits")
    return UrlSource(params["url"], params["sha256"], filename=params.get("filename"))


def _require_library(kind):
    """Import the source's library now, after the environment is set (huggingface_hub reads it at import)."""
    if kind == "hub":
        import huggingface_hub  # noqa: F401
    elif kind == "s3":
        import boto3  # noqa: F401


def run(params, check_mode):
    """Do the module's work with a private HF_HOME; return the result dict. Used by unit tests too."""
    if params.get("disk_margin_mb") is not None and params["disk_margin_mb"] < 0:
        raise ModelCacheError("disk_margin_mb must not be negative")
    if params.get("max_workers") is not None and params["max_workers"] < 1:
        raise ModelCacheError("max_workers must be at least 1")
    params = dict(params)
    if params["source"] == "hub" and not params.get("hub_token"):
        # Without the argument, a token in this process's environment (set by whoever runs the module).
        params["hub_token"] = os.environ.get("HF_TOKEN") or None
    source = build_source(params)
    root = params["root"]
    saved = {key: os.environ.get(key) for key in set(_HF_ENV_DROP) | set(_HF_ENV_SET) | {"HF_HOME", "HF_ENDPOINT"}}
    private_home = None
    try:
        for key in _HF_ENV_DROP:
            os.environ.pop(key, None)
        os.environ.update(_HF_ENV_SET)
        if source.kind == "hub":
            # Whatever huggingface_hub would store (a token, caches) goes to a private directory, removed below.
            private_home = tempfile.mkdtemp(prefix="burst-hf-home-")
            os.environ["HF_HOME"] = private_home
        _require_library(source.kind)
        return ensure_model(
            source,
            root,
            name=params.get("name"),
            check_mode=check_mode,
            verify_checksums=params.get("verify_local", False),
            disk_margin=(params.get("disk_margin_mb") or 0) * 1024 * 1024,
            max_workers=params.get("max_workers") or 8,
            progress_path=params.get("progress_file"),
        )
    finally:
        if private_home is not None:
            shutil.rmtree(private_home, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        required_if=[
            ("source", "hub", ("repo_id",)),
            ("source", "s3", ("bucket",)),
            ("source", "url", ("url", "sha256", "name")),
        ],
    )
    kind = module.params["source"]
    # A signed URL's query string is a credential: masked wherever it would show in the result.
    module.no_log_values.update(url_secrets(module.params.get("url")))
    try:
        result = run(module.params, module.check_mode)
    except ImportError:
        lib = "huggingface_hub" if kind == "hub" else "boto3"
        module.fail_json(msg=missing_required_lib(lib), exception=traceback.format_exc())
    except ModelCacheError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
