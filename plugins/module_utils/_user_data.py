# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The first-boot script of a launched instance: ``build_user_data``.

Private to this collection, but written so that a Python application can call
it directly (docs/launcher.md). In this order: a maximum lifetime armed first,
the EFS mount, extra commands, the golden image's startup script, then the job
and a power-off once it ends. Bad options raise ``LaunchError``.

The job runs through the image's job runner (``burst_job.py``, next to the
startup script) when the image has one: it records the job's status, exit
code, times and log destination as tags of the instance, ships the log
(``job_log``) and enforces the job's time limit. On an image without it, the
job runs as before, under ``timeout`` when it has a time limit.
``job_log_kind`` checks a log destination.
"""

from __future__ import annotations

import posixpath
import re
import shlex

from ansible_collections.burst.golden_ami.plugins.module_utils._aws import EFS_ID_RE
from ansible_collections.burst.golden_ami.plugins.module_utils._launch_request import LaunchError

DEFAULT_STARTUP_SCRIPT = "/opt/burst/startup.sh"
USER_DATA_LOG = "/var/log/burst-user-data.log"
USER_DATA_MAX_BYTES = 16384
# The image's job runner, in the directory of the startup script, run by the image's Python.
JOB_RUNNER_NAME = "burst_job.py"
JOB_RUNNER_PYTHON = "/usr/bin/python3"
# Exit status of a job stopped at its time limit (as timeout(1) gives it).
JOB_TIMED_OUT_STATUS = 124
# Seconds a job stopped at its time limit gets between TERM and KILL.
JOB_KILL_AFTER_S = 30
# What a job log destination may name, filled in on the instance.
JOB_LOG_PLACEHOLDERS = ("job_id", "instance_id")
JOB_LOG_FORMS = "/abs/path, file:/abs/path, s3://bucket/key, cloudwatch:GROUP or cloudwatch:GROUP:STREAM"

_S3_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_LOG_GROUP_RE = re.compile(r"^[A-Za-z0-9._/#-]{1,512}$")
_LOG_STREAM_RE = re.compile(r"^[^:*]{1,512}$")
_RUNNER_JOB_ID_BAD = re.compile(r"[/\x00-\x1f\x7f]")
_PLACEHOLDER_SAMPLES = {"job_id": "job", "instance_id": "i-0123456789abcdef0"}


def job_log_kind(destination):
    """``file``, ``s3`` or ``cloudwatch``: where ``destination`` sends the job's log; a LaunchError when invalid.

    Forms: ``/abs/path``, ``file:/abs/path``, ``s3://bucket/key``, ``cloudwatch:GROUP`` or
    ``cloudwatch:GROUP:STREAM``. ``{job_id}`` and ``{instance_id}`` are filled in on the instance.
    """
    text = destination if isinstance(destination, str) else ""
    invalid = f"Invalid job log destination {destination!r}: give {JOB_LOG_FORMS}"
    if not text or any(ord(c) < 32 for c in text):
        raise LaunchError(invalid)
    filled = text
    for name, sample in _PLACEHOLDER_SAMPLES.items():
        filled = filled.replace("{" + name + "}", sample)
    if "{" in filled or "}" in filled:
        allowed = " and ".join("{" + name + "}" for name in JOB_LOG_PLACEHOLDERS)
        raise LaunchError(f"Invalid job log destination {destination!r}: the only placeholders are {allowed}")
    if filled.startswith("s3://"):
        bucket, _slash, key = filled[len("s3://") :].partition("/")
        if not _S3_BUCKET_RE.match(bucket) or ".." in bucket or not key or len(key.encode()) > 1024:
            raise LaunchError(f"{invalid} (an S3 bucket name and a key)")
        return "s3"
    if filled.startswith("cloudwatch:"):
        group, colon, stream = filled[len("cloudwatch:") :].partition(":")
        if not _LOG_GROUP_RE.match(group) or (colon and not _LOG_STREAM_RE.match(stream)):
            raise LaunchError(f"{invalid} (a log group of letters, digits and ._/#-, and a log stream without : or *)")
        return "cloudwatch"
    path = filled
    for prefix in ("file://", "file:"):
        if filled.startswith(prefix):
            path = filled[len(prefix) :]
            break
    if not path.startswith("/") or path.endswith("/"):
        raise LaunchError(f"{invalid} (a file's absolute path)")
    return "file"


def runner_takes_job_id(job_id):
    """Whether the job runner takes ``job_id`` (it names a status file): 1 to 255 characters, no / nor control."""
    text = str(job_id or "")
    return 0 < len(text) <= 255 and text not in (".", "..") and not _RUNNER_JOB_ID_BAD.search(text)


def job_runner_path(startup_script=DEFAULT_STARTUP_SCRIPT):
    """Where the image's job runner is: next to ``startup_script`` (or the default one's directory)."""
    return posixpath.join(posixpath.dirname(startup_script or DEFAULT_STARTUP_SCRIPT), JOB_RUNNER_NAME)


def _job_lines(command, runner, job_id, job_log, job_time_limit):
    """The shell lines that run ``command``: through the job runner when the image has it, else directly."""
    q = shlex.quote
    argv = [JOB_RUNNER_PYTHON, runner]
    # Without a job id it can take, the runner names the job by the instance's id.
    if runner_takes_job_id(job_id):
        argv += ["--job-id", str(job_id)]
    if job_log:
        argv += ["--log-to", job_log]
    if job_time_limit:
        argv += ["--time-limit", str(job_time_limit)]
    argv += ["--", "bash", "-c", command]
    plain = ["bash", "-c", command]
    if job_time_limit:
        plain = ["timeout", f"--kill-after={JOB_KILL_AFTER_S}", f"{job_time_limit}m", *plain]
    missing = f"{runner} is missing: the job runs without status tags" + (" or log shipping" if job_log else "")
    return [
        f"if [ -x {q(runner)} ]; then",
        "  " + " ".join(q(a) for a in argv),
        "else",
        f"  echo {q('[burst] ' + missing)}",
        "  " + " ".join(q(a) for a in plain),
        "fi",
    ]


def build_user_data(
    startup_script=DEFAULT_STARTUP_SCRIPT,
    job_command=None,
    efs_file_system_id=None,
    efs_mount_point=None,
    efs_mount_options=None,
    region=None,
    terminate_after_job=True,
    max_lifetime_minutes=None,
    extra_script=None,
    log_path=USER_DATA_LOG,
    job_id=None,
    job_log=None,
    job_time_limit=None,
):
    """The first-boot shell script of a launched instance, as text.

    In this order: a maximum lifetime armed first (a systemd timer that powers
    the instance off, ``shutdown -h +N`` where systemd-run is missing), so that
    it holds whatever happens next; the EFS mount (with amazon-efs-utils when
    present, else NFS 4.1 to the file system's DNS name in ``region``);
    ``extra_script``; ``startup_script`` when given; then ``job_command`` and,
    if ``terminate_after_job``, a power-off once the job ends, whatever its exit
    status. Launched with instance-initiated shutdown behaviour ``terminate``,
    a power-off terminates the instance. Output goes to ``log_path``.

    The job runs through the image's job runner (``burst_job.py`` in the
    directory of ``startup_script``) when it is there, with ``job_id``,
    ``job_log`` (see ``job_log_kind``) and ``job_time_limit`` (minutes; the
    job is stopped after it and ends with status 124); on an image without the
    runner, with ``bash -c`` under ``timeout``. When the EFS mount failed, a
    command that says so and fails runs in its place, so that the runner
    records a failed job.
    """
    if max_lifetime_minutes is not None and (not isinstance(max_lifetime_minutes, int) or max_lifetime_minutes < 0):
        raise LaunchError(f"Invalid maximum lifetime {max_lifetime_minutes!r}: give whole minutes, 0 for none")
    if efs_file_system_id and not EFS_ID_RE.match(efs_file_system_id):
        raise LaunchError(f"Invalid EFS file system id {efs_file_system_id!r}: expected fs- followed by hex digits")
    if efs_file_system_id and not (efs_mount_point or "").startswith("/"):
        raise LaunchError(f"Invalid EFS mount point {efs_mount_point!r}: give an absolute path")
    if efs_mount_point and not efs_file_system_id:
        raise LaunchError("An EFS mount point needs an EFS file system id")
    if efs_file_system_id and not region:
        raise LaunchError("Mounting EFS needs the region, to name the file system's DNS name")
    if startup_script and not startup_script.startswith("/"):
        raise LaunchError(f"Invalid startup script {startup_script!r}: give an absolute path")
    if job_time_limit is not None:
        if isinstance(job_time_limit, bool) or not isinstance(job_time_limit, int) or job_time_limit < 1:
            raise LaunchError(f"Invalid job time limit {job_time_limit!r}: give whole minutes, 1 or more")
        if max_lifetime_minutes and job_time_limit >= max_lifetime_minutes:
            raise LaunchError(
                f"The job time limit ({job_time_limit} min) must be less than the maximum lifetime "
                f"({max_lifetime_minutes} min), which would end the instance first"
            )
    if job_log is not None:
        job_log_kind(job_log)
        if job_id and "{job_id}" in job_log and not runner_takes_job_id(job_id):
            raise LaunchError(
                f"The job log destination {job_log!r} names {{job_id}}, and the job id {job_id!r} cannot be given to "
                "the job runner (1 to 255 characters, no / nor control characters): change one or the other"
            )
    for name, value in (("job log destination", job_log), ("job time limit", job_time_limit)):
        if value is not None and not job_command:
            raise LaunchError(f"A {name} needs a job command")

    q = shlex.quote
    lines = [
        "#!/bin/bash",
        "# First-boot script written by burst.golden_ami. Runs once, as root.",
        "set -u",
        f"exec >>{q(log_path)} 2>&1",
        'echo "[burst] user data started at $(date -Iseconds)"',
    ]
    if max_lifetime_minutes:
        lines += [
            "",
            f"# Maximum lifetime: power off after {max_lifetime_minutes} min. The instance was launched",
            "# with shutdown behaviour 'terminate', so powering off terminates it.",
            f"if ! systemd-run --unit=burst-max-lifetime --on-active={max_lifetime_minutes}min \\",
            "    --timer-property=AccuracySec=10s /bin/systemctl poweroff; then",
            f"  shutdown -h +{max_lifetime_minutes}",
            "fi",
        ]
    if efs_file_system_id:
        options = efs_mount_options or "nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport"
        dns = f"{efs_file_system_id}.efs.{region}.amazonaws.com"
        lines += [
            "",
            "# Shared file system (EFS). Its DNS name may take a moment to resolve: retry.",
            f"mkdir -p {q(efs_mount_point)}",
            "burst_efs_mounted=false",
            "for attempt in $(seq 1 20); do",
            "  if command -v mount.efs >/dev/null 2>&1; then",
            f"    mount -t efs -o tls {q(efs_file_system_id + ':/')} {q(efs_mount_point)} && burst_efs_mounted=true",
            "  else",
            f"    mount -t nfs4 -o {q(options)} {q(dns + ':/')} {q(efs_mount_point)} && burst_efs_mounted=true",
            "  fi",
            '  "$burst_efs_mounted" && break',
            '  echo "[burst] EFS mount attempt $attempt failed"',
            "  sleep 6",
            "done",
        ]
    if extra_script:
        lines += ["", "# Extra first-boot commands.", extra_script.rstrip("\n")]
    if startup_script:
        lines += [
            "",
            "# Start the services of the golden image.",
            f"if [ -x {q(startup_script)} ]; then",
            f'  {q(startup_script)} || echo "[burst] {startup_script} failed with status $?"',
            "else",
            f'  echo "[burst] {startup_script} is missing or not executable"',
            "fi",
        ]
    if job_command:
        runner = job_runner_path(startup_script)
        lines += ["", f"# The job, through the image's job runner when it has one ({runner})."]
        job = _job_lines(job_command, runner, job_id, job_log, job_time_limit)
        if efs_file_system_id:
            # The runner still records the job, as failed, with the reason in its log.
            no_efs = 'echo "[burst] EFS is not mounted: the job does not run" >&2; exit 1'
            failed = _job_lines(no_efs, runner, job_id, job_log, None)
            lines += ['if "$burst_efs_mounted"; then', *("  " + line for line in job), "else"]
            lines += [*("  " + line for line in failed), "fi"]
        else:
            lines += job
        lines.append("burst_job_status=$?")
        lines.append('echo "[burst] job ended with status $burst_job_status at $(date -Iseconds)"')
        if job_time_limit:
            lines.append(
                f'[ "$burst_job_status" -eq {JOB_TIMED_OUT_STATUS} ] && '
                f'echo "[burst] the job reached its time limit of {job_time_limit} min"'
            )
        if terminate_after_job:
            lines += [
                "",
                "# The job is done: power off, which terminates the instance.",
                "sync",
                "systemctl poweroff || shutdown -h now",
            ]
    lines += ['echo "[burst] user data done at $(date -Iseconds)"', ""]
    text = "\n".join(lines)
    size = len(text.encode())
    if size > USER_DATA_MAX_BYTES:
        raise LaunchError(f"User data is {size} bytes; EC2 accepts at most {USER_DATA_MAX_BYTES}")
    return text
