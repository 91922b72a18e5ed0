"""A signed apt repository on loopback holding stand-ins for the NVIDIA container toolkit.

NVIDIA's libnvidia-container repository cannot be reached from the test
world, so this builds one with the same layout: a flat repository under
``/stable/deb/<arch>/`` (``Packages``, ``Release``, ``InRelease``,
``Release.gpg``) and the armored signing key at ``/gpgkey``. The packages
carry the toolkit's names in two versions; each one says STAND-IN in its
description and its programs (``nvidia-ctk``, ``nvidia-container-runtime``
...) print STAND-IN, except that the runtime hands over to ``runc`` so the
engine can use it.

Built with ``dpkg-deb`` (part of dpkg) and signed with a throwaway ``gpg``
key; the indexes are written here, so dpkg-dev and apt-utils are not needed.

``python -m localworld.aptrepo`` serves until SIGTERM or SIGINT (or
``--max-lifetime`` seconds) and prints one JSON line: url, key_url,
packages and versions.
"""

from __future__ import annotations

import argparse
import email.utils
import functools
import gzip
import hashlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

__all__ = ["STANDIN_PACKAGES", "STANDIN_VERSIONS", "AptRepo", "AptRepoError"]

HOST = "127.0.0.1"
ARCH = "amd64"
# Oldest first; the newest is what an unpinned install gets.
STANDIN_VERSIONS = ("1.17.7-1", "1.17.8-1")
# Package -> (files it installs, packages it depends on at the same version).
STANDIN_PACKAGES = {
    "libnvidia-container1": ((), ()),
    "libnvidia-container-tools": (("usr/bin/nvidia-container-cli",), ("libnvidia-container1",)),
    "nvidia-container-toolkit-base": (("usr/bin/nvidia-ctk", "usr/bin/nvidia-container-runtime"), ()),
    "nvidia-container-toolkit": (
        ("usr/bin/nvidia-container-runtime-hook",),
        ("nvidia-container-toolkit-base", "libnvidia-container-tools"),
    ),
}
REPO_PATH = f"stable/deb/{ARCH}"


class AptRepoError(RuntimeError):
    """The repository could not be built, signed or served."""


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)
    except FileNotFoundError as exc:
        raise AptRepoError(f"{argv[0]} not found: install it (Debian packages dpkg and gpg)") from exc
    except subprocess.CalledProcessError as exc:
        raise AptRepoError(f"{' '.join(argv[:3])} failed: {exc.stderr.strip()[-1000:]}") from exc


def _program(name: str, package: str, version: str) -> str:
    upstream = version.split("-")[0]
    if name == "nvidia-container-runtime":
        # The engine runs containers through it: hand over to runc.
        return f'#!/bin/sh\n# STAND-IN for {package} {version}\nexec runc "$@"\n'
    return (
        "#!/bin/sh\n"
        f"# STAND-IN for {package} {version}: not NVIDIA's program.\n"
        'case "$1" in\n'
        f'  --version|-v|version) echo "STAND-IN {name} version {upstream}" ;;\n'
        f'  *) echo "STAND-IN {name} {upstream}: $*" ;;\n'
        "esac\n"
    )


def build_deb(package: str, version: str, destination: Path) -> Path:
    """Build one stand-in .deb into ``destination``; return its path."""
    files, depends = STANDIN_PACKAGES[package]
    with tempfile.TemporaryDirectory(prefix="localworld-deb-") as tmp:
        root = Path(tmp)
        (root / "DEBIAN").mkdir()
        for relative in files:
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(_program(path.name, package, version))
            path.chmod(0o755)
        doc = root / "usr/share/doc" / package / "STAND-IN"
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text(f"{package} {version} is a stand-in built by localworld.aptrepo for tests.\n")
        control = [
            f"Package: {package}",
            f"Version: {version}",
            f"Architecture: {ARCH}",
            "Maintainer: localworld <aptrepo@localworld.invalid>",
        ]
        if depends:
            control.append("Depends: " + ", ".join(f"{dep} (= {version})" for dep in depends))
        control.append(f"Description: STAND-IN for {package} (tests only)")
        control.append(" Built by localworld.aptrepo; not NVIDIA's package.")
        (root / "DEBIAN/control").write_text("\n".join(control) + "\n")
        target = destination / f"{package}_{version}_{ARCH}.deb"
        _run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(target)])
    return target


def _control_fields(deb: Path) -> str:
    return _run(["dpkg-deb", "--field", str(deb)]).stdout.rstrip("\n")


def write_packages_index(directory: Path) -> None:
    """Write Packages and Packages.gz for the .deb files in ``directory`` (a flat repository)."""
    stanzas = []
    for deb in sorted(directory.glob("*.deb")):
        data = deb.read_bytes()
        stanzas.append(
            "\n".join(
                [
                    _control_fields(deb),
                    f"Filename: ./{deb.name}",
                    f"Size: {len(data)}",
                    f"MD5sum: {hashlib.md5(data).hexdigest()}",  # noqa: S324 (an index field, not security)
                    f"SHA256: {hashlib.sha256(data).hexdigest()}",
                ]
            )
        )
    text = "\n\n".join(stanzas) + "\n"
    (directory / "Packages").write_text(text)
    (directory / "Packages.gz").write_bytes(gzip.compress(text.encode(), mtime=0))


def write_release(directory: Path) -> Path:
    """Write the Release file listing the indexes' sizes and hashes."""
    lines = [
        "Origin: localworld",
        "Label: STAND-IN libnvidia-container",
        f"Architectures: {ARCH}",
        f"Date: {email.utils.formatdate(usegmt=True)}",
    ]
    for field, algorithm in (("MD5Sum", hashlib.md5), ("SHA256", hashlib.sha256)):
        lines.append(f"{field}:")
        for name in ("Packages", "Packages.gz"):
            data = (directory / name).read_bytes()
            lines.append(f" {algorithm(data).hexdigest()} {len(data)} {name}")
    release = directory / "Release"
    release.write_text("\n".join(lines) + "\n")
    return release


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        self.server.requests.append(self.path)


class AptRepo:
    """Build, sign and serve the stand-in repository on 127.0.0.1 and a free port."""

    def __init__(self, versions: tuple[str, ...] = STANDIN_VERSIONS):
        self.versions = tuple(versions)
        self.root: Path | None = None
        self.fingerprint: str | None = None
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise AptRepoError("the repository is not started")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def deb_base_url(self) -> str:
        """The URL the role's ``nvidia_container_apt_base_url`` takes (the architecture is appended)."""
        return f"{self.base_url}/stable/deb"

    @property
    def url(self) -> str:
        """The flat repository itself (``URIs:`` in a deb822 source, suite ``/``)."""
        return f"{self.base_url}/{REPO_PATH}"

    @property
    def key_url(self) -> str:
        return f"{self.base_url}/gpgkey"

    @property
    def requests(self) -> list[str]:
        """Paths requested so far."""
        return list(self._server.requests) if self._server else []

    def start(self) -> AptRepo:
        if self._server is not None:
            raise AptRepoError("the repository is already started")
        self.root = Path(tempfile.mkdtemp(prefix="localworld-aptrepo-"))
        try:
            self._build()
            handler = functools.partial(_Handler, directory=str(self.root))
            self._server = http.server.ThreadingHTTPServer((HOST, 0), handler)
            self._server.requests = []
            self._thread = threading.Thread(target=self._server.serve_forever, name="aptrepo", daemon=True)
            self._thread.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> AptRepo:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def info(self) -> dict:
        return {
            "url": self.url,
            "deb_base_url": self.deb_base_url,
            "key_url": self.key_url,
            "fingerprint": self.fingerprint,
            "packages": sorted(STANDIN_PACKAGES),
            "versions": list(self.versions),
        }

    def _build(self) -> None:
        repo = self.root / REPO_PATH
        repo.mkdir(parents=True)
        for version in self.versions:
            for package in STANDIN_PACKAGES:
                build_deb(package, version, repo)
        write_packages_index(repo)
        release = write_release(repo)
        gnupghome = Path(tempfile.mkdtemp(prefix="localworld-gnupg-"))
        try:
            gpg = ["gpg", "--batch", "--homedir", str(gnupghome), "--pinentry-mode", "loopback", "--passphrase", ""]
            _run([*gpg, "--quick-gen-key", "localworld apt STAND-IN <aptrepo@localworld.invalid>", "ed25519", "sign"])
            listing = _run([*gpg, "--with-colons", "--list-keys"]).stdout
            self.fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
            (self.root / "gpgkey").write_text(_run([*gpg, "--armor", "--export", self.fingerprint]).stdout)
            _run([*gpg, "--yes", "--clearsign", "-o", str(repo / "InRelease"), str(release)])
            _run([*gpg, "--yes", "--armor", "--detach-sign", "-o", str(repo / "Release.gpg"), str(release)])
        finally:
            # The private key never outlives the build.
            shutil.rmtree(gnupghome, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localworld.aptrepo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--max-lifetime",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="stop on its own after this long, so a forgotten server does not linger (default 3600)",
    )
    args = parser.parse_args(argv)

    def _stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    repo = AptRepo()
    try:
        repo.start()
        print(json.dumps({**repo.info(), "pid": os.getpid()}), flush=True)
        deadline = time.monotonic() + args.max_lifetime
        while time.monotonic() < deadline:
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        return 0
    except KeyboardInterrupt:
        return 0
    except AptRepoError as exc:
        print(f"localworld.aptrepo: {exc}", file=sys.stderr)
        return 1
    finally:
        repo.stop()


if __name__ == "__main__":
    sys.exit(main())
