"""The moto server of the local world answers the AWS calls this collection makes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError

from localworld.moto import MotoServer

TESTS = Path(__file__).resolve().parents[1]


def _client(service: str, aws_env: dict[str, str], region: str | None = None):
    return boto3.client(
        service,
        region_name=region or aws_env["AWS_DEFAULT_REGION"],
        endpoint_url=aws_env["AWS_ENDPOINT_URL"],
    )


def _image_id(ec2) -> str:
    images = ec2.describe_images(Owners=["amazon"])["Images"]
    assert images, "moto lists no public images to launch from"
    return images[0]["ImageId"]


def test_endpoint_is_loopback_with_fake_credentials(aws_env):
    assert aws_env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert aws_env["AWS_ACCESS_KEY_ID"] == "testing"
    assert aws_env["AWS_EC2_METADATA_DISABLED"] == "true"
    identity = boto3.client("sts").get_caller_identity()  # from the environment alone
    assert identity["Account"].isdigit()


def test_spot_instance_then_image_with_tag_filters(aws_env):
    ec2 = _client("ec2", aws_env)
    instance = ec2.run_instances(
        ImageId=_image_id(ec2),
        InstanceType="g5.xlarge",
        MinCount=1,
        MaxCount=1,
        InstanceMarketOptions={"MarketType": "spot", "SpotOptions": {"SpotInstanceType": "one-time"}},
    )["Instances"][0]
    assert instance["InstanceLifecycle"] == "spot"

    image_id = ec2.create_image(InstanceId=instance["InstanceId"], Name="world-golden-v1.0")["ImageId"]
    ec2.create_tags(Resources=[image_id], Tags=[{"Key": "BuildId", "Value": "b-1"}])
    found = ec2.describe_images(
        Owners=["self"],
        Filters=[
            {"Name": "name", "Values": ["world-golden-*"]},
            {"Name": "state", "Values": ["available"]},
            {"Name": "tag:BuildId", "Values": ["b-1"]},
        ],
    )["Images"]
    assert [image["ImageId"] for image in found] == [image_id]
    snapshot_ids = [m["Ebs"]["SnapshotId"] for m in found[0]["BlockDeviceMappings"] if "Ebs" in m]
    assert snapshot_ids
    assert not ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:BuildId", "Values": ["other"]}])["Images"]


def test_ssm_parameter_with_image_data_type(aws_env):
    ssm = _client("ssm", aws_env)
    ssm.put_parameter(Name="/golden/world/ami", Value="ami-12345678", Type="String", DataType="aws:ec2:image")
    parameter = ssm.get_parameter(Name="/golden/world/ami")["Parameter"]
    assert parameter["Value"] == "ami-12345678"
    assert parameter["DataType"] == "aws:ec2:image"


def test_s3_put_get(aws_env):
    s3 = _client("s3", aws_env)
    s3.create_bucket(Bucket="world-bucket", CreateBucketConfiguration={"LocationConstraint": aws_env["AWS_REGION"]})
    s3.put_object(Bucket="world-bucket", Key="manifest.json", Body=b'{"builds": []}')
    assert s3.get_object(Bucket="world-bucket", Key="manifest.json")["Body"].read() == b'{"builds": []}'


def test_iam_role_and_reset_forgets_it(aws_env, moto_server):
    iam = _client("iam", aws_env)
    iam.create_role(RoleName="world-role", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17"}))
    assert iam.get_role(RoleName="world-role")["Role"]["RoleName"] == "world-role"
    moto_server.reset()
    with pytest.raises(ClientError) as error:
        iam.get_role(RoleName="world-role")
    assert error.value.response["Error"]["Code"] == "NoSuchEntity"


def test_cli_prints_endpoint_and_stops_on_sigterm():
    process = subprocess.Popen(
        [sys.executable, "-m", "localworld.moto"],
        cwd=TESTS,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        info = json.loads(line)
        assert info["endpoint_url"].startswith("http://127.0.0.1:")
        sts = boto3.client(
            "sts",
            endpoint_url=info["endpoint_url"],
            region_name="eu-central-1",
            aws_access_key_id=info["env"]["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=info["env"]["AWS_SECRET_ACCESS_KEY"],
        )
        assert sts.get_caller_identity()["Account"].isdigit()
    finally:
        process.terminate()
        assert process.wait(timeout=20) == 0


def test_context_manager_stops_server():
    with MotoServer() as server:
        url = server.endpoint_url
        env = server.env()
    ec2 = boto3.client(
        "ec2",
        endpoint_url=url,
        region_name="eu-central-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2),
    )
    with pytest.raises(EndpointConnectionError):
        ec2.describe_regions()


def test_image_deprecation_is_added_to_moto(aws_env):
    ec2 = _client("ec2", aws_env)
    image_id = ec2.register_image(
        Name="deprecation-check",
        RootDeviceName="/dev/sda1",
        BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 8}}],
    )["ImageId"]
    assert "DeprecationTime" not in ec2.describe_images(ImageIds=[image_id])["Images"][0]
    ec2.enable_image_deprecation(ImageId=image_id, DeprecateAt="2030-01-02T03:04:31Z")
    image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    assert image["DeprecationTime"] == "2030-01-02T03:05:00.000Z", "seconds round to the nearest minute"
    ec2.disable_image_deprecation(ImageId=image_id)
    assert "DeprecationTime" not in ec2.describe_images(ImageIds=[image_id])["Images"][0]
    with pytest.raises(ClientError, match=r"InvalidAMIID\.NotFound"):
        ec2.enable_image_deprecation(ImageId="ami-0123456789abcdef0", DeprecateAt="2030-01-02T03:04:00Z")
