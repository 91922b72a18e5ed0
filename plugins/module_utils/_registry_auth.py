# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Registry credentials, as image_pull and modelcar_image take them.

Private to this collection. ``REGISTRY_AUTH_SPEC`` is the option both
modules accept; ``credentials`` turns it into (user, password) per registry
host, fetching ECR tokens with boto3, and registers every password with the
module's ``no_log_values`` so that it never reaches a log.
"""

from __future__ import annotations

import base64

from ansible.module_utils.basic import missing_required_lib

try:
    import boto3

    HAS_BOTO3 = True
except ImportError:
    HAS_BOTO3 = False

REGISTRY_AUTH_SPEC = {
    "type": "list",
    "elements": "dict",
    "default": [],
    "no_log": False,
    "options": {
        "registry": {"type": "str", "required": True},
        "username": {"type": "str"},
        "password": {"type": "str", "no_log": True},
        "ecr": {"type": "bool", "default": False},
        "region": {"type": "str"},
        "endpoint_url": {"type": "str"},
    },
}


def ecr_credentials(registry, region=None, endpoint_url=None, client=None):
    """(username, password) from ECR's get_authorization_token for ``registry``."""
    parts = registry.split(".")
    if client is None:
        if region is None:
            if len(parts) < 6 or parts[1:3] != ["dkr", "ecr"]:
                raise ValueError(f"cannot tell the ECR region from {registry}: give region")
            region = parts[3]
        client = boto3.client("ecr", region_name=region, endpoint_url=endpoint_url)
    response = client.get_authorization_token(registryIds=[parts[0]])
    token = response["authorizationData"][0]["authorizationToken"]
    username, _colon, password = base64.b64decode(token).decode().partition(":")
    return username, password


def credentials(module, entries):
    """{registry: (username, password)} for ``entries`` (the registry_auth option); fails the module on bad input."""
    found = {}
    for entry in entries:
        registry = entry["registry"]
        if entry["ecr"]:
            if not HAS_BOTO3:
                module.fail_json(msg=missing_required_lib("boto3", reason=f"for the ECR registry {registry}"))
            try:
                username, password = ecr_credentials(registry, entry["region"], entry["endpoint_url"])
            except Exception as exc:  # noqa: BLE001 (botocore raises many kinds; all mean no token)
                module.fail_json(msg=f"cannot get an ECR token for {registry}: {exc}")
        else:
            username, password = entry["username"], entry["password"]
            if not username or password is None:
                module.fail_json(msg=f"registry_auth for {registry} needs username and password, or ecr: true")
        module.no_log_values.add(password)
        found[registry] = (username, password)
    return found
