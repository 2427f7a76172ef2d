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
    svc_helper.py sts-ready ENDPOINT ACCESS_KEY SECRET_KEY BUCKET ROLE_ARN TIMEOUT
        s3-ready, then check that the server narrows STS sessions: an
        anonymous request gets 403; AssumeRole of ROLE_ARN (signed with the
        keys, DurationSeconds 900) with an inline policy allowing only
        s3:GetObject on one key gives session keys that may GET that key (404,
        as it does not exist) and get 403 for a listing of BUCKET.

Stdlib only, with a small SigV4 signer: importing boto3 costs about a second
of CPU, which on a 2-core machine slows every other service starting alongside.
Exit 0 on success, 1 on failure or timeout (reason on stderr).
"""

import base64
import datetime
import hashlib
import hmac
import json
import re
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


def assume_role(endpoint, access_key, secret_key, role_arn, policy, duration):
    """STS AssumeRole; returns (access key, secret key, session token)."""
    body = urllib.parse.urlencode({
        "Action": "AssumeRole", "Version": "2011-06-15", "RoleArn": role_arn,
        "RoleSessionName": "credhost-probe", "DurationSeconds": str(duration), "Policy": json.dumps(policy),
    }).encode()
    req = signed_request("POST", endpoint + "/", "sts", access_key, secret_key, body=body,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    code, text = status_of(req, timeout=10)
    if code != 200:
        raise RuntimeError(f"AssumeRole: HTTP {code}: {text[:300]!r}")
    found = {k: re.search(rf"<{k}>([^<]+)</{k}>", text.decode()) for k in ("AccessKeyId", "SecretAccessKey", "SessionToken")}
    if not all(found.values()):
        raise RuntimeError(f"AssumeRole: no credentials in {text[:300]!r}")
    return tuple(found[k].group(1) for k in ("AccessKeyId", "SecretAccessKey", "SessionToken"))


def sts_ready(endpoint, access_key, secret_key, bucket, role_arn, timeout):
    if s3_ready(endpoint, access_key, secret_key, bucket, timeout):
        return 1
    code, _ = status_of(urllib.request.Request(f"{endpoint}/{bucket}"))
    if code != 403:
        print(f"S3 answered an anonymous listing with HTTP {code}, not 403", file=sys.stderr)
        return 1
    key = ".credhost-sts-probe"
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [f"arn:aws:s3:::{bucket}/{key}"]}]}
    try:
        ak, sk, token = assume_role(endpoint, access_key, secret_key, role_arn, policy, 900)
    except (RuntimeError, OSError) as e:
        print(e, file=sys.stderr)
        return 1
    session = {"x-amz-security-token": token}
    code, text = status_of(signed_request("GET", f"{endpoint}/{bucket}/{key}", "s3", ak, sk, headers=session))
    if code != 404:
        print(f"session GET of the allowed key: HTTP {code}, not 404: {text[:300]!r}", file=sys.stderr)
        return 1
    code, text = status_of(signed_request("GET", f"{endpoint}/{bucket}", "s3", ak, sk, headers=session))
    if code != 403:
        print(f"session listing outside its policy: HTTP {code}, not 403: session policies are not enforced",
              file=sys.stderr)
        return 1
    return 0


def main(argv):
    if len(argv) == 3 and argv[0] == "ecr-password":
        return ecr_password(argv[1], float(argv[2]))
    if len(argv) == 6 and argv[0] == "s3-ready":
        return s3_ready(argv[1], argv[2], argv[3], argv[4], float(argv[5]))
    if len(argv) == 7 and argv[0] == "sts-ready":
        return sts_ready(argv[1], argv[2], argv[3], argv[4], argv[5], float(argv[6]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
