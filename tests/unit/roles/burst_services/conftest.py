"""The local world's stand-in for the EC2 instance metadata service (IMDSv2 only), on loopback, as a fixture."""

from __future__ import annotations

import pytest

from localworld.imds import Imds


@pytest.fixture
def fake_imds():
    imds = Imds()
    try:
        yield imds
    finally:
        imds.close()
