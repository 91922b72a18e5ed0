"""Loaded by Python at start-up when this directory is on PYTHONPATH (see localworld.faults.fault_env).

Only the test world puts it there. It installs the fault plan named by
LOCALWORLD_FAULTS into botocore, and does nothing without that variable.
"""

import os

if os.environ.get("LOCALWORLD_FAULTS"):
    from localworld.faults import install_from_env

    install_from_env()
