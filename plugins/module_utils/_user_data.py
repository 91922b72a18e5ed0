# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The first-boot script of a launched instance: ``build_user_data``.

Private to this collection, but written so that a Python application can call
it directly (docs/launcher.md). In this order: a maximum lifetime armed first,
the EFS mount, extra commands, the golden image's startup script, then the job
and a power-off once it ends. Bad options raise ``LaunchError``.
"""

from __future__ import annotations

import shlex

from ansible_collections.burst.golden_ami.plugins.module_utils._aws import EFS_ID_RE
from ansible_collections.burst.golden_ami.plugins.module_utils._launch_request import LaunchError

DEFAULT_STARTUP_SCRIPT = "/opt/burst/startup.sh"
USER_DATA_LOG = "/var/log/burst-user-data.log"
USER_DATA_MAX_BYTES = 16384


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
        lines += ["", "# The job."]
        if efs_file_system_id:
            lines += [
                'if "$burst_efs_mounted"; then',
                f"  bash -c {q(job_command)}",
                "  burst_job_status=$?",
                "else",
                '  echo "[burst] EFS is not mounted: the job does not run"',
                "  burst_job_status=1",
                "fi",
            ]
        else:
            lines += [f"bash -c {q(job_command)}", "burst_job_status=$?"]
        lines.append('echo "[burst] job ended with status $burst_job_status at $(date -Iseconds)"')
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
