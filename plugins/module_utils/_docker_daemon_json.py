# Copyright: burst.golden_ami contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Merge options into Docker's daemon.json without losing what others wrote.

Private to this collection. Plain functions, so unit tests call them without
Ansible. Runs on the managed node: Python 3.9+ and the standard library only.
"""

from __future__ import annotations

import copy
import json


class DaemonJsonError(Exception):
    """The daemon configuration cannot be read or merged; the message says why."""


def parse_daemon_json(text, path="daemon.json"):
    """Return the JSON object held in ``text`` (empty text is an empty object).

    Docker refuses to start on a daemon.json that is not a JSON object, so
    neither does this: the error names the file and the parse problem.
    """
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise DaemonJsonError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise DaemonJsonError(f"{path} must hold a JSON object, found {type(value).__name__}")
    return value


def deep_merge(current, options):
    """Return ``current`` with ``options`` merged in, recursively.

    Objects are merged key by key; every other value (lists included) is
    replaced by the one in ``options``. Keys that ``options`` does not name
    are kept as they are. Neither argument is modified.
    """
    merged = copy.deepcopy(current)
    for key, value in options.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def remove_keys(config, keys):
    """Return ``config`` without the top-level ``keys`` (missing ones are ignored)."""
    return {key: value for key, value in config.items() if key not in set(keys)}


def render_daemon_json(config):
    """Serialise ``config`` the way this collection writes daemon.json: stable and readable."""
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def merge_daemon_json(text, options, remove=(), path="daemon.json"):
    """Merge ``options`` into the daemon.json ``text``; return (before, after) objects."""
    if not isinstance(options, dict):
        raise DaemonJsonError(f"options for {path} must be a mapping, got {type(options).__name__}")
    before = parse_daemon_json(text, path)
    after = remove_keys(deep_merge(before, options), remove)
    return before, after
