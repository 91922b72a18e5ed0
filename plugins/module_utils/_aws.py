# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The AWS base of this collection: what every EC2, SSM and Auto Scaling call shares.

Private to this collection. In the manner of amazon.aws's module_utils:

- one error type (``AwsError``; ``ImageError`` and ``LaunchError`` are its
  kinds) carrying a message for the user and the AWS exception behind it;
- one retry policy (``default_retry``) for every client, applied by
  ``retrying(client)`` or by ``AnsibleAWSModule.client(retry_decorator=...)``;
- thin retried calls (``call``) and paginated reads (``paginate``), whose
  failures name what failed;
- one poll loop (``poll_until``) behind every wait (images available,
  instances running or terminated, snapshots released, health);
- one home for the tag names and the resource id patterns;
- time and client-token helpers.
"""

from __future__ import annotations

import hashlib
import re
import time
from datetime import datetime, timezone

try:
    import botocore
    from botocore.parsers import ResponseParserError

    # What a call can raise: AWS's errors, the SDK's, and an answer that is not the service's format.
    AWS_ERRORS = (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, ResponseParserError)
except ImportError:
    AWS_ERRORS = ()  # AnsibleAWSModule (or the application) reports the missing SDK

from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry, RetryingBotoClientWrapper

# ---------------------------------------------------------------- tag names

# Every resource a bake creates carries the bake's id and its family.
BAKE_ID_TAG = "BakeId"
# An image made by golden_ami outside a bake carries its build's id (a CI run id, for example).
BUILD_ID_TAG = "BuildId"
# What golden_ami records on an image: the image its instance was launched from, and on copies their origin.
BASE_IMAGE_TAG = "BaseImageId"
SOURCE_IMAGE_TAG = "SourceImageId"
SOURCE_REGION_TAG = "SourceRegion"
BAKE_FAMILY_TAG = "BakeFamily"
# When a bake started (ISO 8601): the sweep by age reads it.
BAKE_STARTED_TAG = "BakeStarted"
# The image's version, and the tag burst instances carry to be told from other instances.
VERSION_TAG = "Version"
MODE_TAG = "Mode"
MODE_BURST = "Burst"
NAME_TAG = "Name"
# Where an image stands: a candidate (captured, not yet verified nor published),
# being promoted (SSM parameters changing), or promoted (what production sees).
STAGE_TAG = "ImageStage"
STAGE_CANDIDATE = "candidate"
STAGE_PROMOTING = "promoting"
STAGE_PROMOTED = "promoted"
# On an image being promoted: the SSM values it replaces in its region, as JSON, for a rollback.
PREVIOUS_VALUES_TAG = "PromotedOver"
TAG_VALUE_MAX = 256

# ---------------------------------------------------------------- id patterns

REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
IMAGE_ID_RE = re.compile(r"^ami-[0-9a-f]{8,17}$")
INSTANCE_ID_RE = re.compile(r"^i-[0-9a-f]{8,17}$")
SNAPSHOT_ID_RE = re.compile(r"^snap-[0-9a-f]{8,17}$")
SUBNET_ID_RE = re.compile(r"^subnet-[0-9a-f]{8,17}$")
SECURITY_GROUP_ID_RE = re.compile(r"^sg-[0-9a-f]{8,17}$")
EFS_ID_RE = re.compile(r"^fs-[0-9a-f]{8,40}$")
# CreateImage and CopyImage accept 3 to 128 characters of this set.
IMAGE_NAME_RE = re.compile(r"^[A-Za-z0-9()\[\] ./\-'@_]{3,128}$")
# SSM parameter names: letters, digits, . - _ and /; a hierarchy starts with /.
SSM_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-/]{1,1011}$")

# ---------------------------------------------------------------- errors


class AwsError(Exception):
    """A failure with a message for the user, and the AWS exception behind it if any.

    ``DETAIL``: whether ``call`` and ``paginate`` add AWS's message to the text
    of this kind of error (for errors shown without ``fail_json_aws``, which
    adds it itself).
    """

    DETAIL = False

    def __init__(self, message, exception=None):
        super().__init__(message)
        self.message = message
        self.exception = exception


def error_code(exception):
    """The AWS error code of a ClientError, or None."""
    response = getattr(exception, "response", None) or {}
    return response.get("Error", {}).get("Code")


def error_message(exception):
    """AWS's message of a ClientError, or the exception's text."""
    response = getattr(exception, "response", None) or {}
    return response.get("Error", {}).get("Message") or str(exception)


def fail_module(module, error, **extra):
    """Fail an AnsibleAWSModule with an AwsError's message (and AWS's error details when there is one)."""
    if error.exception is not None:
        module.fail_json_aws(error.exception, msg=error.message, **extra)
    module.fail_json(msg=error.message, **extra)


# ---------------------------------------------------------------- retried calls


def default_retry():
    """Retry throttling and transient server errors with jittered backoff (about 2 minutes at most)."""
    return AWSRetry.jittered_backoff(retries=10, delay=2, max_delay=30)


def retrying(client):
    """``client`` wrapped so that calls with ``aws_retry=True`` are retried; a wrapped client is kept."""
    if client is None or isinstance(client, RetryingBotoClientWrapper):
        return client
    return RetryingBotoClientWrapper(client, default_retry())


def _failed(what, exception, error):
    text = f"Failed to {what}: {error_message(exception)}" if error.DETAIL else f"Failed to {what}"
    return error(text, exception=exception)


def call(what, func, error=AwsError, missing=(), **params):
    """Run one retried AWS call; turn every SDK failure into ``error`` naming ``what``.

    ``missing``: error codes that mean the resource is not there (yet, or any
    more); the call then returns None instead of failing.
    """
    try:
        return func(aws_retry=True, **params)
    except AWS_ERRORS as e:
        if missing and error_code(e) in missing:
            return None
        raise _failed(what, e, error) from e


def _unwrapped(client):
    return getattr(client, "client", client) if isinstance(client, RetryingBotoClientWrapper) else client


def paginate(client, operation, what, error=AwsError, missing=(), **params):
    """Every page of ``operation`` merged (``build_full_result``), retried as one read.

    ``missing`` as for ``call``: the read then returns an empty dict.
    """
    paginator = _unwrapped(client).get_paginator(operation)

    @default_retry()
    def _pages():
        return paginator.paginate(**params).build_full_result()

    try:
        return _pages()
    except AWS_ERRORS as e:
        if missing and error_code(e) in missing:
            return {}
        raise _failed(what, e, error) from e


def filters(**by_name):
    """EC2 filters from keyword names (``instance_state_name=[...]`` is ``instance-state-name``)."""
    return [{"Name": k.replace("_", "-"), "Values": [str(v) for v in values]} for k, values in by_name.items()]


def tag_filters(tags):
    """EC2 filters matching every tag of ``tags``; a value of None matches any value of the key."""
    result = []
    for key, value in (tags or {}).items():
        if value is None:
            result.append({"Name": "tag-key", "Values": [key]})
        else:
            result.append({"Name": f"tag:{key}", "Values": [str(value)]})
    return result


# ---------------------------------------------------------------- waiting


class PollTimeout(Exception):
    """``poll_until`` ran out of time; ``value`` is the last thing the probe returned."""

    def __init__(self, value):
        super().__init__("timed out")
        self.value = value


def poll_until(probe, timeout, interval, sleep=time.sleep, clock=time.monotonic, on_wait=None, start=None):
    """Call ``probe()`` until it returns ``(True, value)``; return ``value``.

    ``probe`` returns ``(done, value)``. Between calls it sleeps ``interval``
    seconds (never past the deadline) and calls ``on_wait(value)`` if given.
    After ``timeout`` seconds (counted from ``start``, a ``clock()`` reading,
    or from now) it raises ``PollTimeout`` with the last value.
    """
    deadline = (clock() if start is None else start) + max(timeout, 0)
    while True:
        done, value = probe()
        if done:
            return value
        now = clock()
        if now >= deadline:
            raise PollTimeout(value)
        if on_wait is not None:
            on_wait(value)
        sleep(max(min(interval, deadline - now), 0))


# ---------------------------------------------------------------- time and tokens


def utcnow():
    return datetime.now(timezone.utc)


def parse_time(value):
    """A timezone-aware UTC datetime from a datetime or an ISO 8601 text (LaunchTime, CreationDate), or None."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        when = value
    else:
        try:
            when = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise AwsError(f"Invalid time {value!r}: use ISO 8601, for example 2030-01-31T00:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)


def format_time(when):
    """ISO 8601 in UTC as EC2 writes it (CreationDate, DeprecationTime): 2030-01-31T00:00:00.000Z."""
    return parse_time(when).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def client_token(*parts):
    """An idempotency token (at most 64 ASCII characters) derived from ``parts``.

    The same parts give the same token, so that a retried request creates
    nothing twice (RunInstances, CreateImage, CopyImage).
    """
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:64]
