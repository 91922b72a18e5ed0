"""A loopback stand-in for EC2's instance metadata service (IMDSv2 only).

What an instance's programs ask it, answered as EC2 answers: a session token
from ``PUT /latest/api/token`` (with a TTL header), required by every GET
(401 without it); the instance id, region and identity document; the instance
role's temporary keys; and the spot notices a test injects:

- ``spot``: the JSON of ``/latest/meta-data/spot/instance-action``
  (``{"action": "terminate", "time": "...Z"}``), None for 404;
- ``rebalance``: the JSON of ``/latest/meta-data/events/recommendations/rebalance``,
  None for 404;
- ``down``: every connection is closed without an answer (an outage).

``requests`` lists ``(method, path, status)``, ``gets`` the paths of the GETs
that held a valid token; ``issued``, ``unauthorized`` and
``credential_fetches`` count tokens, refused GETs and key fetches;
``revoke()`` makes every token handed out so far invalid. It binds
127.0.0.1 on a free port; ``url`` is its base URL.
"""

from __future__ import annotations

import datetime
import json

from localworld.loopback import LoopbackServer

__all__ = ["ROLE", "Imds"]

ROLE = "burst-job-role"
CREDENTIALS_PATH = "/latest/meta-data/iam/security-credentials/"


class Imds:
    def __init__(self, instance_id="i-0123456789abcdef0", region="eu-central-1", expires_in_s=3600):
        self.instance_id = instance_id
        self.region = region
        self.expires_in_s = expires_in_s
        self.spot = None
        self.rebalance = None
        self.down = False
        self.tokens = set()
        self.issued = 0
        self.unauthorized = 0
        self.credential_fetches = 0
        self.requests = []
        self.gets = []
        self._server = LoopbackServer(get=self._get, put=self._put)

    def _put(self, path, headers):
        if self.down:
            return None
        ttl = headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        if path != "/latest/api/token" or not ttl or not ttl.isdigit():
            return self._record("PUT", path, 400, b"")
        self.issued += 1
        token = f"token-{self.issued}"
        self.tokens.add(token)
        return self._record("PUT", path, 200, token)

    def _get(self, path, headers):
        if self.down:
            return None
        if headers.get("X-aws-ec2-metadata-token") not in self.tokens:
            self.unauthorized += 1
            return self._record("GET", path, 401, b"")
        self.gets.append(path)
        body = self.answer(path)
        if body is None:
            return self._record("GET", path, 404, "Not Found")
        return self._record("GET", path, 200, body, "application/json" if body.startswith("{") else "text/plain")

    def _record(self, method, path, status, body, kind="text/plain"):
        self.requests.append((method, path, status))
        return status, body, kind

    @property
    def url(self):
        return self._server.url

    def answer(self, path):
        """The body of a GET of ``path`` with a valid token, or None for 404."""
        notices = {
            "/latest/meta-data/spot/instance-action": self.spot,
            "/latest/meta-data/events/recommendations/rebalance": self.rebalance,
        }
        if path in notices:
            return None if notices[path] is None else json.dumps(notices[path])
        if path == "/latest/meta-data/instance-id":
            return self.instance_id
        if path == "/latest/meta-data/placement/region":
            return self.region
        if path == "/latest/dynamic/instance-identity/document":
            return json.dumps({"instanceId": self.instance_id, "region": self.region, "accountId": "123456789012"})
        if path == CREDENTIALS_PATH:
            return ROLE
        if path == CREDENTIALS_PATH + ROLE:
            self.credential_fetches += 1
            expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=self.expires_in_s)
            return json.dumps(
                {
                    "Code": "Success",
                    "Type": "AWS-HMAC",
                    "AccessKeyId": f"ASIAFAKEROLE{self.credential_fetches:08d}",
                    "SecretAccessKey": "role-secret",
                    "Token": f"role-session-token-{self.credential_fetches}",
                    "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
            )
        return None

    def revoke(self):
        self.tokens.clear()

    def close(self):
        self._server.close()
