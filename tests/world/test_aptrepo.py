"""localworld.aptrepo: a signed flat apt repository of stand-in toolkit packages on loopback."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from localworld.aptrepo import STANDIN_PACKAGES, STANDIN_VERSIONS, AptRepo


@pytest.fixture(scope="module")
def aptrepo():
    with AptRepo() as repo:
        yield repo


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
        return response.read()


def test_serves_on_loopback_only(aptrepo):
    assert aptrepo.url.startswith("http://127.0.0.1:")
    assert aptrepo.url.endswith("/stable/deb/amd64")
    assert aptrepo.deb_base_url + "/amd64" == aptrepo.url


def test_release_is_signed_by_the_served_key(aptrepo, tmp_path: Path):
    keyring = tmp_path / "key.gpg"
    armored = fetch(aptrepo.key_url)
    assert armored.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    subprocess.run(["gpg", "--dearmor", "-o", str(keyring)], input=armored, check=True)
    inrelease = tmp_path / "InRelease"
    inrelease.write_bytes(fetch(aptrepo.url + "/InRelease"))
    ok = subprocess.run(["gpgv", "--keyring", str(keyring), str(inrelease)], capture_output=True, check=False)
    assert ok.returncode == 0, ok.stderr
    inrelease.write_bytes(inrelease.read_bytes().replace(b"Origin: localworld", b"Origin: tampered!"))
    bad = subprocess.run(["gpgv", "--keyring", str(keyring), str(inrelease)], capture_output=True, check=False)
    assert bad.returncode != 0


def test_indexes_match_the_release_and_the_debs(aptrepo):
    release = fetch(aptrepo.url + "/Release").decode()
    packages = fetch(aptrepo.url + "/Packages")
    assert f" {hashlib.sha256(packages).hexdigest()} {len(packages)} Packages" in release
    stanzas = [
        dict(line.split(": ", 1) for line in s.splitlines() if ": " in line) for s in packages.decode().split("\n\n")
    ]
    assert {(s["Package"], s["Version"]) for s in stanzas} == {
        (package, version) for package in STANDIN_PACKAGES for version in STANDIN_VERSIONS
    }
    for stanza in stanzas:
        deb = fetch(f"{aptrepo.url}/{stanza['Filename'].removeprefix('./')}")
        assert hashlib.sha256(deb).hexdigest() == stanza["SHA256"]
        assert int(stanza["Size"]) == len(deb)
        assert "STAND-IN" in stanza["Description"]


def test_nvidia_ctk_stand_in_reports_its_version(aptrepo, tmp_path: Path):
    version = STANDIN_VERSIONS[-1]
    deb = tmp_path / "base.deb"
    deb.write_bytes(fetch(f"{aptrepo.url}/nvidia-container-toolkit-base_{version}_amd64.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path / "root")], check=True)
    out = subprocess.run(
        [tmp_path / "root/usr/bin/nvidia-ctk", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"STAND-IN nvidia-ctk version {version.split('-', maxsplit=1)[0]}"


def test_command_line_prints_one_json_line_and_stops_on_its_own(tmp_path: Path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "localworld.aptrepo", "--max-lifetime", "3"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        info = json.loads(proc.stdout.readline())
        assert info["url"].startswith("http://127.0.0.1:")
        assert info["versions"] == list(STANDIN_VERSIONS)
        assert fetch(info["key_url"]).startswith(b"-----BEGIN PGP")
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()
