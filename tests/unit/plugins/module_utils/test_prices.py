"""Prices and quotes (module_utils/_prices.py): the spot price history through botocore's Stubber and moto,
the dated on-demand and snapshot tables, the user's overrides, and the cost of a run."""

from __future__ import annotations

from datetime import datetime, timezone

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber

from ansible_collections.burst.golden_ami.plugins.module_utils import _prices
from ansible_collections.burst.golden_ami.plugins.module_utils._aws import AwsError, retrying
from ansible_collections.burst.golden_ami.plugins.module_utils._prices import (
    PRICES_DATE,
    PriceQuote,
    ceiling_price,
    on_demand_price,
    quote,
    run_cost,
    snapshot_storage_price,
)

REGION = "eu-central-1"
NOW = datetime(2030, 1, 2, 10, 0, 0, tzinfo=timezone.utc)
EXPECTED = {"ProductDescriptions": ["Linux/UNIX"], "InstanceTypes": ["g5.xlarge"], "StartTime": NOW}


def stubbed_ec2():
    client = boto3.client(
        "ec2",
        region_name=REGION,
        aws_access_key_id="AKIDUNITTEST",
        aws_secret_access_key="unit-test",  # noqa: S106
        endpoint_url="http://127.0.0.1:9",
        config=Config(retries={"total_max_attempts": 1}),
    )
    stubber = Stubber(client)
    stubber.activate()
    return client, stubber


def price(zone, value, hour, instance_type="g5.xlarge"):
    return {
        "AvailabilityZone": zone,
        "InstanceType": instance_type,
        "ProductDescription": "Linux/UNIX",
        "SpotPrice": value,
        "Timestamp": datetime(2030, 1, 2, hour, 0, 0, tzinfo=timezone.utc),
    }


# ---------------------------------------------------------------- spot: the price history


def test_spot_takes_the_newest_price_of_each_zone_then_the_lowest_zone():
    client, stubber = stubbed_ec2()
    history = [
        # 1a was the cheapest an hour ago, but its price now is 0.45.
        price("eu-central-1a", "0.450000", 9),
        price("eu-central-1a", "0.300000", 8),
        price("eu-central-1b", "0.410000", 9),
        price("eu-central-1c", "0.520000", 7),
    ]
    stubber.add_response("describe_spot_price_history", {"SpotPriceHistory": history}, EXPECTED)

    result = quote(client, REGION, "g5.xlarge", "spot", now=NOW)

    stubber.assert_no_pending_responses()
    assert result == PriceQuote(
        "g5.xlarge", "spot", 0.41, "spot-price-history", "2030-01-02T09:00:00.000Z", "eu-central-1b"
    )
    assert result.to_dict() == {
        "instance_type": "g5.xlarge",
        "market": "spot",
        "price_per_hour": 0.41,
        "source": "spot-price-history",
        "as_of": "2030-01-02T09:00:00.000Z",
        "availability_zone": "eu-central-1b",
    }


def test_spot_reads_every_page_and_keeps_to_the_given_zones():
    client, stubber = stubbed_ec2()
    stubber.add_response(
        "describe_spot_price_history",
        {"SpotPriceHistory": [price("eu-central-1a", "0.200000", 9)], "NextToken": "page-2"},
        EXPECTED,
    )
    stubber.add_response(
        "describe_spot_price_history",
        {"SpotPriceHistory": [price("eu-central-1b", "0.390000", 9), price("eu-central-1c", "0.380000", 9)]},
        dict(EXPECTED, NextToken="page-2"),
    )

    # 1a is the cheapest, but not among the zones the instance may go to.
    result = quote(
        retrying(client), REGION, "g5.xlarge", "spot", availability_zones=["eu-central-1b", "eu-central-1c"], now=NOW
    )

    stubber.assert_no_pending_responses()
    assert (result.price_per_hour, result.availability_zone) == (0.38, "eu-central-1c")


def test_spot_without_history_has_no_quote():
    client, stubber = stubbed_ec2()
    stubber.add_response("describe_spot_price_history", {"SpotPriceHistory": []}, EXPECTED)
    assert quote(client, REGION, "g5.xlarge", "spot", now=NOW) is None

    stubber.add_response(
        "describe_spot_price_history", {"SpotPriceHistory": [price("eu-central-1a", "0.3", 9)]}, EXPECTED
    )
    assert quote(client, REGION, "g5.xlarge", "spot", availability_zones=["eu-central-1c"], now=NOW) is None
    stubber.assert_no_pending_responses()


def test_a_refused_history_read_raises_naming_what_failed():
    client, stubber = stubbed_ec2()
    stubber.add_client_error("describe_spot_price_history", "UnauthorizedOperation", "not allowed", 403)
    with pytest.raises(AwsError, match=r"Failed to read the spot price history of g5\.xlarge in eu-central-1"):
        quote(client, REGION, "g5.xlarge", "spot", now=NOW)


def test_spot_against_moto(aws_env):
    ec2 = retrying(boto3.client("ec2", region_name=REGION))
    result = quote(ec2, REGION, "g5.xlarge", "spot")
    # moto offers g5.xlarge in three zones at one price: the first zone wins the tie.
    assert result.source == "spot-price-history"
    assert result.market == "spot"
    assert result.price_per_hour == pytest.approx(0.00001)
    assert result.availability_zone == "eu-central-1a"
    assert result.as_of.startswith("2006-01-02T15:04:05")
    assert quote(ec2, REGION, "g5.xlarge", "spot", availability_zones=["eu-central-1b"]).availability_zone == (
        "eu-central-1b"
    )
    # No offering of that type in the region: no history, no quote.
    assert quote(ec2, REGION, "p5.48xlarge", "spot") is None


# ---------------------------------------------------------------- on demand: the table and overrides


def test_on_demand_prices_come_from_the_dated_table_or_from_the_user():
    assert on_demand_price("us-east-1", "g5.xlarge") == 1.006
    assert on_demand_price("eu-central-1", "g6e.xlarge") == 2.327
    assert on_demand_price("us-west-2", "p5.48xlarge") == 55.04
    # Never a guess: a type or region the table does not hold has no price.
    assert on_demand_price("eu-west-1", "g6e.xlarge") is None
    assert on_demand_price("ap-south-2", "g5.xlarge") is None
    assert on_demand_price("eu-central-1", "m7i.large") is None
    assert on_demand_price("eu-central-1", "g5.xlarge", {"g5.xlarge": 0.9}) == 0.9
    assert on_demand_price("ap-south-2", "m7i.large", {"m7i.large": "0.12"}) == 0.12
    assert on_demand_price("eu-central-1", "g5.xlarge", {"g6.xlarge": 0.5}) == 1.258


def test_on_demand_quotes_say_where_their_price_comes_from():
    table = quote(None, "eu-central-1", "g5.xlarge", "on-demand", now=NOW)
    assert table == PriceQuote("g5.xlarge", "on-demand", 1.258, "on-demand-table", PRICES_DATE)
    given = quote(None, "eu-central-1", "g5.xlarge", "on-demand", overrides={"g5.xlarge": 1.1}, now=NOW)
    assert (given.price_per_hour, given.source, given.as_of) == (1.1, "given", "2030-01-02T10:00:00.000Z")
    assert given.availability_zone is None
    assert quote(None, "ap-south-2", "g5.xlarge", "on-demand", now=NOW) is None


def test_bad_prices_and_markets_are_refused():
    with pytest.raises(ValueError, match=r"on-demand price of g5\.xlarge: 'cheap' is not a price"):
        on_demand_price(REGION, "g5.xlarge", {"g5.xlarge": "cheap"})
    with pytest.raises(ValueError, match="is not a price"):
        on_demand_price(REGION, "g5.xlarge", {"g5.xlarge": -1})
    with pytest.raises(ValueError, match="is not a price"):
        on_demand_price(REGION, "g5.xlarge", {"g5.xlarge": True})
    with pytest.raises(ValueError, match="give a dictionary"):
        on_demand_price(REGION, "g5.xlarge", [1.0])
    with pytest.raises(ValueError, match="Unknown market 'reserved'"):
        quote(None, REGION, "g5.xlarge", "reserved")
    with pytest.raises(ValueError, match="Unknown market"):
        ceiling_price(REGION, "g5.xlarge", "Spot")


def test_ceiling_is_the_max_price_or_the_on_demand_price():
    assert ceiling_price("us-east-1", "g5.xlarge", "spot", spot_max_price="0.5") == 0.5
    # Without a maximum, AWS's default maximum is the on-demand price.
    assert ceiling_price("us-east-1", "g5.xlarge", "spot") == 1.006
    assert ceiling_price("us-east-1", "g5.xlarge", "on-demand") == 1.006
    assert ceiling_price("us-east-1", "g5.xlarge", "on-demand", spot_max_price="0.5") == 1.006
    assert ceiling_price("us-east-1", "g5.xlarge", "spot", overrides={"g5.xlarge": 0.8}) == 0.8
    assert ceiling_price("ap-south-2", "g5.xlarge", "spot") is None


# ---------------------------------------------------------------- the cost of a run


def test_run_cost_counts_minutes_instances_and_the_one_minute_minimum():
    assert run_cost(1.006, 60) == 1.006
    assert run_cost(1.258, 90, count=3) == 5.661
    assert run_cost(0.41, 7) == 0.0478  # 0.047833...
    assert run_cost(1.2, 0.25) == 0.02  # billed one minute
    assert run_cost(1.2, 30, count=0) == 0.0


@pytest.mark.parametrize("minutes", [0, -5, None, "never", float("nan")])
def test_run_cost_without_a_time_limit_has_no_maximum(minutes):
    with pytest.raises(ValueError, match="without a time limit has no maximum"):
        run_cost(1.0, minutes)


def test_run_cost_refuses_a_bad_count_or_price():
    with pytest.raises(ValueError, match="count"):
        run_cost(1.0, 10, count=-1)
    with pytest.raises(ValueError, match="count"):
        run_cost(1.0, 10, count=1.5)
    with pytest.raises(ValueError, match="price per hour"):
        run_cost(None, 10)


# ---------------------------------------------------------------- snapshot storage


def test_snapshot_storage_prices_by_region():
    assert snapshot_storage_price("us-east-1") == (0.05, "table")
    assert snapshot_storage_price("eu-central-1") == (0.054, "table")
    assert snapshot_storage_price("ap-south-2") is None
    assert snapshot_storage_price("ap-south-2", {"ap-south-2": 0.06}) == (0.06, "given")
    assert snapshot_storage_price("eu-central-1", {"eu-west-1": 0.06}) == (0.054, "table")
    assert snapshot_storage_price("eu-central-1", 0.045) == (0.045, "given")
    assert snapshot_storage_price("eu-central-1", {}) == (0.054, "table")
    with pytest.raises(ValueError, match="snapshot storage price of eu-central-1"):
        snapshot_storage_price("eu-central-1", {"eu-central-1": "free"})


def test_the_table_is_dated_and_holds_every_family_in_the_main_regions():
    assert datetime.strptime(PRICES_DATE, "%Y-%m-%d")
    for region in ("us-east-1", "us-west-2", "eu-west-1", "eu-central-1"):
        types = _prices.ON_DEMAND_PRICES[region]
        assert {t.split(".")[0] for t in types} >= {"g4dn", "g5", "p4d"}, region
        assert all(isinstance(p, float) and 0 < p < 200 for p in types.values()), region
        assert region in _prices.SNAPSHOT_STORAGE_PRICES
    for region in ("us-east-1", "us-west-2", "eu-central-1"):
        assert {t.split(".")[0] for t in _prices.ON_DEMAND_PRICES[region]} >= {"g6", "g6e", "gr6"}, region
    assert "p5.48xlarge" in _prices.ON_DEMAND_PRICES["us-east-1"]
    # Bigger sizes of one family cost more (the 12xlarge of g5 and g6 has more GPUs than the 16xlarge).
    for region, types in _prices.ON_DEMAND_PRICES.items():
        assert types.get("g5.xlarge", 0) < types.get("g5.2xlarge", 1) < types.get("g5.48xlarge", 2), region
