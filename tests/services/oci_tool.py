#!/usr/bin/env python3
"""Test tool for plugin artifacts in OCI registries (tests/e2e/distribution.rs).

  oci_tool.py push-raw REGISTRY REPO TAG PLATFORM... [--index]
      Pushes a credhost plugin artifact whose layers claim the given
      platforms (OS/ARCH), with small placeholder bytes: what a registry
      holds when a plugin was published for other machines only. With
      --index, one manifest per platform under an image index. Prints the
      digest the tag names.

  oci_tool.py proxy PORT UPSTREAM MODE
      A registry proxy on 127.0.0.1:PORT in front of http://UPSTREAM that
      passes everything through, except the body of a blob larger than
      1 MiB: MODE `cut` sends its first MiB and closes the connection;
      `stall` sends its first MiB and then nothing, holding the connection
      open. A real registry cannot be made to do either on demand; this
      stands in for a network that fails mid-download.
"""

import hashlib
import http.client
import http.server
import json
import socketserver
import sys
import time
import urllib.request

ARTIFACT_TYPE = "application/vnd.credhost.plugin.v1"
LAYER = "application/vnd.credhost.plugin.layer.v1"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def put_blob(base, repo, data):
    req = urllib.request.Request(f"{base}/v2/{repo}/blobs/uploads/", method="POST", data=b"")
    with urllib.request.urlopen(req) as r:
        location = r.headers["Location"]
    if location.startswith("/"):
        location = base + location
    sep = "&" if "?" in location else "?"
    req = urllib.request.Request(f"{location}{sep}digest={digest(data)}", method="PUT", data=data,
                                 headers={"Content-Type": "application/octet-stream"})
    urllib.request.urlopen(req).close()
    return {"digest": digest(data), "size": len(data)}


def put_manifest(base, repo, ref, body, media_type):
    data = json.dumps(body).encode()
    req = urllib.request.Request(f"{base}/v2/{repo}/manifests/{ref}", method="PUT", data=data,
                                 headers={"Content-Type": media_type})
    urllib.request.urlopen(req).close()
    return {"digest": digest(data), "size": len(data)}


def push_raw(registry, repo, tag, platforms, index):
    base = f"http://{registry}"
    config = put_blob(base, repo, b"{}")

    def manifest(plats, ref):
        layers = []
        for p in plats:
            blob = put_blob(base, repo, f"not a plugin for this machine: {p}\n".encode())
            layers.append({"mediaType": LAYER, **blob, "annotations": {
                "org.opencontainers.image.title": "libcredhost_local.so",
                "io.credhost.plugin.platform": p,
                "io.credhost.plugin.name": "local",
                "io.credhost.plugin.version": "0.1.0",
                "io.credhost.plugin.api-version": "1.3.0",
            }})
        body = {"schemaVersion": 2, "mediaType": MANIFEST, "artifactType": ARTIFACT_TYPE,
                "config": {"mediaType": EMPTY, **config}, "layers": layers}
        data = json.dumps(body).encode()
        return put_manifest(base, repo, ref or digest(data), body, MANIFEST)

    if not index:
        print(manifest(platforms, tag)["digest"])
        return
    entries = []
    for p in platforms:
        m = manifest([p], None)
        os_, arch = p.split("/")
        entries.append({"mediaType": MANIFEST, **m, "artifactType": ARTIFACT_TYPE,
                        "platform": {"os": os_, "architecture": arch}})
    body = {"schemaVersion": 2, "mediaType": INDEX, "artifactType": ARTIFACT_TYPE, "manifests": entries}
    print(put_manifest(base, repo, tag, body, INDEX)["digest"])


def proxy(port, upstream, mode):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_HEAD(self):
            self.forward()

        def do_GET(self):
            self.forward()

        def forward(self):
            conn = http.client.HTTPConnection(upstream, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            conn.request(self.command, self.path, headers=headers)
            resp = conn.getresponse()
            # Follow the registry's own redirects here, so the client sees
            # one answer.
            while resp.status in (301, 302, 307) and self.command == "GET":
                location = resp.getheader("Location")
                resp.read()
                if location.startswith("http"):
                    location = "/" + location.split("/", 3)[3]
                conn.request("GET", location, headers=headers)
                resp = conn.getresponse()
            length = int(resp.getheader("Content-Length") or 0)
            is_blob = "/blobs/sha256:" in self.path and self.command == "GET" and length > (1 << 20)
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("connection", "transfer-encoding"):
                    self.send_header(k, v)
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command == "HEAD":
                return
            if not is_blob:
                self.wfile.write(resp.read())
                return
            self.wfile.write(resp.read(1 << 20))
            self.wfile.flush()
            if mode == "stall":
                time.sleep(3600)
            self.close_connection = True
            self.connection.shutdown(2)

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True

    server = Server(("127.0.0.1", port), Handler)
    print("ready", flush=True)
    server.serve_forever()


def main():
    args = sys.argv[1:]
    if args and args[0] == "push-raw":
        index = "--index" in args
        rest = [a for a in args[1:] if a != "--index"]
        push_raw(rest[0], rest[1], rest[2], rest[3:], index)
    elif args and args[0] == "proxy":
        proxy(int(args[1]), args[2], args[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
