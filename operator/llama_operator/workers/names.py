"""Deterministic, DNS-safe names, labels and label selectors of a job's worker objects.

Per-attempt objects (pods, the rendezvous Service, Role, RoleBinding) carry `-a{attempt}` in their
names and the attempt label, so a new attempt never collides with the previous one and the old one is
removed with `other_attempts_selector`. Per-job objects (ServiceAccount, inference Service) carry no
attempt label, so that cleanup cannot take them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

DNS_LABEL_MAX = 63
LABEL_VALUE_MAX = 63
_HASH_LEN = 8
_NOT_LABEL_CHARS = re.compile(r"[^a-z0-9-]+")
_NOT_VALUE_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_SUFFIX = re.compile(r"^(-[a-z0-9]+)*$")

LABEL_APP_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_JOB = "llamaop.io/job"
LABEL_ATTEMPT = "llamaop.io/attempt"
LABEL_POOL = "llamaop.io/pool"
LABEL_RANK = "llamaop.io/rank"
LABEL_ROLE = "llamaop.io/role"
LABEL_PROBE = "llamaop.io/probe"
APP_NAME = "llama-worker"
MANAGED_BY = "llama-operator"
ROLE_TRAIN = "train"
ROLE_SERVE = "serve"


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_LEN]


def dns_label(name: str, suffix: str = "") -> str:
    """`name` + `suffix` as an RFC 1035 label (63 chars, starts with a letter), usable for any object.

    LlamaJob names are DNS subdomains (dots, 253 chars, may start with a digit), which neither pod
    hostnames nor Service names accept. When `name` had to be changed or cut, a hash of the original is
    added so different jobs keep different names; the suffix (rank, attempt) is always kept whole, and all
    names of one job share one prefix.
    """
    if not _SUFFIX.match(suffix):
        raise ValueError(f"suffix {suffix!r} must be '-'-separated lowercase alphanumerics")
    base = _NOT_LABEL_CHARS.sub("-", name.lower()).strip("-")
    if not base[:1].isalpha():
        base = f"j-{base}".rstrip("-")
    if base == name and len(base) + len(suffix) <= DNS_LABEL_MAX:
        return base + suffix
    keep = DNS_LABEL_MAX - len(suffix) - _HASH_LEN - 1
    if keep < 1:
        raise ValueError(f"suffix {suffix!r} leaves no room for a name")
    return f"{base[:keep].rstrip('-')}-{short_hash(name)}{suffix}"


def label_value(value: str) -> str:
    """`value` if it is a valid label value, else a cut-down form with a hash of it (63 chars at most)."""
    if len(value) <= LABEL_VALUE_MAX and _LABEL_VALUE.match(value):
        return value
    head = _NOT_VALUE_CHARS.sub("-", value)[: LABEL_VALUE_MAX - _HASH_LEN - 1].strip("-_.")
    return f"{head}-{short_hash(value)}" if head else short_hash(value)


def service_account_name(job_name: str) -> str:
    return dns_label(job_name, "-worker")


def role_name(job_name: str, attempt: int) -> str:
    """Name of the attempt's Role and of the RoleBinding that grants it."""
    return dns_label(job_name, f"-a{attempt}-worker")


def rendezvous_service_name(job_name: str, attempt: int) -> str:
    return dns_label(job_name, f"-a{attempt}-rdzv")


def inference_service_name(job_name: str) -> str:
    return dns_label(job_name)


def train_pod_name(job_name: str, attempt: int, rank: int) -> str:
    return dns_label(job_name, f"-a{attempt}-{rank}")


def serve_pod_name(job_name: str, attempt: int, replica: int) -> str:
    return dns_label(job_name, f"-a{attempt}-r{replica}")


def job_selector(job_name: str) -> dict[str, str]:
    """Labels every object of the job carries, over all attempts."""
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_JOB: label_value(job_name)}


def attempt_selector(job_name: str, attempt: int) -> dict[str, str]:
    """Labels of the per-attempt objects of one attempt."""
    return {**job_selector(job_name), LABEL_ATTEMPT: str(attempt)}


def selector_string(selector: Mapping[str, str]) -> str:
    """A label-selector string for list/watch/delete-collection calls."""
    return ",".join(f"{key}={value}" for key, value in selector.items())


def other_attempts_selector(job_name: str, attempt: int) -> str:
    """Per-attempt objects of the job from any attempt but `attempt` (what failover cleans up).

    `key!=value` alone also matches objects without the key, so the attempt label must exist too;
    that keeps the per-job ServiceAccount and inference Service out.
    """
    return f"{selector_string(job_selector(job_name))},{LABEL_ATTEMPT},{LABEL_ATTEMPT}!={attempt}"
