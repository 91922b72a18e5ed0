"""Stand-in for ansible-test's pip bootstrap script, which it downloads from
a host this machine cannot reach. ansible-test runs this file as __main__ in
a fresh virtualenv with pip's install arguments (for example
``pip==24.2 --no-setuptools``). It installs pip from the wheel bundled with
Python (ensurepip), then asks that pip for the requested packages from the
configured package index.
"""

import subprocess
import sys


def main():
    args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
    # In a child process: ensurepip sets PIP_CONFIG_FILE=/dev/null in its own
    # environment, which would hide the machine's pip configuration (index,
    # certificates) from the install below.
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
    sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--upgrade", *args]))


if __name__ == "__main__":
    main()
