"""burst_aws.py, the instance's own AWS client: IMDSv2, SigV4 as botocore signs, the three services on moto."""

from __future__ import annotations

import datetime
import socket
import threading
import time
import urllib.error
import urllib.request
from unittest import mock

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest

from localworld.localplay import load_role_file

burst_aws = load_role_file("burst_services", "burst_aws.py", "burst_aws_under_test")

BASE_IMAGE_NAME = "amzn2-ami-hvm-2.0.20180810-x86_64-gp2"
MOMENT = datetime.datetime(2024, 5, 1, 12, 30, 45, tzinfo=datetime.timezone.utc)


def test_imds_requires_a_token_and_the_client_renews_a_refused_one(fake_imds):
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(fake_imds.url + "/latest/meta-data/instance-id", timeout=5)  # noqa: S310
    assert refused.value.code == 401

    imds = burst_aws.Imds(fake_imds.url)
    assert imds.instance_id() == fake_imds.instance_id
    fake_imds.revoke()
    assert imds.region() == "eu-central-1"
    puts = [path for method, path, _status in fake_imds.requests if method == "PUT"]
    assert puts == ["/latest/api/token", "/latest/api/token"]
    statuses = [status for method, _path, status in fake_imds.requests if method == "GET"]
    assert statuses == [401, 200, 401, 200]  # the bare GET, then the client's


def test_region_falls_back_to_placement(fake_imds):
    imds = burst_aws.Imds(fake_imds.url)
    original = fake_imds.answer
    fake_imds.answer = lambda path: None if path.endswith("instance-identity/document") else original(path)
    fake_imds.region = "us-east-2"
    assert imds.region() == "us-east-2"


def test_imds_that_does_not_answer_is_a_clear_error():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    imds = burst_aws.Imds(f"http://127.0.0.1:{port}", timeout=0.5, attempts=1)
    with pytest.raises(burst_aws.ImdsError, match="did not answer /latest/api/token"):
        imds.instance_id()


@pytest.mark.parametrize(("expires_in_s", "fetches"), [(3600, 1), (60, 3)])
def test_role_credentials_are_cached_until_shortly_before_they_expire(fake_imds, expires_in_s, fetches):
    fake_imds.expires_in_s = expires_in_s
    provider = burst_aws.CredentialProvider(burst_aws.Imds(fake_imds.url), environ={})
    keys = [provider() for _attempt in range(3)]
    assert fake_imds.credential_fetches == fetches
    assert keys[-1].access_key == f"ASIAFAKEROLE{fetches:08d}"
    assert keys[-1].secret_key == "role-secret"  # noqa: S105 - the fake role's
    assert keys[-1].token == f"role-session-token-{fetches}"
    assert "role-secret" not in repr(keys[-1])


def test_environment_keys_come_before_the_role(fake_imds):
    environ = {"AWS_ACCESS_KEY_ID": "AKIAENV", "AWS_SECRET_ACCESS_KEY": "env-secret"}
    keys = burst_aws.CredentialProvider(burst_aws.Imds(fake_imds.url), environ=environ)()
    assert (keys.access_key, keys.secret_key, keys.token) == ("AKIAENV", "env-secret", None)
    assert fake_imds.requests == []


@pytest.mark.parametrize(
    ("service", "method", "url", "headers", "body", "auth_class"),
    [
        (
            "ec2",
            "POST",
            "https://ec2.eu-central-1.amazonaws.com/",
            {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
            b"Action=CreateTags&Version=2016-11-15&ResourceId.1=i-1&Tag.1.Key=BurstJobStatus&Tag.1.Value=running",
            botocore.auth.SigV4Auth,
        ),
        (
            "logs",
            "POST",
            "http://127.0.0.1:5000/",
            {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "Logs_20140328.PutLogEvents"},
            b'{"logGroupName": "/burst/jobs"}',
            botocore.auth.SigV4Auth,
        ),
        (
            "s3",
            "PUT",
            "https://logs-b.s3.eu-central-1.amazonaws.com/" + "jobs/a%20b%2B%C3%A9/log.txt",
            {"Content-Type": "text/plain; charset=utf-8"},
            b"line one\nline two\n",
            botocore.auth.S3SigV4Auth,
        ),
    ],
)
@pytest.mark.parametrize("token", [None, "session-token"])
def test_signature_is_the_one_botocore_computes(service, method, url, headers, body, auth_class, token):
    creds = burst_aws.Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    signed = burst_aws.sign(method, url, headers, body, creds, "eu-central-1", service, now=MOMENT)

    unsigned = {key: value for key, value in signed.items() if key != "authorization"}
    request = botocore.awsrequest.AWSRequest(method=method, url=url, data=body, headers=unsigned)
    botocore_creds = botocore.credentials.Credentials(creds.access_key, creds.secret_key, token)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=MOMENT.replace(tzinfo=None)):
        auth_class(botocore_creds, service, "eu-central-1").add_auth(request)
    assert signed["authorization"] == request.headers["Authorization"]
    assert signed["x-amz-date"] == "20240501T123045Z"
    assert signed["authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240501/eu-central-1/{service}/aws4_request, SignedHeaders="
    )
    assert ("x-amz-security-token" in signed["authorization"]) == bool(token)


@pytest.fixture
def moto_world(aws_env):
    ec2 = boto3.client("ec2")
    image = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": [BASE_IMAGE_NAME]}])
    instance = ec2.run_instances(ImageId=image["Images"][0]["ImageId"], MinCount=1, MaxCount=1)["Instances"][0]
    client = burst_aws.Client("eu-central-1", endpoint_url=aws_env["AWS_ENDPOINT_URL"])
    client.sleep = lambda _seconds: None
    return {"ec2": ec2, "instance_id": instance["InstanceId"], "client": client}


def test_create_tags_on_the_instance(moto_world):
    moto_world["client"].create_tags(moto_world["instance_id"], {"BurstJobStatus": "running", "Note": "a b/é=&"})
    tags = moto_world["ec2"].describe_tags(Filters=[{"Name": "resource-id", "Values": [moto_world["instance_id"]]}])
    assert {t["Key"]: t["Value"] for t in tags["Tags"]} == {"BurstJobStatus": "running", "Note": "a b/é=&"}


def test_put_object_path_style_and_its_refusal(moto_world):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="burst-logs", CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    moto_world["client"].put_object("burst-logs", "jobs/a b+é/log.txt", b"hello\n")
    assert s3.get_object(Bucket="burst-logs", Key="jobs/a b+é/log.txt")["Body"].read() == b"hello\n"

    with pytest.raises(burst_aws.AwsCallError) as refused:
        moto_world["client"].put_object("no-such-bucket", "log.txt", b"x")
    error = refused.value
    assert (error.service, error.action, error.status, error.code) == ("s3", "PutObject", 404, "NoSuchBucket")
    assert not error.retryable
    assert "NoSuchBucket" in str(error)


def test_log_stream_and_events_and_a_missing_group(moto_world):
    logs = boto3.client("logs")
    logs.create_log_group(logGroupName="/burst/jobs")
    client = moto_world["client"]
    client.create_log_stream("/burst/jobs", "job-1/i-1")
    client.create_log_stream("/burst/jobs", "job-1/i-1")  # exists already: fine
    stamp = int(time.time() * 1000)
    client.put_log_events("/burst/jobs", "job-1/i-1", [(stamp, "first"), (stamp + 1, "second")])
    events = logs.get_log_events(logGroupName="/burst/jobs", logStreamName="job-1/i-1")["events"]
    assert [e["message"] for e in events] == ["first", "second"]

    with pytest.raises(burst_aws.AwsCallError) as refused:
        client.create_log_stream("/burst/missing", "s")
    assert (refused.value.status, refused.value.code) == (400, "ResourceNotFoundException")


def test_endpoints_without_an_override():
    client = burst_aws.Client("eu-central-1", credential_provider=lambda: None, endpoint_url="")
    with mock.patch.dict("os.environ", {"BURST_AWS_ENDPOINT_URL": ""}):
        client.endpoint_url = None
        assert client._endpoint("ec2") == "https://ec2.eu-central-1.amazonaws.com"
        assert client._endpoint("logs") == "https://logs.eu-central-1.amazonaws.com"
        assert (
            client.s3_url("burst-logs", "a b/c.txt") == "https://burst-logs.s3.eu-central-1.amazonaws.com/a%20b/c.txt"
        )
        assert client.s3_url("burst.logs", "k") == "https://s3.eu-central-1.amazonaws.com/burst.logs/k"


def test_a_server_that_does_not_answer_times_out_after_the_retries():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])  # never answered
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        creds = burst_aws.Credentials("AKID", "secret")
        client = burst_aws.Client(
            "eu-central-1",
            credential_provider=lambda: creds,
            endpoint_url=f"http://127.0.0.1:{listener.getsockname()[1]}",
            timeout=0.3,
        )
        client.sleep = lambda _seconds: None
        with pytest.raises(burst_aws.AwsCallError) as failed:
            client.create_tags("i-1", {"A": "b"})
        assert failed.value.status == 0
        assert failed.value.retryable
        for _attempt in range(50):
            if len(accepted) >= burst_aws.ATTEMPTS:
                break
            time.sleep(0.1)
        assert len(accepted) == burst_aws.ATTEMPTS
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()
