# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The registry_auth option of image_pull and modelcar_image (module_utils/_registry_auth.py).
    DOCUMENTATION = r"""
options:
  registry_auth:
    description:
      - Credentials per registry host, used only for that registry. Passwords and tokens are sent in request
        headers only, never written to disk, and never logged.
    type: list
    elements: dict
    default: []
    suboptions:
      registry:
        description: Registry host as it appears in references (C(host:port) included).
        type: str
        required: true
      username:
        description: User name (not with O(registry_auth[].ecr)).
        type: str
      password:
        description: Password or token (not with O(registry_auth[].ecr)).
        type: str
      ecr:
        description: Get a token with boto3's ECR C(get_authorization_token) (needs boto3 on the host).
        type: bool
        default: false
      region:
        description: ECR region; taken from the registry host when not given.
        type: str
      endpoint_url:
        description: ECR endpoint URL, for tests against an emulator.
        type: str
"""
