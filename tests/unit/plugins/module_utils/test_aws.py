"""Unit tests of the AWS base (plugins/module_utils/_aws.py): retried calls, pages, polling, times and tokens."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber

from ansible_collections.amazon.aws.plugins.module_utils import cloud
from ansible_collections.burst.golden_ami.plugins.module_utils import _aws
from ansible_collections.burst.golden_ami.plugins.module_utils._images import ImageError
from ansible_collections.burst.golden_ami.plugins.module_utils._launch import LaunchError


@pytest.fixture
def ec2(monkeypatch):
    monkeypatch.setattr(cloud.time, "sleep", lambda _s: None)  # the retry policy's backoff
    client = boto3.client(
        "ec2",
        region_name="eu-central-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - not a secret
        endpoint_url="http://127.0.0.1:9",  # never reached: the Stubber answers
        config=Config(retries={"total_max_attempts": 1}),
    )
    with Stubber(client) as stubber:
        yield _aws.retrying(client), stubber
        stubber.assert_no_pending_responses()


# ---------------------------------------------------------------- call


def test_call_retries_throttling_then_answers(ec2):
    client, stubber = ec2
    stubber.add_client_error("describe_regions", "RequestLimitExceeded", "slow down", 503)
    stubber.add_response("describe_regions", {"Regions": [{"RegionName": "eu-west-1"}]})
    assert _aws.call("describe regions", client.describe_regions)["Regions"][0]["RegionName"] == "eu-west-1"


def test_call_names_what_failed_and_keeps_the_exception(ec2):
    client, stubber = ec2
    stubber.add_client_error("describe_regions", "UnauthorizedOperation", "not allowed", 403)
    with pytest.raises(ImageError) as caught:
        _aws.call("describe regions", client.describe_regions, error=ImageError)
    assert caught.value.message == "Failed to describe regions"
    assert _aws.error_code(caught.value.exception) == "UnauthorizedOperation"
    assert isinstance(caught.value, _aws.AwsError)


def test_a_launch_error_carries_aws_message(ec2):
    client, stubber = ec2
    stubber.add_client_error("describe_regions", "UnauthorizedOperation", "not allowed", 403)
    with pytest.raises(LaunchError, match="Failed to describe regions: not allowed") as caught:
        _aws.call("describe regions", client.describe_regions, error=LaunchError)
    assert caught.value.attempts == []


def test_call_returns_none_for_a_missing_resource(ec2):
    client, stubber = ec2
    stubber.add_client_error("describe_images", "InvalidAMIID.NotFound", "no such image", 400)
    assert _aws.call("describe image", client.describe_images, missing=("InvalidAMIID.NotFound",)) is None


# ---------------------------------------------------------------- paginate


def test_paginate_merges_every_page(ec2):
    client, stubber = ec2
    stubber.add_response("describe_images", {"Images": [{"ImageId": "ami-1"}], "NextToken": "t"}, {"Owners": ["self"]})
    stubber.add_response("describe_images", {"Images": [{"ImageId": "ami-2"}]}, {"Owners": ["self"], "NextToken": "t"})
    result = _aws.paginate(client, "describe_images", "describe images", Owners=["self"])
    assert [i["ImageId"] for i in result["Images"]] == ["ami-1", "ami-2"]


def test_paginate_retries_throttling_and_fails_with_the_error_kind(ec2):
    client, stubber = ec2
    stubber.add_client_error("describe_images", "Throttling", "slow down", 400)
    stubber.add_response("describe_images", {"Images": [{"ImageId": "ami-1"}]})
    assert _aws.paginate(client, "describe_images", "describe images")["Images"] == [{"ImageId": "ami-1"}]
    stubber.add_client_error("describe_images", "AuthFailure", "who are you", 401)
    with pytest.raises(LaunchError, match="Failed to describe images: who are you"):
        _aws.paginate(client, "describe_images", "describe images", error=LaunchError)


def test_paginate_returns_nothing_for_missing_resources(ec2):
    client, stubber = ec2
    stubber.add_client_error("describe_instances", "InvalidInstanceID.NotFound", "not yet", 400)
    found = _aws.paginate(
        client, "describe_instances", "describe instances", missing=("InvalidInstanceID.NotFound",), InstanceIds=["i-1"]
    )
    assert found == {}


# ---------------------------------------------------------------- poll_until


def fake_time(start=100.0):
    """(clock, sleep, sleeps): a clock that only sleeping moves on, and the list of sleeps."""
    now = [start]
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds

    return (lambda: now[0]), sleep, sleeps


def test_poll_until_returns_the_value_once_done():
    clock, sleep, sleeps = fake_time()
    answers = iter([(False, 1), (False, 2), (True, 3)])
    waited = []
    value = _aws.poll_until(lambda: next(answers), 60, 5, sleep=sleep, clock=clock, on_wait=waited.append)
    assert value == 3
    assert sleeps == [5, 5]
    assert waited == [1, 2]


def test_poll_until_never_sleeps_past_the_deadline_and_times_out_with_the_last_value():
    clock, sleep, sleeps = fake_time()
    count = iter(range(100))
    with pytest.raises(_aws.PollTimeout) as caught:
        _aws.poll_until(lambda: (False, next(count)), 12, 5, sleep=sleep, clock=clock)
    assert sleeps == [5, 5, 2]
    assert caught.value.value == 3


def test_poll_until_counts_from_a_given_start():
    clock, sleep, sleeps = fake_time()
    with pytest.raises(_aws.PollTimeout):
        _aws.poll_until(lambda: (False, None), 10, 5, sleep=sleep, clock=clock, start=clock() - 10)
    assert sleeps == []


def test_poll_until_lets_the_probe_fail():
    def probe():
        raise _aws.AwsError("broken")

    with pytest.raises(_aws.AwsError, match="broken"):
        _aws.poll_until(probe, 10, 1, sleep=lambda _s: None)


# ---------------------------------------------------------------- times and tokens


@pytest.mark.parametrize(
    "value",
    [
        "2030-01-31T10:20:30Z",
        "2030-01-31T10:20:30.000Z",
        "2030-01-31T11:20:30+01:00",
        "2030-01-31T10:20:30",
        datetime(2030, 1, 31, 10, 20, 30, tzinfo=timezone.utc),
        datetime(2030, 1, 31, 12, 20, 30, tzinfo=timezone(timedelta(hours=2))),
    ],
)
def test_parse_time_gives_utc(value):
    assert _aws.parse_time(value) == datetime(2030, 1, 31, 10, 20, 30, tzinfo=timezone.utc)


def test_parse_time_of_nothing_and_of_nonsense():
    assert _aws.parse_time(None) is None
    assert _aws.parse_time("") is None
    with pytest.raises(_aws.AwsError, match="Invalid time 'soon'"):
        _aws.parse_time("soon")


def test_format_time_writes_as_ec2_does():
    assert _aws.format_time("2030-01-31T11:20:30+01:00") == "2030-01-31T10:20:30.000Z"


def test_client_tokens_are_stable_short_and_distinct():
    token = _aws.client_token("copy", "ami-1", "eu-west-1", "name")
    assert token == _aws.client_token("copy", "ami-1", "eu-west-1", "name")
    assert token != _aws.client_token("copy", "ami-1", "eu-west-2", "name")
    assert len(token) <= 64 and token.isascii()


def test_tag_filters_match_any_value_for_none():
    assert _aws.tag_filters({"Family": "burst", "BakeStarted": None}) == [
        {"Name": "tag:Family", "Values": ["burst"]},
        {"Name": "tag-key", "Values": ["BakeStarted"]},
    ]
    assert _aws.filters(instance_state_name=["running"]) == [{"Name": "instance-state-name", "Values": ["running"]}]
