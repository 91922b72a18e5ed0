"""Start or stop the whole local world in the background.

``python -m localworld up [--state DIR]`` starts every service of the local
world (``python -m localworld.moto``, ``localworld.registry`` and
``localworld.hub_mirror``) as its own process session, waits for the JSON
line each prints once it answers, and writes them all to
``DIR/state.json`` (default ``.world``). ``python -m localworld env`` prints
shell ``export`` lines for the state; ``python -m localworld down`` stops
every process the state names. Every service binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

SERVICES = {
    "moto": ["localworld.moto"],
    "registry": ["localworld.registry"],
    "hub": ["localworld.hub_mirror", "--stand-ins"],
}
START_TIMEOUT = 300.0


def _start(name: str, module: list[str], state_dir: Path) -> dict:
    out = state_dir / f"{name}.out"
    log = state_dir / f"{name}.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH")])
    )
    env["PYTHONUNBUFFERED"] = "1"
    with out.open("wb") as stdout, log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", *module],
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = out.read_text(errors="replace")
        if "\n" in text:
            info = json.loads(text.splitlines()[0])
            info["pid"] = process.pid
            return info
        if process.poll() is not None:
            raise SystemExit(f"{name} exited with {process.returncode}: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)
    process.terminate()
    raise SystemExit(f"{name} did not report within {START_TIMEOUT:.0f} s; see {log}")


def up(state_dir: Path) -> dict:
    state_dir.mkdir(parents=True, exist_ok=True)
    state_file = state_dir / "state.json"
    if state_file.exists():
        down(state_dir)
    state: dict = {}
    try:
        for name, module in SERVICES.items():
            state[name] = _start(name, module, state_dir)
            state_file.write_text(json.dumps(state, indent=2) + "\n")
    except BaseException:
        down(state_dir)
        raise
    return state


def down(state_dir: Path) -> None:
    state_file = state_dir / "state.json"
    if not state_file.exists():
        return
    state = json.loads(state_file.read_text())
    for info in state.values():
        pid = info.get("pid")
        if not pid:
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        for _attempt in range(100):
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    state_file.unlink()


def env_lines(state_dir: Path) -> list[str]:
    state = json.loads((state_dir / "state.json").read_text())
    lines = []
    for info in state.values():
        for key, value in sorted((info.get("env") or {}).items()):
            lines.append(f"export {key}={shlex.quote(str(value))}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localworld", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "env"])
    parser.add_argument("--state", type=Path, default=Path(".world"), help="directory for state.json and logs")
    args = parser.parse_args(argv)
    if args.command == "up":
        print(json.dumps(up(args.state), indent=2))
    elif args.command == "down":
        down(args.state)
    else:
        print("\n".join(env_lines(args.state)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
