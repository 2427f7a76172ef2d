#!/usr/bin/env python3
"""Minimal Docker registry token server for the token-auth test registry.

Implements the token endpoint of the Docker/Distribution token auth spec:

    GET /token?service=SVC&scope=repository:NAME:pull,push[&scope=...]
        with HTTP Basic auth  ->  200 {"token", "access_token", "expires_in", "issued_at"}
    POST /token (OAuth2 form, grant_type=password, username, password, service, scope)
        ->  same JSON (some clients use this form)
    GET /healthz  ->  200 "ok" (readiness probe)

Wrong or missing credentials get 401.

Tokens are RS256 JWTs whose header carries an `x5c` chain holding a
self-signed certificate; Distribution verifies the chain against
`auth.token.rootcertbundle`, which is the cert.pem this server writes into
--dir at start (a fresh key pair every start).

What a token grants: its `access` claim holds exactly the scopes the request
asked for, narrowed to what this server allows, and nothing else (no
wildcard, no default grant; a request without a scope gets `"access": []`,
which is enough for `GET /v2/` only). Allowed: type `repository` (a
`(CLASS)` suffix is dropped) with the actions pull, push, delete and `*`, and
`registry:catalog:*`. Unknown actions are dropped, and a scope left with no
action, of another type or without a name grants nothing. Scopes naming the
same resource are merged. Distribution checks every request against this
claim, so a token asked for `repository:a:pull,push` and `repository:b:pull`
pushes to a only, and pulls from a and b only.

Lifetime: `exp` is `iat` + --expires-in (or the lifetime a /_test/lifetime
rule sets), `nbf` is `iat` - 1, and the answer's `expires_in` is `exp` -
`iat`, with `issued_at` = `iat`. Distribution 2.8 accepts a token until 60 s
after its `exp` (and from 60 s before its `nbf`), a clock-skew leeway: a
test that shows a token refused after its expiry waits expires_in + 61 s.

For tests it also answers with what a healthy server cannot be made to
produce on demand -- this part is a mock, and says so:

    POST /_test/fault {"scope": TEXT, "status": 500|502|503|504|429|401|403,
                       "n": N, "retry_after": SECONDS}
        the next N token requests (default 1) whose scope parameter contains
        TEXT get that status instead of a token, whatever their credentials;
        429 and 503 carry `Retry-After: SECONDS` when it is given. With
        "status": 0 the request is read and the connection closed unanswered.
        Faults armed for different TEXTs do not disturb each other, so tests
        running at once each use a scope of their own.
    POST /_test/lifetime {"scope": TEXT, "expires_in": N}
        from now on, tokens for requests whose scope parameters (joined by
        spaces) contain TEXT live N seconds (1..86400) instead of
        --expires-in: both their `exp` and the answer's `expires_in`. A rule
        for the same TEXT replaces the earlier one; "expires_in": null removes
        it. When several rules match, the first set wins. Answers
        {"lifetimes": [{"scope", "expires_in"}, ...]}, the rules now in force
        (GET /_test/lifetime lists them too).
    GET /_test/stats?scope=TEXT  ->  {"requests", "faults", "issued", "denied",
        "first", "last"}: the token requests whose scope contained TEXT, how
        many got an injected fault, a token, or a refusal, and the times
        (Unix seconds) of the first and the last of them.

Every request that reaches /token is logged to stderr (which up.sh sends to the
log file) as one line:  `token-issued {json}` (with the `access` granted and the
`expires_in`), `token-denied {json}` or `token-fault {json}`.
"""

import argparse
import base64
import datetime
import json
import logging
import os
import secrets
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

log = logging.getLogger("token_server")

# What the server grants: these actions on any repository, and on the
# "registry" resources named here.
REPOSITORY_ACTIONS = {"pull", "push", "delete", "*"}
REGISTRY_ACTIONS = {"catalog": {"*"}}


def write_atomic(path, data, mode=0o644):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def make_key_and_cert(directory, common_name):
    """Generate an RSA key and a self-signed cert; write key.pem and cert.pem."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # Backdated so a slightly skewed clock never makes the cert "not yet valid".
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        # No ExtendedKeyUsage on purpose: Go's x509.Verify (used by Distribution
        # for the x5c chain) asks for ServerAuth by default, and a cert that
        # lists other usages only would be rejected.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    os.makedirs(directory, exist_ok=True)
    write_atomic(
        os.path.join(directory, "key.pem"),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        0o600,
    )
    write_atomic(os.path.join(directory, "cert.pem"), cert.public_bytes(serialization.Encoding.PEM))
    x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")
    return key, x5c


def allowed_actions(rtype, name):
    """The actions this server may grant on a resource (an empty set: none)."""
    if rtype == "repository":
        return REPOSITORY_ACTIONS
    if rtype == "registry":
        return REGISTRY_ACTIONS.get(name, set())
    return set()


def parse_scopes(values):
    """Turn scope parameters into Distribution `access` entries: the scopes
    asked for, each narrowed to the actions allowed on it (see the module's
    doc); a scope left with none is dropped.

    A parameter may itself hold several space-separated scopes (OAuth2 style).
    Grammar: TYPE[(CLASS)]:NAME:ACTIONS where NAME may contain ':' (host:port/repo),
    so the type is cut at the first ':' and the actions at the last one.
    """
    access = []
    for value in values:
        for scope in value.split():
            first, last = scope.find(":"), scope.rfind(":")
            if first < 0 or last == first:
                continue
            rtype = scope[:first].split("(", 1)[0]
            name = scope[first + 1 : last]
            if not name:
                continue
            allowed = allowed_actions(rtype, name)
            actions = {a for a in scope[last + 1 :].split(",") if a in allowed}
            if not actions:
                continue
            # Merge repeated scopes for the same resource.
            for entry in access:
                if entry["type"] == rtype and entry["name"] == name:
                    entry["actions"] = sorted(set(entry["actions"]) | actions)
                    break
            else:
                access.append({"type": rtype, "name": name, "actions": sorted(actions)})
    return access


class TokenHandler(BaseHTTPRequestHandler):
    # HTTP/1.1 so clients can keep connections alive; every reply has a Content-Length.
    protocol_version = "HTTP/1.1"
    server_version = "credhost-test-token/1"

    def log_message(self, fmt, *args):
        log.info("http %s %s", self.address_string(), fmt % args)

    def reply(self, code, body, content_type="application/json", extra_headers=()):
        data = body if isinstance(body, bytes) else body.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for k, v in extra_headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def unauthorized(self, user, reason, service, scopes):
        log.info(
            "token-denied %s",
            json.dumps({"user": user, "reason": reason, "service": service, "scopes": scopes}),
        )
        self.reply(
            401,
            json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": reason}]}),
            extra_headers=[("WWW-Authenticate", 'Basic realm="credhost-test-token"')],
        )

    def basic_credentials(self):
        header = self.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return None, None
        try:
            raw = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except Exception:
            return None, None
        user, sep, password = raw.partition(":")
        return (user, password) if sep else (None, None)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        if url.path == "/healthz":
            self.reply(200, b"ok\n", "text/plain")
        elif url.path == "/_test/stats":
            self.reply(200, json.dumps(self.server.stats((query.get("scope") or [""])[0])))
        elif url.path == "/_test/lifetime":
            self.reply(200, json.dumps({"lifetimes": self.server.lifetimes_now()}))
        elif url.path == "/token":
            user, password = self.basic_credentials()
            self.issue(user, password, query.get("service", [""])[0], query.get("scope", []))
        else:
            self.reply(404, json.dumps({"error": "not found"}))

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        if url.path == "/_test/fault":
            try:
                fault = self.server.arm(json.loads(body or "{}"))
            except (ValueError, TypeError) as e:
                self.reply(400, json.dumps({"error": str(e)}))
                return
            self.reply(200, json.dumps({"armed": fault}))
            return
        if url.path == "/_test/lifetime":
            try:
                rules = self.server.set_lifetime(json.loads(body or "{}"))
            except (ValueError, TypeError, AttributeError) as e:
                self.reply(400, json.dumps({"error": str(e)}))
                return
            self.reply(200, json.dumps({"lifetimes": rules}))
            return
        if url.path != "/token":
            self.reply(404, json.dumps({"error": "not found"}))
            return
        form = urllib.parse.parse_qs(body, keep_blank_values=True)
        user, password = self.basic_credentials()
        if user is None and form.get("grant_type", [""])[0] == "password":
            user = form.get("username", [None])[0]
            password = form.get("password", [None])[0]
        self.issue(user, password, form.get("service", [""])[0], form.get("scope", []))

    def inject(self, fault, scope_params):
        """Answers with an armed fault instead of a token."""
        status = fault["status"]
        log.info("token-fault %s", json.dumps({"status": status, "scopes": scope_params, "match": fault["scope"]}))
        if status == 0:
            self.close_connection = True
            try:
                self.connection.shutdown(2)
            except OSError:
                pass
            return
        headers = []
        if status in (429, 503) and fault.get("retry_after") is not None:
            headers.append(("Retry-After", str(int(fault["retry_after"]))))
        if status == 401:
            headers.append(("WWW-Authenticate", 'Basic realm="credhost-test-token"'))
        message = {401: "UNAUTHORIZED", 403: "DENIED", 429: "TOOMANYREQUESTS"}.get(status, "UNAVAILABLE")
        self.reply(status, json.dumps({"errors": [{"code": message, "message": "injected fault"}]}),
                   extra_headers=headers)

    def issue(self, user, password, service, scope_params):
        cfg = self.server.cfg
        fault = self.server.take_fault(scope_params)
        if fault is not None:
            self.inject(fault, scope_params)
            return
        if user is None:
            self.server.record(scope_params, "denied")
            self.unauthorized(None, "missing credentials", service, scope_params)
            return
        # Constant-time comparison of both fields.
        ok_user = secrets.compare_digest(user.encode(), cfg.user.encode())
        ok_pw = secrets.compare_digest((password or "").encode(), cfg.password.encode())
        if not (ok_user and ok_pw):
            self.server.record(scope_params, "denied")
            self.unauthorized(user, "bad credentials", service, scope_params)
            return
        if service and service != cfg.service:
            self.server.record(scope_params, "denied")
            # Distribution would reject a token whose aud differs anyway; say so early.
            self.reply(400, json.dumps({"error": f"unknown service {service!r}"}))
            log.info("token-denied %s", json.dumps({"user": user, "reason": "unknown service", "service": service}))
            return

        access = parse_scopes(scope_params)
        expires_in = self.server.lifetime_for(scope_params, cfg.expires_in)
        now = int(time.time())
        claims = {
            "iss": cfg.issuer,
            "sub": user,
            "aud": cfg.service,  # a plain string: Distribution 2.8 compares it as one
            "exp": now + expires_in,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        token = jwt.encode(
            claims, self.server.key, algorithm="RS256", headers={"x5c": [self.server.x5c]}
        )
        issued_at = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
        body = {
            "token": token,
            "access_token": token,
            "expires_in": claims["exp"] - claims["iat"],
            "issued_at": issued_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        with self.server.counter_lock:
            self.server.issued += 1
            count = self.server.issued
        self.server.record(scope_params, "issued")
        log.info(
            "token-issued %s",
            json.dumps(
                {
                    "n": count,
                    "user": user,
                    "service": service,
                    "scopes": scope_params,
                    "access": access,
                    "jti": claims["jti"],
                    "expires_in": body["expires_in"],
                }
            ),
        )
        self.reply(200, json.dumps(body))


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # several test binaries may ask at once (default 5)

    # Token requests remembered for /_test/stats (the oldest are forgotten).
    MAX_RECORDS = 100_000
    FAULT_STATUSES = {0, 401, 403, 429, 500, 502, 503, 504}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.faults = []
        self.records = []
        self.lifetimes = []  # [scope TEXT, seconds], in the order set
        self.state_lock = threading.Lock()

    MAX_LIFETIME = 86400

    def set_lifetime(self, rule):
        """Sets (or with "expires_in": null removes) the lifetime rule for a
        scope TEXT; returns the rules now in force."""
        scope = rule.get("scope")
        if not isinstance(scope, str) or not scope:
            raise ValueError("a lifetime rule needs a non-empty \"scope\" to match")
        if "expires_in" not in rule:
            raise ValueError("a lifetime rule needs \"expires_in\" (seconds, or null to remove it)")
        seconds = rule["expires_in"]
        if seconds is not None:
            if isinstance(seconds, bool) or not isinstance(seconds, int):
                raise ValueError("expires_in must be a whole number of seconds or null")
            if not 1 <= seconds <= self.MAX_LIFETIME:
                raise ValueError(f"expires_in must be in 1..{self.MAX_LIFETIME}")
        with self.state_lock:
            for r in self.lifetimes:
                if r[0] == scope:
                    if seconds is None:
                        self.lifetimes.remove(r)
                    else:
                        r[1] = seconds
                    break
            else:
                if seconds is not None:
                    self.lifetimes.append([scope, seconds])
            return [{"scope": t, "expires_in": n} for t, n in self.lifetimes]

    def lifetimes_now(self):
        with self.state_lock:
            return [{"scope": t, "expires_in": n} for t, n in self.lifetimes]

    def lifetime_for(self, scope_params, default):
        joined = " ".join(scope_params)
        with self.state_lock:
            for text, seconds in self.lifetimes:
                if text in joined:
                    return seconds
        return default

    def arm(self, fault):
        """Validates and arms a fault; returns it as armed."""
        scope = fault.get("scope")
        if not isinstance(scope, str) or not scope:
            raise ValueError("a fault needs a non-empty \"scope\" to match")
        status = int(fault.get("status", 500))
        if status not in self.FAULT_STATUSES:
            raise ValueError(f"status {status} is not one of {sorted(self.FAULT_STATUSES)}")
        n = int(fault.get("n", 1))
        if n < 1:
            raise ValueError("n must be at least 1")
        armed = {"scope": scope, "status": status, "n": n, "retry_after": fault.get("retry_after")}
        with self.state_lock:
            self.faults.append(armed)
        return dict(armed)

    def take_fault(self, scope_params):
        """The first armed fault matching one of the request's scopes, used up
        by one; records the request when one matches."""
        joined = " ".join(scope_params)
        with self.state_lock:
            for f in self.faults:
                if f["scope"] in joined:
                    f["n"] -= 1
                    if f["n"] <= 0:
                        self.faults.remove(f)
                    self._record(joined, "fault")
                    return dict(f)
        return None

    def record(self, scope_params, outcome):
        with self.state_lock:
            self._record(" ".join(scope_params), outcome)

    def _record(self, joined, outcome):
        self.records.append((time.time(), joined, outcome))
        if len(self.records) > self.MAX_RECORDS:
            del self.records[: len(self.records) - self.MAX_RECORDS]

    def stats(self, text):
        with self.state_lock:
            seen = [r for r in self.records if text in r[1]]
        out = {"requests": len(seen), "faults": 0, "issued": 0, "denied": 0,
               "first": seen[0][0] if seen else None, "last": seen[-1][0] if seen else None}
        for _, _, outcome in seen:
            key = {"fault": "faults", "issued": "issued", "denied": "denied"}[outcome]
            out[key] += 1
        return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True, help="where key.pem and cert.pem are written")
    p.add_argument("--service", required=True)
    p.add_argument("--issuer", required=True)
    p.add_argument("--user", required=True)
    p.add_argument(
        "--password",
        default=os.environ.get("CREDHOST_TEST_TOKEN_PASSWORD"),
        help="default: $CREDHOST_TEST_TOKEN_PASSWORD (keeps it out of ps)",
    )
    p.add_argument(
        "--expires-in",
        type=int,
        default=int(os.environ.get("CREDHOST_TEST_TOKEN_EXPIRES_IN", "300")),
        help="token lifetime in seconds (default $CREDHOST_TEST_TOKEN_EXPIRES_IN or 300)",
    )
    cfg = p.parse_args()
    if not cfg.password:
        p.error("--password or $CREDHOST_TEST_TOKEN_PASSWORD is required")

    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(message)s",
    )
    key, x5c = make_key_and_cert(cfg.dir, cfg.issuer)
    server = Server((cfg.host, cfg.port), TokenHandler)
    server.cfg = cfg
    server.key = key
    server.x5c = x5c
    server.issued = 0
    server.counter_lock = threading.Lock()
    log.info(
        "listening on http://%s:%d/token service=%s issuer=%s expires_in=%d",
        cfg.host, cfg.port, cfg.service, cfg.issuer, cfg.expires_in,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
