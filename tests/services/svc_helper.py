#!/usr/bin/env python3
"""Readiness probes for up.sh that need AWS-signed requests, and the OIDC
issuer stand-in with its token signer (see below).

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

    svc_helper.py web-identity-ready ENDPOINT ROLE_ARN AUDIENCE TIMEOUT
        (with CREDHOST_TEST_OIDC_* in the environment, or the oidc-token
        defaults below) check that the STS instance trusts the OIDC issuer:
        AssumeRoleWithWebIdentity of ROLE_ARN with a token signed by the
        issuer's key for AUDIENCE gives working session keys (a GET of a
        missing key answers 404), and the same token for another audience is
        refused.

The OIDC issuer (a stand-in for a Kubernetes API server's service-account
issuer, https://kubernetes.io/docs/reference/access-authn-authz/service-accounts-admin/):

    svc_helper.py oidc-serve --dir DIR --port PORT --issuer URL
        write into DIR a fresh RSA-2048 key pair (key.pem, PKCS#8, mode 0600),
        a second "stranger" pair (stranger-key.pem, 0600) that no JWKS lists,
        jwks.json (the issuer's public key only, kid = base64url SHA-256 of its
        DER SubjectPublicKeyInfo, as Kubernetes derives it), kid,
        stranger-kid and openid-configuration, then serve on 127.0.0.1:PORT
            GET /.well-known/openid-configuration   (issuer, jwks_uri, ...)
            GET /openid/v1/jwks                     (DIR/jwks.json)
            GET /healthz                            (200 "ok")
        Both documents are read from DIR on every request, so a test may
        rewrite them (write a temporary file and rename it over). Every
        request is logged to stderr (up.sh: RUN_DIR/oidc/oidc.log).

    svc_helper.py oidc-token [--key PEM] [--kid KID] [--iss ISS] [--aud AUD]...
                  [--aud-string] [--sub SUB] [--namespace NS]
                  [--service-account NAME] [--sa-uid UID] [--pod NAME]
                  [--exp-in SECONDS] [--nbf-in SECONDS] [--iat-in SECONDS]
                  [--no-kid] [--claim NAME=JSON]...
        print one RS256 JWT shaped like a Kubernetes projected service-account
        token: header {alg: RS256, typ: JWT, kid}; claims iss, aud (a JSON
        array, as Kubernetes writes it; --aud-string writes one string),
        sub (default system:serviceaccount:NS:NAME), iat, nbf (= iat),
        exp (iat + --exp-in, default 3600; negative for an expired token),
        jti, and "kubernetes.io": {namespace, serviceaccount: {name, uid}
        [, pod: {name, uid}]}. Defaults come from the environment that
        up.sh's env file sets: --key $CREDHOST_TEST_OIDC_KEY, --kid
        $CREDHOST_TEST_OIDC_KID, --iss $CREDHOST_TEST_OIDC_ISSUER, --aud
        $CREDHOST_TEST_STS_WEB_AUDIENCE, --namespace default,
        --service-account default. A token the issuer never signed: --key
        $CREDHOST_TEST_OIDC_STRANGER_KEY (keep --kid for "right kid, wrong
        signature", or pass the stranger's kid for "unknown kid"). --claim
        adds or replaces a top-level claim (JSON value; `null` removes it).

Stdlib only for the probes, with a small SigV4 signer: importing boto3 costs
about a second of CPU, which on a 2-core machine slows every other service
starting alongside (the OIDC subcommands import PyJWT and cryptography, which
up.sh installs). Exit 0 on success, 1 on failure or timeout (reason on
stderr), 2 on a usage error.
"""

import argparse
import base64
import datetime
import hashlib
import hmac
import json
import os
import re
import sys
import threading
import time
import uuid
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


# ------------------------------------------------------------ OIDC issuer ---


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _write_atomic(path, data, mode):
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _new_key(directory, name):
    """Writes an RSA-2048 private key to DIR/NAME (PKCS#8 PEM, 0600); returns
    (public key, kid). The kid is what Kubernetes puts in its service-account
    tokens: base64url(SHA-256(DER SubjectPublicKeyInfo))."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    _write_atomic(os.path.join(directory, name), pem, 0o600)
    pub = key.public_key()
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pub, _b64url(hashlib.sha256(der).digest())


def _jwk(pub, kid):
    nums = pub.public_numbers()
    n = nums.n.to_bytes((nums.n.bit_length() + 7) // 8, "big")
    e = nums.e.to_bytes((nums.e.bit_length() + 7) // 8, "big")
    return {"use": "sig", "kty": "RSA", "kid": kid, "alg": "RS256", "n": _b64url(n), "e": _b64url(e)}


JWKS_PATH = "/openid/v1/jwks"  # where a Kubernetes API server serves it


def oidc_serve(args):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    directory = os.path.abspath(args.dir)
    os.makedirs(directory, exist_ok=True)
    issuer = args.issuer.rstrip("/")
    pub, kid = _new_key(directory, "key.pem")
    _, stranger_kid = _new_key(directory, "stranger-key.pem")
    _write_atomic(os.path.join(directory, "jwks.json"), json.dumps({"keys": [_jwk(pub, kid)]}, indent=1) + "\n", 0o644)
    _write_atomic(os.path.join(directory, "kid"), kid + "\n", 0o644)
    _write_atomic(os.path.join(directory, "stranger-kid"), stranger_kid + "\n", 0o644)
    discovery = {
        "issuer": issuer,
        "jwks_uri": issuer + JWKS_PATH,
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }
    _write_atomic(os.path.join(directory, "openid-configuration"), json.dumps(discovery, indent=1) + "\n", 0o644)
    routes = {
        "/.well-known/openid-configuration": "openid-configuration",
        JWKS_PATH: "jwks.json",
    }
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "credhost-test-oidc/1"

        def log_message(self, fmt, *a):
            with lock:
                sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {self.address_string()} {fmt % a}\n")
                sys.stderr.flush()

        def reply(self, code, body, ctype):
            data = body.encode() if isinstance(body, str) else body
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def do_GET(self):
            path = urllib.parse.urlsplit(self.path).path
            if path == "/healthz":
                self.reply(200, "ok\n", "text/plain")
            elif path in routes:
                try:
                    with open(os.path.join(directory, routes[path]), "rb") as f:
                        data = f.read()
                except OSError as e:
                    self.reply(500, json.dumps({"error": str(e)}), "application/json")
                    return
                ctype = "application/jwk-set+json" if path == JWKS_PATH else "application/json"
                self.reply(200, data, ctype)
            else:
                self.reply(404, json.dumps({"error": "not found"}), "application/json")

        do_HEAD = do_GET

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128

    server = Server(("127.0.0.1", args.port), Handler)
    print(f"oidc issuer {issuer} kid {kid} (stranger kid {stranger_kid}) on 127.0.0.1:{args.port}",
          file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def make_oidc_token(key_pem, kid, iss, aud, sub, exp_in=3600, nbf_in=0, iat_in=0, namespace="default",
                    service_account="default", sa_uid=None, pod=None, aud_string=False, extra=None):
    """An RS256 JWT shaped like a Kubernetes projected service-account token."""
    import jwt

    now = int(time.time()) + iat_in
    claims = {
        "aud": (aud[0] if len(aud) == 1 else aud) if aud_string else list(aud),
        "exp": now + exp_in,
        "iat": now,
        "iss": iss,
        "jti": str(uuid.uuid4()),
        "kubernetes.io": {
            "namespace": namespace,
            "serviceaccount": {"name": service_account, "uid": sa_uid or str(uuid.uuid4())},
        },
        "nbf": now + nbf_in,
        "sub": sub or f"system:serviceaccount:{namespace}:{service_account}",
    }
    if pod:
        claims["kubernetes.io"]["pod"] = {"name": pod, "uid": str(uuid.uuid4())}
    for name, value in (extra or {}).items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    headers = {"typ": "JWT"}
    if kid:
        headers["kid"] = kid
    return jwt.encode(claims, key_pem, algorithm="RS256", headers=headers)


def oidc_token(args):
    missing = [n for n in ("key", "iss") if not getattr(args, n)]
    if not args.aud:
        missing.append("aud")
    if not args.kid and not args.no_kid:
        missing.append("kid")
    if missing:
        print("oidc-token: missing " + ", ".join("--" + m for m in missing)
              + " (and no CREDHOST_TEST_OIDC_* default in the environment)", file=sys.stderr)
        return 2
    extra = {}
    for item in args.claim:
        name, sep, value = item.partition("=")
        if not sep or not name:
            print(f"oidc-token: --claim wants NAME=JSON, got {item!r}", file=sys.stderr)
            return 2
        try:
            extra[name] = json.loads(value)
        except ValueError as e:
            print(f"oidc-token: --claim {name}: not JSON: {e}", file=sys.stderr)
            return 2
    with open(args.key, "rb") as f:
        key_pem = f.read()
    print(make_oidc_token(key_pem, None if args.no_kid else args.kid, args.iss, args.aud, args.sub,
                          exp_in=args.exp_in, nbf_in=args.nbf_in, iat_in=args.iat_in,
                          namespace=args.namespace, service_account=args.service_account,
                          sa_uid=args.sa_uid, pod=args.pod, aud_string=args.aud_string, extra=extra))
    return 0


def assume_role_with_web_identity(endpoint, role_arn, token, session_name="credhost-probe", policy=None,
                                  duration=None):
    """Unsigned STS AssumeRoleWithWebIdentity; returns (HTTP status, body text)."""
    form = {"Action": "AssumeRoleWithWebIdentity", "Version": "2011-06-15", "RoleArn": role_arn,
            "RoleSessionName": session_name, "WebIdentityToken": token}
    if policy is not None:
        form["Policy"] = policy if isinstance(policy, str) else json.dumps(policy)
    if duration is not None:
        form["DurationSeconds"] = str(duration)
    req = urllib.request.Request(endpoint + "/", data=urllib.parse.urlencode(form).encode(), method="POST",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    code, body = status_of(req, timeout=10)
    return code, body.decode("utf-8", "replace")


def web_identity_ready(endpoint, role_arn, audience, timeout):
    env = os.environ
    need = ("CREDHOST_TEST_OIDC_KEY", "CREDHOST_TEST_OIDC_KID", "CREDHOST_TEST_OIDC_ISSUER")
    if not all(env.get(n) for n in need):
        print("web-identity-ready needs " + ", ".join(need) + " in the environment", file=sys.stderr)
        return 2
    with open(env["CREDHOST_TEST_OIDC_KEY"], "rb") as f:
        key_pem = f.read()
    kid, iss = env["CREDHOST_TEST_OIDC_KID"], env["CREDHOST_TEST_OIDC_ISSUER"]
    deadline = time.monotonic() + timeout
    while True:
        token = make_oidc_token(key_pem, kid, iss, [audience], None, exp_in=600, namespace="credhost-probe",
                                service_account="probe")
        try:
            code, text = assume_role_with_web_identity(endpoint, role_arn, token)
        except OSError as e:
            code, text = 0, str(e)
        if code == 200:
            break
        if time.monotonic() > deadline:
            print(f"AssumeRoleWithWebIdentity: HTTP {code}: {text[:400]}", file=sys.stderr)
            return 1
        time.sleep(0.2)
    found = {k: re.search(rf"<{k}>([^<]+)</{k}>", text) for k in ("AccessKeyId", "SecretAccessKey", "SessionToken")}
    if not all(found.values()):
        print(f"AssumeRoleWithWebIdentity: no credentials in {text[:400]}", file=sys.stderr)
        return 1
    ak, sk, session = (found[k].group(1) for k in ("AccessKeyId", "SecretAccessKey", "SessionToken"))
    bucket = env.get("CREDHOST_TEST_STS_BUCKET", "projects")
    code, body = status_of(signed_request("GET", f"{endpoint}/{bucket}/.credhost-web-identity-probe", "s3", ak, sk,
                                          headers={"x-amz-security-token": session}))
    if code != 404:
        print(f"web-identity session GET of a missing key: HTTP {code}, not 404: {body[:300]!r}", file=sys.stderr)
        return 1
    wrong = make_oidc_token(key_pem, kid, iss, [audience + ".wrong"], None, exp_in=600)
    code, text = assume_role_with_web_identity(endpoint, role_arn, wrong)
    if code == 200:
        print("AssumeRoleWithWebIdentity accepted a token for another audience", file=sys.stderr)
        return 1
    return 0


FLAG_OPTIONS = {"--no-kid", "--aud-string", "--help"}


def _oidc_parser():
    env = os.environ.get
    p = argparse.ArgumentParser(prog="svc_helper.py", description="OIDC issuer stand-in and token signer")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("oidc-serve")
    s.add_argument("--dir", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--issuer", required=True)
    t = sub.add_parser("oidc-token")
    t.add_argument("--key", default=env("CREDHOST_TEST_OIDC_KEY"), help="private key PEM (RSA)")
    t.add_argument("--kid", default=env("CREDHOST_TEST_OIDC_KID"))
    t.add_argument("--no-kid", action="store_true", help="omit kid from the header")
    t.add_argument("--iss", default=env("CREDHOST_TEST_OIDC_ISSUER"))
    t.add_argument("--aud", action="append", default=None, help="repeatable")
    t.add_argument("--aud-string", action="store_true", help="aud as one string, not an array")
    t.add_argument("--sub", default=None)
    t.add_argument("--namespace", default="default")
    t.add_argument("--service-account", default="default")
    t.add_argument("--sa-uid", default=None)
    t.add_argument("--pod", default=None)
    t.add_argument("--exp-in", type=int, default=3600)
    t.add_argument("--nbf-in", type=int, default=0)
    t.add_argument("--iat-in", type=int, default=0, help="shift iat (and nbf, exp) by SECONDS")
    t.add_argument("--claim", action="append", default=[], metavar="NAME=JSON")
    return p


def main(argv):
    if argv and argv[0] in ("oidc-serve", "oidc-token"):
        # A kid is base64url and may start with "-": glue every option's value
        # to it ("--kid=-abc"), or argparse would take the value for an option.
        glued, i = [], 0
        while i < len(argv):
            if argv[i].startswith("--") and "=" not in argv[i] and argv[i] not in FLAG_OPTIONS and i + 1 < len(argv):
                glued.append(f"{argv[i]}={argv[i + 1]}")
                i += 2
            else:
                glued.append(argv[i])
                i += 1
        args = _oidc_parser().parse_args(glued)
        if args.cmd == "oidc-serve":
            return oidc_serve(args)
        if args.aud is None:
            default_aud = os.environ.get("CREDHOST_TEST_STS_WEB_AUDIENCE")
            args.aud = [default_aud] if default_aud else []
        return oidc_token(args)
    if len(argv) == 5 and argv[0] == "web-identity-ready":
        return web_identity_ready(argv[1], argv[2], argv[3], float(argv[4]))
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
