"""A small AWS client for the burst instance itself: IMDSv2, SigV4, three services.

The golden image has no boto3; this module needs only Python 3.9+'s standard
library. It does what a burst job needs to leave its logs and its status
behind after the instance is gone:

- the instance metadata service, IMDSv2 only (a session token from
  ``PUT /latest/api/token``, sent with every ``GET``; a 401 fetches a new one):
  ``instance_id()``, ``region()`` and ``credentials()``, the instance role's
  temporary keys, fetched again a few minutes before they expire;
- requests signed with Signature Version 4 (``sign``);
- EC2 ``CreateTags`` (query API), CloudWatch Logs ``CreateLogStream`` and
  ``PutLogEvents`` (JSON 1.1), S3 ``PutObject`` (``Client``).

Environment:

- ``BURST_IMDS_ENDPOINT``: base URL of the metadata service
  (default ``http://169.254.169.254``).
- ``BURST_AWS_ENDPOINT_URL``: one URL for every service (moto in server mode);
  S3 is then addressed path-style (``URL/bucket/key``). Without it:
  ``https://{service}.{region}.amazonaws.com`` and, for S3,
  ``https://{bucket}.s3.{region}.amazonaws.com``.
- ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (and ``AWS_SESSION_TOKEN``):
  when set, used instead of the instance role's keys.
- ``AWS_REGION`` or ``AWS_DEFAULT_REGION``: when set, used instead of the
  instance's region.

Every request has a timeout. A refused call raises ``AwsCallError`` with the
service, the action, the HTTP status and AWS's error code and message.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import http.client
import json
import os
import threading
import time
from urllib.parse import parse_qsl, quote, urlencode, urlsplit
from xml.etree import ElementTree

DEFAULT_IMDS_ENDPOINT = "http://169.254.169.254"
IMDS_TOKEN_TTL_S = 21600
# Seconds one metadata request may take (the service answers in milliseconds).
IMDS_TIMEOUT_S = 2.0
# Seconds one AWS request may take (connect, and each read or write).
REQUEST_TIMEOUT_S = 20.0
# Temporary keys are fetched again this long before they expire.
CREDENTIALS_REFRESH_S = 300
# Attempts of one AWS call when the network fails, the service errs (5xx) or throttles.
ATTEMPTS = 3
EC2_API_VERSION = "2016-11-15"
LOGS_TARGET_PREFIX = "Logs_20140328."
_UNRESERVED = "-_.~"
_THROTTLING = frozenset(("Throttling", "ThrottlingException", "RequestLimitExceeded", "SlowDown", "RequestThrottled"))


class AwsError(Exception):
    """Base of this module's errors."""


class ImdsError(AwsError):
    """The instance metadata service did not answer as expected."""


class AwsCallError(AwsError):
    """An AWS call failed: refused (HTTP status and AWS's error code) or not answered (status 0)."""

    def __init__(self, service, action, status, code, message):
        self.service = service
        self.action = action
        self.status = status
        self.code = code
        self.message = message
        where = f"HTTP {status}" if status else "no answer"
        super().__init__(f"{service} {action} failed ({where}): {code}: {message}")

    @property
    def retryable(self):
        """Whether trying again later may succeed (network, server error, throttling)."""
        return self.status == 0 or self.status >= 500 or self.code in _THROTTLING


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def _parse_time(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)


def _request(url, method="GET", headers=None, body=None, timeout=REQUEST_TIMEOUT_S):
    """One HTTP request without proxies or redirects: (status, headers as a lowercase dict, body)."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout)
    elif parts.scheme == "http":
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    else:
        raise ValueError(f"unsupported URL scheme in {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        connection.close()


# ---------------------------------------------------------------------------
# Instance metadata (IMDSv2)


class Imds:
    """IMDSv2 client: a session token fetched once and again when it expires or is refused."""

    def __init__(self, endpoint=None, timeout=IMDS_TIMEOUT_S, token_ttl=IMDS_TOKEN_TTL_S, attempts=3):
        self.endpoint = (endpoint or os.environ.get("BURST_IMDS_ENDPOINT") or DEFAULT_IMDS_ENDPOINT).rstrip("/")
        self.timeout = timeout
        self.token_ttl = token_ttl
        self.attempts = attempts
        self._token = None
        self._token_expires = 0.0
        self._answered = False
        self._unreachable = None
        self._lock = threading.Lock()

    def _call(self, method, path, headers):
        if self._unreachable:
            raise ImdsError(self._unreachable)
        last = None
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(0.2 * attempt)
            try:
                answer = _request(self.endpoint + path, method, headers, timeout=self.timeout)
            except (OSError, http.client.HTTPException) as exc:
                last = exc
            else:
                self._answered = True
                return answer
        message = f"instance metadata service at {self.endpoint} did not answer {path}: {last}"
        if not self._answered:
            self._unreachable = message  # not an instance: later questions fail at once
        raise ImdsError(message)

    def token(self, renew=False):
        with self._lock:
            if renew or self._token is None or time.monotonic() >= self._token_expires:
                headers = {"X-aws-ec2-metadata-token-ttl-seconds": str(self.token_ttl)}
                status, _headers, body = self._call("PUT", "/latest/api/token", headers)
                if status != 200 or not body:
                    raise ImdsError(f"instance metadata service refused a session token: HTTP {status}")
                self._token = body.decode().strip()
                self._token_expires = time.monotonic() + max(self.token_ttl - 60, 1)
            return self._token

    def get(self, path):
        """The text at ``path`` (``/latest/...``); ImdsError when it is missing or refused."""
        for renew in (False, True):
            status, _headers, body = self._call("GET", path, {"X-aws-ec2-metadata-token": self.token(renew)})
            if status != 401:
                break
        if status != 200:
            raise ImdsError(f"instance metadata {path}: HTTP {status}")
        return body.decode()

    def instance_id(self):
        return self.get("/latest/meta-data/instance-id").strip()

    def region(self):
        try:
            document = json.loads(self.get("/latest/dynamic/instance-identity/document"))
            if document.get("region"):
                return document["region"]
        except (ImdsError, ValueError, AttributeError):
            pass
        return self.get("/latest/meta-data/placement/region").strip()

    def role_credentials(self):
        """The instance role's temporary keys: a dict with AccessKeyId, SecretAccessKey, Token, Expiration."""
        base = "/latest/meta-data/iam/security-credentials/"
        roles = [line.strip() for line in self.get(base).splitlines() if line.strip()]
        if not roles:
            raise ImdsError("the instance has no IAM role (no instance profile)")
        try:
            data = json.loads(self.get(base + roles[0]))
        except ValueError as exc:
            raise ImdsError(f"instance metadata {base}{roles[0]}: not JSON: {exc}") from None
        if data.get("Code", "Success") != "Success" or not data.get("AccessKeyId"):
            raise ImdsError(f"instance role {roles[0]}: no credentials ({data.get('Code')}: {data.get('Message')})")
        return data


class Credentials:
    """An access key, its secret and its session token (or None)."""

    __slots__ = ("access_key", "expiration", "secret_key", "token")

    def __init__(self, access_key, secret_key, token=None, expiration=None):
        self.access_key = access_key
        self.secret_key = secret_key
        self.token = token
        self.expiration = expiration

    def __repr__(self):
        return f"Credentials(access_key={self.access_key!r}, expiration={self.expiration!r})"


class CredentialProvider:
    """Keys from the environment when set, else the instance role's, fetched again before they expire."""

    def __init__(self, imds=None, environ=None):
        self.imds = imds or Imds()
        self.environ = os.environ if environ is None else environ
        self._cached = None
        self._lock = threading.Lock()

    def __call__(self):
        access_key = self.environ.get("AWS_ACCESS_KEY_ID")
        secret_key = self.environ.get("AWS_SECRET_ACCESS_KEY")
        if access_key and secret_key:
            return Credentials(access_key, secret_key, self.environ.get("AWS_SESSION_TOKEN") or None)
        with self._lock:
            cached = self._cached
            if cached is None or (
                cached.expiration is not None
                and utcnow() >= cached.expiration - datetime.timedelta(seconds=CREDENTIALS_REFRESH_S)
            ):
                data = self.imds.role_credentials()
                try:
                    expiration = _parse_time(data["Expiration"]) if data.get("Expiration") else None
                except ValueError:
                    expiration = None
                cached = self._cached = Credentials(
                    data["AccessKeyId"], data["SecretAccessKey"], data.get("Token"), expiration
                )
            return cached


_default_imds = None
_default_credentials = None


def default_imds():
    global _default_imds
    if _default_imds is None:
        _default_imds = Imds()
    return _default_imds


def instance_id():
    """This instance's id, from the metadata service."""
    return default_imds().instance_id()


def region():
    """AWS_REGION or AWS_DEFAULT_REGION when set, else this instance's region."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or default_imds().region()


def credentials():
    """Keys from the environment when set, else the instance role's (refreshed before they expire)."""
    global _default_credentials
    if _default_credentials is None:
        _default_credentials = CredentialProvider(default_imds())
    return _default_credentials()


# ---------------------------------------------------------------------------
# Signature Version 4


def _hmac(key, text):
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def uri_encode(text, safe="/"):
    """AWS's URI encoding: every byte but the unreserved ones (and ``safe``) as %XX, upper case."""
    return quote(text, safe=_UNRESERVED + safe)


def sign(method, url, headers, body, creds, region_name, service, now=None):
    """Headers of a request signed with SigV4: ``headers`` plus host, x-amz-date, content hash and token.

    Every header passed is signed. The URL's path must already be URI-encoded
    as it goes on the wire; it is signed as is (no second encoding: S3's rule,
    and the same for the other services here, whose path is ``/``).
    """
    now = now or utcnow()
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    parts = urlsplit(url)
    host = parts.hostname
    if parts.port and not (
        (parts.scheme == "https" and parts.port == 443) or (parts.scheme == "http" and parts.port == 80)
    ):
        host = f"{host}:{parts.port}"
    payload_hash = hashlib.sha256(body or b"").hexdigest()
    signed = {key.lower(): " ".join(str(value).split()) for key, value in headers.items()}
    signed["host"] = host
    signed["x-amz-date"] = amz_date
    signed["x-amz-content-sha256"] = payload_hash
    if creds.token:
        signed["x-amz-security-token"] = creds.token
    names = sorted(signed)
    query = sorted((uri_encode(k, ""), uri_encode(v, "")) for k, v in parse_qsl(parts.query, keep_blank_values=True))
    canonical = "\n".join(
        [
            method,
            parts.path or "/",
            "&".join(f"{k}={v}" for k, v in query),
            "".join(f"{name}:{signed[name]}\n" for name in names),
            ";".join(names),
            payload_hash,
        ]
    )
    scope = f"{day}/{region_name}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(("AWS4" + creds.secret_key).encode(), day)
    for part in (region_name, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    signed["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, SignedHeaders={';'.join(names)}, "
        f"Signature={signature}"
    )
    return signed


# ---------------------------------------------------------------------------
# The calls


def _xml_error(body):
    """(code, message) of an XML error answer (EC2's <Response><Errors><Error>, S3's <Error>)."""
    try:
        root = ElementTree.fromstring(body)  # noqa: S314 - an AWS endpoint's answer, with expat's limits
    except ElementTree.ParseError:
        return None, None
    code = message = None
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == "Code" and code is None:
            code = (element.text or "").strip()
        elif tag == "Message" and message is None:
            message = (element.text or "").strip()
    return code, message


def _error(service, action, status, headers, body):
    code = message = None
    if body.lstrip().startswith(b"{"):
        try:
            data = json.loads(body)
            code = str(data.get("__type") or data.get("code") or "").rsplit("#", 1)[-1] or None
            message = data.get("message") or data.get("Message")
        except (ValueError, AttributeError):
            pass
    elif body.lstrip().startswith(b"<"):
        code, message = _xml_error(body)
    code = code or headers.get("x-amzn-errortype", "").split(":")[0] or f"HTTP{status}"
    message = message or body[:200].decode(errors="replace").strip() or http.client.responses.get(status, "")
    return AwsCallError(service, action, status, code, message)


class Client:
    """Signed calls to EC2, CloudWatch Logs and S3 in one region."""

    def __init__(self, region_name=None, credential_provider=None, endpoint_url=None, timeout=REQUEST_TIMEOUT_S):
        self.region = region_name or region()
        self.credentials = credential_provider or credentials
        self.endpoint_url = (endpoint_url or os.environ.get("BURST_AWS_ENDPOINT_URL") or "").rstrip("/") or None
        self.timeout = timeout
        self.sleep = time.sleep

    def _suffix(self):
        return "amazonaws.com.cn" if self.region.startswith("cn-") else "amazonaws.com"

    def _endpoint(self, service):
        return self.endpoint_url or f"https://{service}.{self.region}.{self._suffix()}"

    def call(self, service, action, method, url, headers, body):
        """Sign and send one request, trying again on network errors, 5xx and throttling; the answer's body."""
        for attempt in range(ATTEMPTS):
            if attempt:
                self.sleep(0.5 * 2**attempt)
            try:
                creds = self.credentials()
            except AwsError as exc:
                raise AwsCallError(service, action, 0, "NoCredentials", str(exc)) from None
            signed = sign(method, url, headers, body, creds, self.region, service)
            try:
                status, answer_headers, data = _request(url, method, signed, body, self.timeout)
            except (OSError, http.client.HTTPException) as exc:
                error = AwsCallError(service, action, 0, type(exc).__name__, str(exc) or "no answer")
            else:
                if 200 <= status < 300:
                    return data
                error = _error(service, action, status, answer_headers, data)
            if not error.retryable:
                raise error
        raise error

    def create_tags(self, resource_id, tags):
        """EC2 CreateTags: set ``tags`` (a dict) on ``resource_id``."""
        form = [("Action", "CreateTags"), ("Version", EC2_API_VERSION), ("ResourceId.1", resource_id)]
        for index, (key, value) in enumerate(tags.items(), start=1):
            form += [(f"Tag.{index}.Key", key), (f"Tag.{index}.Value", value)]
        body = urlencode(form, quote_via=quote, safe=_UNRESERVED).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
        self.call("ec2", "CreateTags", "POST", self._endpoint("ec2") + "/", headers, body)

    def logs(self, action, payload):
        """One CloudWatch Logs call (JSON 1.1); its answer as a dict."""
        headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": LOGS_TARGET_PREFIX + action}
        body = json.dumps(payload).encode()
        data = self.call("logs", action, "POST", self._endpoint("logs") + "/", headers, body)
        return json.loads(data) if data.strip() else {}

    def create_log_stream(self, group, stream):
        """CreateLogStream; a stream that exists already is fine. The group must exist."""
        try:
            self.logs("CreateLogStream", {"logGroupName": group, "logStreamName": stream})
        except AwsCallError as exc:
            if exc.code != "ResourceAlreadyExistsException":
                raise

    def put_log_events(self, group, stream, events):
        """PutLogEvents: ``events`` as (timestamp in ms, message), in time order."""
        payload = {
            "logGroupName": group,
            "logStreamName": stream,
            "logEvents": [{"timestamp": ts, "message": message} for ts, message in events],
        }
        answer = self.logs("PutLogEvents", payload)
        rejected = answer.get("rejectedLogEventsInfo")
        if rejected:
            raise AwsCallError("logs", "PutLogEvents", 200, "RejectedLogEvents", json.dumps(rejected))

    def s3_url(self, bucket, key):
        path = "/" + uri_encode(key)
        if self.endpoint_url:
            return f"{self.endpoint_url}/{bucket}{path}"
        if "." in bucket:  # a dotted bucket name does not match the wildcard certificate
            return f"https://s3.{self.region}.{self._suffix()}/{bucket}{path}"
        return f"https://{bucket}.s3.{self.region}.{self._suffix()}{path}"

    def put_object(self, bucket, key, body, content_type="text/plain; charset=utf-8"):
        """S3 PutObject of ``body`` (bytes), signed with the payload's real SHA-256."""
        headers = {"Content-Type": content_type}
        self.call("s3", "PutObject", "PUT", self.s3_url(bucket, key), headers, body)
