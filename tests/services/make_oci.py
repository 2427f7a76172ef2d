#!/usr/bin/env python3
"""Write a minimal valid OCI image layout, usable as `skopeo copy oci:DIR:TAG ...`.

    make_oci.py DIR [TAG]        (TAG defaults to "latest")

The image has one gzip tar layer holding /hello.txt (its text names the tag, so
different tags give different digests), an image config and a manifest. Running
it again on the same DIR with another TAG adds that tag to index.json; the same
TAG replaces its entry. Output is deterministic (fixed mtimes), and the manifest
digest is printed on stdout. Stdlib only.
"""

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
EPOCH = 0  # fixed timestamps -> reproducible digests


def write_blob(root, data):
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(root, "blobs", "sha256", digest)
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(data)
    return "sha256:" + digest, len(data)


def canonical_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def layer_tar(tag):
    content = f"hello from a credhost test image, tag {tag}\n".encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(content)
        info.mode = 0o644
        info.mtime = EPOCH
        tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def main(argv):
    if not 1 <= len(argv) <= 2 or argv[0] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        return 2
    root = argv[0]
    tag = argv[1] if len(argv) == 2 else "latest"
    os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)

    tar = layer_tar(tag)
    gz = gzip.compress(tar, compresslevel=6, mtime=EPOCH)
    layer_digest, layer_size = write_blob(root, gz)

    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Cmd": ["/hello.txt"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "make_oci.py"}],
    }
    config_digest, config_size = write_blob(root, canonical_json(config))

    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": MT_LAYER, "digest": layer_digest, "size": layer_size}],
    }
    manifest_digest, manifest_size = write_blob(root, canonical_json(manifest))

    with open(os.path.join(root, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)

    index_path = os.path.join(root, "index.json")
    index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": []}
    if os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
    index["manifests"] = [
        m for m in index.get("manifests", []) if m.get("annotations", {}).get(REF_NAME) != tag
    ]
    index["manifests"].append(
        {
            "mediaType": MT_MANIFEST,
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {REF_NAME: tag},
        }
    )
    with open(index_path + ".tmp", "w") as f:
        json.dump(index, f, indent=2)
    os.replace(index_path + ".tmp", index_path)

    print(manifest_digest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
