#!/usr/bin/python
# Copyright: burst.golden_ami contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: modelcar_image
short_description: Push an OCI image that holds a verified model, for KServe Modelcars
version_added: 0.1.0
description:
  - Packs the files of a model that model_cache installed (its directory and its record, C(.burst-model.json))
    under O(model_path) on top of a minimal base image, and pushes the image to a registry, tagged with the
    model's revision and labelled with it.
  - Only the files the record lists go in, each checked against the record's sha256 while it is packed; a file
    that does not match fails the task, naming it, and nothing is pushed.
  - Layers are uncompressed tars (model weights do not compress), built byte for byte the same on every run
    (sorted entries, owner 0:0, time 0, modes 0444 and 0555), so the same model on the same base always gives
    the same image digest. Files of O(split_mb) or more get a layer each.
  - Idempotent; blobs the registry holds are not uploaded again, and when the tag already points at the image
    nothing is uploaded and nothing changes. Tags are immutable; a tag that points at another image fails the
    task unless O(force=true).
  - Speaks the registry HTTP API v2 with the Python standard library; no container engine is needed.
    Credentials (or an ECR token from boto3) are sent in request headers only, never written to disk.
  - Requests go through Ansible's URL helpers, so C(https_proxy), C(http_proxy) and C(no_proxy) apply, and
    O(ca_path) names a private CA. Redirects (blob downloads sent to storage, as ECR, Docker Hub and GHCR do)
    are followed without the credentials. Basic credentials go to the registry's own host only, and to a token
    service only on the registry's host name (or Docker Hub's C(auth.docker.io)); a token service on another
    host is asked anonymously. A token that expires during a long push is fetched again once.
  - Every file is read to compute the layer digests (also in check mode, and when nothing is to be pushed), and
    read a second time to upload a layer the registry lacks.
author:
  - burst.golden_ami maintainers (@burst)
extends_documentation_fragment:
  - burst.golden_ami.registry_auth
options:
  model_dir:
    description: The model's directory, as model_cache installed it (for example C(/models/Qwen--Qwen2.5-7B-Instruct)).
    type: path
    required: true
  repository:
    description:
      - Target, C(registry-host[:port]/repository), without tag
        (for example C(123456789012.dkr.ecr.us-east-1.amazonaws.com/kserve-models/qwen)).
    type: str
    required: true
  tag:
    description:
      - Tag of the image. Default, the first 12 characters of the model's version (the Hub commit sha, or for S3
        and URL sources the digest of what was downloaded).
    type: str
  base_image:
    description:
      - Base image, pinned by digest (C(registry/repository@sha256:...)); it must hold C(/bin/sh) for Modelcars.
    type: str
    required: true
  platform:
    description: Platform picked when the base image is an index.
    type: str
    default: linux/amd64
  model_path:
    description: Directory of the model inside the image; KServe's Modelcars read C(/models).
    type: str
    default: /models
  split_mb:
    description: Files of this many MiB or more get a layer each.
    type: int
    default: 512
  labels:
    description: Labels added to the image, after the ones the module sets.
    type: dict
    default: {}
  force:
    description: Move a tag that points at another image.
    type: bool
    default: false
  plain_http:
    description: Talk HTTP instead of HTTPS to the registries. Default, HTTP for loopback registries only.
    type: bool
  ca_path:
    description:
      - PEM file of the certificate authorities to trust for HTTPS registries (a registry behind a private CA).
        Default, the system's trust store.
    type: path
  progress_file:
    description:
      - A JSON file rewritten about once a second while the module runs (C(state) C(hashing) then C(uploading),
        C(line), C(bytes_done) of C(bytes_total), C(rate_bytes_per_s)), for a role that runs the module with
        C(async) and follows it with M(burst.golden_ami.job_progress). Not written in check mode.
    type: path
attributes:
  check_mode:
    support: full
    description: Packs nothing, uploads nothing; computes the image digest and reports whether it would be pushed.
  diff_mode:
    support: none
    description: No diff; RV(pushed) and RV(digest) say what changes.
  idempotent:
    support: full
    description: A tag already at the image's digest changes nothing and uploads nothing.
"""

EXAMPLES = r"""
- name: Push the model model_cache installed as a Modelcar image
  burst.golden_ami.modelcar_image:
    model_dir: /models/Qwen--Qwen2.5-7B-Instruct
    repository: 123456789012.dkr.ecr.us-east-1.amazonaws.com/kserve-models/qwen-qwen2-5-7b-instruct
    base_image: "{{ busybox_pinned }}"  # registry/base/busybox@sha256:..., pinned by digest
    registry_auth:
      - registry: 123456789012.dkr.ecr.us-east-1.amazonaws.com
        ecr: true
  register: modelcar
"""

RETURN = r"""
reference:
  description: The image by digest, what KServe's C(storageUri) names as C(oci://...).
  returned: success
  type: str
  sample: registry.example/kserve-models/qwen@sha256:0123...
tag:
  description: The tag pushed.
  returned: success
  type: str
  sample: a09a35458c70
digest:
  description: Manifest digest.
  returned: success
  type: str
  sample: sha256:0123...
revision:
  description: The model's version from its record (a Hub commit sha).
  returned: success
  type: str
pushed:
  description: Whether the tag was (or in check mode, would be) written.
  returned: success
  type: bool
uploaded_bytes:
  description: Bytes uploaded by this run (blobs and manifest).
  returned: success
  type: int
  sample: 0
layers:
  description: The model's layers.
  returned: success
  type: list
  elements: dict
  contains:
    digest:
      description: Layer digest (the tar is uncompressed, so also its diff id).
      type: str
    size:
      description: Bytes.
      type: int
    files:
      description: Paths in the image.
      type: list
      elements: str
labels:
  description: Labels of the image.
  returned: success
  type: dict
"""

import hashlib  # noqa: E402
import re  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.burst.golden_ami.plugins.module_utils._docker_engine import TAG_PATTERN  # noqa: E402
from ansible_collections.burst.golden_ami.plugins.module_utils._model_record import (  # noqa: E402
    ModelCacheError,
    load_record,
    redact_url,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._oci import (  # noqa: E402
    OciError,
    Registry,
    base_image,
    image_documents,
    model_layers,
    split_reference,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._progress import ProgressFile  # noqa: E402
from ansible_collections.burst.golden_ami.plugins.module_utils._registry_auth import (  # noqa: E402
    REGISTRY_AUTH_SPEC,
    credentials,
)

__all__ = ["build_and_push", "main"]


def registries(module):
    """Registry clients by host, with their credentials."""
    found = credentials(module, module.params["registry_auth"])
    clients = {}

    def client(host):
        if host not in clients:
            username, password = found.get(host, (None, None))
            clients[host] = Registry(
                host, username, password, plain_http=module.params["plain_http"], ca_path=module.params["ca_path"]
            )
        return clients[host]

    return client


def read_record(model_dir):
    """The record model_cache wrote in ``model_dir``; OciError says what is wrong with it."""
    try:
        return load_record(model_dir, required=True)
    except ModelCacheError as exc:
        raise OciError(str(exc)) from exc


def _counted(chunks, progress):
    """A body for Registry.upload that counts what it sends; a retried upload counts again from where it began."""
    start = progress.bytes_done

    def body():
        progress.set(start)
        sent = 0
        for chunk in chunks():
            yield chunk
            sent += len(chunk)
            progress.set(start + sent)

    return body


def build_and_push(params, client, check_mode=False, progress=None):
    """Build the image and push it (unless in check mode); ``progress`` (a ProgressFile) follows reads and uploads."""
    progress = progress or ProgressFile(None, "modelcar_image")
    record = read_record(params["model_dir"])
    revision = record.get("commit_sha") or record["version"]
    tag = params["tag"] or revision[:12]
    if not re.fullmatch(TAG_PATTERN, tag or ""):
        raise OciError(f"{tag!r} is not a valid image tag")
    host, repository, given_tag, given_digest = split_reference(params["repository"])
    if given_tag or given_digest:
        raise OciError(f"repository {params['repository']!r} must not carry a tag or digest: give tag")
    base_host, base_repository, _base_tag, base_digest = split_reference(params["base_image"])
    if not base_digest:
        raise OciError(f"base_image {params['base_image']!r} must be pinned by digest (repository@sha256:...)")
    target, base_registry = client(host), client(base_host)

    split = params["split_mb"] * 1024 * 1024
    layers = model_layers(params["model_dir"], record, params["model_path"], split)
    progress.name = f"{params['repository']}:{tag}"
    progress.phase("hashing", sum(layer.content_bytes for layer in layers))
    for layer in layers:
        layer.measure(on_bytes=progress.add)
    base_manifest, base_type, base_config = base_image(base_registry, base_repository, base_digest, params["platform"])
    if record.get("repo_id"):
        source = record["repo_id"]
    elif record.get("bucket"):
        source = f"s3://{record['bucket']}/{record.get('prefix', '')}"
    else:
        # A signed URL's query string is a credential: the label keeps the URL without it.
        source = redact_url(record.get("url", ""))
    labels = {
        "org.opencontainers.image.title": record.get("repo_id") or record.get("name", ""),
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.source": source,
        "org.opencontainers.image.base.name": params["base_image"],
        "org.burst.model.name": record.get("name", ""),
        "org.burst.model.path": params["model_path"],
        **{str(k): str(v) for k, v in params["labels"].items()},
    }
    config_bytes, manifest_bytes, media_type = image_documents(
        base_manifest, base_type, base_config, layers, labels, "burst.golden_ami.modelcar_image"
    )
    digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
    current = target.manifest(repository, tag)
    if current is not None and current[0] != digest and not params["force"]:
        raise OciError(
            f"{host}/{repository}:{tag} points at {current[0]}, not at {digest} built from {params['model_dir']}: "
            "tags are immutable (set force to move it, or give another tag)"
        )
    pushed = current is None or current[0] != digest
    if pushed and not check_mode:
        config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        for blob in base_manifest["layers"]:
            if target.has_blob(repository, blob["digest"]):
                continue
            if base_host == host and target.mount(repository, blob["digest"], base_repository):
                continue
            data = base_registry.blob(base_repository, blob["digest"])
            target.upload(repository, blob["digest"], len(data), data)
        missing = [layer for layer in layers if not target.has_blob(repository, layer.digest)]
        progress.phase("uploading", sum(layer.size for layer in missing))
        for layer in missing:
            target.upload(repository, layer.digest, layer.size, _counted(layer.chunks, progress))
        if not target.has_blob(repository, config_digest):
            target.upload(repository, config_digest, len(config_bytes), config_bytes)
        target.put_manifest(repository, tag, media_type, manifest_bytes)
    progress.phase("done", line=f"{progress.name}: {'pushed' if pushed and not check_mode else 'nothing to push'}")
    return {
        "changed": pushed,
        "pushed": pushed,
        "reference": f"{host}/{repository}@{digest}",
        "tag": tag,
        "digest": digest,
        "revision": revision,
        "uploaded_bytes": target.uploaded_bytes,
        "layers": [{"digest": layer.digest, "size": layer.size, "files": layer.files} for layer in layers],
        "labels": labels,
    }


def main():
    module = AnsibleModule(
        argument_spec={
            "model_dir": {"type": "path", "required": True},
            "repository": {"type": "str", "required": True},
            "tag": {"type": "str"},
            "base_image": {"type": "str", "required": True},
            "platform": {"type": "str", "default": "linux/amd64"},
            "model_path": {"type": "str", "default": "/models"},
            "split_mb": {"type": "int", "default": 512},
            "labels": {"type": "dict", "default": {}},
            "force": {"type": "bool", "default": False},
            "registry_auth": REGISTRY_AUTH_SPEC,
            "plain_http": {"type": "bool"},
            "ca_path": {"type": "path"},
            "progress_file": {"type": "path"},
        },
        supports_check_mode=True,
    )
    if module.params["split_mb"] < 1:
        module.fail_json(msg="split_mb must be 1 or more")
    try:
        # Check mode writes nothing, a progress file included.
        progress = ProgressFile(None if module.check_mode else module.params["progress_file"], "modelcar_image")
        result = build_and_push(module.params, registries(module), module.check_mode, progress)
    except (OciError, OSError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
