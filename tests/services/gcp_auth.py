#!/usr/bin/env python3
"""Google Cloud auth stand-ins for the gcp plugin's tests, in one process so
that they share one table of issued tokens:

token endpoint (--token-port): the OAuth2 token endpoint service-account keys
    and authorized_user files point at through their `token_uri`.
    POST /token  grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer
                 assertion=JWT: verified like Google does it -- RS256 signature
                 with the public half of the key registered for `iss` (and
                 `kid`), `aud` = this endpoint's URL, a cloud-platform or
                 devstorage `scope`, `iat` not in the future, `exp` after now
                 and at most an hour after `iat`. Answers
                 {"access_token", "expires_in", "token_type": "Bearer"} with
                 the lifetime registered for the account; else 400
                 {"error": "invalid_grant", "error_description": ...}.
    POST /token  grant_type=refresh_token client_id client_secret
                 refresh_token: authorized_user credentials.
    POST /_test/service-account[?lifetime=S]  a new key, as the JSON file
                 Google would hand out; only its public half is kept.
    POST /_test/authorized-user[?lifetime=S]  new authorized_user credentials.
    GET  /_test/tokeninfo?access_token=T  {"account", "expires_in"} or 400.
    GET  /_test/account?email=E  {"issued": N, "signed": M}.
    GET  /_test/issued[?since=N]  {"next": M, "tokens": [...]}: every access
                 token issued (by either endpoint) from the N-th on, in order,
                 and the count so far; a test remembers `next` before it runs
                 and then looks for each token issued meanwhile in what it saw.
    POST /v1/projects/-/serviceAccounts/EMAIL:signBlob {"payload": B64}: the
                 IAM Credentials API's signBlob, for a caller holding a current
                 token of that account (the metadata server's account
                 included): {"keyId", "signedBlob"}.
    GET  /healthz  readiness.

metadata server (--metadata-port): what GCE_METADATA_HOST points at.
    GET /computeMetadata/v1/instance/service-accounts/default/token, .../email,
    /computeMetadata/v1/project/project-id; requests without
    `Metadata-Flavor: Google` get 403, as on Google Cloud.

proxy (--proxy-port) in front of gcp-storage-emulator (--upstream), which
    never checks `Authorization`. The proxy refuses (401) every request that
    does not carry a current token from the endpoints above, and forwards the
    rest. V4 signed URLs of the XML API (`/BUCKET/OBJECT?X-Goog-Signature=...`,
    which the emulator lacks) need no token: the proxy checks them as GCS
    does (canonical request, string to sign, the account's key, expiry),
    refuses a bad one with 403, and carries out a good GET or PUT through the
    emulator's JSON API. It also injects the failures a real server cannot be made to
    produce on demand -- this part is a mock, and says so:
    POST /_proxy/fault {"object": NAME, "op": "upload"|"download", "n": N,
                        "mode": M, "keep": BYTES, "delay": SECONDS, "every": BOOL}
        arms a fault for the N-th data chunk PUT of NAME's upload sessions
        (op "upload") or the N-th media GET of NAME (op "download"); with
        "every", for that request and all later ones. Modes:
          drop     forward the chunk, then close the connection unanswered
                   (the server has the bytes, the client never hears so);
          partial  forward only the first `keep` bytes of the chunk as a
                   complete request, then close unanswered (the server holds
                   part of the chunk, as GCS may after a cut);
          error    answer 503 without forwarding;
          corrupt  flip one byte of the chunk and forward it;
          delay    wait `delay` seconds, then forward (a slow link);
          cut      (download) relay only the first `keep` body bytes, then
                   close.
    GET /_proxy/stats?object=NAME  what the proxy saw for NAME: requests,
        denied, tokens (distinct tokens used), initiations, chunks,
        status_queries, bytes_up (chunk bytes forwarded), media_gets,
        range_gets, bytes_down (media bytes relayed), faults, cancellations
        (DELETEs of upload sessions).

Every token decision is logged to stderr as one line, `token-issued {json}`,
`token-denied {json}` or `proxy-denied {json}`; tokens never appear in it
(tests ask /_test/issued for them).
"""

import argparse
import base64
import calendar
import hashlib
import http.client
import json
import os
import secrets
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

SCOPES = ("https://www.googleapis.com/auth/cloud-platform", "https://www.googleapis.com/auth/devstorage")
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade"}
PIECE = 1 << 20


class State:
    def __init__(self, project, token_lifetime, metadata_lifetime):
        self.lock = threading.Lock()
        self.project = project
        self.token_lifetime = token_lifetime
        self.metadata_lifetime = metadata_lifetime
        self.accounts = {}  # email -> {"key_id", "public", "lifetime"}
        self.users = {}  # client_id -> {"secret", "refresh", "lifetime"}
        self.tokens = {}  # token -> (expires_at, account)
        self.issued = {}  # account -> count
        self.issued_tokens = []  # every token, in the order issued
        self.signed = {}  # account -> signBlob calls
        self.uploads = {}  # upload_id -> object name
        self.stats = {}  # object name -> counters
        self.faults = []
        self.counter = 0

    def next_id(self):
        with self.lock:
            self.counter += 1
            return self.counter

    def issue(self, account, lifetime):
        token = "ya29.test-" + secrets.token_urlsafe(32)
        with self.lock:
            self.tokens[token] = (time.time() + lifetime, account)
            self.issued[account] = self.issued.get(account, 0) + 1
            self.issued_tokens.append(token)
        log("token-issued", account=account, lifetime=lifetime, token=fingerprint(token))
        return {"access_token": token, "expires_in": lifetime, "token_type": "Bearer"}

    def stat(self, name):
        return self.stats.setdefault(name, {
            "requests": 0, "denied": 0, "tokens": set(), "initiations": 0, "chunks": 0, "status_queries": 0,
            "bytes_up": 0, "media_gets": 0, "range_gets": 0, "bytes_down": 0, "faults": 0, "cancellations": 0})


STATE = None


def calendar_timegm(t):
    return calendar.timegm(t)


def log(event, **fields):
    print(f"{event} {json.dumps(fields, sort_keys=True)}", file=sys.stderr, flush=True)


def fingerprint(token):
    return hashlib.sha256(token.encode()).hexdigest()[:12]


class Handler(BaseHTTPRequestHandler):
    server_version = "credhost-gcp-stand-in"

    def log_message(self, fmt, *args):
        pass

    def reply(self, code, body=b"", content_type="application/json", headers=()):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def split(self):
        parts = urllib.parse.urlsplit(self.path)
        return parts.path, urllib.parse.parse_qs(parts.query)


# ------------------------------------------------------------ token endpoint

def new_key_pair():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return key, pem


def register_account(email, key, lifetime):
    """Google's side of an account: its key (IAM signBlob signs with it) and
    the lifetime of the tokens it gets."""
    key_id = secrets.token_hex(20)
    with STATE.lock:
        STATE.accounts[email] = {"key_id": key_id, "public": key.public_key(), "private": key, "lifetime": lifetime}
    return key_id


def new_service_account(token_uri, lifetime):
    key, pem = new_key_pair()
    n = STATE.next_id()
    email = f"sa-{n}@{STATE.project}.iam.gserviceaccount.com"
    key_id = register_account(email, key, lifetime)
    return {
        "type": "service_account",
        "project_id": STATE.project,
        "private_key_id": key_id,
        "private_key": pem,
        "client_email": email,
        "client_id": str(100000000000000000000 + n),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "universe_domain": "googleapis.com",
    }


def new_authorized_user(token_uri, lifetime):
    n = STATE.next_id()
    client_id = f"{n}-credhost-test.apps.googleusercontent.com"
    user = {"secret": secrets.token_urlsafe(18), "refresh": "1//" + secrets.token_urlsafe(40), "lifetime": lifetime}
    with STATE.lock:
        STATE.users[client_id] = user
    return {"type": "authorized_user", "client_id": client_id, "client_secret": user["secret"],
            "refresh_token": user["refresh"], "token_uri": token_uri}


class TokenHandler(Handler):
    def token_uri(self):
        return f"http://{self.server.server_address[0]}:{self.server.server_address[1]}/token"

    def deny(self, code, error, why):
        log("token-denied", error=error, reason=why)
        self.reply(code, {"error": error, "error_description": why})

    def do_GET(self):
        path, query = self.split()
        if path == "/healthz":
            return self.reply(200, "ok", "text/plain")
        if path == "/_test/tokeninfo":
            token = (query.get("access_token") or [""])[0]
            with STATE.lock:
                entry = STATE.tokens.get(token)
            if not entry or entry[0] <= time.time():
                return self.reply(400, {"error": "invalid_token"})
            return self.reply(200, {"account": entry[1], "expires_in": int(entry[0] - time.time())})
        if path == "/_test/issued":
            since = int((query.get("since") or ["0"])[0])
            with STATE.lock:
                return self.reply(200, {"next": len(STATE.issued_tokens), "tokens": STATE.issued_tokens[since:]})
        if path == "/_test/account":
            email = (query.get("email") or [""])[0]
            with STATE.lock:
                return self.reply(200, {"issued": STATE.issued.get(email, 0), "signed": STATE.signed.get(email, 0)})
        self.reply(404, {"error": "not_found"})

    def do_POST(self):
        path, query = self.split()
        lifetime = int((query.get("lifetime") or [STATE.token_lifetime])[0])
        if path == "/_test/service-account":
            self.body()
            return self.reply(200, new_service_account(self.token_uri(), lifetime))
        if path == "/_test/authorized-user":
            self.body()
            return self.reply(200, new_authorized_user(self.token_uri(), lifetime))
        if path.startswith("/v1/projects/-/serviceAccounts/") and path.endswith(":signBlob"):
            return self.sign_blob(urllib.parse.unquote(path[len("/v1/projects/-/serviceAccounts/"):-len(":signBlob")]))
        if path != "/token":
            return self.reply(404, {"error": "not_found"})
        form = {k: v[0] for k, v in urllib.parse.parse_qs(self.body().decode(errors="replace")).items()}
        grant = form.get("grant_type")
        if grant == JWT_BEARER:
            return self.jwt_grant(form.get("assertion", ""))
        if grant == "refresh_token":
            return self.refresh_grant(form)
        self.deny(400, "unsupported_grant_type", f"grant_type {grant!r} is not supported")

    def sign_blob(self, email):
        """The IAM Credentials API's signBlob: signs the payload with the
        account's key, for a caller holding a current token of that account."""
        body = json.loads(self.body() or b"{}")
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        with STATE.lock:
            entry = STATE.tokens.get(token) if token else None
            account = STATE.accounts.get(email)
        if entry is None or entry[0] <= time.time():
            return self.reply(401, {"error": {"code": 401, "message": "Request had invalid authentication credentials."}})
        if entry[1] != email or account is None or "private" not in account:
            return self.reply(403, {"error": {"code": 403, "message": f"Permission 'iam.serviceAccounts.signBlob' denied on {email}"}})
        signature = account["private"].sign(base64.b64decode(body.get("payload", "")), padding.PKCS1v15(), hashes.SHA256())
        with STATE.lock:
            STATE.signed[email] = STATE.signed.get(email, 0) + 1
        log("sign-blob", account=email)
        self.reply(200, {"keyId": account["key_id"], "signedBlob": base64.b64encode(signature).decode()})

    def jwt_grant(self, assertion):
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as e:
            return self.deny(400, "invalid_grant", f"malformed assertion: {e}")
        if header.get("alg") != "RS256":
            return self.deny(400, "invalid_grant", f"alg {header.get('alg')!r} is not RS256")
        email = claims.get("iss")
        with STATE.lock:
            account = STATE.accounts.get(email)
        if account is None:
            return self.deny(400, "invalid_grant", f"unknown service account {email!r}")
        if header.get("kid") not in (None, account["key_id"]):
            return self.deny(400, "invalid_grant", "kid names no key of this account")
        try:
            verified = jwt.decode(assertion, account["public"], algorithms=["RS256"], audience=self.token_uri(),
                                  options={"require": ["iss", "aud", "iat", "exp"]}, leeway=10)
        except jwt.InvalidSignatureError:
            return self.deny(400, "invalid_grant", "Invalid JWT Signature.")
        except jwt.PyJWTError as e:
            return self.deny(400, "invalid_grant", f"Invalid JWT: {e}")
        if verified["exp"] - verified["iat"] > 3600:
            return self.deny(400, "invalid_grant", "Invalid JWT: exp is more than an hour after iat")
        scopes = str(verified.get("scope", "")).split()
        if not any(s.startswith(SCOPES) for s in scopes):
            return self.deny(400, "invalid_scope", f"no usable scope in {scopes!r}")
        self.reply(200, STATE.issue(email, account["lifetime"]))

    def refresh_grant(self, form):
        with STATE.lock:
            user = STATE.users.get(form.get("client_id"))
        if user is None or user["secret"] != form.get("client_secret"):
            return self.deny(401, "invalid_client", "The OAuth client was not found.")
        if user["refresh"] != form.get("refresh_token"):
            return self.deny(400, "invalid_grant", "Bad Request")
        self.reply(200, STATE.issue(form["client_id"], user["lifetime"]))


# ----------------------------------------------------------- metadata server

class MetadataHandler(Handler):
    def do_GET(self):
        flavor = [("Metadata-Flavor", "Google")]
        path, _ = self.split()
        if path == "/":
            return self.reply(200, "computeMetadata/", "text/plain", flavor)
        if self.headers.get("Metadata-Flavor") != "Google":
            log("token-denied", error="forbidden", reason="metadata request without Metadata-Flavor: Google")
            return self.reply(403, "Missing Metadata-Flavor:Google header.", "text/plain", flavor)
        email = f"metadata-default@{STATE.project}.iam.gserviceaccount.com"
        if path == "/computeMetadata/v1/instance/service-accounts/default/token":
            return self.reply(200, STATE.issue(email, STATE.metadata_lifetime), headers=flavor)
        if path == "/computeMetadata/v1/instance/service-accounts/default/email":
            return self.reply(200, email, "text/plain", flavor)
        if path == "/computeMetadata/v1/project/project-id":
            return self.reply(200, STATE.project, "text/plain", flavor)
        self.reply(404, "not found", "text/plain", flavor)


# --------------------------------------------------------------------- proxy

class ProxyHandler(Handler):
    def object_of(self, path, query):
        if "upload_id" in query:
            with STATE.lock:
                return STATE.uploads.get(query["upload_id"][0])
        if "name" in query and path.endswith("/o"):
            return query["name"][0]
        for prefix in ("/storage/v1/b/", "/download/storage/v1/b/"):
            if path.startswith(prefix):
                rest = path[len(prefix):].split("/o/", 1)
                if len(rest) == 2:
                    return urllib.parse.unquote(rest[1])
        return None

    def take_fault(self, name, op, count):
        with STATE.lock:
            for f in STATE.faults:
                if f["object"] == name and f["op"] == op and (count == f["n"] or (f.get("every") and count >= f["n"])):
                    if not f.get("every"):
                        STATE.faults.remove(f)
                    STATE.stat(name)["faults"] += 1
                    return f
        return None

    def control(self, path, query):
        if path == "/_proxy/fault" and self.command == "POST":
            fault = json.loads(self.body() or b"{}")
            fault.setdefault("n", 1)
            with STATE.lock:
                STATE.faults.append(fault)
            return self.reply(200, {"armed": fault})
        if path == "/_proxy/stats":
            name = (query.get("object") or [""])[0]
            with STATE.lock:
                s = dict(STATE.stat(name))
            s["tokens"] = len(s["tokens"])
            return self.reply(200, s)
        self.reply(404, {"error": "unknown control path"})

    def handle_any(self):
        path, query = self.split()
        if path.startswith("/_proxy/"):
            return self.control(path, query)
        if "X-Goog-Signature" in query:
            return self.signed_url(path, query)
        name = self.object_of(path, query)
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        with STATE.lock:
            entry = STATE.tokens.get(token) if token else None
            stats = STATE.stat(name) if name else None
            if stats is not None:
                stats["requests"] += 1
                if token:
                    stats["tokens"].add(fingerprint(token))
        reason = None
        if token is None:
            reason = "no bearer token"
        elif entry is None:
            reason = "unknown token"
        elif entry[0] <= time.time():
            reason = f"token expired {time.time() - entry[0]:.1f}s ago"
        if reason:
            if stats is not None:
                with STATE.lock:
                    stats["denied"] += 1
            log("proxy-denied", method=self.command, path=path, object=name, reason=reason,
                token=fingerprint(token) if token else None)
            self.body()  # read it, so that the client gets the answer rather than a reset
            return self.reply(401, {"error": {"code": 401, "message": f"Invalid Credentials ({reason})",
                                              "errors": [{"reason": "authError"}]}},
                              headers=[("WWW-Authenticate", 'Bearer realm="https://accounts.google.com/"')])
        length = int(self.headers.get("Content-Length") or 0)
        fault = None
        chunk = self.command == "PUT" and "upload_id" in query
        content_range = self.headers.get("Content-Range", "")
        if chunk and name:
            if content_range.startswith("bytes */"):
                with STATE.lock:
                    stats["status_queries"] += 1
            else:
                with STATE.lock:
                    stats["chunks"] += 1
                    count = stats["chunks"]
                fault = self.take_fault(name, "upload", count)
        media = self.command == "GET" and name and (query.get("alt") == ["media"] or path.startswith("/download/"))
        if media:
            with STATE.lock:
                stats["media_gets"] += 1
                count = stats["media_gets"]
                if self.headers.get("Range"):
                    stats["range_gets"] += 1
            fault = self.take_fault(name, "download", count)
        if fault:
            log("proxy-fault", object=name, op=fault["op"], mode=fault["mode"], n=fault["n"])
        if self.command == "DELETE" and "upload_id" in query and name:
            # A client cancelling its resumable upload session.
            with STATE.lock:
                stats["cancellations"] += 1
        data_chunk = chunk and not content_range.startswith("bytes */")
        return self.forward(query, name, length, fault, data_chunk, media)

    def signed_url(self, path, query):
        """A V4 signed URL of the XML API (`/BUCKET/OBJECT?X-Goog-...`), which
        the emulator lacks: the signature is checked the way GCS checks it
        (canonical request, string to sign, RSA-SHA256 with the key of the
        account in X-Goog-Credential, expiry), then the request is carried
        out through the emulator's JSON API."""
        def refuse(why):
            self.body()
            log("signed-url-denied", method=self.command, reason=why)
            STATE.signed_denied = getattr(STATE, "signed_denied", 0) + 1
            return self.reply(403, f"<Error><Code>SignatureDoesNotMatch</Code><Message>{why}</Message></Error>",
                              "application/xml")
        one = {k: v[0] for k, v in query.items()}
        if one.get("X-Goog-Algorithm") != "GOOG4-RSA-SHA256":
            return refuse("unknown algorithm")
        try:
            email, date, location, service, request = one["X-Goog-Credential"].split("/")
            stamp = time.strptime(one["X-Goog-Date"], "%Y%m%dT%H%M%SZ")
            expires = int(one["X-Goog-Expires"])
        except (KeyError, ValueError):
            return refuse("malformed signature parameters")
        signed_at = calendar_timegm(stamp)
        if not 1 <= expires <= 604800:
            return refuse("X-Goog-Expires out of range")
        if signed_at > time.time() + 60:
            return refuse("signed in the future")
        if signed_at + expires < time.time():
            return refuse("the URL has expired")
        with STATE.lock:
            account = STATE.accounts.get(email)
        if account is None:
            return refuse(f"unknown account {email}")
        raw_path = urllib.parse.urlsplit(self.path).path
        raw_query = urllib.parse.urlsplit(self.path).query
        pairs = [p.split("=", 1) for p in raw_query.split("&") if p]
        canonical_query = "&".join(
            sorted(f"{urllib.parse.quote(urllib.parse.unquote(k), safe='-_.~')}={urllib.parse.quote(urllib.parse.unquote(v), safe='-_.~')}"
                   for k, v in pairs if urllib.parse.unquote(k) != "X-Goog-Signature"))
        signed_headers = one.get("X-Goog-SignedHeaders", "host").split(";")
        headers = "".join(f"{h}:{(self.headers.get(h) or '').strip()}\n" for h in signed_headers)
        canonical = f"{self.command}\n{raw_path}\n{canonical_query}\n{headers}\n{';'.join(signed_headers)}\nUNSIGNED-PAYLOAD"
        to_sign = "\n".join(["GOOG4-RSA-SHA256", one["X-Goog-Date"], f"{date}/{location}/{service}/{request}",
                              hashlib.sha256(canonical.encode()).hexdigest()])
        try:
            account["public"].verify(bytes.fromhex(one["X-Goog-Signature"]), to_sign.encode(), padding.PKCS1v15(),
                                     hashes.SHA256())
        except (InvalidSignature, ValueError):
            return refuse("the signature does not match")
        bucket, _, name = raw_path.lstrip("/").partition("/")
        name = urllib.parse.unquote(name)
        up = http.client.HTTPConnection(self.server.upstream[0], self.server.upstream[1], timeout=600)
        quoted = urllib.parse.quote(name, safe="")
        if self.command == "GET":
            up.request("GET", f"/download/storage/v1/b/{bucket}/o/{quoted}?alt=media")
            resp = up.getresponse()
            if resp.status != 200:
                resp.read()
                return self.reply(404, "<Error><Code>NoSuchKey</Code></Error>", "application/xml")
            self.send_response(200)
            self.send_header("Content-Length", resp.getheader("Content-Length") or "0")
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            while True:
                piece = resp.read(PIECE)
                if not piece:
                    break
                self.wfile.write(piece)
            return None
        if self.command == "PUT":
            body = self.body()
            up.request("POST", f"/upload/storage/v1/b/{bucket}/o?uploadType=media&name={urllib.parse.quote(name)}",
                       body=body, headers={"Content-Type": "application/octet-stream"})
            resp = up.getresponse()
            resp.read()
            return self.reply(200 if resp.status == 200 else 502, b"", "application/xml")
        return refuse(f"method {self.command} is not signed for")

    def forward(self, query, name, length, fault, data_chunk, media):
        mode = fault["mode"] if fault else None
        if mode == "delay":
            time.sleep(float(fault.get("delay", 1)))
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"content-length"}]
        body = None
        if mode in ("error", "partial", "corrupt"):
            body = self.rfile.read(length)
            if mode == "error":
                return self.reply(503, {"error": {"code": 503, "message": "injected failure"}})
            if mode == "corrupt":
                at = int(fault.get("keep", len(body) // 2))
                body = body[:at] + bytes([body[at] ^ 0xFF]) + body[at + 1:]
            if mode == "partial":
                keep = int(fault.get("keep", len(body) // 2))
                start = int(self.headers["Content-Range"].split(" ")[1].split("-")[0])
                body = body[:keep]
                headers = [(k, v) for k, v in headers if k.lower() != "content-range"]
                headers.append(("Content-Range", f"bytes {start}-{start + keep - 1}/*"))
            length = len(body)
        up = http.client.HTTPConnection(self.server.upstream[0], self.server.upstream[1], timeout=600)
        up.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for k, v in headers:
            up.putheader(k, v)
        if length or self.command in ("POST", "PUT", "PATCH"):
            up.putheader("Content-Length", str(length))
        up.endheaders()
        if body is not None:
            up.send(body)
        else:
            left = length
            while left:
                piece = self.rfile.read(min(PIECE, left))
                if not piece:
                    break
                up.send(piece)
                left -= len(piece)
        if name and data_chunk or (name and self.command == "POST" and query.get("uploadType") == ["multipart"]):
            with STATE.lock:
                STATE.stat(name)["bytes_up"] += length
        resp = up.getresponse()
        if self.command == "POST" and query.get("uploadType") == ["resumable"] and name and resp.status == 200:
            location = resp.getheader("Location") or ""
            upload_id = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query).get("upload_id")
            with STATE.lock:
                STATE.stat(name)["initiations"] += 1
                if upload_id:
                    STATE.uploads[upload_id[0]] = name
        if mode in ("drop", "partial"):
            resp.read()
            up.close()
            self.close_unanswered()
            return
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP | {"server", "date"}:
                self.send_header(k, v)
        self.end_headers()
        limit = int(fault.get("keep", 0)) if mode == "cut" else None
        sent = 0
        while True:
            piece = resp.read(PIECE if limit is None else min(PIECE, limit - sent))
            if not piece:
                break
            self.wfile.write(piece)
            sent += len(piece)
            if limit is not None and sent >= limit:
                break
        up.close()
        if media:
            with STATE.lock:
                STATE.stat(name)["bytes_down"] += sent
        if mode == "cut":
            self.close_unanswered()

    def close_unanswered(self):
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.shutdown(2)
        except OSError:
            pass

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    global STATE
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--token-port", type=int, required=True)
    p.add_argument("--metadata-port", type=int, required=True)
    p.add_argument("--proxy-port", type=int, required=True)
    p.add_argument("--upstream", required=True, help="HOST:PORT of gcp-storage-emulator")
    p.add_argument("--dir", required=True, help="where to write service-account.json")
    p.add_argument("--project", default="credhost-test")
    p.add_argument("--token-lifetime", type=int, default=3600)
    p.add_argument("--metadata-lifetime", type=int, default=3600)
    a = p.parse_args()
    STATE = State(a.project, a.token_lifetime, a.metadata_lifetime)
    # The metadata server's account: Google holds its key, and signs with it
    # through signBlob.
    register_account(f"metadata-default@{a.project}.iam.gserviceaccount.com",
                     new_key_pair()[0], a.metadata_lifetime)
    host, port = a.upstream.rsplit(":", 1)
    servers = [Server(("127.0.0.1", a.metadata_port), MetadataHandler),
               Server(("127.0.0.1", a.proxy_port), ProxyHandler)]
    servers[1].upstream = (host, int(port))
    token_server = Server(("127.0.0.1", a.token_port), TokenHandler)
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    os.makedirs(a.dir, exist_ok=True)
    key = new_service_account(f"http://127.0.0.1:{a.token_port}/token", a.token_lifetime)
    path = os.path.join(a.dir, "service-account.json")
    with open(path + ".tmp", "w") as f:
        json.dump(key, f, indent=2)
    os.chmod(path + ".tmp", 0o600)
    os.replace(path + ".tmp", path)
    log("ready", token_port=a.token_port, metadata_port=a.metadata_port, proxy_port=a.proxy_port,
        account=key["client_email"])
    # The token endpoint's /healthz answers last: once it does, all is up.
    token_server.serve_forever()


if __name__ == "__main__":
    main()
