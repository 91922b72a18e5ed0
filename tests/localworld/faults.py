"""AWS errors on demand, for what moto never produces (capacity errors, mostly).

moto launches whatever it is asked to. To test fallbacks, a *fault plan*
makes chosen calls fail as AWS would, before they leave the client:

    [{"operation": "RunInstances",
      "match": {"InstanceType": "g6e.xlarge", "InstanceMarketOptions.MarketType": "spot"},
      "code": "InsufficientInstanceCapacity",
      "message": "We currently do not have sufficient g6e.xlarge capacity"}]

``match`` compares dotted paths into the call's parameters (as boto3 takes
them) with the given values; a rule without ``match`` hits every call of the
operation. ``region`` (optional) limits a rule to the clients of one region.
``times`` (optional) limits how often a rule fires in one process.

Two ways to use a plan, neither of which needs any switch in the code under test:

- In-process: ``register(client, plan)`` adds botocore event handlers to one
  client (unit tests).
- In other processes (``ansible-playbook`` and the modules it runs):
  ``fault_env(plan, tmp_path)`` returns environment variables that put
  ``tests/localworld/faults_site`` (whose ``sitecustomize`` calls
  ``install_from_env``) first on ``PYTHONPATH`` and name the plan file in
  ``LOCALWORLD_FAULTS``. Every botocore client those processes create then
  carries the handlers.

The injected error takes botocore's normal error path: the caller sees the
modelled ``ClientError`` with the planned code and message.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["ENV_VAR", "SITE_DIR", "fault_env", "install", "install_from_env", "load_plan", "register"]

ENV_VAR = "LOCALWORLD_FAULTS"
SITE_DIR = Path(__file__).resolve().parent / "faults_site"
_CONTEXT_KEY = "localworld_fault"


def load_plan(plan):
    """A list of rules from a list, a JSON text or a path to a JSON file; checks each rule's shape."""
    if isinstance(plan, (str, os.PathLike)):
        text = str(plan)
        if not text.lstrip().startswith("["):
            text = Path(text).read_text()
        plan = json.loads(text)
    if not isinstance(plan, list):
        raise ValueError("a fault plan is a JSON list of rules")
    for rule in plan:
        missing = {"operation", "code"} - set(rule)
        if missing:
            raise ValueError(f"fault rule {rule!r} lacks {', '.join(sorted(missing))}")
        unknown = set(rule) - {"operation", "match", "code", "message", "status", "times", "region"}
        if unknown:
            raise ValueError(f"fault rule {rule!r} has unknown keys {', '.join(sorted(unknown))}")
    return [dict(rule) for rule in plan]


def _lookup(params, path):
    value = params
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _matches(rule, params):
    return all(_lookup(params, path) == expected for path, expected in (rule.get("match") or {}).items())


def register(client, plan):
    """Make ``client`` fail the calls the plan names. Returns the rules (with a ``fired`` count each)."""
    from botocore.awsrequest import AWSResponse

    rules = load_plan(plan)
    for rule in rules:
        rule["fired"] = 0
    service = client.meta.service_model.service_id.hyphenize()
    region = client.meta.region_name

    def choose(params, model, context, **_kwargs):
        for rule in rules:
            if rule["operation"] != model.name or not _matches(rule, params):
                continue
            if rule.get("region") not in (None, region):
                continue
            if rule.get("times") is not None and rule["fired"] >= rule["times"]:
                continue
            rule["fired"] += 1
            context[_CONTEXT_KEY] = rule
            return

    def answer(model, context, **_kwargs):
        rule = context.pop(_CONTEXT_KEY, None)
        if rule is None:
            return None
        status = int(rule.get("status", 400))
        http = AWSResponse("https://localworld.invalid/", status, {}, None)
        parsed = {
            "Error": {"Code": rule["code"], "Message": rule.get("message") or f"{rule['code']} (injected)"},
            "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": "localworld-fault"},
        }
        return http, parsed

    for operation in sorted({rule["operation"] for rule in rules}):
        client.meta.events.register(f"before-parameter-build.{service}.{operation}", choose)
        client.meta.events.register(f"before-call.{service}.{operation}", answer)
    return rules


def install(plan):
    """Make every botocore client created from now on in this process fail the calls the plan names."""
    import botocore.session

    rules = load_plan(plan)
    original = botocore.session.Session.create_client
    if getattr(original, "_localworld_faults", False):
        original = original.__wrapped__

    def create_client(self, *args, **kwargs):
        client = original(self, *args, **kwargs)
        operations = set(client.meta.service_model.operation_names)
        own = [rule for rule in rules if rule["operation"] in operations]
        if own:
            register(client, own)
        return client

    create_client.__wrapped__ = original
    create_client._localworld_faults = True
    botocore.session.Session.create_client = create_client


def install_from_env():
    """``install`` the plan that ``LOCALWORLD_FAULTS`` names, if any (called by faults_site/sitecustomize.py)."""
    plan = os.environ.get(ENV_VAR)
    if plan:
        install(plan)


def fault_env(plan, directory):
    """Environment for child processes that must see the plan: PYTHONPATH and LOCALWORLD_FAULTS."""
    path = Path(directory) / "fault-plan.json"
    path.write_text(json.dumps(load_plan(plan), indent=2))
    tests_dir = Path(__file__).resolve().parent.parent
    entries = [str(SITE_DIR), str(tests_dir)]
    if os.environ.get("PYTHONPATH"):
        entries.append(os.environ["PYTHONPATH"])
    return {ENV_VAR: str(path), "PYTHONPATH": os.pathsep.join(entries)}
