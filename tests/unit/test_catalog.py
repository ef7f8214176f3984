"""The built-in catalog and overrides of it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from llama_operator import catalog

pytestmark = pytest.mark.unit

# design.md, "Instance catalog": on-demand USD per hour.
DESIGN_PRICES = {
    "trn1.2xlarge": 1.3438,
    "trn1.32xlarge": 21.50,
    "trn1n.32xlarge": 24.78,
    "inf2.xlarge": 0.7582,
    "inf2.8xlarge": 1.9679,
    "inf2.24xlarge": 6.4906,
    "inf2.48xlarge": 12.9813,
    "p4d.24xlarge": 21.9576,
    "p4de.24xlarge": 27.4471,
    "p5.48xlarge": 55.04,
    "p5en.48xlarge": 63.296,
    "g5.xlarge": 1.006,
    "g5.48xlarge": 16.288,
    "g6e.48xlarge": 30.131,
}


def test_prices_and_shapes_follow_the_design() -> None:
    cat = catalog.builtin()
    for itype, price in DESIGN_PRICES.items():
        assert cat.instance_types[itype].price == price, itype
    assert cat.instance_types["trn2.48xlarge"].price is None  # capacity blocks only
    assert cat.instance_types["trn1.32xlarge"].allowed_device_counts == (1, 4, 8, 16)
    assert cat.instance_types["trn2.48xlarge"].allowed_device_counts == (1, 4, 8, 16)
    assert cat.accelerators["trainium1"].ranks_per_device == 2
    assert cat.accelerators["trainium2"].ranks_per_device == 4
    assert cat.accelerators["h100"].memory_gib == 80


def test_every_accelerator_is_used_and_calibrated() -> None:
    cat = catalog.builtin()
    assert {t.accelerator for t in cat.instance_types.values()} == set(cat.accelerators)
    assert cat.calibration is not None and set(cat.calibration.accelerators) == set(cat.accelerators)
    assert cat.measurements is not None and cat.calibration.measurements == len(cat.measurements.measurements)


def test_a_file_overrides_only_the_keys_it_names(tmp_path: Path) -> None:
    override = tmp_path / "prices.yaml"
    override.write_text("instanceTypes:\n  p5.48xlarge: {price: 40.0}\ndefaults: {spotPriceFactor: 0.3}\n")
    cat = catalog.load(override)
    assert cat.instance_types["p5.48xlarge"].price == 40.0
    assert cat.instance_types["p5.48xlarge"].devices == 8
    assert cat.defaults.spot_price_factor == 0.3
    assert cat.defaults.usable_memory_fraction == catalog.builtin().defaults.usable_memory_fraction
    assert catalog.builtin().instance_types["p5.48xlarge"].price == 55.04


def test_a_file_can_add_an_instance_type(tmp_path: Path) -> None:
    override = tmp_path / "more.yaml"
    override.write_text(
        "instanceTypes:\n  p5.4xlarge: {accelerator: h100, devices: 1, vcpus: 16, memoryGiB: 256, price: 7.0,"
        " allowedDeviceCounts: [1]}\n"
    )
    assert catalog.load(override).instance_types["p5.4xlarge"].devices == 1


@pytest.mark.parametrize(
    "text",
    [
        "instanceTypes:\n  x.large: {accelerator: tpu9, devices: 1, vcpus: 1, memoryGiB: 1, price: 1,"
        " allowedDeviceCounts: [1]}\n",
        "instanceTypes:\n  p5.48xlarge: {allowedDeviceCounts: [1, 16]}\n",
        "defaults: {spotPriceFactor: 3}\n",
        "- not a mapping\n",
    ],
)
def test_bad_overrides_are_refused(tmp_path: Path, text: str) -> None:
    override = tmp_path / "bad.yaml"
    override.write_text(text)
    with pytest.raises((ValueError, ValidationError)):
        catalog.load(override)
