"""A stand-in for the EC2 instance metadata service (IMDSv2 only), on loopback."""

from __future__ import annotations

import datetime
import http.server
import json
import secrets
import threading

import pytest

ROLE = "burst-job-role"


class FakeImds:
    """IMDSv2: a token from ``PUT /latest/api/token``, required by every GET (401 without it).

    Serves the instance id, the region (identity document and placement) and
    the role's temporary keys. ``requests`` lists (method, path, status);
    ``revoke_tokens()`` makes every token handed out so far invalid.
    """

    def __init__(self, instance_id="i-0123456789abcdef0", region="eu-central-1", expires_in_s=3600):
        self.instance_id = instance_id
        self.region = region
        self.expires_in_s = expires_in_s
        self.tokens = set()
        self.requests = []
        self.credential_fetches = 0
        imds = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, status, body=b"", content_type="text/plain"):
                imds.requests.append((self.command, self.path, status))
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self):
                ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
                if self.path != "/latest/api/token" or not ttl or not ttl.isdigit():
                    self._answer(400)
                    return
                token = secrets.token_urlsafe(16)
                imds.tokens.add(token)
                self._answer(200, token.encode())

            def do_GET(self):
                if self.headers.get("X-aws-ec2-metadata-token") not in imds.tokens:
                    self._answer(401)
                    return
                body = imds.answer(self.path)
                if body is None:
                    self._answer(404)
                else:
                    self._answer(200, body.encode())

            def log_message(self, *_args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def answer(self, path):
        base = "/latest/meta-data/iam/security-credentials/"
        if path == "/latest/meta-data/instance-id":
            return self.instance_id
        if path == "/latest/meta-data/placement/region":
            return self.region
        if path == "/latest/dynamic/instance-identity/document":
            return json.dumps({"instanceId": self.instance_id, "region": self.region, "accountId": "123456789012"})
        if path == base:
            return ROLE
        if path == base + ROLE:
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

    def revoke_tokens(self):
        self.tokens.clear()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_imds():
    imds = FakeImds()
    try:
        yield imds
    finally:
        imds.close()
