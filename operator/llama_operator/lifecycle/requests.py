"""kube-scheduler's arithmetic on raw pod and node bodies: quantities, a pod's effective requests.

The same rules as k8s.io/component-helpers/resource.PodRequests (what NodeResourcesFit subtracts from a
node's allocatable): the sum of the containers, raised to the largest init container (each init
container counting the restartable "sidecar" init containers started before it, which also run beside
the containers), pod-level requests (cpu, memory, hugepages-*) where set, plus the RuntimeClass
overhead. Amounts are integers in planning.resources' units (cpu in millicores, the rest rounded up).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from llama_operator.planning.resources import CPU

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
            "P": Decimal("1e15"), "E": Decimal("1e18")}  # fmt: skip
# apimachinery's quantity grammar: a signed decimal number, then a binary or decimal SI suffix or a
# decimal exponent (e3, E-2). "1E" is an exa, "1E3" an exponent.
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+|[numkMGTPE]?)$")
_POD_LEVEL = ("cpu", "memory")  # and hugepages-*: what PodLevelResources may set


def parse_quantity(value: Any) -> Decimal:
    """A Kubernetes quantity ("500m", "16Gi", "1e3", 2) as an exact decimal. Raises ValueError."""
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    number, suffix = match.groups()
    try:
        amount = Decimal(number)
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only decimals
        raise ValueError(f"not a Kubernetes quantity: {value!r}") from exc
    if suffix in _BINARY:
        return amount * _BINARY[suffix]
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return amount.scaleb(int(suffix[1:]))
    return amount * _DECIMAL[suffix]


def amount(resource: str, value: Any) -> int:
    """A quantity in the scheduler's integer units: millicores for cpu, base units (rounded up) else."""
    quantity = parse_quantity(value)
    if resource == CPU:
        quantity *= 1000
    return math.ceil(quantity)


def resource_list(raw: Mapping[str, Any] | None) -> dict[str, int]:
    """A ResourceList (requests, allocatable, overhead) in integer units; unreadable entries are 0."""
    out: dict[str, int] = {}
    for name, value in (raw or {}).items():
        try:
            out[name] = amount(name, value)
        except ValueError:
            out[name] = 0  # the API server validates quantities; a bad one must not crash a watch
    return out


def _requests(container: Mapping[str, Any]) -> dict[str, int]:
    return resource_list((container.get("resources") or {}).get("requests"))


def _add(into: dict[str, int], more: Mapping[str, int]) -> None:
    for name, value in more.items():
        into[name] = into.get(name, 0) + value


def _raise_to(into: dict[str, int], floor: Mapping[str, int]) -> None:
    for name, value in floor.items():
        if value > into.get(name, 0):
            into[name] = value


def pod_requests(spec: Mapping[str, Any]) -> dict[str, int]:
    """The effective requests of a pod spec, as kube-scheduler counts them (see the module doc)."""
    total: dict[str, int] = {}
    for container in spec.get("containers") or ():
        _add(total, _requests(container))
    sidecars: dict[str, int] = {}
    init_peak: dict[str, int] = {}
    for container in spec.get("initContainers") or ():
        own = _requests(container)
        if container.get("restartPolicy") == "Always":  # a sidecar: runs on beside everything after it
            _add(total, own)
            _add(sidecars, own)
            during = dict(sidecars)
        else:
            during = dict(own)
            _add(during, sidecars)
        _raise_to(init_peak, during)
    _raise_to(total, init_peak)
    pod_level = resource_list((spec.get("resources") or {}).get("requests"))
    for name, value in pod_level.items():
        if name in _POD_LEVEL or name.startswith("hugepages-"):
            total[name] = value
    _add(total, resource_list(spec.get("overhead")))
    return {name: value for name, value in total.items() if value}
