#!/usr/bin/python
# Copyright: burst.golden_ami contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: image_pull
short_description: Pull images into the local Docker engine by digest, once
version_added: 0.1.0
description:
  - Resolves each image's tag to its manifest digest through the engine
    (the engine's C(/distribution) API), pulls C(repository@digest) when
    the engine does not hold it yet, and tags it with the reference's tag.
  - An image already present at its digest is not pulled again; when that
    digest is known (pinned in the reference or given as O(images[].digest))
    the registry is not even asked.
  - Registry credentials (user and password, or an ECR token from boto3)
    are sent in the request header only; nothing is written to disk.
  - Registry errors are retried with exponential backoff; an unknown image,
    a refused login or a digest mismatch fails at once, naming the image.
  - With O(progress_file), reports its progress in that file while it pulls, as C(docker pull) prints it
    (not in check mode, which writes nothing).
  - Before any pull, a disk preflight checks that the images still to pull
    fit on the engine's data root (C(DockerRootDir)), their O(images[].size_mb)
    plus O(min_free_mb) must be free there. When it fails, nothing is pulled
    and the error names the free space, the images and what they need.
author:
  - burst.golden_ami maintainers (@burst)
extends_documentation_fragment:
  - burst.golden_ami.registry_auth
options:
  images:
    description: Images to have in the engine.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Short name of the image, used in the results (for example C(vllm)).
        type: str
        required: true
      reference:
        description: Image reference, C(registry/repository:tag) or C(registry/repository@sha256:...).
        type: str
        required: true
      digest:
        description: Expected manifest digest; the registry's must match.
        type: str
      size_mb:
        description:
          - Disk space the image takes once pulled and unpacked, in MiB (the size C(docker image ls) shows), for
            the disk preflight. The registry does not tell it before the pull, so it is the user's figure.
          - Not given, the image counts for nothing and only O(min_free_mb) is checked.
        type: int
        default: 0
  min_free_mb:
    description:
      - MiB that must remain free on the engine's data root once the images still to pull are pulled.
      - The preflight runs only when some image is to be pulled; C(0) with no O(images[].size_mb) turns it off.
    type: int
    default: 1024
  docker_socket:
    description: Path of the engine's unix socket.
    type: path
    default: /var/run/docker.sock
  tag:
    description: Tag pulled images with the reference's tag too (they are pulled by digest).
    type: bool
    default: true
  retries:
    description: Retries of a failed registry request.
    type: int
    default: 4
  retry_delay:
    description: Seconds before the first retry; doubled for each next one.
    type: float
    default: 2.0
  progress_file:
    description:
      - A JSON file rewritten about once a second while the module runs (C(state), C(line), C(bytes_done) of
        C(bytes_total), C(rate_bytes_per_s)), from the engine's progress events, for a role that runs the module
        with C(async) and follows it with M(burst.golden_ami.job_progress).
      - The line names the image, its place in the list, the layers pulled and the bytes downloaded of the layers
        the engine has sized so far.
    type: path
attributes:
  check_mode:
    support: full
    description: Resolves digests and reports what would be pulled, pulls nothing.
  diff_mode:
    support: none
    description: Reports no diff; RV(images) lists each image and whether it was pulled.
  idempotent:
    support: full
    description: An image present at its digest is neither pulled nor reported as changed.
"""

EXAMPLES = r"""
- name: Ensure the serving images are in the engine
  burst.golden_ami.image_pull:
    images:
      - name: vllm
        reference: vllm/vllm-openai:v0.6.4
      - name: tei
        reference: ghcr.io/huggingface/text-embeddings-inference:89-1.5
  register: pulled

- name: Pull from ECR and a private registry
  burst.golden_ami.image_pull:
    images:
      - name: batch
        reference: 123456789012.dkr.ecr.eu-central-1.amazonaws.com/batch:2026.1
    registry_auth:
      - registry: 123456789012.dkr.ecr.eu-central-1.amazonaws.com
        ecr: true
"""

RETURN = r"""
images:
  description: One manifest entry per image.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Short name given.
      type: str
      sample: vllm
    reference:
      description: Reference given.
      type: str
      sample: vllm/vllm-openai:v0.6.4
    digest:
      description: Manifest digest.
      type: str
      sample: sha256:0123...
    pinned:
      description: Reference by digest, what service units run.
      type: str
      sample: vllm/vllm-openai@sha256:0123...
    size:
      description: Image size in bytes in the engine (0 in check mode before a pull).
      type: int
      sample: 8123456789
    id:
      description: Image id in the engine (empty in check mode before a pull).
      type: str
      sample: sha256:abcd...
    pulled:
      description: Whether this run pulled the image (or would, in check mode).
      type: bool
      sample: true
digests:
  description: Pinned reference of each image, by name.
  returned: always
  type: dict
  sample: {"vllm": "vllm/vllm-openai@sha256:0123..."}
pulled:
  description: How many images were pulled (or would be, in check mode).
  returned: always
  type: int
  sample: 0
disk:
  description: The disk preflight, made before any pull.
  returned: always
  type: dict
  contains:
    path:
      description: The engine's data root, where the space was measured (empty when nothing was to be pulled).
      type: str
      sample: /var/lib/docker
    free_bytes:
      description: Bytes free there for an unprivileged writer (0 when nothing was to be pulled).
      type: int
      sample: 52613349376
    needed_bytes:
      description: The sizes of the images to pull plus the margin (0 when nothing was to be pulled).
      type: int
      sample: 19327352832
    pending:
      description: Names of the images to pull.
      type: list
      elements: str
      sample: [vllm]
"""

import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.burst.golden_ami.plugins.module_utils._docker_engine import (  # noqa: E402
    Engine,
    EngineError,
    PullProgress,
    encode_auth,
    parse_reference,
    registry_host,
    with_retries,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._progress import ProgressFile, human  # noqa: E402
from ansible_collections.burst.golden_ami.plugins.module_utils._registry_auth import (  # noqa: E402
    REGISTRY_AUTH_SPEC,
    credentials,
)

MIB = 1024 * 1024


def _gib(count):
    return f"{count / (1024 * MIB):.1f} GiB"


def disk_preflight(pending, min_free_mb, path, statvfs=os.statvfs):
    """Check that the images to pull fit on ``path``; return the numbers, or raise ValueError naming them.

    ``pending`` lists (name, size in MiB) of the images not in the engine yet.
    """
    if not pending or (min_free_mb <= 0 and not any(size for _name, size in pending)):
        return {"path": "", "free_bytes": 0, "needed_bytes": 0, "pending": [name for name, _size in pending]}
    stats = statvfs(path)
    free = stats.f_bavail * stats.f_frsize
    needed = (sum(size for _name, size in pending) + max(min_free_mb, 0)) * MIB
    disk = {"path": path, "free_bytes": free, "needed_bytes": needed, "pending": [name for name, _size in pending]}
    if free < needed:
        images = ", ".join(f"{name} ({_gib(size * MIB) if size else 'size not given'})" for name, size in pending)
        raise ValueError(
            f"Not enough disk space for the images to pull: {path} has {_gib(free)} free; {images} plus the "
            f"{_gib(max(min_free_mb, 0) * MIB)} margin need {_gib(needed)}. Grow the root volume "
            f"(bake_root_volume.size) or free space there. Nothing was pulled."
        )
    return disk


class ImageCache:
    """Resolve and pull images; one instance per module run."""

    def __init__(self, engine, auths, check_mode=False, tag=True, retries=4, retry_delay=2.0, progress=None):
        self.engine = engine
        self.progress = progress or ProgressFile(None, "image_pull")
        self.auths = auths  # registry host -> X-Registry-Auth value
        self.check_mode = check_mode
        self.tag = tag
        self.retries = retries
        self.retry_delay = retry_delay

    def _retry(self, call):
        return with_retries(call, self.retries, self.retry_delay)

    def ensure(self, name, reference, expected=None):
        """Return (manifest entry, changed) for one image; raise ValueError naming the image on failure."""
        return self.apply(self.plan(name, reference, expected))

    def plan(self, name, reference, expected=None):
        """Resolve one image without pulling it: its repository, tag, digest and the engine's record (or None)."""
        label = f"image {name} ({reference})"
        try:
            repository, tag, pinned_digest = parse_reference(reference)
        except ValueError as exc:
            raise ValueError(f"{label}: {exc}") from exc
        if expected and pinned_digest and expected != pinned_digest:
            raise ValueError(f"{label}: digest {expected} differs from the one in the reference")
        expected = expected or pinned_digest
        auth = self.auths.get(registry_host(repository))

        local = self.engine.inspect_image(f"{repository}@{expected}") if expected else None
        digest = expected
        if local is None:
            try:
                descriptor = self._retry(lambda: self.engine.resolve(reference, auth))
            except EngineError as exc:
                raise ValueError(f"{label}: the registry could not resolve it: {exc}") from exc
            digest = descriptor["digest"]
            if expected and digest != expected:
                raise ValueError(f"{label}: digest mismatch, the registry serves {digest}, expected {expected}")
            local = self.engine.inspect_image(f"{repository}@{digest}")
        return {
            "name": name,
            "reference": reference,
            "label": label,
            "repository": repository,
            "tag": tag,
            "digest": digest,
            "auth": auth,
            "local": local,
        }

    def _pull(self, plan):
        """One pull attempt, its progress in the progress file."""
        state = PullProgress()
        place = f" ({plan['position']})" if plan.get("position") else ""
        self.progress.name = plan["name"]
        self.progress.phase("pulling", line=f"{plan['name']}{place}: pulling {plan['repository']}@{plan['digest']}")

        def line():
            done, extracting, known = state.counts()
            if not known:
                return f"{plan['name']}{place}: pulling"
            text = f"{plan['name']}{place}: {done} of {known} layers pulled"
            if extracting:
                text += f", {extracting} extracting"
            if state.size:
                text += (
                    f", {human(state.downloaded)} of {human(state.size)} downloaded, {human(self.progress.rate())}/s"
                )
            return text

        def on_event(event):
            state.event(event)
            self.progress.set(state.downloaded, state.size)
            self.progress.update(line=line())

        self.engine.pull(plan["repository"], plan["digest"], plan["auth"], on_event=on_event)
        self.progress.update(line=line(), force=True)

    def apply(self, plan):
        """Pull (unless in check mode) and tag one planned image; return (manifest entry, changed)."""
        name, reference, label = plan["name"], plan["reference"], plan["label"]
        repository, tag, digest, local = (plan[k] for k in ("repository", "tag", "digest", "local"))
        pulled = local is None
        if pulled and not self.check_mode:
            try:
                self._retry(lambda: self._pull(plan))
            except EngineError as exc:
                raise ValueError(f"{label}: pull failed: {exc}") from exc
            local = self.engine.inspect_image(f"{repository}@{digest}")
            if local is None:
                raise ValueError(f"{label}: the engine does not hold {repository}@{digest} after the pull")

        tagged = False
        if self.tag and tag and local is not None:
            current = self.engine.inspect_image(f"{repository}:{tag}")
            if current is None or current["Id"] != local["Id"]:
                tagged = True
                if not self.check_mode:
                    self.engine.tag(local["Id"], repository, tag)
        entry = {
            "name": name,
            "reference": reference,
            "digest": digest,
            "pinned": f"{repository}@{digest}",
            "size": int(local["Size"]) if local else 0,
            "id": local["Id"] if local else "",
            "pulled": pulled,
        }
        return entry, pulled or tagged


def build_auths(module):
    """X-Registry-Auth values by registry host."""
    return {
        registry: encode_auth(username, password, registry)
        for registry, (username, password) in credentials(module, module.params["registry_auth"]).items()
    }


def run_module():
    module = AnsibleModule(
        argument_spec={
            "images": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "name": {"type": "str", "required": True},
                    "reference": {"type": "str", "required": True},
                    "digest": {"type": "str"},
                    "size_mb": {"type": "int", "default": 0},
                },
            },
            "min_free_mb": {"type": "int", "default": 1024},
            "registry_auth": REGISTRY_AUTH_SPEC,
            "docker_socket": {"type": "path", "default": "/var/run/docker.sock"},
            "tag": {"type": "bool", "default": True},
            "retries": {"type": "int", "default": 4},
            "retry_delay": {"type": "float", "default": 2.0},
            "progress_file": {"type": "path"},
        },
        supports_check_mode=True,
    )
    names = [image["name"] for image in module.params["images"]]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        module.fail_json(msg=f"image names must be unique: {', '.join(duplicates)}")

    cache = ImageCache(
        Engine(module.params["docker_socket"]),
        build_auths(module),
        check_mode=module.check_mode,
        tag=module.params["tag"],
        retries=module.params["retries"],
        retry_delay=module.params["retry_delay"],
        # Check mode writes nothing, a progress file included.
        progress=ProgressFile(None if module.check_mode else module.params["progress_file"], "image_pull"),
    )
    bad_sizes = [image["name"] for image in module.params["images"] if image["size_mb"] < 0]
    if bad_sizes or module.params["min_free_mb"] < 0:
        module.fail_json(msg=f"size_mb and min_free_mb must be 0 or more: {', '.join(bad_sizes) or 'min_free_mb'}")

    plans = []
    for image in module.params["images"]:
        try:
            plans.append(cache.plan(image["name"], image["reference"], image["digest"]))
        except (ValueError, EngineError) as exc:
            module.fail_json(msg=str(exc), images=[])

    sizes = {image["name"]: image["size_mb"] for image in module.params["images"]}
    pending = [(plan["name"], sizes[plan["name"]]) for plan in plans if plan["local"] is None]
    try:
        path = cache.engine.info()["DockerRootDir"] if pending else ""
        disk = disk_preflight(pending, module.params["min_free_mb"], path)
    except (ValueError, EngineError, OSError, KeyError) as exc:
        module.fail_json(msg=str(exc), images=[], pulled=0)

    entries, changed = [], False
    to_pull = [plan for plan in plans if plan["local"] is None]
    for index, plan in enumerate(to_pull, 1):
        plan["position"] = f"image {index} of {len(to_pull)}"
    cache.progress.phase("pulling", line=f"image_pull: {len(to_pull)} of {len(plans)} images to pull")
    for plan in plans:
        try:
            entry, image_changed = cache.apply(plan)
        except (ValueError, EngineError) as exc:
            module.fail_json(msg=str(exc), images=entries, disk=disk)
        entries.append(entry)
        changed = changed or image_changed
    cache.progress.name = "image_pull"
    cache.progress.phase("done", line=f"image_pull: {sum(1 for e in entries if e['pulled'])} images pulled")
    module.exit_json(
        changed=changed,
        images=entries,
        digests={entry["name"]: entry["pinned"] for entry in entries},
        pulled=sum(1 for entry in entries if entry["pulled"]),
        disk=disk,
    )


def main():
    run_module()


if __name__ == "__main__":
    main()
