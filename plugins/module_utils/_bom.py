# Copyright: burst.golden_ami contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A CycloneDX bill of materials of a machine image: its OS packages, container images and models.

Private to this collection. Standard library only (Python 3.9+): ``image_bom``
runs it on the builder.

The document follows CycloneDX 1.6 (JSON). The same inputs give the same
document: components are sorted, there is no timestamp unless one is given,
and the serial number is derived from the content.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from urllib.parse import quote

from ansible_collections.burst.golden_ami.plugins.module_utils._docker_engine import parse_reference, registry_host
from ansible_collections.burst.golden_ami.plugins.module_utils._model_record import redact_url

SPEC_VERSION = "1.6"
SCHEMA = "http://cyclonedx.org/schema/bom-1.6.schema.json"
TOOL_NAME = "burst.golden_ami"
# Namespace of the serial numbers (a name-based UUID of the document's sha256).
SERIAL_NAMESPACE = uuid.UUID("6f1c3d2e-6a0b-5c55-9a51-2b6f0d3e9c41")

DIGEST = re.compile(r"^(?:(sha256):([0-9a-f]{64})|(sha512):([0-9a-f]{128}))$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
HASH_ALGS = {"sha256": "SHA-256", "sha512": "SHA-512"}

# One line per package: name, version, architecture, source name and version, section, status
# (dpkg-query and rpm expand the \t and \n escapes themselves).
DPKG_FORMAT = (
    "${Package}\\t${Version}\\t${Architecture}\\t${source:Package}\\t${source:Version}\\t${Section}"
    "\\t${db:Status-Abbrev}\\n"
)
RPM_FORMAT = "%{NAME}\\t%{EPOCH}\\t%{VERSION}\\t%{RELEASE}\\t%{ARCH}\\t%{SOURCERPM}\\t%{GROUP}\\n"
# Debian sections whose packages are libraries (the others are applications).
LIBRARY_SECTIONS = ("libs", "libdevel", "oldlibs", "introspection")


class BomError(Exception):
    """An input the bill of materials cannot describe: the message names it."""


def parse_os_release(text):
    """The ``KEY=value`` pairs of an os-release file, unquoted."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        values[key.strip()] = value
    return values


def read_os_release(path):
    """The os-release pairs of the file at ``path``; ``{}`` when there is none."""
    try:
        with open(path, encoding="utf-8") as handle:
            return parse_os_release(handle.read())
    except FileNotFoundError:
        return {}


def _quote(value):
    """A purl segment or qualifier value, percent-encoded as the purl specification writes it."""
    return quote(str(value), safe=":/")


def purl(kind, name, version=None, namespace=None, qualifiers=None):
    """A package URL in canonical form (qualifiers sorted, empty ones left out)."""
    text = "pkg:" + kind + "/"
    if namespace:
        text += "/".join(quote(part, safe="") for part in namespace.split("/")) + "/"
    text += quote(name, safe="")
    if version:
        text += "@" + _quote(version)
    pairs = sorted((key, value) for key, value in (qualifiers or {}).items() if value)
    if pairs:
        text += "?" + "&".join("%s=%s" % (key, _quote(value)) for key, value in pairs)
    return text


def _properties(pairs):
    """CycloneDX properties from (name, value) pairs, those with no value left out."""
    return [{"name": name, "value": str(value)} for name, value in pairs if value not in (None, "")]


def _distro(os_release):
    """The ``<id>-<version_id>`` a package purl names its distribution by."""
    distro_id = os_release.get("ID", "").lower()
    version_id = os_release.get("VERSION_ID", "")
    return "%s-%s" % (distro_id, version_id) if distro_id and version_id else distro_id


def os_component(os_release):
    """The operating system itself, from its os-release pairs; None when they name none."""
    distro_id = os_release.get("ID", "").lower()
    if not distro_id:
        return None
    component = {
        "type": "operating-system",
        "bom-ref": "os/" + (_distro(os_release) or distro_id),
        "name": distro_id,
    }
    if os_release.get("VERSION_ID"):
        component["version"] = os_release["VERSION_ID"]
    if os_release.get("PRETTY_NAME"):
        component["description"] = os_release["PRETTY_NAME"]
    if os_release.get("CPE_NAME"):
        component["cpe"] = os_release["CPE_NAME"]
    references = [
        {"type": kind, "url": os_release[key]}
        for key, kind in (("HOME_URL", "website"), ("BUG_REPORT_URL", "issue-tracker"))
        if os_release.get(key, "").startswith(("http://", "https://"))
    ]
    if references:
        component["externalReferences"] = references
    properties = _properties(
        [("burst:os:codename", os_release.get("VERSION_CODENAME")), ("burst:os:id_like", os_release.get("ID_LIKE"))]
    )
    if properties:
        component["properties"] = properties
    return component


def _package(name, version, arch, package_purl, kind, source):
    component = {"type": kind, "bom-ref": package_purl, "name": name, "version": version, "purl": package_purl}
    # The source package only when it differs from the binary one (libc6 comes from glibc).
    properties = _properties([("burst:package:arch", arch), ("burst:package:source", source if source != name else "")])
    if properties:
        component["properties"] = properties
    return component


def _rows(output):
    """The tab-separated fields of each line of a package listing; rpm's ``(none)`` becomes empty."""
    for line in output.splitlines():
        fields = line.split("\t")
        if len(fields) >= 7 and fields[0]:
            yield ["" if field == "(none)" else field for field in fields[:7]]


def parse_dpkg(output, os_release):
    """Package components from ``dpkg-query -W -f DPKG_FORMAT`` output: installed packages only."""
    namespace = os_release.get("ID", "").lower() or "debian"
    distro = _distro(os_release)
    packages = []
    for name, version, arch, source, source_version, section, status in _rows(output):
        # Status-Abbrev: desired action, then the state; n (not installed) and c (config files) are gone.
        if len(status) < 2 or status[1] in "nc":
            continue
        source = source or name
        same_version = not source_version or source_version == version
        label = source if same_version else source + "@" + source_version
        upstream = None if label == name else label
        package_purl = purl("deb", name, version, namespace, {"arch": arch, "distro": distro, "upstream": upstream})
        kind = "library" if section.rsplit("/", 1)[-1] in LIBRARY_SECTIONS else "application"
        packages.append(_package(name, version, arch, package_purl, kind, label))
    return packages


def parse_rpm(output, os_release):
    """Package components from ``rpm -qa --queryformat RPM_FORMAT`` output."""
    namespace = os_release.get("ID", "").lower() or None
    distro = _distro(os_release)
    packages = []
    for name, epoch, version, release, arch, source_rpm, group in _rows(output):
        full_version = version + ("-" + release if release else "")
        package_purl = purl("rpm", name, full_version, namespace, {"arch": arch, "distro": distro, "epoch": epoch})
        libraries = ("system environment/libraries", "development/libraries")
        kind = "library" if group.lower().startswith(libraries) else "application"
        version_label = (epoch + ":" if epoch else "") + full_version
        packages.append(_package(name, version_label, arch, package_purl, kind, source_rpm))
    return packages


def package_command(manager):
    """The command that lists the installed packages of ``manager`` (dpkg or rpm)."""
    if manager == "dpkg":
        return ["dpkg-query", "-W", "-f", DPKG_FORMAT]
    return ["rpm", "-qa", "--queryformat", RPM_FORMAT]


def packages(manager, output, os_release):
    """Sorted package components of ``manager``'s listing; duplicates (same purl) once."""
    parse = parse_dpkg if manager == "dpkg" else parse_rpm
    unique = {component["bom-ref"]: component for component in parse(output, os_release)}
    return [unique[ref] for ref in sorted(unique, key=lambda ref: (unique[ref]["name"], ref))]


def _hash(label, digest):
    match = DIGEST.match(str(digest or "").lower())
    if not match:
        raise BomError("%s has no digest of the form sha256:<64 hex digits> (got %r)" % (label, digest))
    alg, content = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
    return {"alg": HASH_ALGS[alg], "content": content}


def repository_url(repository):
    """A repository with its registry host, as Docker resolves it (``vllm/vllm-openai`` is on docker.io)."""
    if registry_host(repository) != "docker.io":
        return repository
    path = repository[len("docker.io/") :] if repository.startswith("docker.io/") else repository
    return "docker.io/" + (path if "/" in path else "library/" + path)


def container_component(image):
    """A container image of the image cache's manifest, by digest."""
    if not isinstance(image, dict):
        raise BomError("a container image must be a dict with name, reference and digest, got %r" % (image,))
    name = image.get("name") or image.get("reference")
    reference = image.get("reference") or name
    label = "container image %r" % (name,) + (" (%s)" % reference if reference != name else "")
    if not name:
        raise BomError("a container image has neither name nor reference: %r" % (image,))
    digest = image.get("digest")
    if not digest and "@" in str(reference):
        digest = str(reference).split("@", 1)[1]
    hashes = [_hash(label, digest)]
    digest = str(digest).lower()
    try:
        repository, tag, _pinned = parse_reference(str(reference))
    except ValueError as exc:
        raise BomError("%s: %s" % (label, exc)) from exc
    path = repository_url(repository)
    component = {
        "type": "container",
        "bom-ref": "container/" + name,
        "name": path,
        "version": digest,
        "hashes": hashes,
        "purl": purl("oci", path.rsplit("/", 1)[-1].lower(), digest, None, {"repository_url": path, "tag": tag}),
    }
    size = image.get("size")
    component["properties"] = _properties(
        [("burst:image:name", name), ("burst:image:reference", reference), ("burst:image:size", size)]
    )
    return component


def _file_component(model_ref, model_label, entry):
    if not isinstance(entry, dict) or not entry.get("path"):
        raise BomError("%s lists a file without a path: %r" % (model_label, entry))
    path = entry["path"]
    sha256 = str(entry.get("sha256") or "").lower()
    if not SHA256.match(sha256):
        raise BomError("%s: file %r has no sha256 (got %r)" % (model_label, path, entry.get("sha256")))
    component = {
        "type": "file",
        "bom-ref": model_ref + "/" + path,
        "name": path,
        "hashes": [{"alg": "SHA-256", "content": sha256}],
    }
    properties = _properties(
        [("burst:file:size", entry.get("size")), ("burst:file:verified_with", entry.get("verified_with"))]
    )
    if properties:
        component["properties"] = properties
    return component


def model_component(name, record, root="/models"):
    """A model of the models manifest, with each of its files as a nested file component."""
    label = "model %r" % (name,)
    if not isinstance(record, dict):
        raise BomError("%s: its record is not a dict" % label)
    files = record.get("files")
    if not isinstance(files, list):
        raise BomError("%s: its record lists no files" % label)
    source = record.get("source") or "hub"
    ref = "model/" + name
    component = {"type": "machine-learning-model", "bom-ref": ref, "name": name}
    revision = None
    if source == "hub":
        repo_id = str(record.get("repo_id") or "")
        commit = str(record.get("commit_sha") or record.get("version") or "").lower()
        if "/" not in repo_id or not commit:
            raise BomError("%s: a hub record needs repo_id and commit_sha" % label)
        org, repo = repo_id.split("/", 1)
        revision = record.get("revision")
        component.update(
            group=org,
            name=repo,
            version=commit,
            purl=purl("huggingface", repo, commit, org),
            externalReferences=[
                {"type": "distribution", "url": "https://huggingface.co/%s/tree/%s" % (repo_id, commit)}
            ],
        )
    else:
        version = str(record.get("version") or "")
        if not version:
            raise BomError("%s: its record has no version" % label)
        component["version"] = version
        if source == "s3":
            location = "s3://%s/%s" % (record.get("bucket", ""), str(record.get("prefix") or "").lstrip("/"))
        else:
            location = redact_url(record.get("url") or "")
        if location:
            component["externalReferences"] = [{"type": "distribution", "url": location}]
    component["properties"] = _properties(
        [
            ("burst:model:source", source),
            ("burst:model:directory", root.rstrip("/") + "/" + name),
            ("burst:model:revision", revision),
        ]
    )
    entries = [_file_component(ref, label, entry) for entry in files]
    component["components"] = sorted(entries, key=lambda entry: entry["name"])
    return component


def models_of(document):
    """The records of a models manifest document (``{format, models}``), by directory name."""
    if not document:
        return {}
    if not isinstance(document, dict) or not isinstance(document.get("models", {}), dict):
        raise BomError("models must be the models manifest, {format, models: {name: record}}")
    return document.get("models") or {}


def serial_number(document):
    """A urn:uuid that only this content gets: a name-based UUID of its sha256."""
    content = dict(document)
    content.pop("serialNumber", None)
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()
    return uuid.uuid5(SERIAL_NAMESPACE, digest).urn


def build(
    image,
    os_release,
    package_list=(),
    container_images=(),
    models=None,
    models_root="/models",
    tool_version="",
    timestamp="",
):
    """The bill of materials, a dict ready for JSON.

    ``image`` names the machine image: ``name``, ``version``, ``description`` and ``properties`` (name to
    value). ``package_list`` are package components (``packages()``), ``container_images`` the image cache's
    manifest entries, ``models`` the models manifest document. Raises ``BomError`` naming a bad entry.
    """
    tool = {
        "type": "application",
        "name": TOOL_NAME,
        "description": "Ansible collection that bakes golden GPU machine images",
    }
    if tool_version:
        tool["version"] = tool_version
    root = {"type": "operating-system", "bom-ref": "image/" + image["name"], "name": image["name"]}
    if image.get("version"):
        root["version"] = str(image["version"])
    if image.get("description"):
        root["description"] = image["description"]
    properties = _properties(sorted((image.get("properties") or {}).items()))
    if properties:
        root["properties"] = properties
    metadata = {"tools": {"components": [tool]}, "component": root}
    if timestamp:
        metadata["timestamp"] = timestamp

    components = []
    dependencies = []
    operating_system = os_component(os_release)
    package_list = list(package_list)
    if operating_system is not None:
        components.append(operating_system)
        dependencies.append({"ref": operating_system["bom-ref"], "dependsOn": [p["bom-ref"] for p in package_list]})
    components.extend(package_list)

    containers = [container_component(entry) for entry in container_images or []]
    seen = set()
    for container in containers:
        if container["bom-ref"] in seen:
            raise BomError("two container images are named %r" % container["bom-ref"].split("/", 1)[1])
        seen.add(container["bom-ref"])
    components.extend(containers)
    records = models_of(models)
    model_components = [model_component(name, records[name], models_root) for name in sorted(records)]
    components.extend(model_components)

    tops = ([operating_system] if operating_system else []) + (package_list if operating_system is None else [])
    tops += containers + model_components
    dependencies.insert(0, {"ref": root["bom-ref"], "dependsOn": [c["bom-ref"] for c in tops]})
    document = {
        "$schema": SCHEMA,
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "version": 1,
        "metadata": metadata,
        "components": components,
        "dependencies": dependencies,
    }
    document["serialNumber"] = serial_number(document)
    return document


def summary(document):
    """Counts of what the document lists: packages, container images, models and model files."""
    counts = {"packages": 0, "container_images": 0, "models": 0, "files": 0}
    for component in document.get("components", []):
        if component["type"] in ("library", "application"):
            counts["packages"] += 1
        elif component["type"] == "container":
            counts["container_images"] += 1
        elif component["type"] == "machine-learning-model":
            counts["models"] += 1
            counts["files"] += len(component.get("components", []))
    return counts
