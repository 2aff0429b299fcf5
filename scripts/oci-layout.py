#!/usr/bin/env python3
"""Write an OCI image layout with random, incompressible layers.

Used by the demo (scripts/start.sh) and the registry benchmark: skopeo can push
it with `oci:DIR:TAG`. Prints the manifest digest.
"""
import argparse
import hashlib
import io
import json
import os
import tarfile


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("dir")
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--size", type=int, default=64 * 1024 * 1024, help="bytes of random data per layer")
    p.add_argument("--tag", default="latest")
    a = p.parse_args()
    blobs = os.path.join(a.dir, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)

    def put(data):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, digest), "wb") as f:
            f.write(data)
        return {"digest": "sha256:" + digest, "size": len(data)}

    layers = []
    for i in range(a.layers):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo(f"data/layer{i}.bin")
            info.size = a.size
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(os.urandom(a.size)))
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", **put(buf.getvalue())})
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]},
    }
    config_desc = {"mediaType": "application/vnd.oci.image.config.v1+json", **put(json.dumps(config).encode())}
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": layers,
    }
    manifest_desc = put(json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **manifest_desc,
                "annotations": {"org.opencontainers.image.ref.name": a.tag},
            }
        ],
    }
    with open(os.path.join(a.dir, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(a.dir, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    print(manifest_desc["digest"])


if __name__ == "__main__":
    main()
