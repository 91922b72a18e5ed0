# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""What the AWS modules of this collection share: argument specs, the module itself, and how it fails.

Private to this collection. The argument specs here match the doc fragments
of ``plugins/doc_fragments`` (``bake``, ``launch_permissions``,
``ebs_volume``); ``aws_module`` makes an ``AnsibleAWSModule`` that needs a
region, ``api_factory`` and ``region_factories`` make one API object per
region with the collection's retry policy, and ``run_or_fail`` turns an
``AwsError`` into ``fail_json_aws`` with the error's message.
"""

from __future__ import annotations

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.burst.golden_ami.plugins.module_utils._aws import (
    BAKE_ID_TAG,
    BAKE_STARTED_TAG,
    AwsError,
    default_retry,
    fail_module,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._images import ImageApi, ParameterApi

REGION_REQUIRED = "region must be given (the region option or AWS_REGION / AWS_DEFAULT_REGION)"
VOLUME_TYPES = ["gp2", "gp3", "io1", "io2", "st1", "sc1", "standard"]


def string_list():
    return dict(type="list", elements="str", default=[])


# The launch_permissions option of golden_ami and golden_ami_promote (doc fragment launch_permissions).
LAUNCH_PERMISSIONS_OPTION = dict(
    type="dict",
    options=dict(
        user_ids=string_list(),
        organization_arns=string_list(),
        organizational_unit_arns=string_list(),
    ),
)


def bake_scope_options(id_option, id_tag_option):
    """One bake (``id_option``, its tag ``id_tag_option``) or stale bakes, in the copy regions (doc fragment bake)."""
    return {
        id_option: dict(type="str"),
        id_tag_option: dict(type="str", default=BAKE_ID_TAG),
        "older_than_minutes": dict(type="int"),
        "started_tag": dict(type="str", default=BAKE_STARTED_TAG),
        "family_tags": dict(type="dict", default={}),
        "regions": string_list(),
        "protect_ssm_parameters": string_list(),
        "fail_on_left": dict(type="bool", default=True),
    }


def bake_scope_rules(id_option):
    """The module rules of ``bake_scope_options``: exactly one of the bake id and the age."""
    return dict(
        required_one_of=[(id_option, "older_than_minutes")],
        mutually_exclusive=[(id_option, "older_than_minutes")],
    )


def ebs_volume_options(**more):
    """The EBS options of a volume (doc fragment ebs_volume), and ``more``."""
    return dict(
        volume_type=dict(type="str", choices=VOLUME_TYPES),
        iops=dict(type="int"),
        throughput=dict(type="int"),
        encrypted=dict(type="bool"),
        kms_key_id=dict(type="str", no_log=False),
        **more,
    )


def image_family_option(**more):
    """The ``image_family`` option of golden_ami_prune and burst_instance: a name prefix and/or tags, and ``more``."""
    return dict(type="dict", options=dict(name_prefix=dict(type="str"), tags=dict(type="dict"), **more))


def aws_module(argument_spec, region_required=True, **rules):
    """An AnsibleAWSModule with check mode; fails at once when it needs a region and has none."""
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True, **rules)
    if region_required and not module.region:
        module.fail_json(msg=REGION_REQUIRED)
    return module


def api_factory(module, api, service):
    """A factory from a region to ``api(client, region)``, the client retried with the collection's policy."""
    retry = default_retry()

    def make(region):
        return api(module.client(service, retry_decorator=retry, region=region), region)

    return make


def client_factory(module):
    """A factory from (service, region) to one client of the module, made once, retried with the collection's policy."""
    retry = default_retry()
    cache = {}

    def client(service, region):
        if (service, region) not in cache:
            cache[(service, region)] = module.client(service, retry_decorator=retry, region=region)
        return cache[(service, region)]

    return client


def region_factories(module):
    """(ec2, ssm): factories from a region to an ImageApi / ParameterApi of the module's clients."""
    return api_factory(module, ImageApi, "ec2"), api_factory(module, ParameterApi, "ssm")


def run_or_fail(module, run, **extra):
    """``run()``'s result; an AwsError fails the module with its message and ``extra``.

    A value of ``extra`` that is callable is called with the error (what the run did until then).
    """
    try:
        return run()
    except AwsError as error:
        fail_module(module, error, **{k: v(error) if callable(v) else v for k, v in extra.items()})
    return None


def exit_unless_left(module, result, describe):
    """Exit with ``result``; fail instead when ``result["left"]`` lists something and fail_on_left is set."""
    left = result["left"]
    if left and module.params["fail_on_left"]:
        lines = "; ".join(describe(item) for item in left)
        module.fail_json(msg=f"Could not remove {len(left)} resource(s): {lines}", **result)
    module.exit_json(**result)
