#!/usr/bin/env python3
"""Readiness probes for up.sh that need AWS-signed requests.

    svc_helper.py ecr-password ENDPOINT TIMEOUT
        wait until moto answers GET /moto-api/ with 200, call ECR
        GetAuthorizationToken (us-east-1, dummy keys) and print the password part
        of the base64 "AWS:<password>" token.
    svc_helper.py s3-ready ENDPOINT ACCESS_KEY SECRET_KEY BUCKET TIMEOUT
        retry a SIGNED HeadBucket until it answers 200 (anonymous requests get
        403 well before the gateway can check signatures, and the bucket shows up
        a little later still), then check that a wrong secret is refused, i.e.
        that the server really enforces the keys.

Stdlib only, with a small SigV4 signer: importing boto3 costs about a second
of CPU, which on a 2-core machine slows every other service starting alongside.
Exit 0 on success, 1 on failure or timeout (reason on stderr).
"""

import base64
import datetime
import hashlib
import hmac
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

REGION = "us-east-1"


def _hmac(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signed_request(method, url, service, access_key, secret_key, body=b"", headers=None):
    """A urllib Request signed with AWS Signature Version 4 (no query string)."""
    parts = urllib.parse.urlsplit(url)
    amz_date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    payload_hash = hashlib.sha256(body).hexdigest()
    hdrs = {k.lower(): v for k, v in (headers or {}).items()}
    hdrs.update({"host": parts.netloc, "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash})
    signed = sorted(hdrs)
    canonical = "\n".join(
        [
            method,
            urllib.parse.quote(parts.path or "/", safe="/-_.~"),
            "",
            "".join(f"{k}:{hdrs[k].strip()}\n" for k in signed),
            ";".join(signed),
            payload_hash,
        ]
    )
    scope = f"{amz_date[:8]}/{REGION}/{service}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + secret_key).encode()
    for part in (amz_date[:8], REGION, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    hdrs["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={';'.join(signed)}, Signature={signature}"
    )
    del hdrs["host"]  # urllib sets it from the URL
    return urllib.request.Request(url, data=body or None, headers=hdrs, method=method)


def status_of(req, timeout=3):
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def ecr_password(endpoint, timeout):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            if status_of(urllib.request.Request(endpoint + "/moto-api/"))[0] == 200:
                break
        except OSError as e:  # not listening yet
            last = e
        if time.monotonic() > deadline:
            print(f"moto not ready: {last}", file=sys.stderr)
            return 1
        time.sleep(0.1)
    req = signed_request(
        "POST",
        endpoint + "/",
        "ecr",
        "testing",
        "testing",
        body=b"{}",
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken",
        },
    )
    code, body = status_of(req, timeout=10)
    if code != 200:
        print(f"ECR GetAuthorizationToken: HTTP {code}: {body[:300]!r}", file=sys.stderr)
        return 1
    token = json.loads(body)["authorizationData"][0]["authorizationToken"]
    user, _, password = base64.b64decode(token).decode().partition(":")
    if user != "AWS" or not password:
        print(f"unexpected ECR token {token!r}", file=sys.stderr)
        return 1
    print(password)
    return 0


def s3_ready(endpoint, access_key, secret_key, bucket, timeout):
    url = f"{endpoint}/{bucket}"
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            code, _ = status_of(signed_request("HEAD", url, "s3", access_key, secret_key))
            if code == 200:
                break
            last = f"HTTP {code}"
        except OSError as e:
            last = e
        if time.monotonic() > deadline:
            print(f"S3 not ready: signed HEAD {url}: {last}", file=sys.stderr)
            return 1
        time.sleep(0.1)
    code, _ = status_of(signed_request("HEAD", url, "s3", access_key, secret_key + "x"))
    if code != 403:
        print(f"S3 accepted a wrong secret key (HTTP {code}): auth is not enforced", file=sys.stderr)
        return 1
    return 0


def main(argv):
    if len(argv) == 3 and argv[0] == "ecr-password":
        return ecr_password(argv[1], float(argv[2]))
    if len(argv) == 6 and argv[0] == "s3-ready":
        return s3_ready(argv[1], argv[2], argv[3], argv[4], float(argv[5]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
