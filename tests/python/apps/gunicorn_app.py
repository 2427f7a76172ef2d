"""A WSGI app served by gunicorn sync workers with ``preload_app = True``: the
master imports this module (and uses ``CREDS``) before forking the workers,
which then serve uploads with that same object."""

import json
import os

import credhost

CREDS = credhost.Credentials()
MASTER_PID = os.getpid()
# Used in the master, before the fork: its runtime, provider and connection
# pools exist when the workers are forked from it.
CREDS.get_registry_token()
CREDS.upload_project(os.environ["PRELOAD_OBJECT"], b"PK\x03\x04 uploaded by the gunicorn master")


def app(environ, start_response):
    if environ["REQUEST_METHOD"] == "GET":
        body = {"pid": os.getpid(), "master": MASTER_PID}
        status = "200 OK"
    else:
        name = environ["PATH_INFO"].lstrip("/")
        try:
            put = CREDS.upload_project(name, environ["wsgi.input"])
            body = {"bucket": put.bucket, "name": put.name, "size": put.size, "pid": os.getpid(), "master": MASTER_PID}
            status = "200 OK"
        except credhost.Error as e:
            body = {"error": str(e), "kind": e.kind}
            status = "500 Internal Server Error"
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
