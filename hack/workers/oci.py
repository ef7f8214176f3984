"""Assemble an OCI image layout (a directory `ctr images import` takes, once tarred) from layer tars.

No Docker and no registry: the layers are plain uncompressed tars made by the image recipes, hard-linked
into the layout (no copy); each layer's digest is cached beside it (`LAYER.sha256`, keyed by size and
mtime) so that a rebuild hashes only the layers that changed.

Usage: python3 hack/workers/oci.py --name REF --config image.json --out DIR LAYER.tar [LAYER.tar ...]
Prints the manifest's digest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

LAYER = "application/vnd.oci.image.layer.v1.tar"
CONFIG = "application/vnd.oci.image.config.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
# containerd's importer names the image after this annotation of the index entry.
NAME_ANNOTATION = "io.containerd.image.name"


def layer_digest(path: Path) -> str:
    st = path.stat()
    stamp = f"{st.st_size} {st.st_mtime_ns}"
    cache = path.with_name(path.name + ".sha256")
    if cache.exists():
        cached_stamp, _, digest = cache.read_text().strip().rpartition(" ")
        if cached_stamp == stamp:
            return digest
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    digest = f"sha256:{h.hexdigest()}"
    cache.write_text(f"{stamp} {digest}\n")
    return digest


def write_blob(blobs: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def build(name: str, config: dict[str, Any], layers: list[Path], out: Path) -> str:
    if out.exists():
        shutil.rmtree(out)
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    descriptors = []
    for layer in layers:
        digest = layer_digest(layer)
        os.link(layer, blobs / digest.removeprefix("sha256:"))
        descriptors.append({"mediaType": LAYER, "digest": digest, "size": layer.stat().st_size})
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        # Uncompressed layers: the diff ID is the layer's own digest.
        "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descriptors]},
        "history": [{"created_by": f"llama-operator image recipe: {layer.name}"} for layer in layers],
    }
    cfg = write_blob(blobs, json.dumps(image_config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, **cfg},
        "layers": descriptors,
    }
    man = write_blob(blobs, json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": MANIFEST,
                **man,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {NAME_ANNOTATION: name, "org.opencontainers.image.ref.name": name},
            }
        ],
    }
    (out / "index.json").write_text(json.dumps(index, sort_keys=True))
    (out / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return str(man["digest"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--name", required=True, help="image reference, e.g. localhost/llama-worker-cpu:dev")
    parser.add_argument("--config", required=True, type=Path, help="JSON of the OCI image config's `config`")
    parser.add_argument("--out", required=True, type=Path, help="OCI layout directory to (re)create")
    parser.add_argument("layers", nargs="+", type=Path, help="uncompressed layer tars, base first")
    args = parser.parse_args()
    print(build(args.name, json.loads(args.config.read_text()), args.layers, args.out))


if __name__ == "__main__":
    main()
