# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""What an instance hour and a month of image storage cost: prices and quotes, in USD.

Private to this collection.

- Spot prices come from AWS itself (DescribeSpotPriceHistory, Linux/UNIX):
  the price in effect now in each Availability Zone, the lowest of them.
- On-demand prices and EBS snapshot storage prices come from a table in this
  file: AWS's published list prices (Linux, shared tenancy, snapshot standard
  tier) **as of PRICES_DATE**, for the GPU types burst instances use and the
  regions listed. They are not fetched: check them against the AWS Price List
  API (``aws pricing get-products``) or the EC2 and EBS pricing pages, and give
  your own (``overrides``) where they differ, for example after a price change
  or with a negotiated discount.
- A type or region the table does not hold has no price (None): this module
  never guesses one.

A ``PriceQuote`` says where its price comes from (``source``): the spot price
history, the dated on-demand table, or a price the user gave.
"""

from __future__ import annotations

import math

from ansible_collections.burst.golden_ami.plugins.module_utils._aws import format_time, paginate, parse_time, utcnow

# The day the list prices below were taken from AWS's price list.
PRICES_DATE = "2026-01-21"

MARKET_SPOT = "spot"
MARKET_ON_DEMAND = "on-demand"
MARKETS = (MARKET_SPOT, MARKET_ON_DEMAND)

SOURCE_SPOT_HISTORY = "spot-price-history"
SOURCE_ON_DEMAND_TABLE = "on-demand-table"
SOURCE_GIVEN = "given"
SOURCE_TABLE = "table"

# What DescribeSpotPriceHistory is asked for: the price of Linux instances (in a VPC).
SPOT_PRODUCT = "Linux/UNIX"

# Linux is billed per second, with a minimum of 60 seconds each time an instance starts.
MINIMUM_BILLED_MINUTES = 1

# ---------------------------------------------------------------- the table (list prices as of PRICES_DATE)

# USD per hour, on-demand, Linux, shared tenancy. us-east-1, us-east-2 and us-west-2 share one price list
# for these types.
_US = {
    "g4dn.xlarge": 0.526,
    "g4dn.2xlarge": 0.752,
    "g4dn.4xlarge": 1.204,
    "g4dn.8xlarge": 2.176,
    "g4dn.12xlarge": 3.912,
    "g4dn.16xlarge": 4.352,
    "g4dn.metal": 7.824,
    "g5.xlarge": 1.006,
    "g5.2xlarge": 1.212,
    "g5.4xlarge": 1.624,
    "g5.8xlarge": 2.448,
    "g5.12xlarge": 5.672,
    "g5.16xlarge": 4.096,
    "g5.24xlarge": 8.144,
    "g5.48xlarge": 16.288,
    "g6.xlarge": 0.8048,
    "g6.2xlarge": 0.9776,
    "g6.4xlarge": 1.3232,
    "g6.8xlarge": 2.0144,
    "g6.12xlarge": 4.6016,
    "g6.16xlarge": 3.3968,
    "g6.24xlarge": 6.6752,
    "g6.48xlarge": 13.3504,
    "g6e.xlarge": 1.861,
    "g6e.2xlarge": 2.24208,
    "g6e.4xlarge": 3.00424,
    "g6e.8xlarge": 4.52856,
    "g6e.12xlarge": 10.49264,
    "g6e.16xlarge": 7.57719,
    "g6e.24xlarge": 15.06559,
    "g6e.48xlarge": 30.13118,
    "gr6.4xlarge": 1.5392,
    "gr6.8xlarge": 2.4464,
    "p4d.24xlarge": 21.95764,
    "p5.4xlarge": 6.88,
    "p5.48xlarge": 55.04,
}

ON_DEMAND_PRICES = {
    "us-east-1": dict(_US),
    "us-east-2": dict(_US),
    "us-west-2": dict(_US),
    # Ireland: no g6, g6e, gr6 or p5 in this list.
    "eu-west-1": {
        "g4dn.xlarge": 0.587,
        "g4dn.2xlarge": 0.838,
        "g4dn.4xlarge": 1.342,
        "g4dn.8xlarge": 2.426,
        "g4dn.12xlarge": 4.362,
        "g4dn.16xlarge": 4.853,
        "g4dn.metal": 8.724,
        "g5.xlarge": 1.123,
        "g5.2xlarge": 1.35296,
        "g5.4xlarge": 1.81287,
        "g5.8xlarge": 2.73271,
        "g5.12xlarge": 6.33167,
        "g5.16xlarge": 4.57237,
        "g5.24xlarge": 9.09117,
        "g5.48xlarge": 18.18233,
        "p4d.24xlarge": 23.71569,
    },
    # Frankfurt: no p5 in this list.
    "eu-central-1": {
        "g4dn.xlarge": 0.658,
        "g4dn.2xlarge": 0.94,
        "g4dn.4xlarge": 1.505,
        "g4dn.8xlarge": 2.72,
        "g4dn.12xlarge": 4.89,
        "g4dn.16xlarge": 5.44,
        "g4dn.metal": 9.78,
        "g5.xlarge": 1.258,
        "g5.2xlarge": 1.5156,
        "g5.4xlarge": 2.03081,
        "g5.8xlarge": 3.06122,
        "g5.12xlarge": 7.09282,
        "g5.16xlarge": 5.12204,
        "g5.24xlarge": 10.18405,
        "g5.48xlarge": 20.3681,
        "g6.xlarge": 1.0064,
        "g6.2xlarge": 1.22249,
        "g6.4xlarge": 1.65466,
        "g6.8xlarge": 2.519,
        "g6.12xlarge": 5.75429,
        "g6.16xlarge": 4.24769,
        "g6.24xlarge": 8.34732,
        "g6.48xlarge": 16.69464,
        "g6e.xlarge": 2.327,
        "g6e.2xlarge": 2.8035,
        "g6e.4xlarge": 3.75651,
        "g6e.8xlarge": 5.66252,
        "g6e.12xlarge": 13.12002,
        "g6e.16xlarge": 9.47454,
        "g6e.24xlarge": 18.83806,
        "g6e.48xlarge": 37.67612,
        "gr6.4xlarge": 1.9248,
        "gr6.8xlarge": 3.05927,
        "p4d.24xlarge": 27.43298,
    },
}

# USD per GB-month of EBS snapshot storage, standard tier.
SNAPSHOT_STORAGE_PRICES = {
    "us-east-1": 0.05,
    "us-east-2": 0.05,
    "us-west-2": 0.05,
    "eu-west-1": 0.05,
    "eu-central-1": 0.054,
}


# ---------------------------------------------------------------- quotes


class PriceQuote:
    """One price of one instance type in one market, and where it comes from.

    ``source``: ``spot-price-history`` (AWS's current spot price), ``on-demand-table``
    (the list price of this file, as of PRICES_DATE) or ``given`` (the user's own).
    ``as_of``: ISO 8601, the time of the spot price, PRICES_DATE for the table, the
    time of the quote for a given price. ``availability_zone``: the zone of a spot price.
    """

    def __init__(self, instance_type, market, price_per_hour, source, as_of, availability_zone=None):
        self.instance_type = instance_type
        self.market = market
        self.price_per_hour = float(price_per_hour)
        self.source = source
        self.as_of = as_of
        self.availability_zone = availability_zone

    def to_dict(self):
        return {
            "instance_type": self.instance_type,
            "market": self.market,
            "price_per_hour": self.price_per_hour,
            "source": self.source,
            "as_of": self.as_of,
            "availability_zone": self.availability_zone,
        }

    def __eq__(self, other):
        return isinstance(other, PriceQuote) and self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash(tuple(sorted(self.to_dict().items())))

    def __repr__(self):
        return f"PriceQuote({self.to_dict()!r})"


def _price(value, what):
    """A given price as a float; a ValueError naming ``what`` unless it is a number of 0 or more."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: {value!r} is not a price (USD)")
    try:
        price = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: {value!r} is not a price (USD)") from None
    if math.isnan(price) or math.isinf(price) or price < 0:
        raise ValueError(f"{what}: {value!r} is not a price (USD)")
    return price


def _given(overrides, key, what):
    """The price ``overrides`` gives for ``key``, or None."""
    if not overrides:
        return None
    if not isinstance(overrides, dict):
        raise ValueError(f"{what}: give a dictionary, not {type(overrides).__name__}")
    if key not in overrides or overrides[key] is None:
        return None
    return _price(overrides[key], f"{what} of {key}")


def _check_market(market):
    if market not in MARKETS:
        raise ValueError(f"Unknown market {market!r}: use {' or '.join(MARKETS)}")


def on_demand_price(region, instance_type, overrides=None):
    """USD per hour of ``instance_type`` on demand in ``region``, or None when it is not known.

    ``overrides`` ({instance type: USD per hour}) wins over the table, whose list
    prices are those of PRICES_DATE.
    """
    given = _given(overrides, instance_type, "on-demand price")
    if given is not None:
        return given
    return ON_DEMAND_PRICES.get(region, {}).get(instance_type)


def _spot_quote(ec2_client, region, instance_type, availability_zones, now):
    result = paginate(
        ec2_client,
        "describe_spot_price_history",
        f"read the spot price history of {instance_type} in {region}",
        ProductDescriptions=[SPOT_PRODUCT],
        InstanceTypes=[instance_type],
        StartTime=now,
    )
    wanted = set(availability_zones or [])
    newest = {}
    for entry in result.get("SpotPriceHistory") or []:
        zone = entry.get("AvailabilityZone")
        if entry.get("InstanceType", instance_type) != instance_type or (wanted and zone not in wanted):
            continue
        when = parse_time(entry.get("Timestamp")) or parse_time("1970-01-01T00:00:00Z")
        if zone not in newest or when > newest[zone][0]:
            newest[zone] = (when, entry)
    if not newest:
        return None
    zone, (when, entry) = min(newest.items(), key=lambda item: (float(item[1][1]["SpotPrice"]), item[0] or ""))
    price = float(entry["SpotPrice"])
    return PriceQuote(instance_type, MARKET_SPOT, price, SOURCE_SPOT_HISTORY, format_time(when), zone)


def quote(ec2_client, region, instance_type, market, availability_zones=None, overrides=None, now=None):
    """The price of one hour of ``instance_type`` in ``market`` in ``region`` now, as a PriceQuote, or None.

    - ``spot``: DescribeSpotPriceHistory (Linux/UNIX, from ``now``): the newest
      price of each Availability Zone, then the lowest among
      ``availability_zones`` (every zone when none are given). None when AWS has
      no price history for them.
    - ``on-demand``: ``on_demand_price`` (``overrides``, else the table). None
      when unknown.

    ``ec2_client``: an EC2 client of ``region`` (retried or not); a failed read
    raises ``AwsError``. ``now``: a datetime (default: the current time).
    """
    _check_market(market)
    now = now or utcnow()
    if market == MARKET_SPOT:
        return _spot_quote(ec2_client, region, instance_type, availability_zones, now)
    price = on_demand_price(region, instance_type, overrides)
    if price is None:
        return None
    if _given(overrides, instance_type, "on-demand price") is not None:
        return PriceQuote(instance_type, MARKET_ON_DEMAND, price, SOURCE_GIVEN, format_time(now))
    return PriceQuote(instance_type, MARKET_ON_DEMAND, price, SOURCE_ON_DEMAND_TABLE, PRICES_DATE)


def ceiling_price(region, instance_type, market, spot_max_price=None, overrides=None):
    """The most one hour of ``instance_type`` can cost in ``market`` (USD), or None when unknown.

    Spot with a maximum price: that price. Spot without one: the on-demand
    price, which is AWS's default maximum. On demand: the on-demand price.
    """
    _check_market(market)
    if market == MARKET_SPOT and spot_max_price not in (None, ""):
        return _price(spot_max_price, "spot maximum price")
    return on_demand_price(region, instance_type, overrides)


def run_cost(price_per_hour, minutes, count=1):
    """USD for ``count`` instances running ``minutes`` at ``price_per_hour``, rounded to 4 decimals.

    Linux instances are billed per second with a minimum of one minute, so a
    run shorter than a minute costs a minute. ``minutes`` of 0 or less (or None)
    raises ValueError: a run without a time limit has no maximum cost.
    """
    price = _price(price_per_hour, "price per hour")
    try:
        valid = not isinstance(minutes, bool) and 0 < float(minutes) < math.inf
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"minutes must be more than 0, not {minutes!r}: a run without a time limit has no maximum")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be a whole number of 0 or more, not {count!r}")
    billed = max(float(minutes), MINIMUM_BILLED_MINUTES)
    return round(price * billed / 60.0 * count, 4)


def snapshot_storage_price(region, overrides=None):
    """(USD per GB-month of EBS snapshot storage, standard tier, in ``region``; its source ``table`` or ``given``).

    ``overrides``: one price for every region (a number), or {region: price}.
    None when neither ``overrides`` nor the table (as of PRICES_DATE) has a price for ``region``.
    """
    if overrides is not None and not isinstance(overrides, dict):
        return _price(overrides, "snapshot storage price"), SOURCE_GIVEN
    given = _given(overrides, region, "snapshot storage price")
    if given is not None:
        return given, SOURCE_GIVEN
    price = SNAPSHOT_STORAGE_PRICES.get(region)
    if price is None:
        return None
    return price, SOURCE_TABLE
