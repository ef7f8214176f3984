"""Thin async wrapper over the Kubernetes client for the few writes the operator makes.

Calls run on a thread pool with raw JSON in and out (no model classes), which keeps a burst of
thousands of creates cheap in CPU and memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from llama_operator.api.types import ACCELERATORPOOL_PLURAL, GROUP, LLAMAJOB_PLURAL, VERSION
from llama_operator.controller.metrics import API_ERRORS, API_REQUESTS

# Kinds the operator creates and deletes: kind -> (API path prefix, plural).
KINDS: Mapping[str, tuple[str, str]] = {
    "Pod": ("/api/v1", "pods"),
    "Service": ("/api/v1", "services"),
    "ServiceAccount": ("/api/v1", "serviceaccounts"),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "Event": ("/api/v1", "events"),
}
CUSTOM = f"/apis/{GROUP}/{VERSION}"


def load_config(kubeconfig: str | None = None) -> client.ApiClient:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(config_file=kubeconfig)
    cfg = client.Configuration.get_default_copy()
    cfg.connection_pool_maxsize = 32
    return client.ApiClient(cfg)


class Kube:
    def __init__(self, api: client.ApiClient, threads: int = 16) -> None:
        self.api = api
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kube")
        self.calls = 0

    def _call(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> None:
        self.calls += 1
        API_REQUESTS.labels(method).inc()
        method, url, headers, payload, _ = self.api.param_serialize(
            method=method,
            resource_path=path,
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        resp = self.api.call_api(method, url, header_params=headers, body=payload, _request_timeout=30)
        data = resp.read()
        if not 200 <= resp.status < 300:
            raise ApiException(status=resp.status, reason=resp.reason, body=data.decode(errors="replace"))
        return None  # callers need only success; parsing the echoed object would cost more than the call

    async def _run(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, self._call, method, path, body, content_type)

    async def create(self, manifest: Mapping[str, Any]) -> bool:
        """Create an object; False when it already exists (creation is idempotent by name)."""
        prefix, plural = KINDS[manifest["kind"]]
        ns = manifest["metadata"]["namespace"]
        try:
            await self._run("POST", f"{prefix}/namespaces/{ns}/{plural}", manifest)
        except ApiException as exc:
            if exc.status == 409:
                return False
            API_ERRORS.labels("create", manifest["kind"]).inc()
            raise
        return True

    async def delete_collection(self, kind: str, namespace: str, selector: str) -> None:
        prefix, plural = KINDS[kind]
        path = f"{prefix}/namespaces/{namespace}/{plural}?labelSelector={quote(selector)}"
        try:
            await self._run("DELETE", path, {"propagationPolicy": "Background"})
        except ApiException as exc:
            if exc.status != 404:
                API_ERRORS.labels("deletecollection", kind).inc()
                raise

    async def patch_job_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> bool:
        """Merge-patch a LlamaJob's status; False when the job is gone."""
        path = f"{CUSTOM}/namespaces/{namespace}/{LLAMAJOB_PLURAL}/{name}/status"
        try:
            await self._run("PATCH", path, {"status": status}, "application/merge-patch+json")
        except ApiException as exc:
            if exc.status == 404:
                return False
            API_ERRORS.labels("patch", "LlamaJob").inc()
            raise
        return True

    async def patch_pool_status(self, name: str, status: Mapping[str, Any]) -> None:
        path = f"{CUSTOM}/{ACCELERATORPOOL_PLURAL}/{name}/status"
        try:
            await self._run("PATCH", path, {"status": status}, "application/merge-patch+json")
        except ApiException as exc:
            if exc.status != 404:
                API_ERRORS.labels("patch", "AcceleratorPool").inc()
                raise
