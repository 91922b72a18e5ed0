"""The bake profiles of playbooks/vars/profiles/, each baked end to end on the local world.

Each test runs ``ansible-playbook playbooks/bake.yml`` with the profile's
vars file as shipped, then one file of local substitutions only: the local
endpoints (moto, the local registry, the Hub mirror, the stand-in apt
repository), the builder reached through a local systemd container that the
test owns (so that what the image would hold can be inspected after the
bake), and a nested Docker engine without a bridge. It then checks what the
profile promises, in moto, in the registry and in the builder's file system,
and that the bake left nothing behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import boto3
import pytest
import tomllib
import yaml

from localworld.aptrepo import AptRepo
from localworld.localplay import bake_environment

REPO = Path(__file__).resolve().parents[2]
PROFILES = REPO / "playbooks" / "vars" / "profiles"
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
BASE_IMAGE = "burst-golden-ami/debian12-systemd:latest"
TIMEOUT_S = 420
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

pytestmark = [pytest.mark.slow, pytest.mark.docker]

# A nested engine in the builder container: no bridge, no iptables, vfs.
NESTED_ENGINE = {
    "container_runtime_daemon_options": {
        "bridge": "none",
        "iptables": False,
        "ip6tables": False,
        "storage-driver": "vfs",
        "ip-forward": False,
        "ip-masq": False,
    }
}


def _profile(name: str) -> dict:
    return yaml.safe_load((PROFILES / f"{name}.yml").read_text())


def _local_vars(tmp_path: Path, bake_id: str, container: str, **overrides) -> dict:
    variables = {
        "bake_id": bake_id,
        "bake_region": os.environ.get("AWS_DEFAULT_REGION", "eu-central-1"),
        "bake_subnet_ids": [],
        "bake_builder_connection": "docker",
        "bake_builder_container": container,
        "bake_manifest_path": str(tmp_path / "manifest.json"),
        "bake_capture_poll_interval": 1,
        "model_cache_pip_extra_args": "--cert /etc/burst-test/ca-certificates.crt",
    }
    variables.update(overrides)
    return variables


def _bake(profile: str, variables: dict, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    local = tmp_path / f"local-{variables['bake_id']}.json"
    local.write_text(json.dumps(variables))
    command = [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", str(REPO / "playbooks" / "bake.yml")]
    command += ["-e", f"@{PROFILES / f'{profile}.yml'}", "-e", f"@{local}"]
    return subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )


def _output(result: subprocess.CompletedProcess) -> str:
    return f"{result.stdout}\n{result.stderr}"


def _bake_id(name: str) -> str:
    return f"test-{name}-{secrets.token_hex(3)}"


class Builder:
    """A systemd container that stands in for the builder instance; the test keeps it to inspect it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def start(self) -> Builder:
        subprocess.run(
            [
                "docker", "run", "-d", "--name", self.name,
                "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN",
                "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
                "--cgroupns", "host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                "--tmpfs", "/run", "--tmpfs", "/run/lock",
                "-v", f"{CA_BUNDLE}:/etc/burst-test/ca-certificates.crt:ro",
                "--network", "host", BASE_IMAGE, "/lib/systemd/systemd",
            ],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        for _attempt in range(120):
            state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return self
            time.sleep(0.5)
        raise AssertionError(f"systemd did not start in {self.name}: {state}")

    def remove(self) -> None:
        subprocess.run(["docker", "rm", "-f", "-v", self.name], capture_output=True, check=False, timeout=180)

    def run(self, *argv: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(
            ["docker", "exec", "-i", self.name, *argv],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=180,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed in {self.name}: {result.stdout}{result.stderr}")
        return result

    def read(self, path: str) -> str:
        return self.run("cat", path).stdout


@pytest.fixture
def builder(request):
    started = Builder(f"burst-profile-{request.node.name[5:25].replace('_', '-')}-{secrets.token_hex(3)}").start()
    try:
        yield started
    finally:
        started.remove()


def _leftovers(bake_id: str) -> dict[str, list[str]]:
    ec2 = boto3.client("ec2")
    by_tag = [{"Name": "tag:BakeId", "Values": [bake_id]}]
    active = {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}
    instances = [
        i["InstanceId"]
        for r in ec2.describe_instances(Filters=[*by_tag, active])["Reservations"]
        for i in r["Instances"]
    ]
    groups = [g["GroupId"] for g in ec2.describe_security_groups(Filters=by_tag)["SecurityGroups"]]
    keys = [k["KeyName"] for k in ec2.describe_key_pairs(Filters=by_tag)["KeyPairs"]]
    return {"instances": instances, "security_groups": groups, "key_pairs": keys}


NOTHING_LEFT = {"instances": [], "security_groups": [], "key_pairs": []}


def _builder_instance(bake_id: str) -> dict:
    reservations = boto3.client("ec2").describe_instances(
        Filters=[{"Name": "tag:BakeId", "Values": [bake_id]}, {"Name": "tag:Mode", "Values": ["GoldenAmiBuilder"]}]
    )["Reservations"]
    instances = [i for r in reservations for i in r["Instances"]]
    assert len(instances) == 1, instances
    return instances[0]


def _images_of(bake_id: str) -> list[dict]:
    return boto3.client("ec2").describe_images(Owners=["self"], Filters=[{"Name": "tag:BakeId", "Values": [bake_id]}])[
        "Images"
    ]


# ---------------------------------------------------------------------------
# batch_gpu (seed 002)


@pytest.fixture(scope="module")
def apt_repo():
    with AptRepo() as repo:
        yield repo


def _s3_model(bucket: str) -> dict[str, bytes]:
    """A small model in moto's S3 under models/, each object with its SHA-256 checksum."""
    files = {
        "yolov8n.pt": secrets.token_bytes(3 * 1024 * 1024 + 17),
        "reid/osnet.onnx": secrets.token_bytes(1024 * 1024 + 3),
        "labels.json": json.dumps({"0": "person", "1": "car"}).encode(),
    }
    s3 = boto3.client("s3")
    region = s3.meta.region_name
    config = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    s3.create_bucket(Bucket=bucket, **config)
    for path, data in files.items():
        s3.put_object(Bucket=bucket, Key=f"models/{path}", Body=data, ChecksumAlgorithm="SHA256")
    return files


def test_batch_gpu_profile(aws_env, auth_registry, builder, apt_repo, tmp_path):
    profile = _profile("batch_gpu")
    roles = ["os_updates", "nvidia_container", "image_cache", "model_cache", "ecs_agent"]
    assert profile["bake_configure_roles"] == roles
    bucket = f"models-{secrets.token_hex(4)}"
    files = _s3_model(bucket)
    image = auth_registry.standins["vllm-openai:v0.1"]
    # The ECS GPU-optimized base ships the ECS agent: a stand-in unit, with the state a run leaves.
    builder.run(
        "sh", "-c",
        "printf '[Unit]\\nDescription=STAND-IN for the Amazon ECS container agent\\n[Service]\\n"
        "ExecStart=/bin/sleep infinity\\n[Install]\\nWantedBy=multi-user.target\\n' > /etc/systemd/system/ecs.service"
        " && mkdir -p /etc/ecs /var/lib/ecs/data && echo ECS_LOGLEVEL=info > /etc/ecs/ecs.config"
        " && echo '{\"Data\":{\"Cluster\":\"builder\"}}' > /var/lib/ecs/data/ecs_agent_data.json"
        " && systemctl daemon-reload && systemctl enable --now ecs.service",
    )  # fmt: skip
    model = {
        **profile["model_cache_models"][0],
        "bucket": bucket,
        "region": boto3.client("s3").meta.region_name,
        "s3_endpoint_url": aws_env["AWS_ENDPOINT_URL"],
    }
    local = {
        # The stand-in base has no engine: container_runtime installs one, the stand-in apt repository the toolkit.
        "bake_configure_roles": ["container_runtime", *profile["bake_configure_roles"]],
        **NESTED_ENGINE,
        "nvidia_container_manage_repository": True,
        "nvidia_container_apt_base_url": apt_repo.deb_base_url,
        "nvidia_container_gpg_key_url": apt_repo.key_url,
        "nvidia_container_version": apt_repo.versions[-1],
        # The private image: the local registry with a password (the profile's ECR token in AWS).
        "image_cache_images": [
            {**profile["image_cache_images"][0], "reference": image["reference"], "digest": image["digest"]}
        ],
        "image_cache_registry_auth": [
            {"registry": auth_registry.host, "username": auth_registry.username, "password": auth_registry.password}
        ],
        "image_cache_min_free_mb": 64,
        "model_cache_models": [model],
        "model_cache_disk_margin_mb": 16,
        # moto's credentials, given to the download process only.
        "model_cache_aws_access_key_id": aws_env["AWS_ACCESS_KEY_ID"],
        "model_cache_aws_secret_access_key": aws_env["AWS_SECRET_ACCESS_KEY"],
        "bake_prune": False,
        "bake_ssm_parameter": f"/batch/test/{secrets.token_hex(3)}",
    }
    env = bake_environment(aws_env, tmp_path)

    # The image cannot fit: the preflight fails the bake before any pull, naming the space.
    full_id = _bake_id("batch-full")
    too_big = {**local, "image_cache_images": [{**local["image_cache_images"][0], "size_mb": 64 * 1024 * 1024}]}
    result = _bake("batch_gpu", _local_vars(tmp_path, full_id, builder.name, **too_big), env, tmp_path)
    output = _output(result)
    assert result.returncode != 0, output[-4000:]
    assert f"Bake {full_id} failed at step" in output and "(role image_cache)" in output
    assert "Not enough disk space" in output
    assert builder.run("docker", "image", "inspect", image["pinned"], check=False).returncode != 0, "nothing pulled"
    assert not _images_of(full_id)
    assert _leftovers(full_id) == NOTHING_LEFT

    bake_id = _bake_id("batch")
    result = _bake("batch_gpu", _local_vars(tmp_path, bake_id, builder.name, **local), env, tmp_path)
    output = _output(result)
    assert result.returncode == 0, output[-6000:]

    # Launched from the ECS GPU-optimized image, found by its public SSM parameter.
    ecs_gpu = boto3.client("ssm").get_parameter(Name=profile["bake_base_image_ssm_parameter"])["Parameter"]["Value"]
    assert _builder_instance(bake_id)["ImageId"] == ecs_gpu
    images = _images_of(bake_id)
    assert len(images) == 1
    image_id = images[0]["ImageId"]

    # The manifest in Packer's format, as the seed's Terraform step reads it (builds[0].artifact_id).
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    region = boto3.client("ec2").meta.region_name
    assert manifest["builds"][0]["builder_type"] == "amazon-ebs"
    assert manifest["builds"][0]["artifact_id"] == f"{region}:{image_id}"
    assert manifest["last_run_uuid"] == manifest["builds"][0]["packer_run_uuid"] == bake_id
    contents = manifest["contents"]
    assert contents["profile"] == "batch_gpu"
    # The OS updates ran first, with the builder's own apt sources, and said what they changed (if anything).
    updates = contents["roles_manifest"]["os_updates"]
    assert updates["manager"] == "apt" and updates["scope"] == "security", updates
    assert isinstance(updates["packages"], list) and updates["rebooted"] is False, updates
    assert [(i["name"], i["digest"]) for i in contents["container_images"]] == [("batch-processor", image["digest"])]

    # The image holds: the job image at its digest (once the engine runs again, as at boot) ...
    builder.run("systemctl", "start", "docker")
    inspected = json.loads(builder.run("docker", "image", "inspect", image["pinned"]).stdout)
    assert image["pinned"] in inspected[0]["RepoDigests"]
    # ... the models in /opt/ml/models, each file as uploaded ...
    root = f"/opt/ml/models/{model['name']}"
    for path, data in files.items():
        held = builder.run("sha256sum", f"{root}/{path}").stdout.split()[0]
        assert held == hashlib.sha256(data).hexdigest(), path
    recorded = {f["path"]: f["sha256"] for f in contents["models"]["models"][model["name"]]["files"]}
    assert recorded == {path: hashlib.sha256(data).hexdigest() for path, data in files.items()}
    # ... the ECS agent set to use the cached image and the GPUs, with the base's own line kept
    # and no state of the builder's registration ...
    config = builder.read("/etc/ecs/ecs.config").splitlines()
    assert "ECS_IMAGE_PULL_BEHAVIOR=prefer-cached" in config
    assert "ECS_ENABLE_GPU_SUPPORT=true" in config
    assert "ECS_LOGLEVEL=info" in config
    assert builder.run("ls", "-A", "/var/lib/ecs/data").stdout.strip() == ""
    assert builder.run("systemctl", "is-enabled", "ecs.service").stdout.strip() == "enabled"
    # ... and the GPU check, which says there is no GPU here (exit 2).
    check = builder.run("/usr/local/bin/burst-verify-gpu", check=False)
    assert check.returncode == 2, check.stdout + check.stderr
    assert _leftovers(bake_id) == NOTHING_LEFT


# ---------------------------------------------------------------------------
# buildkit_cpu (seed 003)


def _register_old_images(prefix: str, count: int) -> list[str]:
    ec2 = boto3.client("ec2")
    ids = []
    for index in range(count):
        ids.append(
            ec2.register_image(
                Name=f"{prefix}2026010{index + 1}",
                RootDeviceName="/dev/sda1",
                BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 8}}],
            )["ImageId"]
        )
        time.sleep(1.1)  # distinct creation times
    return ids


def test_buildkit_cpu_profile(aws_env, registry, builder, tmp_path):
    profile = _profile("buildkit_cpu")
    assert profile["bake_configure_roles"] == ["os_updates", "container_runtime", "image_cache", "buildkit"]
    assert profile["bake_root_volume"] == {"size": 200, "volume_type": "gp3", "iops": 6000, "throughput": 500}
    prefix = f"cpu-build-{secrets.token_hex(3)}-"
    older = _register_old_images(prefix, 4)
    vllm = registry.standins["vllm-openai:v0.1"]
    buildkit = registry.standins["buildkit:v0.1"]
    bake_id = _bake_id("buildkit")
    parameter = f"/buildkite/test/{bake_id}"
    local = {
        # moto has no Canonical parameters: its Ubuntu image found by name instead.
        "bake_base_image_ssm_parameter": "",
        "bake_base_image_family": {"name_prefix": "Deep Learning AMI Ubuntu", "owners": ["amazon"]},
        **NESTED_ENGINE,
        "image_cache_images": [
            {"name": "vllm-postmerge", "reference": vllm["reference"]},
            {"name": "buildkit", "reference": buildkit["reference"]},
        ],
        # The nested engine cannot grant privileges; the stand-in needs none.
        "buildkit_privileged": False,
        "bake_image_name": f"{prefix}{{{{ bake_version }}}}",
        "bake_prune_name_prefix": prefix,
        "bake_ssm_parameter": parameter,
    }
    env = bake_environment(aws_env, tmp_path)
    result = _bake("buildkit_cpu", _local_vars(tmp_path, bake_id, builder.name, **local), env, tmp_path)
    output = _output(result)
    assert result.returncode == 0, output[-6000:]

    ec2 = boto3.client("ec2")
    images = _images_of(bake_id)
    assert len(images) == 1
    new = images[0]
    assert new["Name"] == f"{prefix}{time.strftime('%Y%m%d', time.gmtime())}"
    # Published for launch templates, with the image data type.
    published = boto3.client("ssm").get_parameter(Name=parameter)["Parameter"]
    assert published["Value"] == new["ImageId"]
    assert published["DataType"] == "aws:ec2:image"
    # Deprecated 7 days after its creation.
    created = time.mktime(time.strptime(new["CreationDate"][:19], "%Y-%m-%dT%H:%M:%S"))
    deprecated = time.mktime(time.strptime(new["DeprecationTime"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert abs(deprecated - created - 7 * 86400) <= 60
    # Pruned: the newest 3 of the family stay, the 2 oldest are gone.
    family = ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [f"{prefix}*"]}])["Images"]
    assert sorted(i["ImageId"] for i in family) == sorted([new["ImageId"], *older[2:]])

    # The image holds the BuildKit configuration ...
    config = tomllib.loads(builder.read("/etc/buildkit/buildkitd.toml"))
    assert config["worker"]["oci"]["max-parallelism"] == 16
    assert config["worker"]["oci"]["gc"] is False
    # ... the pre-pulled images, and the persistent builder, which comes back with the engine at boot.
    builder.run("systemctl", "start", "docker")
    for image in (vllm, buildkit):
        builder.run("docker", "image", "inspect", image["pinned"])
    name = "buildx_buildkit_baked-vllm-builder0"
    state = {}
    for _attempt in range(60):
        state = json.loads(builder.run("docker", "inspect", name).stdout)[0]
        if state["State"]["Running"]:
            break
        time.sleep(0.5)
    assert state["State"]["Running"], state["State"]
    assert state["HostConfig"]["RestartPolicy"]["Name"] == "always"
    assert state["HostConfig"]["NetworkMode"] == "host"
    assert state["Image"] == json.loads(builder.run("docker", "image", "inspect", buildkit["pinned"]).stdout)[0]["Id"]
    mounts = {m["Destination"]: m for m in state["Mounts"]}
    assert mounts["/etc/buildkit/buildkitd.toml"]["RW"] is False
    assert mounts["/var/lib/buildkit"]["Name"] == f"{name}_state"
    assert "settings: max-parallelism=16 gc=false" in builder.run("docker", "logs", name).stdout

    # The role again, on what the image holds: nothing changes.
    again = tmp_path / "again.yml"
    again.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "BuildKit again",
                    "hosts": "all",
                    "gather_facts": False,
                    "roles": [
                        {
                            "role": "burst.golden_ami.buildkit",
                            "buildkit_builder_name": "baked-vllm-builder",
                            "buildkit_image": buildkit["pinned"],
                            "buildkit_privileged": False,
                        }
                    ],
                }
            ]
        )
    )
    rerun = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", f"{builder.name},", "-c", "community.docker.docker", str(again)],
        env={**env, "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert rerun.returncode == 0, _output(rerun)[-4000:]
    assert " changed=0 " in rerun.stdout, rerun.stdout[-3000:]
    assert _leftovers(bake_id) == NOTHING_LEFT


# ---------------------------------------------------------------------------
# modelcar (seed 004)


def _registry_get(registry, path: str, accept: str | None = None) -> bytes:
    status, _headers, body = registry.request("GET", path, headers={"Accept": accept} if accept else None)
    assert status == 200, (path, status, body[:300])
    return body


def test_modelcar_profile(aws_env, auth_registry, hub_mirror, builder, tmp_path):
    profile = _profile("modelcar")
    assert profile["bake_capture"] is False
    assert profile["bake_configure_roles"] == ["model_cache", "modelcar"]
    token = "hf_" + secrets.token_urlsafe(24)
    repo_id = f"stand-in/modelcar-{secrets.token_hex(3)}"
    hub_mirror.add_model(repo_id, shards=2, shard_size="2MiB")
    hub_mirror.set_token(token, repo_id)
    busybox = auth_registry.standins["busybox:v0.1"]
    bake_id = _bake_id("modelcar")
    local = {
        # moto has no Canonical parameters: its Ubuntu image found by name instead.
        "bake_base_image_ssm_parameter": "",
        "bake_base_image_family": {"name_prefix": "Deep Learning AMI Ubuntu", "owners": ["amazon"]},
        "model_cache_hub_endpoint": hub_mirror.endpoint,
        "model_cache_hf_token": token,
        "model_cache_models": [{"repo_id": repo_id, "revision": "main"}],
        "model_cache_disk_margin_mb": 16,
        "modelcar_registry": auth_registry.host,
        "modelcar_base_image": busybox["pinned"],
        "modelcar_registry_auth": [
            {"registry": auth_registry.host, "username": auth_registry.username, "password": auth_registry.password}
        ],
    }
    env = bake_environment(aws_env, tmp_path)
    result = _bake("modelcar", _local_vars(tmp_path, bake_id, builder.name, **local), env, tmp_path)
    output = _output(result)
    assert result.returncode == 0, output[-6000:]
    assert token not in output

    # No machine image: the product is the pushed model image.
    assert not _images_of(bake_id)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["captured"] is False
    contents = manifest["contents"]
    assert contents["profile"] == "modelcar"
    [pushed] = contents["model_images"]
    commit = hub_mirror.repo(repo_id).commit("main").sha
    assert pushed["model"] == repo_id
    record = contents["models"]["models"][repo_id.replace("/", "--")]
    assert record["commit_sha"] == commit and pushed["revision"] == commit
    expected = {f"/models/{f['path']}".lstrip("/"): f["sha256"] for f in record["files"]}

    # In the registry: tagged with the revision, labelled with it, by digest.
    repository, _at, digest = pushed["reference"].partition("@")
    repository = repository.split("/", 1)[1]
    assert pushed["tag"] in commit
    accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
    index = _registry_get(auth_registry, f"/v2/{repository}/manifests/{pushed['tag']}", accept)
    assert "sha256:" + hashlib.sha256(index).hexdigest() == digest
    image_manifest = json.loads(index)
    config_blob = _registry_get(auth_registry, f"/v2/{repository}/blobs/{image_manifest['config']['digest']}")
    config = json.loads(config_blob)
    assert config["config"]["Labels"]["org.opencontainers.image.revision"] == commit
    # The layers hold exactly the verified files (and the base's busybox), and no token anywhere.
    held: dict[str, str] = {}
    blobs = [config_blob]
    for layer in image_manifest["layers"]:
        blob = _registry_get(auth_registry, f"/v2/{repository}/blobs/{layer['digest']}")
        blobs.append(blob)
        with tarfile.open(fileobj=io.BytesIO(blob)) as archive:
            for member in archive.getmembers():
                if member.isfile() and member.name.lstrip("./").startswith("models/"):
                    held[member.name.lstrip("./")] = hashlib.sha256(archive.extractfile(member).read()).hexdigest()
    assert sorted(held) == sorted(expected)
    assert held == expected
    for blob in blobs:
        assert token.encode() not in blob
    # Nothing of the token on the builder either.
    scan = builder.run("grep", "-rIl", "--exclude-dir=proc", "--exclude-dir=sys", token, "/", check=False)
    assert scan.stdout.strip() == "", scan.stdout
    assert _leftovers(bake_id) == NOTHING_LEFT
