"""Benchmark, S3 mode: model_cache's S3 source against boto3's transfer manager, on the same objects.

Starts moto's S3 server on 127.0.0.1, puts ``--objects`` objects of
``--size`` bytes in all (with S3's full-object SHA-256), then, in
alternating rounds (the order flips every round):

1. **model_cache**: ``ensure_model`` with an ``S3Source`` (ranged GETs by
   ``--concurrency`` threads, ``--part-size`` ranges, objects of
   ``--threshold`` bytes or more), in a fresh Python process: plan, download,
   sha256 of the whole file checked against S3's checksum, record, rename;
2. **boto3**: ``s3.download_file`` (the transfer manager) with a
   ``TransferConfig`` of the same concurrency, threshold and part size, in a
   fresh Python process, no verification;
3. **boto3 + sha256**: the same, then the sha256 of every file compared with
   S3's checksum (a raw fetch with verification).

Objects are fetched one after another by each client, so each has the same
number of GETs in flight. Prints a JSON document and a Markdown table with
medians. Run from the repository root::

    .venv/bin/python benchmarks/model_cache/bench.py --mode s3 [--size 512MiB] [--objects 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import base64
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

from localworld.hub_mirror import parse_size  # noqa: E402
from localworld.moto import MotoServer  # noqa: E402

BUCKET = "bench-models"
PREFIX = "model"
MiB = 1 << 20

OURS = r"""
import json, sys, time
t0 = time.monotonic()
from ansible_collections.burst.golden_ami.plugins.module_utils import _model_cache as mc
from ansible_collections.burst.golden_ami.plugins.module_utils._model_sources import S3Source
args = json.loads(sys.argv[1])
source = S3Source(args["bucket"], args["prefix"], endpoint_url=args["endpoint"], region=args["region"],
                  ranged_threshold=args["threshold"], part_size=args["part_size"], part_workers=args["concurrency"])
result = mc.ensure_model(source, args["root"], max_workers=1, disk_margin=0)
assert all(f["verified_with"] == "s3-checksum-sha256" for f in result["files"]), result["files"]
print(json.dumps({"elapsed_s": time.monotonic() - t0, "bytes": result["downloaded_bytes"]}))
"""

BOTO3 = r"""
import base64, hashlib, json, os, sys, time
t0 = time.monotonic()
import boto3
from boto3.s3.transfer import TransferConfig
args = json.loads(sys.argv[1])
client = boto3.client("s3", endpoint_url=args["endpoint"], region_name=args["region"])
config = TransferConfig(multipart_threshold=args["threshold"], multipart_chunksize=args["part_size"],
                        max_concurrency=args["concurrency"], use_threads=True)
os.makedirs(args["root"], exist_ok=True)
total = 0
for key, checksum in sorted(args["objects"].items()):
    dest = os.path.join(args["root"], key.rsplit("/", 1)[-1])
    client.download_file(args["bucket"], key, dest, Config=config)
    total += os.path.getsize(dest)
    if args["verify"]:
        digest = hashlib.sha256()
        with open(dest, "rb") as handle:
            for block in iter(lambda: handle.read(8 << 20), b""):
                digest.update(block)
        assert base64.b64encode(digest.digest()).decode() == checksum, key
print(json.dumps({"elapsed_s": time.monotonic() - t0, "bytes": total}))
"""


def _children_usage():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime, usage.ru_stime


def run_client(code, params, env):
    cpu, kernel = _children_usage()
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(params)], env=env, check=True, capture_output=True, text=True
    )
    wall = time.monotonic() - start
    data = json.loads(out.stdout.strip().splitlines()[-1])
    cpu_after, kernel_after = _children_usage()
    data.update(wall_s=wall, cpu_s=cpu_after - cpu, sys_s=kernel_after - kernel)
    return data


def _put_objects(client, count, total):
    """``count`` objects of random-looking bytes, ``total`` bytes in all; returns key -> ChecksumSHA256."""
    size = total // count
    objects = {}
    for index in range(count):
        key = "%s/model-%05d-of-%05d.safetensors" % (PREFIX, index + 1, count)
        # One random MiB repeated with a changing first block: cheap to make, not compressible to a zero page.
        block = os.urandom(MiB)
        body = b"".join((index.to_bytes(8, "big") + block[8:]) if i == 0 else block for i in range(size // MiB))
        body += os.urandom(size % MiB)
        client.put_object(Bucket=BUCKET, Key=key, Body=body, ChecksumAlgorithm="SHA256")
        head = client.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
        objects[key] = head["ChecksumSHA256"]
        assert base64.b64decode(objects[key]), key
    return objects


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="s3", help=argparse.SUPPRESS)
    parser.add_argument("--size", default="512MiB", help="total size of the objects (default 512MiB)")
    parser.add_argument("--objects", type=int, default=2, help="number of objects (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--concurrency", type=int, default=8, help="ranged GETs at a time, for both (default 8)")
    parser.add_argument("--part-size", default="16MiB", help="bytes per ranged GET, for both (default 16MiB)")
    parser.add_argument("--threshold", default="64MiB", help="ranged GETs from this object size (default 64MiB)")
    parser.add_argument("--dir", default=None, help="where to create the scratch directory (default: TMPDIR)")
    args = parser.parse_args(argv)

    import boto3

    total = parse_size(args.size)
    part_size = parse_size(args.part_size)
    threshold = parse_size(args.threshold)
    scratch = tempfile.mkdtemp(prefix="bench-model-cache-s3-", dir=args.dir)
    results = {
        "size_bytes": total,
        "objects": args.objects,
        "concurrency": args.concurrency,
        "part_size": part_size,
        "threshold": threshold,
        "rounds": [],
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        with MotoServer() as moto:
            os.environ.update(moto.env())
            env = dict(os.environ, PYTHONPATH=COLLECTIONS)
            client = boto3.client("s3", endpoint_url=moto.endpoint_url, region_name=moto.region)
            client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": moto.region})
            t0 = time.monotonic()
            objects = _put_objects(client, args.objects, total)
            results["put_s"] = round(time.monotonic() - t0, 2)
            common = {
                "bucket": BUCKET,
                "endpoint": moto.endpoint_url,
                "region": moto.region,
                "threshold": threshold,
                "part_size": part_size,
                "concurrency": args.concurrency,
            }
            clients = {
                "model_cache": (OURS, dict(common, prefix=PREFIX)),
                "boto3": (BOTO3, dict(common, objects=objects, verify=False)),
                "boto3_sha256": (BOTO3, dict(common, objects=objects, verify=True)),
            }
            for index in range(args.rounds):
                order = list(clients) if index % 2 == 0 else list(reversed(clients))
                row = {"order": order}
                for name in order:
                    code, params = clients[name]
                    root = os.path.join(scratch, "%s-%d" % (name, index))
                    data = run_client(code, dict(params, root=root), env)
                    assert data["bytes"] == total // args.objects * args.objects, (name, data)
                    row[name] = {k: round(data[k], 3) for k in ("wall_s", "elapsed_s", "cpu_s", "sys_s")}
                    subprocess.run(["chmod", "-R", "u+w", root], check=False)
                    shutil.rmtree(root, ignore_errors=True)
                results["rounds"].append(row)
    finally:
        subprocess.run(["chmod", "-R", "u+w", scratch], check=False)
        shutil.rmtree(scratch, ignore_errors=True)

    results["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    rounds = results["rounds"]
    size = total // args.objects * args.objects
    medians = {}
    for name in ("model_cache", "boto3", "boto3_sha256"):
        wall = statistics.median(r[name]["wall_s"] for r in rounds)
        medians[name] = {
            "wall_s": round(wall, 3),
            "mib_s": round(size / wall / MiB, 1),
            "cpu_s": round(statistics.median(r[name]["cpu_s"] for r in rounds), 3),
        }
    results["medians"] = medians
    print(json.dumps(results, indent=2))
    print()
    print(
        "load average %s at the start, %s at the end"
        % ("/".join("%.2f" % x for x in results["loadavg_start"]), "/".join("%.2f" % x for x in results["loadavg_end"]))
    )
    print()
    print("| round | model_cache (s) | boto3 download_file (s) | boto3 + sha256 (s) | CPU model_cache / boto3 (s) |")
    print("|---|---|---|---|---|")
    for index, r in enumerate(rounds, 1):
        print(
            "| %d | %.2f | %.2f | %.2f | %.2f / %.2f |"
            % (
                index,
                r["model_cache"]["wall_s"],
                r["boto3"]["wall_s"],
                r["boto3_sha256"]["wall_s"],
                r["model_cache"]["cpu_s"],
                r["boto3"]["cpu_s"],
            )
        )
    print(
        "| median | %.2f (%.0f MiB/s) | %.2f (%.0f MiB/s) | %.2f (%.0f MiB/s) | %.2f / %.2f |"
        % (
            medians["model_cache"]["wall_s"],
            medians["model_cache"]["mib_s"],
            medians["boto3"]["wall_s"],
            medians["boto3"]["mib_s"],
            medians["boto3_sha256"]["wall_s"],
            medians["boto3_sha256"]["mib_s"],
            medians["model_cache"]["cpu_s"],
            medians["boto3"]["cpu_s"],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
