"""Benchmark: model_download against a raw parallel fetch of the same files.

Serves a generated model (default 2 GiB in 4 safetensors shards, plus
configs and tokenizer files) from the local Hub mirror on 127.0.0.1, then,
in the same run and in alternating rounds:

1. ``curl --parallel`` fetches the files the module would select, straight
   from the mirror's ``resolve`` URLs, without verifying anything;
2. the module's code (``model_download.run``, in a fresh Python process, as
   Ansible would run it) downloads the model into an empty root, verifies
   every file, writes the record and renames the model into place;
3. the module runs again with the commit sha as revision: no change, and the
   mirror's request log must stay empty (zero bytes, zero requests).

Prints a JSON document and a Markdown table. Run from the repository root::

    .venv/bin/python benchmarks/model_cache/bench.py [--size 2GiB] [--shards 4] [--rounds 3]

``--mode s3`` compares the S3 source with boto3's transfer manager instead (``bench_s3.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))
COLLECTIONS = os.path.join(REPO_ROOT, ".venv", "collections")
sys.path.insert(0, COLLECTIONS)

from ansible_collections.burst.golden_ami.plugins.module_utils._model_sources import select_files  # noqa: E402
from localworld.hub_mirror import HubMirror, parse_size  # noqa: E402

REPO_ID = "bench/model-2g"

CLIENT = r"""
import json, sys, time
t0 = time.monotonic()
from ansible_collections.burst.golden_ami.plugins.modules import model_download
params = {k: None for k in model_download.argument_spec()}
params.update({k: v.get("default") for k, v in model_download.argument_spec().items() if "default" in v})
params.update(json.loads(sys.argv[1]))
result = model_download.run(params, False)
print(json.dumps({"elapsed_s": time.monotonic() - t0, "changed": result["changed"],
                  "downloaded_bytes": result["downloaded_bytes"], "total_bytes": result["total_bytes"]}))
"""


def _self_cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _children_sys():
    """Kernel CPU seconds of the finished children (the part of their CPU spent in system calls)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime


def run_client(params):
    env = dict(os.environ, PYTHONPATH=COLLECTIONS, HF_HUB_DISABLE_TELEMETRY="1")
    cpu, kernel = _children_cpu(), _children_sys()
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", CLIENT, json.dumps(params)], env=env, check=True, capture_output=True, text=True
    )
    wall = time.monotonic() - start
    data = json.loads(out.stdout.strip().splitlines()[-1])
    data["wall_s"] = wall
    data["cpu_s"] = _children_cpu() - cpu
    data["sys_s"] = _children_sys() - kernel
    return data


def run_ansible(params, module="burst.golden_ami.model_download"):
    """The no-change re-run as Ansible runs it: an ad-hoc call of the module on localhost."""
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=COLLECTIONS,
        ANSIBLE_CONFIG=os.path.join(REPO_ROOT, "ansible.cfg"),
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
    )
    ansible = os.path.join(os.path.dirname(sys.executable), "ansible")
    cmd = [ansible, "localhost", "-c", "local", "-i", "localhost,", "-m", module, "-o"]
    if params is not None:
        cmd += ["-a", json.dumps(params)]
    start = time.monotonic()
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, cwd=REPO_ROOT)
    elapsed = time.monotonic() - start
    assert '"changed": false' in out.stdout, out.stdout
    return round(elapsed, 3)


def run_curl(urls, dest, parallel):
    cmd = [
        "curl",
        "--parallel",
        "--parallel-max",
        str(parallel),
        "--fail",
        "--silent",
        "--show-error",
        "--no-progress-meter",
    ]
    cmd += ["--create-dirs", "--noproxy", "127.0.0.1"]
    for path, url in urls:
        cmd += ["-o", os.path.join(dest, path), url]
    cpu, kernel = _children_cpu(), _children_sys()
    start = time.monotonic()
    subprocess.run(cmd, check=True)
    return time.monotonic() - start, _children_cpu() - cpu, _children_sys() - kernel


def main(argv=None):
    mode = argparse.ArgumentParser(add_help=False)
    mode.add_argument("--mode", choices=("hub", "s3"), default="hub")
    known, _rest = mode.parse_known_args(argv)
    if known.mode == "s3":
        # The S3 source against boto3's transfer manager: see bench_s3.py.
        sys.path.insert(0, HERE)
        import bench_s3

        return bench_s3.main(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("hub", "s3"), default="hub", help="hub (default) or s3 (see bench_s3.py)")
    parser.add_argument("--size", default="2GiB", help="total size of the weight shards (default 2GiB)")
    parser.add_argument("--shards", type=int, default=4, help="number of safetensors shards (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of curl and module (default 3)")
    parser.add_argument("--workers", type=int, default=8, help="parallel files, for both (default 8)")
    parser.add_argument("--dir", default=None, help="where to create the scratch directory (default: TMPDIR)")
    args = parser.parse_args(argv)

    total = parse_size(args.size)
    scratch = tempfile.mkdtemp(prefix="bench-model-cache-", dir=args.dir)
    results = {
        "size_bytes": total,
        "shards": args.shards,
        "workers": args.workers,
        "rounds": [],
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        with HubMirror() as hub:
            t0 = time.monotonic()
            repo = hub.add_model(REPO_ID, shards=args.shards, shard_size=total // args.shards)
            results["mirror_generate_s"] = round(time.monotonic() - t0, 2)
            commit = repo.commit("main")
            paths = select_files(sorted(commit.files))
            model_bytes = sum(commit.files[p].size for p in paths)
            urls = [(p, "%s/%s/resolve/%s/%s" % (hub.endpoint, REPO_ID, commit.sha, p)) for p in paths]
            params = {
                "repo_id": REPO_ID,
                "revision": "main",
                "hub_endpoint": hub.endpoint,
                "max_workers": args.workers,
                "disk_margin_mb": 0,
            }
            for index in range(args.rounds):
                curl_dir = os.path.join(scratch, "curl-%d" % index)
                mirror_cpu = _self_cpu()
                curl_s, curl_cpu, curl_sys = run_curl(urls, curl_dir, args.workers)
                mirror_cpu_curl = _self_cpu() - mirror_cpu
                shutil.rmtree(curl_dir)
                # The same fetch, then sha256sum of every file against the expected digests.
                start = time.monotonic()
                run_curl(urls, curl_dir, args.workers)
                sums = subprocess.run(
                    ["sha256sum", "--", *[p for p, _url in urls]],
                    cwd=curl_dir,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.split()[::2]
                assert sums == [commit.files[p].sha256 for p, _url in urls], "curl fetched corrupted files"
                curl_verified_s = time.monotonic() - start
                shutil.rmtree(curl_dir)

                root = os.path.join(scratch, "models-%d" % index)
                mirror_cpu = _self_cpu()
                first = run_client(dict(params, root=root))
                mirror_cpu_module = _self_cpu() - mirror_cpu
                assert first["changed"] and first["downloaded_bytes"] == model_bytes, first
                mark = hub.mark()
                again = run_client(dict(params, root=root, revision=commit.sha))
                requests = hub.requests(since=mark)
                assert not again["changed"] and again["downloaded_bytes"] == 0, again
                ansible_s = run_ansible(dict(params, root=root, revision=commit.sha)) if index == 0 else None
                results["rounds"].append(
                    {
                        "curl_s": round(curl_s, 3),
                        "curl_sha256sum_s": round(curl_verified_s, 3),
                        "curl_cpu_s": round(curl_cpu, 3),
                        "curl_sys_s": round(curl_sys, 3),
                        "module_cpu_s": round(first["cpu_s"], 3),
                        "module_sys_s": round(first["sys_s"], 3),
                        "mirror_cpu_during_curl_s": round(mirror_cpu_curl, 3),
                        "mirror_cpu_during_module_s": round(mirror_cpu_module, 3),
                        "module_s": round(first["wall_s"], 3),
                        "module_in_process_s": round(first["elapsed_s"], 3),
                        "rerun_wall_s": round(again["wall_s"], 3),
                        "rerun_requests": len(requests),
                        "rerun_bytes": sum(r.bytes_sent for r in requests),
                        "rerun_ansible_s": ansible_s,
                    }
                )
                shutil.rmtree(os.path.join(scratch, "models-%d" % index), ignore_errors=True)
                subprocess.run(["chmod", "-R", "u+w", scratch], check=False)
                shutil.rmtree(root, ignore_errors=True)
    finally:
        subprocess.run(["chmod", "-R", "u+w", scratch], check=False)
        shutil.rmtree(scratch, ignore_errors=True)

    results["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results["model_bytes"] = model_bytes
    rounds = results["rounds"]
    curl_med = statistics.median(r["curl_s"] for r in rounds)
    verified_med = statistics.median(r["curl_sha256sum_s"] for r in rounds)
    module_med = statistics.median(r["module_s"] for r in rounds)
    results["curl_mib_s"] = round(model_bytes / curl_med / 2**20, 1)
    results["curl_sha256sum_mib_s"] = round(model_bytes / verified_med / 2**20, 1)
    results["module_mib_s"] = round(model_bytes / module_med / 2**20, 1)
    results["ratio"] = round(curl_med / module_med, 3)
    results["ratio_vs_curl_sha256sum"] = round(verified_med / module_med, 3)
    results["rerun_wall_s_max"] = max(r["rerun_wall_s"] for r in rounds)
    results["rerun_ansible_s"] = rounds[0]["rerun_ansible_s"]
    results["ansible_ping_s"] = run_ansible(None, module="ansible.builtin.ping")
    print(json.dumps(results, indent=2))
    print()
    print(
        "load average %s at the start, %s at the end"
        % ("/".join("%.2f" % x for x in results["loadavg_start"]), "/".join("%.2f" % x for x in results["loadavg_end"]))
    )
    print()
    print(
        "| round | curl (s) | curl + sha256sum (s) | model_download (s) | vs curl"
        " | CPU curl / module (s), kernel part | mirror CPU for curl / module (s) |"
    )
    print("|---|---|---|---|---|---|---|")
    for index, r in enumerate(rounds, 1):
        print(
            "| %d | %.2f | %.2f | %.2f | %.0f%% | %.2f (%.2f) / %.2f (%.2f) | %.2f / %.2f |"
            % (
                index,
                r["curl_s"],
                r["curl_sha256sum_s"],
                r["module_s"],
                100 * r["curl_s"] / r["module_s"],
                r["curl_cpu_s"],
                r["curl_sys_s"],
                r["module_cpu_s"],
                r["module_sys_s"],
                r["mirror_cpu_during_curl_s"],
                r["mirror_cpu_during_module_s"],
            )
        )
    print(
        "| median | %.2f (%.0f MiB/s) | %.2f (%.0f MiB/s) | %.2f (%.0f MiB/s) | %.0f%% | | |"
        % (
            curl_med,
            results["curl_mib_s"],
            verified_med,
            results["curl_sha256sum_mib_s"],
            module_med,
            results["module_mib_s"],
            100 * results["ratio"],
        )
    )
    print()
    print(
        "no-change re-run (sha revision): %.2f s at most, %d requests, %d bytes; through Ansible (ad-hoc): %.2f s"
        " (ansible.builtin.ping the same way: %.2f s)"
        % (
            results["rerun_wall_s_max"],
            sum(r["rerun_requests"] for r in rounds),
            sum(r["rerun_bytes"] for r in rounds),
            results["rerun_ansible_s"],
            results["ansible_ping_s"],
        )
    )
    throughput_ok = results["ratio"] >= 0.8
    rerun_ok = results["rerun_wall_s_max"] < 3 and all(r["rerun_requests"] == 0 for r in rounds)
    print("target >= 80%% of curl's throughput: %s" % ("met" if throughput_ok else "NOT met"))
    print("target no-change re-run < 3 s, no request: %s" % ("met" if rerun_ok else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
