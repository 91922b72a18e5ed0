# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Healthcheck probes of launched instances: ``probe_health``, ``probe_health_many`` and ``wait_healthy``.

Private to this collection, but written so that a Python application can call
it directly (docs/launcher.md). Each URL is ``ready`` (HTTP 200, and a JSON
body's ``ready`` key true when it has one), ``starting`` (any other HTTP
answer) or ``unreachable`` (no answer within the probe timeout); many URLs are
probed at once, one thread each. Proxies are never used.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.burst.golden_ami.plugins.module_utils._aws import PollTimeout, poll_until
from ansible_collections.burst.golden_ami.plugins.module_utils._launch_request import LaunchError

HEALTH_READY = "ready"
HEALTH_STARTING = "starting"
HEALTH_UNREACHABLE = "unreachable"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def health_url(template, facts):
    """``template`` with ``{private_ip_address}``, ``{instance_id}``... filled from ``facts`` (summarize_instance)."""
    try:
        return template.format(**facts)
    except (KeyError, IndexError, ValueError) as e:
        raise LaunchError(f"Invalid healthcheck URL template {template!r}: {e}") from e


def probe_health(url, timeout=2.0):
    """Probe one healthcheck URL once. Returns ``(status, detail)``.

    ``ready``: HTTP 200 (and, for a JSON body with a ``ready`` key, that key is
    true). ``starting``: any other HTTP answer (503 while the models load).
    ``unreachable``: no HTTP answer within ``timeout`` seconds (refused,
    reset, or a server that accepts and never answers).
    """
    return probe_health_document(url, timeout)[:2]


def probe_health_document(url, timeout=2.0):
    """As ``probe_health``, plus the answer's JSON body: ``(status, detail, document)``.

    ``document`` is the parsed JSON object of the answer (a 200 or an error
    status alike), or None when there was no answer or it was not a JSON object.
    """
    if not url:
        return HEALTH_UNREACHABLE, "no healthcheck URL", None
    if not str(url).lower().startswith(("http://", "https://")):
        return HEALTH_UNREACHABLE, f"not an http(s) URL: {url}", None
    try:
        with _NO_PROXY.open(url, timeout=timeout) as response:
            body = response.read(65536)
            status = response.status
    except urllib.error.HTTPError as e:
        try:
            body = e.read(65536)
        except (OSError, ValueError):
            body = b""
        detail = f"HTTP {e.code}: {_body_text(body)}" if body else f"HTTP {e.code}"
        return HEALTH_STARTING, detail, _json_object(body)
    except (urllib.error.URLError, OSError, ValueError) as e:
        return HEALTH_UNREACHABLE, str(getattr(e, "reason", e)), None
    document = _json_object(body)
    if status != 200:
        return HEALTH_STARTING, f"HTTP {status}", document
    if document is not None and "ready" in document and document["ready"] is not True:
        return HEALTH_STARTING, f"HTTP 200, not ready: {_body_text(body)}", document
    return HEALTH_READY, "HTTP 200", document


def _json_object(body):
    try:
        document = json.loads(body or b"null")
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _body_text(body, limit=1000):
    """An answer's body for a message: what the healthcheck said was unhealthy (its JSON), cut short."""
    text = (body or b"").decode("utf-8", "replace").strip()
    return text if len(text) <= limit else text[:limit] + "..."


def probe_health_many(urls, timeout=2.0, max_workers=256, documents=False):
    """Probe every URL of ``urls`` (``{key: url}``) at once; returns ``{key: (status, detail)}``.

    With ``documents``, each value is ``(status, detail, document)`` (see ``probe_health_document``).

    With one thread per URL (up to ``max_workers``), the whole takes about one
    ``timeout`` however many hosts hang.
    """
    if not urls:
        return {}
    workers = max(1, min(len(urls), max_workers))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="burst-health") as pool:
        probe = probe_health_document if documents else probe_health
        futures = {key: pool.submit(probe, url, timeout) for key, url in urls.items()}
        return {key: future.result() for key, future in futures.items()}


def wait_healthy(
    urls,
    timeout=600,
    interval=5,
    probe_timeout=3.0,
    sleep=time.sleep,
    clock=time.monotonic,
    progress=None,
    documents=False,
):
    """Probe ``urls`` (``{key: url}``) until all are ready; returns the last ``{key: (status, detail)}``.

    With ``documents``, each value is ``(status, detail, document)``: the last answer's JSON body
    (for a ready host, its ``boot_to_ready_s`` for example).

    Raises LaunchError naming the hosts that are not ready after ``timeout`` seconds. ``progress``
    (optional) is called with a line after each round of probes.
    """
    started = clock()
    results = {}
    pending = dict(urls)

    def probe():
        nonlocal pending
        results.update(probe_health_many(pending, timeout=probe_timeout, documents=documents))
        pending = {k: u for k, u in pending.items() if results[k][0] != HEALTH_READY}
        if progress is not None:
            detail = "; ".join(f"{k}: {results[k][0]} ({results[k][1]})" for k in sorted(pending))
            line = f"{len(urls) - len(pending)} of {len(urls)} healthy after {int(clock() - started)} s"
            progress(f"{line}: {detail}" if detail else line)
        return not pending, results

    try:
        return poll_until(probe, timeout, interval, sleep=sleep, clock=clock, start=started)
    except PollTimeout:
        detail = ", ".join(f"{k}: {results[k][0]} ({results[k][1]})" for k in sorted(pending))
        raise LaunchError(f"Timed out after {timeout}s waiting for the healthcheck: {detail}") from None
