# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Retention of an image family: which images to keep, which to delete, and why.

Private to this collection. ``plan_retention`` is a pure function of the
images of one region, the time, the rules and the protected images.
"""

from __future__ import annotations

from datetime import timedelta

from ansible_collections.burst.golden_ami.plugins.module_utils._aws import parse_time


def plan_retention(images, now, keep_newest=None, max_age_days=None, protected=None):
    """Split ``images`` (summaries with ``image_id`` and ``creation_date``) into kept and deleted.

    - the newest image is always kept;
    - with ``keep_newest`` N, the newest N are kept;
    - with ``max_age_days`` D, images younger than D days are kept;
    - with both, an image is deleted only when it is outside the newest N and older than D days;
    - ``protected`` maps an image id to the reasons it is in use (SSM parameter, instance,
      launch template); a protected image is always kept.

    Returns two lists of the summaries with a ``reasons`` list added, newest first.
    """
    if keep_newest is None and max_age_days is None:
        raise ValueError("give keep_newest, max_age_days or both")
    protected = protected or {}
    now = parse_time(now)
    ordered = sorted(images, key=lambda i: (parse_time(i["creation_date"]), i["image_id"]), reverse=True)
    kept, deleted = [], []
    for position, image in enumerate(ordered):
        age = now - parse_time(image["creation_date"])
        keep_reasons = list(protected.get(image["image_id"], []))
        if position == 0:
            keep_reasons.append("newest of the family")
        elif keep_newest is not None and position < keep_newest:
            keep_reasons.append(f"among the newest {keep_newest}")
        if max_age_days is not None and age < timedelta(days=max_age_days):
            keep_reasons.append(f"younger than {max_age_days} days")

        if keep_reasons:
            kept.append(dict(image, reasons=keep_reasons))
            continue
        delete_reasons = []
        if keep_newest is not None:
            delete_reasons.append(f"outside the newest {keep_newest}")
        if max_age_days is not None:
            delete_reasons.append(f"older than {max_age_days} days ({age.days} days)")
        deleted.append(dict(image, reasons=delete_reasons))
    return kept, deleted
