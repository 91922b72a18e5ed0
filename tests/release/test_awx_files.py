"""The AWX objects shipped in awx/ are consistent with the collection and with awx.awx.

No AWX runs here, so each file is checked against what AWX and awx.awx
would do with it:

- every job template runs a playbook of awx/playbooks/ that only imports a
  playbook the collection ships (burst.golden_ami.<name>), so that a job's
  playbooks, roles and modules are one collection version, the execution
  environment's;
- every key is an option of the awx.awx module that load.yml hands it to,
  and load.yml, run with awx.awx's modules replaced by a recorder, hands
  them fully templated values (the !unsafe ones excepted);
- surveys ask for variables their playbooks read, with AWX's survey types;
  the Hub token is a secret injected as an environment variable only;
- the workflow's nodes chain job templates capture -> verify -> promote ->
  prune, and run as AWX runs them (ansible-runner, each node's extra vars
  merged as AWX merges them, set_stats artifacts handed on) on the local
  world, the image going from candidate to published, older images pruned;
- the notification templates have the fields AWX requires, take their
  secrets from load.yml's environment, and the webhook's body is JSON;
- the schedules' rules parse and point at templates; the sweep covers every
  region the scheduled bake lives in;
- the inventory source's file lists a launched burst instance; the prune
  playbook prunes in every region it is given.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import jinja2.sandbox
import pytest
import yaml
from dateutil.rrule import rrulestr
from release_tools import ansible_env, run

from localworld.bakes import BASE_IMAGE_FAMILY, BUILDER_TYPES

try:
    import ansible_runner
except ImportError as error:  # pragma: no cover - a missing requirement is a failure, not a skip
    raise ImportError("ansible-runner is not installed: requirements/dev.in must list it") from error

REPO = Path(__file__).resolve().parents[2]
AWX = REPO / "awx"
BIN = Path(sys.executable).parent
SURVEY_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}
# Keys of awx/*.yml that awx/load.yml reads itself instead of passing them on.
LOADER_KEYS = {"credential_kinds", "credential_kind", "hosts"}
CREDENTIAL_KINDS = {"aws", "hub", "machine"}
AWX_MODULES = [
    "job_template",
    "credential_type",
    "inventory_source",
    "inventory",
    "schedule",
    "workflow_job_template",
    "notification_template",
    "execution_environment",
    "project",
    "host",
]
# What AWX requires in notification_configuration, per type (its notification backends' init_parameters).
NOTIFICATION_FIELDS = {
    "webhook": {"url", "http_method", "headers", "username", "password", "disable_ssl_verification"},
    "email": {"host", "port", "username", "password", "use_tls", "use_ssl", "sender", "recipients", "timeout"},
}
THIN_IMPORT = re.compile(r"^burst\.golden_ami\.([a-z_]+)$")
WORKFLOW_TIMEOUT_S = 420


class _AwxLoader(yaml.SafeLoader):
    """Reads !unsafe (Ansible's tag for text that must not be templated) as plain text."""


_AwxLoader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


def _load(name: str) -> dict:
    return yaml.load((AWX / name).read_text(), _AwxLoader)  # noqa: S506 - a SafeLoader with one more tag


@pytest.fixture(scope="module")
def awx_docs() -> dict[str, dict]:
    """The options of each awx.awx module that load.yml calls, as ansible-doc documents them."""
    result = run(
        [str(BIN / "ansible-doc"), "-t", "module", "--json", *(f"awx.awx.{m}" for m in AWX_MODULES)],
        env=ansible_env(ANSIBLE_PYTHON_INTERPRETER=sys.executable),
    )
    assert result.returncode == 0, "awx.awx is not in the ansible bundle: " + result.stderr
    docs = json.loads(result.stdout)
    return {m: docs[f"awx.awx.{m}"]["doc"]["options"] for m in AWX_MODULES}


@pytest.fixture(scope="module")
def awx_options(awx_docs: dict[str, dict]) -> dict[str, set[str]]:
    return {m: set(options) for m, options in awx_docs.items()}


JOB_TEMPLATES = _load("job_templates.yml")["awx_job_templates"]
WORKFLOWS = _load("workflow_job_templates.yml")["awx_workflow_job_templates"]
NOTIFICATIONS = _load("notification_templates.yml")["awx_notification_templates"]
SCHEDULES = _load("schedules.yml")["awx_schedules"]
TEMPLATES_BY_NAME = {t["name"]: t for t in JOB_TEMPLATES}


def _imported(playbook: str) -> str:
    """The collection playbook that a job template's playbook imports (its name), checking that is all it does."""
    path = REPO / playbook
    assert path.is_file(), f"{playbook} is not in the project"
    plays = yaml.safe_load(path.read_text())
    assert isinstance(plays, list) and len(plays) == 1, f"{playbook}: one import_playbook, nothing else"
    (play,) = plays
    assert set(play) == {"name", "ansible.builtin.import_playbook"}, f"{playbook}: {sorted(play)}"
    match = THIN_IMPORT.match(play["ansible.builtin.import_playbook"])
    assert match, f"{playbook} imports {play['ansible.builtin.import_playbook']}, not a burst.golden_ami playbook"
    shipped = REPO / "playbooks" / f"{match.group(1)}.yml"
    assert shipped.is_file(), f"{playbook}: the collection ships no playbooks/{match.group(1)}.yml"
    return match.group(1)


def _readable(collection_playbook: str) -> str:
    """What a collection playbook, its vars files, its task files and the roles' defaults read."""
    text = (REPO / "playbooks" / f"{collection_playbook}.yml").read_text()
    for pattern in ("playbooks/vars/*.yml", "playbooks/tasks/*.yml", "roles/*/defaults/main.yml"):
        text += "".join(p.read_text() for p in REPO.glob(pattern))
    return text


def _check_survey(spec: dict, readable: str) -> None:
    assert spec["name"] and spec["description"] and spec["spec"]
    variables = [q["variable"] for q in spec["spec"]]
    assert len(variables) == len(set(variables)), "a survey asks twice for one variable"
    for question in spec["spec"]:
        name = question["variable"]
        assert question["type"] in SURVEY_TYPES, f"{name}: {question['type']} is no AWX survey type"
        assert question["question_name"]
        assert name in readable, f"survey variable {name} is read by no playbook"
        assert "token" not in name.lower() and question["type"] != "password", f"{name}: secrets come from credentials"
        default = question.get("default")
        if question["type"] == "multiplechoice":
            assert default in question["choices"], f"{name}: default {default!r} is no choice"
        if question["type"] == "multiselect" and default is not None:
            assert set(str(default).split("\n")) <= set(question["choices"]), f"{name}: default is no choice"
        if question["type"] in ("integer", "float") and default is not None:
            assert question["min"] <= default <= question["max"], f"{name}: default outside min..max"
        if question["type"] == "text" and default is not None:
            assert question["min"] <= len(default) <= question["max"], f"{name}: default length outside min..max"


def _survey_defaults(template: dict) -> dict:
    """The answers AWX fills in from a survey's defaults (multiselect: a list)."""
    defaults = {}
    for question in template.get("survey_spec", {}).get("spec", []):
        if question.get("default") in (None, ""):
            continue
        value = question["default"]
        defaults[question["variable"]] = value.split("\n") if question["type"] == "multiselect" else value
    return defaults


def test_every_job_runs_a_thin_import_of_a_collection_playbook() -> None:
    """One version per job: the project only holds imports of the collection's playbooks, by their names."""
    imported = {t["name"]: _imported(t["playbook"]) for t in JOB_TEMPLATES}
    assert set(imported.values()) == {"bake", "verify", "promote", "prune", "cleanup", "launch", "teardown"}
    for template in JOB_TEMPLATES:
        assert template["playbook"].startswith("awx/playbooks/"), template["name"]
    # Nothing else in awx/playbooks: no playbook of the project's own.
    for path in (AWX / "playbooks").glob("*"):
        assert path.suffix == ".yml", path
        _imported(str(path.relative_to(REPO)))
    names = [t["name"] for t in JOB_TEMPLATES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("template", JOB_TEMPLATES, ids=lambda t: t["name"])
def test_job_template(template: dict, awx_options: dict[str, set[str]]) -> None:
    unknown = set(template) - awx_options["job_template"] - LOADER_KEYS
    assert not unknown, f"not options of awx.awx.job_template: {sorted(unknown)}"
    assert set(template["credential_kinds"]) <= CREDENTIAL_KINDS
    assert set(template.get("notification_templates_error", [])) <= {n["name"] for n in NOTIFICATIONS}
    readable = _readable(_imported(template["playbook"]))
    for variable in template.get("extra_vars", {}):
        assert variable in readable, f"extra var {variable} is read by no playbook or role"
    if "survey_spec" not in template:
        # Run by a schedule or as a workflow's node, which give the variables.
        scheduled = {s["unified_job_template"] for s in SCHEDULES}
        nodes = {n["unified_job_template"]["name"] for w in WORKFLOWS for n in w["workflow_nodes"]}
        assert template["name"] in scheduled | nodes, "every job a person launches has a survey"
        return
    _check_survey(template["survey_spec"], readable)


def test_hub_token_is_an_environment_variable_only(awx_options: dict[str, set[str]]) -> None:
    (hub,) = _load("credential_types.yml")["awx_credential_types"]
    assert set(hub) - {"name"} <= awx_options["credential_type"]
    assert hub["kind"] == "cloud"
    (field,) = [f for f in hub["inputs"]["fields"] if f["id"] == "hf_token"]
    assert field["secret"] is True
    assert hub["inputs"]["required"] == ["hf_token"]
    # Only env: no extra_vars and no file injector.
    assert set(hub["injectors"]) == {"env"}
    assert hub["injectors"]["env"] == {"HF_TOKEN": "{{ hf_token }}"}
    # The token reaches the role through the environment, in the bake templates.
    for template in JOB_TEMPLATES:
        if "hub" in template["credential_kinds"]:
            from_env = "{{ lookup('ansible.builtin.env', 'HF_TOKEN') }}"
            assert template["extra_vars"]["model_cache_hf_token"] == from_env


def _regions(variables: dict) -> set[str]:
    return {variables["bake_region"], *variables.get("bake_copy_regions", [])}


def test_schedules_parse_and_point_at_templates(awx_options: dict[str, set[str]]) -> None:
    for schedule in SCHEDULES:
        assert set(schedule) <= awx_options["schedule"], set(schedule) - awx_options["schedule"]
        rule = rrulestr(schedule["rrule"].replace(" RRULE:", "\nRRULE:"))
        first, second = rule[0], rule[1]
        assert first.tzinfo is not None and first.utcoffset().total_seconds() == 0, "schedules run in UTC"
        template = TEMPLATES_BY_NAME[schedule["unified_job_template"]]
        questions = {q["variable"]: q for q in template.get("survey_spec", {}).get("spec", [])}
        assert set(schedule.get("extra_data", {})) <= set(questions), "a schedule's extra data must be survey answers"
        for variable, value in schedule.get("extra_data", {}).items():
            if questions[variable]["type"] == "multiselect":
                assert isinstance(value, list) and set(value) <= set(questions[variable]["choices"]), variable
        if "nightly" in schedule["unified_job_template"]:
            assert (second - first).total_seconds() == 86400 and first.hour == 6
            nightly = template["extra_vars"]
            assert nightly["bake_ssm_parameter"] and nightly["bake_deprecate_after_days"] == 7
            assert "now(" in nightly["bake_version"], "each night bakes a new version"


def test_the_sweep_covers_every_region_the_bakes_live_in() -> None:
    (sweep,) = [
        s for s in SCHEDULES if TEMPLATES_BY_NAME[s["unified_job_template"]]["playbook"].endswith("cleanup.yml")
    ]
    swept = _regions(sweep["extra_data"])
    assert sweep["extra_data"]["bake_cleanup_older_than"] > 0, "the scheduled sweep goes by age"
    bakes = [w["extra_vars"] for w in WORKFLOWS] + [
        TEMPLATES_BY_NAME[s["unified_job_template"]]["extra_vars"]
        for s in SCHEDULES
        if TEMPLATES_BY_NAME[s["unified_job_template"]]["playbook"].endswith("bake.yml")
    ]
    assert bakes
    for variables in bakes:
        assert _regions(variables) <= swept, f"the sweep misses {_regions(variables) - swept}"


def test_notification_templates(awx_options: dict[str, set[str]]) -> None:
    assert {n["notification_type"] for n in NOTIFICATIONS} == {"webhook", "email"}
    load = yaml.safe_load((AWX / "load.yml").read_text())[0]["vars"]
    for notification in NOTIFICATIONS:
        assert set(notification) <= awx_options["notification_template"], notification["name"]
        config = notification["notification_configuration"]
        assert set(config) == NOTIFICATION_FIELDS[notification["notification_type"]], notification["name"]
        assert set(notification["messages"]) <= {"started", "success", "error", "workflow_approval"}
        error = notification["messages"]["error"]
        assert set(error) == {"message", "body"}
        # AWX renders the messages with the job's context; the webhook's body must then be JSON.
        context = {
            "job_friendly_name": "Job",
            "job": {"id": 7, "name": "bake", "status": "failed"},
            "url": "https://a/7",
        }
        environment = jinja2.sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
        body = environment.from_string(error["body"]).render(context)
        if notification["notification_type"] == "webhook":
            assert json.loads(body)["status"] == "failed"
        assert "#7" in environment.from_string(error["message"]).render(context)
    # The secrets are load.yml's variables, read from its environment, never values in a file.
    (webhook,) = [n for n in NOTIFICATIONS if n["notification_type"] == "webhook"]
    (email,) = [n for n in NOTIFICATIONS if n["notification_type"] == "email"]
    assert webhook["notification_configuration"]["url"] == "{{ awx_notification_webhook_url }}"
    password = email["notification_configuration"]["password"]
    assert password == "{{ awx_notification_email_password }}"  # noqa: S105 - a variable, not a password
    assert load["awx_notification_webhook_url"].startswith("{{ lookup('ansible.builtin.env', ")
    assert load["awx_notification_email_password"].startswith("{{ lookup('ansible.builtin.env', ")
    # Attached on failure to the workflow and to every template that bakes (by hand or on schedule).
    names = {n["name"] for n in NOTIFICATIONS}
    for workflow in WORKFLOWS:
        assert set(workflow["notification_templates_error"]) == names
    for name in ("Burst golden image: bake", "Burst golden image: nightly rebake"):
        assert set(TEMPLATES_BY_NAME[name]["notification_templates_error"]) == names


def _workflow_chain(workflow: dict) -> list[dict]:
    """The workflow's nodes in the order their success links run them, checking there is one chain."""
    nodes = {n["identifier"]: n for n in workflow["workflow_nodes"]}
    assert len(nodes) == len(workflow["workflow_nodes"]), "identifiers repeat"
    targets = {}
    for node in nodes.values():
        related = node.get("related", {})
        assert set(related) <= {"success_nodes"}, f"{node['identifier']}: only success links"
        following = [link["identifier"] for link in related.get("success_nodes", [])]
        assert len(following) <= 1 and set(following) <= set(nodes)
        targets[node["identifier"]] = following[0] if following else None
    (first,) = set(nodes) - set(targets.values())
    chain = [nodes[first]]
    while targets[chain[-1]["identifier"]]:
        chain.append(nodes[targets[chain[-1]["identifier"]]])
    assert len(chain) == len(nodes), "every node is on the chain"
    return chain


def test_workflow_chains_the_bake_stages(awx_docs: dict[str, dict], awx_options: dict[str, set[str]]) -> None:
    (workflow,) = WORKFLOWS
    assert set(workflow) <= awx_options["workflow_job_template"]
    node_options = awx_docs["workflow_job_template"]["workflow_nodes"]["suboptions"]
    template_options = node_options["unified_job_template"]["suboptions"]
    for node in workflow["workflow_nodes"]:
        assert set(node) <= set(node_options), node["identifier"]
        assert set(node["unified_job_template"]) <= set(template_options), node["identifier"]
        assert node["unified_job_template"]["type"] == "job_template"
        assert node["unified_job_template"]["name"] in TEMPLATES_BY_NAME, node["identifier"]
        assert not node.get("extra_data"), "the nodes' variables come from their templates and the workflow"
    chain = [TEMPLATES_BY_NAME[n["unified_job_template"]["name"]] for n in _workflow_chain(workflow)]
    assert [_imported(t["playbook"]) for t in chain] == ["bake", "verify", "promote", "prune"]
    assert chain[0]["extra_vars"]["bake_stages"] == ["capture"], "the first node captures a candidate only"

    # The workflow's variables win over what nodes hand on, and over the nodes' own: they must not set either.
    variables = workflow["extra_vars"]
    assert not {"bake_id", "bake_stages"} & set(variables)
    readable = "".join(_readable(_imported(t["playbook"])) for t in chain)
    for variable in variables:
        assert variable in readable, f"workflow variable {variable} is read by no node"
    _check_survey(workflow["survey_spec"], readable)
    assert variables["prune_region"] == variables["bake_region"]
    assert variables["prune_name_prefix"] == "burst-golden-v" and variables["bake_prune"] is False
    assert variables["prune_protect_ssm_parameter"] == variables["bake_ssm_parameter"]

    # bake.yml hands on, with set_stats (per_host false), what the verify and promote nodes read.
    report = yaml.safe_load((REPO / "playbooks" / "bake.yml").read_text())[-1]
    stats = report["tasks"][-1]["ansible.builtin.set_stats"]
    assert stats["per_host"] is False
    assert {"bake_id", "bake_image_ids", "bake_ssm_parameters", "bake_version", "bake_manifest"} <= set(stats["data"])


CAPTURED = {
    "image_id": "ami-0aaaaaaaaaaaaaaaa",
    "images": {
        "eu-central-1": {"image_id": "ami-0aaaaaaaaaaaaaaaa"},
        "us-east-1": {"image_id": "ami-0bbbbbbbbbbbbbbbb"},
    },
    "manifest": {
        "image_id": "ami-0aaaaaaaaaaaaaaaa",
        "name": "burst-golden-v2",
        "contents": {"models": {}},
        "builds": [],
    },
}
STATS_CASES = {
    # A bake that captured an image and its copy.
    "captured": (
        {"__bake_image": CAPTURED, "bake_manifest_s3_uri": "s3://manifests/golden/"},
        {
            "bake_id": "bake-new",
            "bake_image_ids": {"eu-central-1": "ami-0aaaaaaaaaaaaaaaa", "us-east-1": "ami-0bbbbbbbbbbbbbbbb"},
            "bake_manifest": {"image_id": "ami-0aaaaaaaaaaaaaaaa", "name": "burst-golden-v2"},
            "bake_manifest_uri": "s3://manifests/golden/burst-golden-v2.json",
        },
    ),
    # The image of this name existed: the bake stands for the bake that made it.
    "found by name": (
        {"__bake_image": CAPTURED, "__bake_existing_image": {"tags": {"BakeId": "bake-before"}}},
        {"bake_id": "bake-before", "bake_manifest_uri": ""},
    ),
    # Nothing changed since the published image: no capture, the published image is handed on.
    "unchanged": (
        {"__bake_unchanged": {"image_id": "ami-0cccccccccccccccc", "bake_id": "bake-published", "name": "v1"}},
        {
            "bake_id": "bake-published",
            "bake_image_ids": {"eu-central-1": "ami-0cccccccccccccccc"},
            "bake_manifest": {},
            "bake_manifest_file": "",
        },
    ),
}


@pytest.mark.parametrize("case", sorted(STATS_CASES))
def test_bake_hands_on_the_image_it_stands_for(case: str, tmp_path: Path) -> None:
    """bake.yml's set_stats, templated with the facts a bake ends with in each case."""
    facts, expected = STATS_CASES[case]
    report = yaml.safe_load((REPO / "playbooks" / "bake.yml").read_text())[-1]
    stats = report["tasks"][-1]["ansible.builtin.set_stats"]["data"]
    play_vars = {k: v for k, v in report["vars"].items() if k.startswith(("__bake_stats_", "__bake_manifest_s3_"))}
    play_vars.update(
        {
            "bake_id": "bake-new",
            "bake_region": "eu-central-1",
            "bake_version": "2",
            "bake_image_name": "burst-golden-v2",
            "bake_manifest_path": "/work/manifest.json",
            "handed_on": stats,
            **facts,
        }
    )
    out = tmp_path / "stats.json"
    tasks = [{"ansible.builtin.copy": {"content": "{{ handed_on | to_json }}", "dest": str(out), "mode": "0600"}}]
    play = {"hosts": "localhost", "connection": "local", "gather_facts": False, "vars": play_vars, "tasks": tasks}
    (tmp_path / "play.yml").write_text(yaml.safe_dump([play]))
    env = ansible_env(ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    result = run([str(BIN / "ansible-playbook"), "-i", "localhost,", str(tmp_path / "play.yml")], env=env)
    assert result.returncode == 0, result.stdout[-3000:]
    handed = json.loads(out.read_text())
    assert handed["bake_region"] == "eu-central-1" and handed["bake_version"] == "2"
    for key, value in expected.items():
        assert handed[key] == value, key


def test_load_hands_awx_templated_arguments(awx_options: dict[str, set[str]], tmp_path: Path) -> None:
    """awx/load.yml, its awx.awx modules replaced by a recorder: every argument is an option, fully templated."""
    shutil.copytree(AWX, tmp_path / "awx")
    plays = yaml.safe_load((AWX / "load.yml").read_text())
    for task in plays[0]["tasks"]:
        for module in [key for key in task if key.startswith("awx.awx.")]:
            task["burst_record"] = {"module": module.removeprefix("awx.awx."), "args": task.pop(module)}
    (tmp_path / "awx" / "load.yml").write_text(yaml.safe_dump(plays, sort_keys=False))
    library = tmp_path / "library"
    library.mkdir()
    (library / "burst_record.py").write_text(
        "#!/usr/bin/python\n"
        "import json, os\n"
        "from ansible.module_utils.basic import AnsibleModule\n"
        "module = AnsibleModule({'module': {'type': 'str'}, 'args': {'type': 'raw'}}, supports_check_mode=True)\n"
        "with open(os.environ['BURST_RECORD'], 'a') as out:\n"
        "    out.write(json.dumps(module.params) + '\\n')\n"
        "module.exit_json(changed=False)\n"
    )
    record = tmp_path / "record.jsonl"
    env = ansible_env(
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        ANSIBLE_LIBRARY=str(library),
        BURST_RECORD=str(record),
        BURST_AWX_WEBHOOK_URL="https://chat.example.com/hooks/secret-token",
    )
    result = run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            "localhost,",
            str(tmp_path / "awx" / "load.yml"),
            "-e",
            json.dumps(
                {
                    "awx_project_scm_url": "https://git.example.com/golden_ami.git",
                    "awx_aws_credential": "AWS burst",
                    "awx_hub_credential": "Hub token",
                }
            ),
        ],
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "secret-token" not in result.stdout + result.stderr, "the webhook's URL is shown"
    calls: dict[str, list[dict]] = {}
    for line in record.read_text().splitlines():
        call = json.loads(line)
        calls.setdefault(call["module"], []).append(call["args"])
    for module, called in calls.items():
        for args in called:
            assert set(args) <= awx_options[module], f"{module}: {sorted(set(args) - awx_options[module])}"

    # Each file's objects, in full; only the email notification is left out (no recipients given).
    assert [c["name"] for c in calls["job_template"]] == [t["name"] for t in JOB_TEMPLATES]
    assert [c["name"] for c in calls["notification_template"]] == ["Burst golden image: failure webhook"]
    assert calls["notification_template"][0]["notification_configuration"]["url"].endswith("secret-token")
    by_name = {c["name"]: c for c in calls["job_template"]}
    assert by_name["Burst golden image: bake"]["credentials"] == ["AWS burst", "Hub token"]
    assert by_name["Burst golden image: bake"]["notification_templates_error"] == [
        "Burst golden image: failure webhook"
    ]
    assert by_name["Burst instances: launch"]["credentials"] == ["AWS burst"]
    assert "survey_spec" not in by_name["Burst golden image: promote"], "omit leaves the option out"
    # !unsafe values reach AWX as they are: the job, not the loader, templates them.
    hub = "{{ lookup('ansible.builtin.env', 'HF_TOKEN') }}"
    assert by_name["Burst golden image: capture"]["extra_vars"]["model_cache_hf_token"] == hub
    assert "now(" in by_name["Burst golden image: nightly rebake"]["extra_vars"]["bake_version"]
    (workflow,) = calls["workflow_job_template"]
    assert {n["unified_job_template"]["organization"]["name"] for n in workflow["workflow_nodes"]} == {"Default"}
    assert workflow["notification_templates_error"] == ["Burst golden image: failure webhook"]
    assert [c["name"] for c in calls["schedule"]] == [s["name"] for s in SCHEDULES]


def test_inventory_source_lists_a_launched_burst_instance(
    awx_options: dict[str, set[str]], aws_env, tmp_path: Path
) -> None:
    inventories = _load("inventory_sources.yml")
    for source in inventories["awx_inventory_sources"]:
        assert set(source) - awx_options["inventory_source"] <= LOADER_KEYS
        assert source["source"] == "scm"
        assert source["inventory"] in {i["name"] for i in inventories["awx_inventories"]}
    (source,) = inventories["awx_inventory_sources"]
    config = yaml.safe_load((REPO / source["source_path"]).read_text())
    assert config["plugin"] == "burst.golden_ami.burst_ec2"

    ec2 = boto3.client("ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    tags = [{"Key": "Mode", "Value": "Burst"}, {"Key": "BurstJobId", "Value": "job42"}]
    ec2.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        InstanceType="g6e.xlarge",
        InstanceMarketOptions={"MarketType": "spot", "SpotOptions": {"SpotInstanceType": "one-time"}},
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )
    # The shipped file, in the test's region, without the healthcheck: moto's addresses must not be contacted.
    config.update(regions=[aws_env["AWS_REGION"]], health={"enabled": False})
    inventory = tmp_path / "burst.burst_ec2.yml"
    inventory.write_text(yaml.safe_dump(config))
    env = ansible_env(ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    env.update(aws_env)
    result = run(
        [str(BIN / "ansible-inventory"), "-i", str(inventory), "--list"],
        env=env,
    )
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert len(listed["job_job42"]["hosts"]) == 1, result.stdout


def _images(ec2, name: str, instance: str, count: int) -> list[str]:
    return [ec2.create_image(InstanceId=instance, Name=f"{name}{n}")["ImageId"] for n in range(1, count + 1)]


def test_prune_playbook_prunes_in_every_region(aws_env, tmp_path: Path) -> None:
    other_region = "us-east-1"
    images = {}
    for region in (aws_env["AWS_REGION"], other_region):
        ec2 = boto3.client("ec2", region_name=region)
        base = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        instance = ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        images[region] = _images(ec2, "burst-golden-vprune", instance, 3)
        ec2.terminate_instances(InstanceIds=[instance])
    env = ansible_env(ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    env.update(aws_env)
    (template,) = [t for t in JOB_TEMPLATES if t["playbook"].endswith("/prune.yml")]
    command = [
        str(BIN / "ansible-playbook"),
        "-i",
        "localhost,",
        str(REPO / template["playbook"]),
        "-e",
        json.dumps(
            {"prune_name_prefix": "burst-golden-vprune", "prune_keep_newest": 2, "prune_regions": [other_region]}
        ),
    ]
    check = subprocess.run([*command, "--check"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    for region, ids in images.items():
        ec2 = boto3.client("ec2", region_name=region)
        assert len(ec2.describe_images(ImageIds=ids)["Images"]) == 3, f"check mode deleted an image in {region}"
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    for region, ids in images.items():
        left = {
            i["ImageId"]
            for i in boto3.client("ec2", region_name=region).describe_images(Owners=["self"])["Images"]
            if i["Name"].startswith("burst-golden-vprune")
        }
        assert len(left) == 2 and left < set(ids), (region, left)


def _run_node(root: Path, template: dict, extra_vars: dict, env: dict, ident: str):
    """One node's job as AWX runs it: ansible-runner, the project (awx/), extra vars, credentials in the env."""
    pdd = root / ident
    shutil.copytree(AWX, pdd / "project" / "awx", ignore=shutil.ignore_patterns("__pycache__"))
    (pdd / "inventory").mkdir(parents=True)
    (pdd / "inventory" / "hosts").write_text("localhost ansible_connection=local\n")
    (pdd / "env").mkdir()
    (pdd / "env" / "extravars").write_text(yaml.safe_dump(extra_vars))
    (pdd / "env" / "settings").write_text(yaml.safe_dump({"job_timeout": WORKFLOW_TIMEOUT_S}))
    runner = ansible_runner.run(
        private_data_dir=str(pdd),
        playbook=template["playbook"],
        envvars=env,
        suppress_env_files=True,
        quiet=True,
        ident=ident,
    )
    stdout = runner.stdout.read()
    assert runner.status == "successful", f"{template['name']}: {runner.status}:\n{stdout[-5000:]}"
    (stats,) = [e for e in runner.events if e["event"] == "playbook_on_stats"]
    return stats["event_data"].get("artifact_data") or {}


@pytest.mark.docker
@pytest.mark.slow
def test_workflow_runs_node_after_node_on_the_local_world(aws_env, builder_image, tmp_path: Path) -> None:
    """The workflow's nodes, run as AWX runs them, hand the image on from capture to prune."""
    (workflow,) = WORKFLOWS
    region = aws_env["AWS_REGION"]
    ec2 = boto3.client("ec2")
    suffix = uuid.uuid4().hex[:6]
    prefix = f"burst-golden-wf{suffix}-v"
    ssm_parameter = f"/burst/workflow/{suffix}"
    # An older image of the family, which the prune node deletes.
    base = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": ["Deep Learning AMI Ubuntu*"]}])
    base_id = base["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=base_id, MinCount=1, MaxCount=1, InstanceType="t3.micro")["Instances"][0]
    older = ec2.create_image(InstanceId=instance["InstanceId"], Name=f"{prefix}0")["ImageId"]
    ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    group = ec2.create_security_group(GroupName=f"verify-{suffix}", Description="verify", VpcId=vpc)["GroupId"]
    boto3.client("s3").create_bucket(Bucket="burst-manifests", CreateBucketConfiguration={"LocationConstraint": region})

    # The workflow's variables as an administrator sets them for this platform (here: the local world), and the
    # survey's answer.
    workflow_vars = dict(workflow["extra_vars"])
    workflow_vars.update(
        {
            "bake_version": f"wf{suffix}",
            "bake_region": region,
            "prune_region": region,
            "bake_base_image_ssm_parameter": "",
            "bake_base_image_family": BASE_IMAGE_FAMILY,
            "bake_instance_types": BUILDER_TYPES,
            "bake_security_group_ids": [group],
            "bake_builder_connection": "docker",
            "bake_configure_roles": [],
            "bake_capture_poll_interval": 1,
            "bake_image_name": f"{prefix}{suffix}",
            "bake_prune_name_prefix": prefix,
            "prune_name_prefix": prefix,
            "prune_keep_newest": 1,
            "bake_ssm_parameter": ssm_parameter,
            "prune_protect_ssm_parameter": ssm_parameter,
            "bake_manifest_path": str(tmp_path / "manifest.json"),
            "bake_manifest_s3_uri": "s3://burst-manifests/golden/",
        }
    )
    env = ansible_env(ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_NOCOLOR="1")
    env.update(aws_env)
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"

    artifacts: dict = {}
    handed: list[dict] = []
    for node in _workflow_chain(workflow):
        template = TEMPLATES_BY_NAME[node["unified_job_template"]["name"]]
        # AWX: the template's own extra vars, under what earlier nodes handed on, under the workflow's variables;
        # the template's survey defaults for what none of them gives.
        extra_vars = {**template.get("extra_vars", {}), **artifacts, **workflow_vars}
        extra_vars = {**_survey_defaults(template), **extra_vars}
        artifacts = {**artifacts, **_run_node(tmp_path, template, extra_vars, env, node["identifier"])}
        handed.append(artifacts)
        if node["identifier"] == "capture":
            image_id = artifacts["bake_image_ids"][region]
            tags = {t["Key"]: t["Value"] for t in ec2.describe_images(ImageIds=[image_id])["Images"][0]["Tags"]}
            assert tags["ImageStage"] == "candidate" and tags["BakeId"] == artifacts["bake_id"]
            assert not boto3.client("ssm").describe_parameters(
                ParameterFilters=[{"Key": "Name", "Values": [ssm_parameter]}]
            )["Parameters"], "capture published the image"

    # What the bake handed on: the image in each region, the version, a compact manifest, where it was uploaded.
    capture = handed[0]
    assert capture["bake_version"] == f"wf{suffix}" and capture["bake_ssm_parameters"] == {}
    assert capture["bake_manifest"]["image_id"] == image_id and "contents" not in capture["bake_manifest"]
    assert capture["bake_manifest_uri"] == f"s3://burst-manifests/golden/{prefix}{suffix}.json"
    uploaded = boto3.client("s3").get_object(Bucket="burst-manifests", Key=f"golden/{prefix}{suffix}.json")
    assert json.loads(uploaded["Body"].read())["image_id"] == image_id
    # The image's storage per month, in its one region, from its snapshots' sizes and the dated price table.
    storage = capture["bake_storage"]
    assert set(storage["regions"]) == {region} and storage["regions"][region]["image_id"] == image_id
    assert storage["regions"][region]["size_gib"] > 0 and storage["total_usd_per_month"] > 0
    # Promoted by the promote node, the older image pruned by the prune node.
    assert boto3.client("ssm").get_parameter(Name=ssm_parameter)["Parameter"]["Value"] == image_id
    tags = {t["Key"]: t["Value"] for t in ec2.describe_images(ImageIds=[image_id])["Images"][0]["Tags"]}
    assert tags["ImageStage"] == "promoted"
    assert not ec2.describe_images(Filters=[{"Name": "image-id", "Values": [older]}])["Images"]
