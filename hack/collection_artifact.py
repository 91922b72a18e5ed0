"""Installable artifacts of the collections the ``ansible`` package bundles, made from their installed copies.

Galaxy is out of reach here, so this collection's dependencies (amazon.aws,
community.docker, ...) come from the copies ``ansible`` installs under
``site-packages/ansible_collections``. Such a copy holds MANIFEST.json and
FILES.json, but the package leaves out what a collection needs no copy of at
run time (tests, CI settings, some docs): FILES.json, and MANIFEST.json's
checksum of it, then list only the files that are there, each checked
against its published checksum first. The tarball is reproducible byte for
byte (sorted entries, no times, gzip without a name or time).

    python hack/collection_artifact.py OUT_DIR amazon.aws [community.docker ...]
    python hack/collection_artifact.py OUT_DIR --definition execution-environment.yml

With ``--definition``, every ``<ns>-<name>-<version>.tar.gz`` of type file
that the execution environment lists (but the collection itself) is made,
and a version other than the installed one is an error.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import io
import json
import re
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def bundle(venv: Path = REPO / ".venv") -> Path:
    """The virtualenv's ``site-packages/ansible_collections``."""
    found = sorted(glob.glob(str(venv / "lib" / "python3*" / "site-packages" / "ansible_collections")))
    if not found:
        raise SystemExit(f"no ansible_collections under {venv}: run `make venv`")
    return Path(found[0])


def _member(tar: tarfile.TarFile, name: str, source: Path | None = None, data: bytes | None = None) -> None:
    info = tarfile.TarInfo(name)
    if data is not None:
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    elif source.is_dir():
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
    else:
        info.size = source.stat().st_size
        info.mode = 0o755 if source.stat().st_mode & 0o111 else 0o644
        with source.open("rb") as handle:
            tar.addfile(info, handle)


def from_installed(installed: Path, out: Path) -> tuple[Path, dict[str, str], int, int]:
    """Write ``<ns>-<name>-<version>.tar.gz`` of ``installed`` into ``out``.

    Returns the tarball, the collection's declared dependencies, and how many
    of FILES.json's files it holds out of how many were published.
    """
    manifest = json.loads((installed / "MANIFEST.json").read_text())
    info = manifest["collection_info"]
    files_raw = (installed / "FILES.json").read_bytes()
    if hashlib.sha256(files_raw).hexdigest() != manifest["file_manifest_file"]["chksum_sha256"]:
        raise SystemExit(f"{installed}/FILES.json does not match MANIFEST.json")
    listing = json.loads(files_raw)
    kept = []
    for entry in listing["files"]:
        source = installed / entry["name"]
        if entry["name"] != "." and not source.exists():
            continue
        if entry["ftype"] == "file" and hashlib.sha256(source.read_bytes()).hexdigest() != entry["chksum_sha256"]:
            raise SystemExit(f"{source} differs from its FILES.json checksum")
        kept.append(entry)
    files_json = json.dumps({**listing, "files": kept}, indent=4).encode()
    manifest["file_manifest_file"]["chksum_sha256"] = hashlib.sha256(files_json).hexdigest()
    tarball = out / f"{info['namespace']}-{info['name']}-{info['version']}.tar.gz"
    with tarball.open("wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed:
            with tarfile.open(fileobj=compressed, mode="w", format=tarfile.GNU_FORMAT) as tar:
                _member(tar, "MANIFEST.json", data=json.dumps(manifest, indent=4).encode())
                _member(tar, "FILES.json", data=files_json)
                for entry in kept:
                    if entry["name"] != ".":
                        _member(tar, entry["name"], source=installed / entry["name"])
    return tarball, dict(info.get("dependencies") or {}), len(kept) - 1, len(listing["files"]) - 1


def _from_definition(path: Path) -> dict[str, str]:
    """``{fqcn: version}`` of the tarballs an execution environment definition lists, but the collection itself."""
    import yaml

    definition = yaml.safe_load(path.read_text())
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    own = f"{galaxy['namespace']}-{galaxy['name']}-{galaxy['version']}.tar.gz"
    names = [
        Path(c["name"]).name for c in definition["dependencies"]["galaxy"]["collections"] if c.get("type") == "file"
    ]
    if own not in names:
        raise SystemExit(f"{path} does not list {own}: bump it with galaxy.yml's version")
    wanted = {}
    for name in names:
        if name == own:
            continue
        match = re.fullmatch(r"([a-z0-9_]+)-([a-z0-9_]+)-(.+)\.tar\.gz", name)
        if not match:
            raise SystemExit(f"{name}: not <namespace>-<name>-<version>.tar.gz")
        wanted[f"{match[1]}.{match[2]}"] = match[3]
    return wanted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("collections", nargs="*", help="namespace.name of each collection to make")
    parser.add_argument("--definition", type=Path, help="make what this execution environment definition lists")
    args = parser.parse_args(argv)
    wanted = dict.fromkeys(args.collections)
    if args.definition:
        wanted.update(_from_definition(args.definition))
    args.out.mkdir(parents=True, exist_ok=True)
    site = bundle()
    for fqcn, version in wanted.items():
        installed = site.joinpath(*fqcn.split("."))
        tarball, _deps, kept, published = from_installed(installed, args.out)
        found = json.loads((installed / "MANIFEST.json").read_text())["collection_info"]["version"]
        if version and found != version:
            raise SystemExit(f"{args.definition} names {fqcn} {version}, .venv has {found}: update it")
        print(f"[collection-artifact] {tarball.name}: {kept} of {published} files, from {installed}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
