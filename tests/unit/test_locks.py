"""The lock files match what they lock: a requirement changed without `make lock` fails here, before any
install or image build resolves something else."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
IMAGE = ROOT / "workloads" / "images" / "cpu"


def _requirements(path: Path) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def _pins(path: Path) -> dict[str, tuple[str, str]]:
    """name -> (version, hash) of a pip lock written by rootfs.sh --lock."""
    pins = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        spec, _, digest = line.partition(" --hash=")
        name, _, version = spec.partition("==")
        pins[Requirement(name).name.lower().replace("_", "-")] = (version, digest)
    return pins


def test_the_image_lock_was_made_from_this_requirements_txt() -> None:
    digest = hashlib.sha256((IMAGE / "requirements.txt").read_bytes()).hexdigest()[:16]
    header = (IMAGE / "requirements.lock").read_text().splitlines()[0]
    assert f"requirements.txt sha256:{digest}," in header, "requirements.txt changed: run `make lock`"


def test_the_image_lock_pins_every_requirement_with_a_hash() -> None:
    pins = _pins(IMAGE / "requirements.lock")
    assert pins
    assert all(digest.startswith("sha256:") and len(digest) == 71 for _, digest in pins.values())
    for req in _requirements(IMAGE / "requirements.txt"):
        key = req.name.lower().replace("_", "-")
        assert key in pins, f"{req.name} is not in requirements.lock"
        assert req.specifier.contains(pins[key][0], prereleases=True), f"{req} vs {pins[key][0]}"


def test_uv_lock_pins_every_dependency_of_the_project() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked = {p["name"]: p["version"] for p in lock["package"] if "version" in p}
    wanted = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted += extra
    for text in wanted:
        req = Requirement(text)
        name = req.name.lower().replace("_", "-")
        assert name in locked, f"{req.name} is not in uv.lock: run `uv lock`"
        assert req.specifier.contains(locked[name], prereleases=True), f"{req} vs uv.lock's {locked[name]}"
