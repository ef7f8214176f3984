"""Thin async client for the few writes the operator makes.

aiohttp on kopf's own event loop, raw JSON in and nothing parsed out: a burst of thousands of creates
costs neither a thread per call nor a model object per response. The kubernetes package is used only
to read the kubeconfig or in-cluster credentials.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from kubernetes import client, config

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
MERGE_PATCH = "application/merge-patch+json"
# What a write asks back: the object's metadata only. The API server encodes its reply in the type the
# Accept header names, and for a LlamaJob most of the object is the status the operator just sent, so a
# full reply is encoding (and reading) thrown away. (The metadata API, as client-go's metadata client and
# kube-rs' use it for patches: https://github.com/kube-rs/kube/commit/fdd799d4230aa09405881f18b946656637fed762)
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


class ApiError(Exception):
    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")
        self.status = status


def load_config(kubeconfig: str | None = None) -> client.Configuration:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG or the given file)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(config_file=kubeconfig)
    return client.Configuration.get_default_copy()


def _ssl_context(cfg: client.Configuration) -> ssl.SSLContext | bool:
    if not cfg.host.startswith("https"):
        return False
    ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
    if not cfg.verify_ssl or cfg.assert_hostname is False:
        ctx.check_hostname = False
    if not cfg.verify_ssl:
        ctx.verify_mode = ssl.CERT_NONE
    if cfg.cert_file:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    return ctx


class Kube:
    def __init__(self, cfg: client.Configuration, connections: int = 64) -> None:
        self.cfg = cfg
        self.base = cfg.host.rstrip("/")
        self.connections = connections
        self._ssl = _ssl_context(cfg)
        self._session: aiohttp.ClientSession | None = None

    def _headers(self, content_type: str, accept: str = "application/json") -> dict[str, str]:
        headers = {"Content-Type": content_type, "Accept": accept}
        # auth_settings() refreshes an in-cluster token that was rotated on disk.
        token = self.cfg.auth_settings().get("BearerToken")
        if token and token.get("value"):
            headers["Authorization"] = token["value"]
        return headers

    async def _call(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> None:
        session = self._ensure_session()
        API_REQUESTS.labels(method).inc()
        data = None if body is None else json.dumps(body, separators=(",", ":"))
        accept = METADATA_ONLY if method in ("POST", "PATCH") else "application/json"
        async with session.request(
            method, self.base + path, data=data, headers=self._headers(content_type, accept)
        ) as resp:
            if resp.status >= 300:
                raise ApiError(resp.status, method, path, await resp.text())
            # Read, not parsed: callers need only success, and a drained connection is reused.
            await resp.read()

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:  # made on first use, inside kopf's loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.connections, ssl=self._ssl),
                timeout=aiohttp.ClientTimeout(total=30),
            )
        return self._session

    async def get_json(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        """GET a collection (one page of a list) and parse it."""
        API_REQUESTS.labels("LIST").inc()
        url = f"{self.base}{path}?{urlencode(params)}"
        async with self._ensure_session().get(url, headers=self._headers("application/json")) as resp:
            text = await resp.text()
            if resp.status >= 300:
                raise ApiError(resp.status, "GET", path, text)
            result: dict[str, Any] = json.loads(text)
            return result

    async def watch(self, path: str, params: Mapping[str, str], read_timeout: float) -> AsyncIterator[bytes]:
        """A watch stream: one raw JSON event per item, as the API server sends them (one per line).
        Lines are split here, not by aiohttp's readline, which refuses lines over 128 KiB."""
        API_REQUESTS.labels("WATCH").inc()
        url = f"{self.base}{path}?{urlencode({**params, 'watch': '1'})}"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=read_timeout)
        session = self._ensure_session()
        async with session.get(url, headers=self._headers("application/json"), timeout=timeout) as resp:
            if resp.status >= 300:
                raise ApiError(resp.status, "GET", path, await resp.text())
            buffer = b""
            async for chunk in resp.content.iter_any():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield line

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def create(self, manifest: Mapping[str, Any]) -> bool:
        """Create an object; False when it already exists (creation is idempotent by name)."""
        prefix, plural = KINDS[manifest["kind"]]
        ns = manifest["metadata"]["namespace"]
        try:
            await self._call("POST", f"{prefix}/namespaces/{ns}/{plural}", manifest)
        except ApiError as exc:
            if exc.status == 409:
                return False
            API_ERRORS.labels("create", manifest["kind"]).inc()
            raise
        return True

    async def delete_collection(self, kind: str, namespace: str, selector: str) -> None:
        prefix, plural = KINDS[kind]
        path = f"{prefix}/namespaces/{namespace}/{plural}?labelSelector={quote(selector)}"
        try:
            await self._call("DELETE", path, {"propagationPolicy": "Background"})
        except ApiError as exc:
            if exc.status != 404:
                API_ERRORS.labels("deletecollection", kind).inc()
                raise

    async def patch_job_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> bool:
        """Merge-patch a LlamaJob's status; False when the job is gone."""
        path = f"{CUSTOM}/namespaces/{namespace}/{LLAMAJOB_PLURAL}/{name}/status"
        try:
            await self._call("PATCH", path, {"status": status}, MERGE_PATCH)
        except ApiError as exc:
            if exc.status == 404:
                return False
            API_ERRORS.labels("patch", "LlamaJob").inc()
            raise
        return True

    async def patch_pool_status(self, name: str, status: Mapping[str, Any]) -> None:
        path = f"{CUSTOM}/{ACCELERATORPOOL_PLURAL}/{name}/status"
        try:
            await self._call("PATCH", path, {"status": status}, MERGE_PATCH)
        except ApiError as exc:
            if exc.status != 404:
                API_ERRORS.labels("patch", "AcceleratorPool").inc()
                raise
