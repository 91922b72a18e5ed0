"""A moto server that enforces IAM, with users that hold docs/iam's policies (the ``iam_world`` fixture).

``iam_world`` starts its own moto server (IAM enforcement is global to a
server, so the shared ``moto_server`` fixture is left alone), creates an
administrator and the users ``baker`` and ``launcher``, then turns
enforcement on (``POST /moto-api/reset-auth``, moto's switch behind
``INITIAL_NO_AUTH_ACTION_COUNT``): from then on every request is checked
against the caller's policies, and a request that no statement allows is
refused with AWS's access error.

moto evaluates the actions of a policy, not its resources or conditions:
the policies are loaded with every ``Resource`` as ``*`` and without
``Condition``. The resource and condition scoping in docs/iam is for AWS.

moto's request recorder lists the actions a run called, so that a test can
compare them with a policy: an action that a run never calls does not
belong in its policy.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import boto3
import botocore.exceptions
import pytest

from localworld.moto import MotoServer

REPO = Path(__file__).resolve().parents[2]
IAM_DOCS = REPO / "docs" / "iam"
BIN = Path(sys.executable).parent
# The image family the bake starts from: moto's copy of the Deep Learning AMI.
BASE_IMAGE_NAME_PREFIX = "Deep Learning AMI Ubuntu"
SSM_PARAMETER = "/burst/golden-ami/iam"


def policy_actions(document: dict) -> set[str]:
    actions: set[str] = set()
    for statement in document["Statement"]:
        listed = statement["Action"]
        actions.update([listed] if isinstance(listed, str) else listed)
    return actions


def load_policy(name: str) -> dict:
    return json.loads((IAM_DOCS / f"{name}.json").read_text())


def for_moto(document: dict, without: str | None = None) -> dict:
    """The policy as moto can evaluate it: actions only, optionally without one action."""
    result = copy.deepcopy(document)
    statements = []
    for statement in result["Statement"]:
        listed = statement["Action"]
        actions = [a for a in ([listed] if isinstance(listed, str) else listed) if a != without]
        if not actions:
            continue
        statement["Action"] = actions
        statement["Resource"] = "*"
        statement.pop("Condition", None)
        statements.append(statement)
    result["Statement"] = statements
    return result


class IamWorld:
    """A moto server enforcing IAM, its administrator, and users that hold one policy each."""

    def __init__(self, server: MotoServer, recording: Path):
        self.server = server
        self.recording = recording
        self.region = server.region
        self.keys: dict[str, tuple[str, str]] = {}

    def _post(self, path: str, data: bytes = b"") -> None:
        # text/plain: werkzeug would read a form-encoded body as a form and hand moto an empty one.
        request = urllib.request.Request(  # noqa: S310
            self.server.endpoint_url + path, data=data, method="POST", headers={"Content-Type": "text/plain"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            response.read()

    def client(self, service: str, user: str = "admin", region: str | None = None):
        key_id, secret = self.keys[user]
        return boto3.client(
            service,
            region_name=region or self.region,
            endpoint_url=self.server.endpoint_url,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
        )

    def create_user(self, name: str, document: dict) -> None:
        iam = self.client("iam") if "admin" in self.keys else self._unauthenticated("iam")
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName=name, PolicyDocument=json.dumps(document))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        self.keys[name] = (key["AccessKeyId"], key["SecretAccessKey"])

    def set_policy(self, name: str, document: dict) -> None:
        self.client("iam").put_user_policy(UserName=name, PolicyName=name, PolicyDocument=json.dumps(document))

    def _unauthenticated(self, service: str):
        return boto3.client(
            service,
            region_name=self.region,
            endpoint_url=self.server.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto's placeholder, before enforcement
        )

    def enforce(self) -> None:
        self._post("/moto-api/reset-auth", b"0")

    def env(self, user: str) -> dict[str, str]:
        """The environment of a run as ``user``: AWX's AWS credential injects the same variables."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANSIBLE_"))}
        env.update(self.server.env())
        del env["AWS_SESSION_TOKEN"]
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = self.keys[user]
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env.update(
            {
                "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".venv" / "collections"),
                "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_FORCE_COLOR": "0",
                # The controller's AWS modules run on this Python (it has boto3), as in an execution environment.
                "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
            }
        )
        return env

    def start_recording(self) -> None:
        self._post("/moto-api/recorder/reset-recording")
        self._post("/moto-api/recorder/start-recording")

    def recorded_actions(self, user: str) -> set[str]:
        """``service:Action`` of every request ``user`` made since ``start_recording``."""
        key_id = self.keys[user][0]
        self._post("/moto-api/recorder/stop-recording")
        actions = set()
        for line in self.recording.read_text().splitlines():
            if not line.strip():
                continue
            entry = json.loads(line)
            headers = {k.lower(): v for k, v in entry["headers"].items()}
            credential = headers.get("authorization", "").partition("Credential=")[2].split("/")
            if credential[0] != key_id:
                continue
            service = credential[3] if len(credential) > 3 else "unknown"
            if headers.get("x-amz-target"):
                action = headers["x-amz-target"].rsplit(".", 1)[-1]
            else:
                body = entry.get("body") or ""
                if entry.get("body_encoded"):
                    body = base64.b64decode(body).decode(errors="replace")
                query = urllib.parse.parse_qs(body)
                query.update(urllib.parse.parse_qs(urllib.parse.urlparse(entry["url"]).query))
                action = query.get("Action", ["unknown"])[0]
            actions.add(f"{service}:{action}")
        return actions


@pytest.fixture(scope="session")
def iam_world(tmp_path_factory) -> Iterator[IamWorld]:
    recording = tmp_path_factory.mktemp("moto-recording") / "requests.jsonl"
    recording.touch()
    with mock.patch.dict(os.environ, {"MOTO_RECORDER_FILEPATH": str(recording)}):
        server = MotoServer()
        server.start()
    try:
        world = IamWorld(server, recording)
        world.create_user(
            "admin", {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        )
        world.create_user("baker", for_moto(load_policy("bake")))
        world.create_user("launcher", for_moto(load_policy("launch")))
        world.enforce()
        # Enforcement is on: a request without a user's keys is refused.
        with pytest.raises(botocore.exceptions.ClientError, match=r"AuthFailure|InvalidClientTokenId"):
            world._unauthenticated("ec2").describe_regions()
        yield world
    finally:
        server.stop()
