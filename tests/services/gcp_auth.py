#!/usr/bin/env python3
"""Google Cloud auth stand-ins for the gcp plugin's tests, in one process so
that they share one table of issued tokens:

token endpoint (--token-port): the OAuth2 token endpoint service-account keys
    and authorized_user files point at through their `token_uri`, and the
    parts of the IAM Credentials and STS APIs that impersonation,
    downscoping and Workload Identity Federation use (CREDHOST_TEST_GCP_AUTH,
    CREDHOST_TEST_GCP_IAM_ENDPOINT and CREDHOST_TEST_GCP_STS_ENDPOINT all
    name this server).
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
    GET  /_test/tokeninfo?access_token=T  {"account", "expires_in", "source",
                 "scopes", "boundary"} or 400: source is oauth, metadata,
                 generated or exchanged; scopes are known (else null) for
                 generated tokens and the tokens exchanged from them;
                 boundary is a downscoped token's accessBoundary (else null).
    GET  /_test/account?email=E  {"issued": N, "signed": M, "generated": G,
                 "exchanged": X, "federated": F}: tokens of E issued by any
                 endpoint, signBlob calls, tokens generateAccessToken minted
                 for E, downscoped tokens of E, federated tokens of E (E a
                 principal://... then).
    GET  /_test/issued[?since=N]  {"next": M, "tokens": [...]}: every access
                 token issued (by either endpoint) from the N-th on, in order,
                 and the count so far; a test remembers `next` before it runs
                 and then looks for each token issued meanwhile in what it saw.
    POST /v1/projects/-/serviceAccounts/EMAIL:signBlob {"payload": B64}: the
                 IAM Credentials API's signBlob, for a caller holding a current
                 token of that account (the metadata server's account
                 included): {"keyId", "signedBlob"}.
    POST /v1/projects/-/serviceAccounts/EMAIL:generateAccessToken
                 {"lifetime": "900s", "scope": [SCOPE, ...], "delegates":
                 ["projects/-/serviceAccounts/EMAIL2", ...]}: the IAM
                 Credentials API's generateAccessToken (base URL:
                 CREDHOST_TEST_GCP_IAM_ENDPOINT). `Authorization: Bearer T`
                 with T a current token from here, not downscoped (else 401;
                 a downscoped one 403). Any account may impersonate any
                 registered account and any NAME@PROJECT.iam.gserviceaccount.com
                 (NAME 6-30 of a-z0-9-, registered on first use with a key of
                 its own); another email, as target or delegate, gets 403
                 PERMISSION_DENIED. lifetime is a duration string, default
                 3600s, 1s..3600s (null delegates or lifetime are the
                 defaults; else 400 INVALID_ARGUMENT, as are a missing
                 or empty scope list, unknown fields and malformed JSON).
                 Answers {"accessToken": "ya29.test-...", "expireTime":
                 "YYYY-MM-DDTHH:MM:SSZ"}; the token belongs to EMAIL, lives
                 until expireTime (whole seconds, at most `lifetime`), is
                 listed by /_test/issued, and carries its scopes: the proxy
                 lets it read with cloud-platform(.read-only) or
                 devstorage.read_only/read_write/full_control, and write
                 with cloud-platform or devstorage.read_write/full_control
                 only (else 403 "insufficient authentication scopes").
                 Errors: {"error": {"code", "message", "status"}}.
                 A federated token (see Workload Identity Federation below)
                 may call it too, its principal being the caller, when it
                 carries the cloud-platform or iam scope (else 403
                 PERMISSION_DENIED "Request had insufficient authentication
                 scopes."); any principal may impersonate (as if it held
                 roles/iam.workloadIdentityUser everywhere).
    GET  /_test/generated[?since=N]  {"next": M, "calls": [...]}: every
                 generateAccessToken call from the N-th on, in order, each
                 {"time", "caller" (account of the bearer token -- for a
                 federated token its principal://... -- null if it was not
                 current), "caller_source" (that token's source: oauth,
                 metadata, generated, exchanged or federated; null),
                 "target", "lifetime", "scope", "delegates" (as sent),
                 "status", "error", "token", "expireTime"}.
    POST /v1/token  (form-encoded, as sts.googleapis.com; base URL:
                 CREDHOST_TEST_GCP_STS_ENDPOINT) token exchange for
                 downscoping: grant_type=urn:ietf:params:oauth:grant-type:token-exchange,
                 subject_token_type and requested_token_type both
                 urn:ietf:params:oauth:token-type:access_token,
                 subject_token=T (a current token from here, not itself
                 downscoped), options=URL-encoded JSON (once or, as
                 google-auth sends it, twice; a "userProject" may sit beside
                 "accessBoundary"):
                   {"accessBoundary": {"accessBoundaryRules": [
                     {"availablePermissions": ["inRole:roles/storage.objectViewer"],
                      "availableResource": "//storage.googleapis.com/projects/_/buckets/BUCKET",
                      "availabilityCondition": {"expression": EXPR,
                                                "title": ..., "description": ...}}]}}
                 1 to 10 rules; roles storage.objectViewer (objects.get and
                 objects.list) and storage.legacyObjectReader (objects.get)
                 only; availabilityCondition optional; EXPR is
                 resource.name == 'projects/_/buckets/B/objects/NAME',
                 resource.name.startsWith('projects/_/buckets/B/objects/PREFIX'),
                 or an || of them (parentheses allowed). Answers
                 {"access_token", "issued_token_type", "token_type": "Bearer",
                 "expires_in"}: a token of the subject's account (listed by
                 /_test/issued) that expires with the subject token.
                 Anything malformed, unsupported or unknown, and a subject
                 token that is not current, gets 400 {"error",
                 "error_description"} as STS answers.
    POST /v1/token  Workload Identity Federation (with --workload-provider,
                 --oidc-issuer, --oidc-jwks): an OIDC token of an external
                 issuer (a Kubernetes projected service-account token, say)
                 exchanged for a federated access token, as STS does it:
                 grant_type=urn:ietf:params:oauth:grant-type:token-exchange,
                 subject_token_type urn:ietf:params:oauth:token-type:jwt (or
                 ...:id_token), requested_token_type ...:access_token,
                 audience=//iam.googleapis.com/projects/NUM/locations/global/
                 workloadIdentityPools/POOL/providers/PROVIDER (a configured
                 provider), scope=SCOPE[ SCOPE...] (required; Google OAuth
                 scopes), subject_token=JWT, options (optional, a
                 "userProject" only). The JWT must be RS256, signed by a key
                 of the JWKS file (by `kid`; without one, any of its RSA
                 keys; the file is read again whenever it changes), `iss`
                 the issuer, `aud` (a string or a list) holding an allowed
                 audience (by default https://iam.googleapis.com/ + the
                 provider's resource, or //iam.googleapis.com/ + it;
                 --workload-allowed-audience replaces both), `iat` and `exp`
                 present, `exp` after now, `iat` and `nbf` at most 60 s ahead,
                 a `sub` of 1 to 127 bytes (google.subject=assertion.sub).
                 Answers {"access_token", "issued_token_type", "token_type":
                 "Bearer", "expires_in": min(3600, exp - now)}: a token whose
                 account is principal://iam.googleapis.com/projects/NUM/
                 locations/global/workloadIdentityPools/POOL/subject/SUB
                 (source "federated", with the requested scopes), listed by
                 /_test/issued. The proxy refuses it (403: no IAM binding
                 grants a principal anything here); generateAccessToken
                 takes it. Refusals, as STS words them:
                   400 invalid_request  Invalid value for "audience". ...
                                        (not a provider resource name)
                   400 invalid_target   The target service indicated by the
                                        "audience" parameters is invalid. ...
                                        (no such provider here)
                   400 invalid_grant    The audience in ID Token [A, B] does
                                        not match the expected audience.
                   400 invalid_grant    The issuer in ID Token ISS does not
                                        match the expected one in config: URL
                   400 invalid_grant    Unable to verify the ID Token signature.
                   400 invalid_grant    Error connecting to the given
                                        credential's issuer. (a `kid` the JWKS
                                        lacks, or an unreadable JWKS file)
                   400 invalid_grant    ID Token issued at IAT is stale to
                                        sign-in. (expired, or no exp; IAT
                                        "null" without iat)
                   400 invalid_request  The size of mapped attribute
                                        google.subject exceeds the 127 bytes
                                        limit. ...
                 and, worded here: a token not yet valid (iat/nbf), not
                 RS256, unparsable; a missing sub; a missing or non-Google
                 scope; options other than userProject.
    GET  /_test/exchanges[?since=N]  {"next": M, "exchanges": [...]}: every
                 token exchange from the N-th on, each {"time", "kind"
                 ("downscope" or "federation"), "subject" (downscoping: the
                 subject token's account, null if it was not current;
                 federation: the JWT's `sub` as sent, null if it could not
                 be read), "boundary" (the accessBoundary as sent; null for
                 federation), "audience" (as sent; null for downscoping),
                 "issuer" (the JWT's `iss` as sent; null for downscoping),
                 "scope" (as sent), "principal" (the federated token's
                 principal, null unless it succeeded), "status", "error",
                 "expires_in", "token"}.
    GET  /healthz  readiness.

metadata server (--metadata-port): what GCE_METADATA_HOST points at.
    GET /computeMetadata/v1/instance/service-accounts/default/token, .../email,
    /computeMetadata/v1/project/project-id; requests without
    `Metadata-Flavor: Google` get 403, as on Google Cloud.

proxy (--proxy-port) in front of a GCS emulator (--upstream:
    gcp-storage-emulator or fake-gcs-server; both options repeat, one proxy
    per upstream, sharing tokens, faults and statistics), which never
    checks `Authorization`. The proxy refuses (401) every request that
    does not carry a current token from the endpoints above. It refuses
    (403, {"error": {"code": 403, "message", "errors": [{"reason":
    "forbidden"}]}}) what a current token may not do: anything for a
    federated token (of a principal://..., downscoped or not: no bucket
    here grants a principal a role), past a generated token's scopes (see
    above), and past a downscoped token's boundary. A
    downscoped token may only
      - read an object: GET or HEAD of /storage/v1/b/B/o/NAME (metadata, or
        media with alt=media) or of /download/storage/v1/b/B/o/NAME, when a
        rule names bucket B and its condition (if any) holds for
        projects/_/buckets/B/objects/NAME;
      - list a bucket: GET /storage/v1/b/B/o, when a storage.objectViewer
        rule names B and its condition (if any) holds for
        projects/_/buckets/B -- so never with a condition on object names.
    Every other request (an object or a listing no rule allows, an upload,
    a delete, a patch, a rewrite, bucket metadata) gets 403. gcp-storage-emulator answers HEAD
    with 501, so the proxy sends a HEAD on as a GET and relays only the
    status and headers. The proxy forwards the rest.
    V4 signed URLs of the XML API (`/BUCKET/OBJECT?X-Goog-Signature=...`,
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
        (DELETEs of upload sessions), forbidden (refused with 403 for the
        token's scopes or boundary).

Every token decision is logged to stderr as one line, `token-issued {json}`,
`token-denied {json}`, `generate-access-token {json}`, `generate-denied
{json}`, `token-exchanged {json}`, `token-federated {json}`, `exchange-denied
{json}` (for federation with a `detail` beyond the description), `proxy-denied
{json}` or `proxy-forbidden {json}`; tokens never appear in it (tests ask
/_test/issued for them).
"""

import argparse
import base64
import calendar
import hashlib
import http.client
import json
import os
import re
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
        # token -> (expires_at, account, {"source", "scopes", "boundary", "rules"}):
        # scopes are known (and enforced by the proxy) for generateAccessToken
        # tokens and the tokens exchanged from them; boundary is the
        # accessBoundary of a downscoped token, rules its parsed form.
        self.tokens = {}
        self.issued = {}  # account -> count
        self.issued_tokens = []  # every token, in the order issued
        self.signed = {}  # account -> signBlob calls
        self.generated = {}  # account -> tokens generateAccessToken minted for it
        self.exchanged = {}  # account -> downscoped tokens of it
        self.federated = {}  # principal -> federated tokens of it
        self.federation = None  # a Federation, with --workload-provider
        self.generate_calls = []  # every generateAccessToken call, in order
        self.exchanges = []  # every STS token exchange, in order
        self.uploads = {}  # upload_id -> object name
        self.stats = {}  # object name -> counters
        self.faults = []
        self.counter = 0

    def next_id(self):
        with self.lock:
            self.counter += 1
            return self.counter

    def issue(self, account, lifetime, expires_at=None, source="oauth", scopes=None, boundary=None, rules=None):
        """A new access token of `account`, current for `lifetime` seconds
        (or until `expires_at`)."""
        token = "ya29.test-" + secrets.token_urlsafe(32)
        if expires_at is None:
            expires_at = time.time() + lifetime
        info = {"source": source, "scopes": scopes, "boundary": boundary, "rules": rules}
        with self.lock:
            self.tokens[token] = (expires_at, account, info)
            self.issued[account] = self.issued.get(account, 0) + 1
            self.issued_tokens.append(token)
        log("token-issued", account=account, lifetime=lifetime, token=fingerprint(token), source=source,
            downscoped=boundary is not None)
        return {"access_token": token, "expires_in": lifetime, "token_type": "Bearer"}

    def stat(self, name):
        return self.stats.setdefault(name, {
            "requests": 0, "denied": 0, "tokens": set(), "initiations": 0, "chunks": 0, "status_queries": 0,
            "bytes_up": 0, "media_gets": 0, "range_gets": 0, "bytes_down": 0, "faults": 0, "cancellations": 0,
            "forbidden": 0})


STATE = None


def calendar_timegm(t):
    return calendar.timegm(t)


def log(event, **fields):
    print(f"{event} {json.dumps(fields, sort_keys=True)}", file=sys.stderr, flush=True)


def fingerprint(token):
    return hashlib.sha256(token.encode()).hexdigest()[:12]


# ------------------------------------------- access boundaries and scopes

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPES = ("urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:id_token")
# The roles a boundary rule may name, as the storage permissions they hold
# that the proxy can tell apart. Roles that grant writes are refused at
# exchange time rather than half enforced.
BOUNDARY_ROLES = {
    "roles/storage.objectViewer": {"storage.objects.get", "storage.objects.list"},
    "roles/storage.legacyObjectReader": {"storage.objects.get"},
}
BUCKET_RESOURCE = "//storage.googleapis.com/projects/_/buckets/"
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
MAX_BOUNDARY_RULES = 10
# OAuth scopes of generateAccessToken tokens, as GCS reads them.
WRITE_SCOPES = {"https://www.googleapis.com/auth/cloud-platform",
                "https://www.googleapis.com/auth/devstorage.full_control",
                "https://www.googleapis.com/auth/devstorage.read_write"}
READ_SCOPES = WRITE_SCOPES | {"https://www.googleapis.com/auth/cloud-platform.read-only",
                              "https://www.googleapis.com/auth/devstorage.read_only"}
MAX_GENERATED_LIFETIME = 3600
SERVICE_ACCOUNT_ID = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")


class BadRequest(ValueError):
    pass


def parse_condition(text):
    """An availabilityCondition expression, as a list of ("==" | "startsWith",
    STRING) tests of resource.name, any of which may hold. Grammar:
        expr := term ("||" term)*
        term := "(" expr ")" | "resource.name" "==" STRING
              | "resource.name.startsWith(" STRING ")"
    STRING is single- or double-quoted, without escapes. Anything else
    raises BadRequest."""
    pos = 0

    def space():
        nonlocal pos
        while pos < len(text) and text[pos].isspace():
            pos += 1

    def take(word):
        nonlocal pos
        space()
        if text.startswith(word, pos):
            pos += len(word)
            return True
        return False

    def string():
        nonlocal pos
        space()
        if pos >= len(text) or text[pos] not in "'\"":
            raise BadRequest(f"expected a quoted string at offset {pos} of the expression")
        quote = text[pos]
        end = text.find(quote, pos + 1)
        if end < 0:
            raise BadRequest("unterminated string in the expression")
        value = text[pos + 1:end]
        if "\\" in value:
            raise BadRequest("escapes in expression strings are not supported here")
        pos = end + 1
        return value

    def term():
        if take("("):
            tests = expr()
            if not take(")"):
                raise BadRequest(f"expected ')' at offset {pos} of the expression")
            return tests
        if take("resource.name.startsWith("):
            value = string()
            if not take(")"):
                raise BadRequest(f"expected ')' at offset {pos} of the expression")
            return [("startsWith", value)]
        if take("resource.name"):
            if take("=="):
                return [("==", string())]
        raise BadRequest("unsupported availabilityCondition expression (supported: resource.name == '...', "
                         "resource.name.startsWith('...'), and || of them)")

    def expr():
        tests = term()
        while take("||"):
            tests += term()
        return tests

    if not isinstance(text, str) or not text.strip():
        raise BadRequest("availabilityCondition.expression must be a non-empty string")
    tests = expr()
    space()
    if pos != len(text):
        raise BadRequest(f"unexpected text at offset {pos} of the expression: {text[pos:pos + 20]!r}")
    return tests


def parse_access_boundary(options):
    """The accessBoundary of an STS `options` value, checked: returns
    (the boundary as given, its rules as [{"bucket", "permissions",
    "condition": tests or None}]). Raises BadRequest."""
    if not isinstance(options, dict):
        raise BadRequest("options must be a JSON object")
    unknown = set(options) - {"accessBoundary", "userProject"}
    if unknown:
        raise BadRequest(f"unknown options field(s) {sorted(unknown)}")
    boundary = options.get("accessBoundary")
    if not isinstance(boundary, dict) or set(boundary) != {"accessBoundaryRules"}:
        raise BadRequest("options.accessBoundary must be an object holding accessBoundaryRules only")
    rules = boundary["accessBoundaryRules"]
    if not isinstance(rules, list) or not 1 <= len(rules) <= MAX_BOUNDARY_RULES:
        raise BadRequest(f"accessBoundaryRules must be a list of 1 to {MAX_BOUNDARY_RULES} rules")
    parsed = []
    for i, rule in enumerate(rules):
        where = f"accessBoundaryRules[{i}]"
        if not isinstance(rule, dict):
            raise BadRequest(f"{where} must be an object")
        unknown = set(rule) - {"availablePermissions", "availableResource", "availabilityCondition"}
        if unknown:
            raise BadRequest(f"{where} has unknown field(s) {sorted(unknown)}")
        perms = rule.get("availablePermissions")
        if not isinstance(perms, list) or not perms or not all(isinstance(p, str) for p in perms):
            raise BadRequest(f"{where}.availablePermissions must be a non-empty list of strings")
        granted = set()
        for perm in perms:
            if not perm.startswith("inRole:"):
                raise BadRequest(f"{where}.availablePermissions: {perm!r} is not of the form inRole:ROLE")
            role = perm[len("inRole:"):]
            if role not in BOUNDARY_ROLES:
                raise BadRequest(f"{where}.availablePermissions: role {role!r} is not one this test server "
                                 f"enforces ({', '.join(sorted(BOUNDARY_ROLES))})")
            granted |= BOUNDARY_ROLES[role]
        resource = rule.get("availableResource")
        if not isinstance(resource, str) or not resource.startswith(BUCKET_RESOURCE) or \
                not BUCKET_NAME.fullmatch(resource[len(BUCKET_RESOURCE):]):
            raise BadRequest(f"{where}.availableResource must be {BUCKET_RESOURCE}BUCKET")
        condition = None
        if "availabilityCondition" in rule:
            cond = rule["availabilityCondition"]
            if not isinstance(cond, dict) or "expression" not in cond or \
                    set(cond) - {"expression", "title", "description"}:
                raise BadRequest(f"{where}.availabilityCondition must be an object with an expression "
                                 "(and optionally a title and a description)")
            for field in ("title", "description"):
                if field in cond and not isinstance(cond[field], str):
                    raise BadRequest(f"{where}.availabilityCondition.{field} must be a string")
            condition = parse_condition(cond["expression"])
        parsed.append({"bucket": resource[len(BUCKET_RESOURCE):], "permissions": granted, "condition": condition})
    return boundary, parsed


def boundary_allows(rules, permission, bucket, name):
    """Whether a downscoped token may use `permission` on an object of
    `bucket` (or, with no name, on the bucket): one rule must name the bucket
    and the permission, and its condition hold for the resource's name."""
    resource = f"projects/_/buckets/{bucket}" + (f"/objects/{name}" if name is not None else "")
    for rule in rules:
        if rule["bucket"] != bucket or permission not in rule["permissions"]:
            continue
        if rule["condition"] is None or any(
                resource == value if op == "==" else resource.startswith(value) for op, value in rule["condition"]):
            return True
    return False


def storage_permission(method, path):
    """The GCS permission a JSON API request needs, with the bucket and the
    object name it acts on (None when it acts on the bucket or on no bucket)."""
    for prefix in ("/storage/v1/b/", "/download/storage/v1/b/", "/upload/storage/v1/b/"):
        if path.startswith(prefix):
            bucket, _, rest = path[len(prefix):].partition("/")
            bucket = urllib.parse.unquote(bucket)
            break
    else:
        return "unknown", None, None
    if rest.startswith("o/") and len(rest) > 2:
        name = urllib.parse.unquote(rest[2:])
        if prefix != "/upload/storage/v1/b/" and method in ("GET", "HEAD"):
            return "storage.objects.get", bucket, name
        if method == "DELETE":
            return "storage.objects.delete", bucket, name
        return ("storage.objects.update" if method in ("PATCH", "PUT") else "storage.objects.create"), bucket, name
    if rest == "o":
        if method == "GET" and prefix == "/storage/v1/b/":
            return "storage.objects.list", bucket, None
        return "storage.objects.create", bucket, None
    if rest == "" and method == "GET":
        return "storage.buckets.get", bucket, None
    return "unknown", bucket, None


def forbidden_body(message):
    return {"error": {"code": 403, "message": message,
                      "errors": [{"message": message, "domain": "global", "reason": "forbidden"}]}}


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


# ------------------------------------------------ Workload Identity Federation

IAM_PREFIX = "//iam.googleapis.com/"
# A provider resource as --workload-provider names it (Google wants the
# project's number; pool and provider ids are not held to Google's 4-32
# characters here).
PROVIDER_RESOURCE = re.compile(
    r"projects/(\d+)/locations/global/workloadIdentityPools/([a-z0-9][a-z0-9-]*)/providers/([a-z0-9][a-z0-9-]*)")
# What STS takes for the `audience` parameter's form; anything else is not
# even a provider name (invalid_request), a name no provider has is
# invalid_target.
AUDIENCE_FORM = re.compile(
    r"//iam\.googleapis\.com/(projects/[^/]+/locations/[^/]+/workloadIdentityPools/[^/]+/providers/[^/]+"
    r"|locations/[^/]+/workforcePools/[^/]+/providers/[^/]+)")
INVALID_AUDIENCE = ('Invalid value for "audience". This value should be the full resource name of the Identity '
                    'Provider. See https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token for the '
                    'list of possible formats.')
INVALID_TARGET = ('The target service indicated by the "audience" parameters is invalid. This might either be '
                  "because the pool or provider is disabled or deleted or because it doesn't exist.")
ISSUER_UNREACHABLE = "Error connecting to the given credential's issuer."
BAD_SIGNATURE = "Unable to verify the ID Token signature."
SUBJECT_TOO_LONG = ("The size of mapped attribute google.subject exceeds the 127 bytes limit. Either modify your "
                    "attribute mapping or the incoming assertion to produce a mapped attribute that is less than "
                    "127 bytes.")
MAX_FEDERATED_LIFETIME = 3600
# STS takes an iat (or nbf) up to about a minute ahead of its clock. It
# takes an exp up to a minute behind too, but then hands out a token that is
# dead or nearly so: here an exp must be ahead.
CLOCK_SKEW = 60
# generateAccessToken wants one of these on a federated caller's token.
IAM_CALLER_SCOPES = {"https://www.googleapis.com/auth/cloud-platform", "https://www.googleapis.com/auth/iam"}


class Federation:
    """The workload identity pool providers this server plays: each trusts
    one OIDC issuer, whose keys are a JWKS file (re-read when it changes, so
    that it may be written after the server starts or rotated), and accepts
    tokens whose `aud` holds one of its allowed audiences."""

    def __init__(self, providers, issuer, jwks_path, allowed_audiences):
        self.issuer = issuer
        self.jwks_path = jwks_path
        self.providers = {}  # //iam.googleapis.com/RESOURCE -> {"resource", "project_number", "pool", "audiences"}
        for resource in providers:
            if resource.startswith(IAM_PREFIX):
                resource = resource[len(IAM_PREFIX):]
            m = PROVIDER_RESOURCE.fullmatch(resource)
            if m is None:
                raise ValueError(f"--workload-provider {resource!r} is not "
                                 "projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER")
            audiences = list(allowed_audiences) if allowed_audiences else [
                "https://iam.googleapis.com/" + resource, IAM_PREFIX + resource]
            self.providers[IAM_PREFIX + resource] = {"resource": resource, "project_number": m.group(1),
                                                     "pool": m.group(2), "audiences": audiences}
        self.lock = threading.Lock()
        self.loaded = None  # (mtime_ns, size) of the file the keys came from
        self.keys = []  # [(kid or None, public key)]

    def principal(self, provider, subject):
        return (f"principal://iam.googleapis.com/projects/{provider['project_number']}/locations/global/"
                f"workloadIdentityPools/{provider['pool']}/subject/{subject}")

    def jwks(self):
        """The issuer's RSA keys, from the JWKS file as it is now. Raises
        OSError or ValueError when it cannot be read."""
        st = os.stat(self.jwks_path)
        stamp = (st.st_mtime_ns, st.st_size)
        with self.lock:
            if self.loaded == stamp:
                return self.keys
        with open(self.jwks_path) as f:
            doc = json.load(f)
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise ValueError("not a JWKS: no \"keys\" list")
        keys = []
        for jwk in doc["keys"]:
            if not isinstance(jwk, dict) or jwk.get("kty") != "RSA" or jwk.get("use", "sig") != "sig":
                continue
            try:
                keys.append((jwk.get("kid"), jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(jwk))))
            except (jwt.PyJWTError, ValueError, KeyError, TypeError) as e:
                raise ValueError(f"bad RSA key {jwk.get('kid')!r}: {e}") from None
        if not keys:
            raise ValueError("the JWKS holds no RSA signing key")
        with self.lock:
            self.loaded, self.keys = stamp, keys
        log("jwks-loaded", path=self.jwks_path, kids=[k for k, _ in keys])
        return keys


class Refused(Exception):
    """An STS refusal: the error code, Google's description, and what
    went wrong in more words (for the log only)."""

    def __init__(self, error, description, detail=None):
        super().__init__(description)
        self.error, self.description, self.detail = error, description, detail


def numeric_claim(claims, name):
    value = claims.get(name)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def verify_subject_token(federation, provider, token, now):
    """The claims of an external OIDC token, checked as STS checks them for
    an OIDC provider; raises Refused."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as e:
        raise Refused("invalid_grant", "Unable to parse the ID Token.", str(e)) from None
    alg = header.get("alg")
    if alg != "RS256":
        raise Refused("invalid_grant", f"The ID Token is signed with {alg!r}: only RS256 is supported here.")
    try:
        keys = federation.jwks()
    except (OSError, ValueError) as e:
        raise Refused("invalid_grant", ISSUER_UNREACHABLE, f"JWKS {federation.jwks_path}: {e}") from None
    kid = header.get("kid")
    candidates = [key for k, key in keys if k == kid] if kid is not None else [key for _, key in keys]
    if not candidates:
        raise Refused("invalid_grant", ISSUER_UNREACHABLE, f"kid {kid!r} is not in the issuer's JWKS")
    payload = None
    for key in candidates:
        try:
            payload = jwt.PyJWS().decode_complete(token, key=key, algorithms=["RS256"])["payload"]
            break
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError as e:
            raise Refused("invalid_grant", "Unable to parse the ID Token.", str(e)) from None
    if payload is None:
        raise Refused("invalid_grant", BAD_SIGNATURE, f"no key of the JWKS verifies it (kid {kid!r})")
    try:
        claims = json.loads(payload)
    except ValueError:
        claims = None
    if not isinstance(claims, dict):
        raise Refused("invalid_grant", "Unable to parse the ID Token.", "the payload is not a JSON object")
    iss = claims.get("iss")
    if iss != federation.issuer:
        shown = "null" if iss is None else iss
        raise Refused("invalid_grant",
                      f"The issuer in ID Token {shown} does not match the expected one in config: {federation.issuer}")
    aud = claims.get("aud")
    auds = [aud] if isinstance(aud, str) else [a for a in aud if isinstance(a, str)] if isinstance(aud, list) else []
    if not set(auds) & set(provider["audiences"]):
        raise Refused("invalid_grant", f"The audience in ID Token [{', '.join(auds)}] does not match the expected "
                      "audience.", f"allowed: {provider['audiences']}")
    iat, exp, nbf = numeric_claim(claims, "iat"), numeric_claim(claims, "exp"), numeric_claim(claims, "nbf")
    stale = f"ID Token issued at {'null' if iat is None else int(iat)} is stale to sign-in."
    if iat is None:
        raise Refused("invalid_grant", stale, "no iat")
    if exp is None:
        raise Refused("invalid_grant", stale, "no exp")
    if exp <= now:
        raise Refused("invalid_grant", stale, f"expired {now - exp:.0f}s ago")
    if iat > now + CLOCK_SKEW:
        raise Refused("invalid_grant", f"The ID Token is not yet valid: it was issued at {int(iat)}, "
                      f"{iat - now:.0f}s from now.")
    if nbf is not None and nbf > now + CLOCK_SKEW:
        raise Refused("invalid_grant", f"The ID Token is not yet valid before {int(nbf)}, {nbf - now:.0f}s from now.")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise Refused("invalid_request", "The mapped attribute google.subject (google.subject=assertion.sub) is "
                      "empty: the ID Token has no sub.")
    if len(sub.encode()) > 127:
        raise Refused("invalid_request", SUBJECT_TOO_LONG, f"sub is {len(sub.encode())} bytes")
    return claims


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
        if self.command != "HEAD":
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
            return self.reply(200, {"account": entry[1], "expires_in": int(entry[0] - time.time()),
                                    "source": entry[2]["source"], "scopes": entry[2]["scopes"],
                                    "boundary": entry[2]["boundary"]})
        if path == "/_test/issued":
            since = int((query.get("since") or ["0"])[0])
            with STATE.lock:
                return self.reply(200, {"next": len(STATE.issued_tokens), "tokens": STATE.issued_tokens[since:]})
        if path == "/_test/account":
            email = (query.get("email") or [""])[0]
            with STATE.lock:
                return self.reply(200, {"issued": STATE.issued.get(email, 0), "signed": STATE.signed.get(email, 0),
                                        "generated": STATE.generated.get(email, 0),
                                        "exchanged": STATE.exchanged.get(email, 0),
                                        "federated": STATE.federated.get(email, 0)})
        if path in ("/_test/generated", "/_test/exchanges"):
            since = int((query.get("since") or ["0"])[0])
            key = "calls" if path == "/_test/generated" else "exchanges"
            with STATE.lock:
                records = STATE.generate_calls if path == "/_test/generated" else STATE.exchanges
                return self.reply(200, {"next": len(records), key: records[since:]})
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
        if path.startswith("/v1/projects/-/serviceAccounts/") and path.endswith(":generateAccessToken"):
            return self.generate_access_token(
                urllib.parse.unquote(path[len("/v1/projects/-/serviceAccounts/"):-len(":generateAccessToken")]))
        if path == "/v1/token":
            return self.token_exchange(self.body().decode(errors="replace"))
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
        if entry[1] != email or account is None or "private" not in account or entry[2]["boundary"] is not None:
            return self.reply(403, {"error": {"code": 403, "message": f"Permission 'iam.serviceAccounts.signBlob' denied on {email}"}})
        signature = account["private"].sign(base64.b64decode(body.get("payload", "")), padding.PKCS1v15(), hashes.SHA256())
        with STATE.lock:
            STATE.signed[email] = STATE.signed.get(email, 0) + 1
        log("sign-blob", account=email)
        self.reply(200, {"keyId": account["key_id"], "signedBlob": base64.b64encode(signature).decode()})

    def api_error(self, code, status, message):
        self.reply(code, {"error": {"code": code, "message": message, "status": status}})

    def generate_access_token(self, email):
        """The IAM Credentials API's generateAccessToken: a token of `email`
        for a caller holding a current (not downscoped) token. Every account
        may impersonate every account of the project (as if it held
        roles/iam.serviceAccountTokenCreator on all of them)."""
        raw = self.body()
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        now = time.time()
        with STATE.lock:
            entry = STATE.tokens.get(token) if token else None
        record = {"time": now, "caller": entry[1] if entry else None,
                  "caller_source": entry[2]["source"] if entry else None, "target": email, "lifetime": None,
                  "scope": None, "delegates": None, "status": None, "error": None, "token": None,
                  "expireTime": None}

        def refuse(code, status, message):
            record.update(status=code, error=message)
            with STATE.lock:
                STATE.generate_calls.append(record)
            log("generate-denied", caller=record["caller"], target=email, status=code, reason=message)
            self.api_error(code, status, message)

        if entry is None or entry[0] <= now:
            record["caller"] = record["caller_source"] = None
            return refuse(401, "UNAUTHENTICATED", "Request had invalid authentication credentials. "
                          "Expected OAuth 2 access token, login cookie or other valid authentication credential.")
        if entry[2]["source"] == "federated" and not IAM_CALLER_SCOPES & set(entry[2]["scopes"] or ()):
            return refuse(403, "PERMISSION_DENIED", "Request had insufficient authentication scopes.")
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return refuse(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        if not isinstance(body, dict):
            return refuse(400, "INVALID_ARGUMENT", "Invalid JSON payload received: not an object.")
        record.update(lifetime=body.get("lifetime"), scope=body.get("scope"), delegates=body.get("delegates"))
        unknown = set(body) - {"lifetime", "scope", "delegates"}
        if unknown:
            return refuse(400, "INVALID_ARGUMENT", f"Invalid JSON payload received. Unknown name(s) {sorted(unknown)}.")
        scope = body.get("scope")
        if not isinstance(scope, list) or not scope or not all(isinstance(x, str) and x for x in scope):
            return refuse(400, "INVALID_ARGUMENT", "scope must be a non-empty list of OAuth scopes.")
        delegates = body.get("delegates") or []  # null, as proto3 JSON allows, is the default
        if not isinstance(delegates, list) or not all(
                isinstance(d, str) and d.startswith("projects/-/serviceAccounts/") for d in delegates):
            return refuse(400, "INVALID_ARGUMENT", "delegates must be a list of projects/-/serviceAccounts/EMAIL.")
        lifetime = body.get("lifetime")
        if lifetime is None:
            lifetime = "3600s"
        m = re.fullmatch(r"(\d+)(\.\d{1,9})?s", lifetime) if isinstance(lifetime, str) else None
        if m is None:
            return refuse(400, "INVALID_ARGUMENT", f"lifetime {lifetime!r} is not a duration such as \"900s\".")
        seconds = float(lifetime[:-1])
        if seconds < 1 or seconds > MAX_GENERATED_LIFETIME:
            return refuse(400, "INVALID_ARGUMENT", f"The lifetime {lifetime} is out of range: it must be between "
                          f"1s and {MAX_GENERATED_LIFETIME}s.")
        if entry[2]["boundary"] is not None:
            return refuse(403, "PERMISSION_DENIED", "A downscoped token cannot call the IAM Credentials API.")
        for target in [email] + [d[len("projects/-/serviceAccounts/"):] for d in delegates]:
            if not self.may_impersonate(target):
                return refuse(403, "PERMISSION_DENIED", f"Permission 'iam.serviceAccounts.getAccessToken' denied on "
                              f"resource projects/-/serviceAccounts/{target} (or it may not exist).")
        expires_at = float(int(now + seconds))  # expireTime names whole seconds
        issued = STATE.issue(email, int(expires_at - now), expires_at=expires_at, source="generated",
                             scopes=list(scope))
        record.update(status=200, token=issued["access_token"], expireTime=rfc3339(expires_at))
        with STATE.lock:
            STATE.generated[email] = STATE.generated.get(email, 0) + 1
            STATE.generate_calls.append(record)
        log("generate-access-token", caller=entry[1], target=email, lifetime=lifetime, scope=scope,
            delegates=delegates, token=fingerprint(issued["access_token"]))
        self.reply(200, {"accessToken": issued["access_token"], "expireTime": rfc3339(expires_at)})

    def may_impersonate(self, email):
        """A registered account, or a well-formed service account of the
        project (registered now, with a key of its own, so that signBlob and
        signed URLs work for it too)."""
        with STATE.lock:
            if email in STATE.accounts:
                return True
        name, _, domain = email.partition("@")
        if domain != f"{STATE.project}.iam.gserviceaccount.com" or not SERVICE_ACCOUNT_ID.fullmatch(name):
            return False
        key = new_key_pair()[0]
        with STATE.lock:
            known = email in STATE.accounts
        if not known:
            register_account(email, key, STATE.token_lifetime)
        return True

    def token_exchange(self, raw):
        """sts.googleapis.com's POST /v1/token, for what downscoping needs:
        an access token exchanged for one bound by a Credential Access
        Boundary, living as long as the subject token still does."""
        form = urllib.parse.parse_qs(raw, keep_blank_values=True)
        one = {k: v[0] for k, v in form.items()}
        now = time.time()
        federation = one.get("subject_token_type") in JWT_TOKEN_TYPES
        record = {"time": now, "kind": "federation" if federation else "downscope", "subject": None,
                  "boundary": None, "audience": one.get("audience") if federation else None, "issuer": None,
                  "scope": one.get("scope"), "principal": None, "status": None, "error": None,
                  "expires_in": None, "token": None}

        def refuse(error, why):
            record.update(status=400, error=why)
            with STATE.lock:
                STATE.exchanges.append(record)
            log("exchange-denied", subject=record["subject"], error=error, reason=why)
            self.reply(400, {"error": error, "error_description": why})

        if one.get("grant_type") != TOKEN_EXCHANGE:
            return refuse("unsupported_grant_type", f"grant_type must be {TOKEN_EXCHANGE}")
        if federation:
            return self.federate(one, record, now)
        if one.get("subject_token_type") != ACCESS_TOKEN_TYPE:
            return refuse("invalid_request", f"subject_token_type must be {ACCESS_TOKEN_TYPE}")
        if one.get("requested_token_type") != ACCESS_TOKEN_TYPE:
            return refuse("invalid_request", f"requested_token_type must be {ACCESS_TOKEN_TYPE}")
        with STATE.lock:
            entry = STATE.tokens.get(one.get("subject_token") or "")
        if entry is None or entry[0] <= now:
            return refuse("invalid_grant", "The subject token is not a current access token.")
        record["subject"] = entry[1]
        if entry[2]["boundary"] is not None:
            return refuse("invalid_grant", "The subject token is already downscoped.")
        text = one.get("options")
        if not text:
            return refuse("invalid_request", "options (a URL-encoded JSON accessBoundary) is required here")
        try:
            options = json.loads(text if text.lstrip().startswith("{") else urllib.parse.unquote(text))
        except ValueError:
            return refuse("invalid_request", "options is not URL-encoded JSON")
        record["boundary"] = options.get("accessBoundary", options) if isinstance(options, dict) else options
        try:
            boundary, rules = parse_access_boundary(options)
        except BadRequest as e:
            return refuse("invalid_request", str(e))
        remaining = int(entry[0] - now)
        if remaining < 1:
            return refuse("invalid_grant", "The subject token is not a current access token.")
        issued = STATE.issue(entry[1], remaining, expires_at=entry[0], source="exchanged",
                             scopes=entry[2]["scopes"], boundary=boundary, rules=rules)
        record.update(status=200, expires_in=remaining, token=issued["access_token"])
        with STATE.lock:
            STATE.exchanged[entry[1]] = STATE.exchanged.get(entry[1], 0) + 1
            STATE.exchanges.append(record)
        log("token-exchanged", subject=entry[1], boundary=boundary, token=fingerprint(issued["access_token"]))
        self.reply(200, {"access_token": issued["access_token"], "issued_token_type": ACCESS_TOKEN_TYPE,
                         "token_type": "Bearer", "expires_in": remaining})

    def federate(self, one, record, now):
        """sts.googleapis.com's POST /v1/token for Workload Identity
        Federation: an external OIDC token exchanged for a federated access
        token of the principal its `sub` maps to."""
        token = one.get("subject_token") or ""
        try:  # what the token claims, for the record, before it is checked
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            unverified = None
        if isinstance(unverified, dict):
            record.update(subject=unverified.get("sub"), issuer=unverified.get("iss"))
        try:
            if one.get("requested_token_type") != ACCESS_TOKEN_TYPE:
                raise Refused("invalid_request", f"requested_token_type must be {ACCESS_TOKEN_TYPE}")
            audience = one.get("audience") or ""
            if not AUDIENCE_FORM.fullmatch(audience):
                raise Refused("invalid_request", INVALID_AUDIENCE, f"audience {audience!r}")
            federation = STATE.federation
            provider = federation.providers.get(audience) if federation else None
            if provider is None:
                raise Refused("invalid_target", INVALID_TARGET, f"no provider {audience!r} here")
            scopes = (one.get("scope") or "").split()
            if not scopes:
                raise Refused("invalid_request", "scope is required when exchanging an external credential "
                              "(e.g. https://www.googleapis.com/auth/cloud-platform).")
            bad = [x for x in scopes if not x.startswith("https://www.googleapis.com/auth/")]
            if bad:
                raise Refused("invalid_scope", f"Invalid scope(s): {' '.join(bad)}")
            if one.get("options"):
                text = one["options"]
                try:
                    options = json.loads(text if text.lstrip().startswith("{") else urllib.parse.unquote(text))
                except ValueError:
                    options = None
                if not isinstance(options, dict) or set(options) - {"userProject"}:
                    raise Refused("invalid_request", "options may only hold a userProject when exchanging an "
                                  "external credential here")
            claims = verify_subject_token(federation, provider, token, now)
            remaining = int(min(MAX_FEDERATED_LIFETIME, claims["exp"] - now))
            if remaining < 1:
                raise Refused("invalid_grant", f"ID Token issued at {int(claims['iat'])} is stale to sign-in.",
                              "exp is less than a second ahead")
        except Refused as e:
            record.update(status=400, error=e.description)
            with STATE.lock:
                STATE.exchanges.append(record)
            log("exchange-denied", kind="federation", subject=record["subject"], audience=record["audience"],
                error=e.error, reason=e.description, detail=e.detail)
            return self.reply(400, {"error": e.error, "error_description": e.description})
        principal = federation.principal(provider, claims["sub"])
        issued = STATE.issue(principal, remaining, expires_at=now + remaining, source="federated", scopes=scopes)
        record.update(status=200, principal=principal, expires_in=remaining, token=issued["access_token"])
        with STATE.lock:
            STATE.federated[principal] = STATE.federated.get(principal, 0) + 1
            STATE.exchanges.append(record)
        log("token-federated", principal=principal, audience=record["audience"], scope=scopes, expires_in=remaining,
            token=fingerprint(issued["access_token"]))
        self.reply(200, {"access_token": issued["access_token"], "issued_token_type": ACCESS_TOKEN_TYPE,
                         "token_type": "Bearer", "expires_in": remaining})

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
            return self.reply(200, STATE.issue(email, STATE.metadata_lifetime, source="metadata"), headers=flavor)
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
        why = self.narrowed(entry, path)
        if why:
            if stats is not None:
                with STATE.lock:
                    stats["forbidden"] += 1
            log("proxy-forbidden", method=self.command, path=path, object=name, account=entry[1], reason=why,
                token=fingerprint(token))
            self.body()
            return self.reply(403, forbidden_body(why))
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

    def narrowed(self, entry, path):
        """Why a current token may not make this request (None if it may):
        the OAuth scopes of a generateAccessToken token, and the credential
        access boundary of a downscoped one."""
        info = entry[2]
        if entry[1].startswith("principal://"):
            permission, bucket, obj = storage_permission(self.command, path)
            what = "object" if obj is not None else "bucket" if bucket else "resource"
            return (f"{entry[1]} does not have {permission} access to the Google Cloud Storage {what}. "
                    f"Permission '{permission}' denied on resource (or it may not exist).")
        if info["scopes"] is not None:
            need = READ_SCOPES if self.command in ("GET", "HEAD") else WRITE_SCOPES
            if not need & set(info["scopes"]):
                return "Request had insufficient authentication scopes."
        if info["rules"] is not None:
            permission, bucket, obj = storage_permission(self.command, path)
            if permission not in ("storage.objects.get", "storage.objects.list") or \
                    not boundary_allows(info["rules"], permission, bucket, obj):
                what = f"object {bucket}/{obj}" if obj is not None else f"bucket {bucket}" if bucket else path
                return (f"{entry[1]} does not have {permission} access to the Google Cloud Storage {what}: "
                        "the token's credential access boundary does not allow it.")
        return None

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
            # A multipart upload (metadata and bytes in one request): the one
            # kind of upload on which fake-gcs-server checks preconditions.
            target = f"/upload/storage/v1/b/{bucket}/o?uploadType=multipart"
            # The XML API's precondition header, as the JSON API's parameter
            # (honoured by upstreams that check preconditions).
            generation = self.headers.get("x-goog-if-generation-match")
            if generation is not None:
                target += f"&ifGenerationMatch={urllib.parse.quote(generation)}"
            boundary = "credhost-proxy-" + os.urandom(8).hex()
            related = (f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
                       f"{json.dumps({'name': name})}\r\n--{boundary}\r\n"
                       "Content-Type: application/octet-stream\r\n\r\n").encode() + body + \
                f"\r\n--{boundary}--\r\n".encode()
            up.request("POST", target, body=related,
                       headers={"Content-Type": f"multipart/related; boundary={boundary}"})
            resp = up.getresponse()
            resp.read()
            if resp.status == 412:
                return self.reply(412, "<Error><Code>PreconditionFailed</Code></Error>", "application/xml")
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
        # The emulator answers HEAD with 501: a HEAD goes on as a GET, and only
        # the answer's status and headers come back.
        up.putrequest("GET" if self.command == "HEAD" else self.command, self.path, skip_host=True,
                      skip_accept_encoding=True)
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
        if self.command == "HEAD":
            up.close()
            return
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

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    global STATE
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--token-port", type=int, required=True)
    p.add_argument("--metadata-port", type=int, required=True)
    p.add_argument("--proxy-port", type=int, required=True, action="append",
                   help="a proxy's port (repeatable: one per --upstream, in the same order)")
    p.add_argument("--upstream", required=True, action="append",
                   help="HOST:PORT of a GCS emulator (gcp-storage-emulator, fake-gcs-server)")
    p.add_argument("--dir", required=True, help="where to write service-account.json")
    p.add_argument("--project", default="credhost-test")
    p.add_argument("--token-lifetime", type=int, default=3600)
    p.add_argument("--metadata-lifetime", type=int, default=3600)
    p.add_argument("--workload-provider", action="append", default=[], metavar="RESOURCE",
                   help="a workload identity pool provider STS plays, "
                        "projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER "
                        "(repeatable; all trust --oidc-issuer)")
    p.add_argument("--oidc-issuer", metavar="URL", help="the providers' OIDC issuer: a subject token's iss")
    p.add_argument("--oidc-jwks", metavar="FILE",
                   help="the issuer's keys, a JWKS JSON file (read when first needed and again when it changes)")
    p.add_argument("--workload-allowed-audience", action="append", default=[], metavar="AUD",
                   help="an audience the providers accept in a subject token's aud (repeatable); default: "
                        "https://iam.googleapis.com/RESOURCE and //iam.googleapis.com/RESOURCE")
    a = p.parse_args()
    STATE = State(a.project, a.token_lifetime, a.metadata_lifetime)
    if a.workload_provider or a.oidc_issuer or a.oidc_jwks or a.workload_allowed_audience:
        if not (a.workload_provider and a.oidc_issuer and a.oidc_jwks):
            p.error("--workload-provider, --oidc-issuer and --oidc-jwks go together")
        try:
            STATE.federation = Federation(a.workload_provider, a.oidc_issuer, os.path.abspath(a.oidc_jwks),
                                          a.workload_allowed_audience)
        except ValueError as e:
            p.error(str(e))
        if os.path.exists(a.oidc_jwks):
            try:
                STATE.federation.jwks()
            except (OSError, ValueError) as e:
                p.error(f"--oidc-jwks {a.oidc_jwks}: {e}")
        for audience, provider in STATE.federation.providers.items():
            log("workload-provider", audience=audience, issuer=a.oidc_issuer, allowed_audiences=provider["audiences"])
    # The metadata server's account: Google holds its key, and signs with it
    # through signBlob.
    register_account(f"metadata-default@{a.project}.iam.gserviceaccount.com",
                     new_key_pair()[0], a.metadata_lifetime)
    if len(a.proxy_port) != len(a.upstream):
        p.error("give one --proxy-port per --upstream")
    servers = [Server(("127.0.0.1", a.metadata_port), MetadataHandler)]
    for proxy_port, upstream in zip(a.proxy_port, a.upstream):
        host, port = upstream.rsplit(":", 1)
        servers.append(Server(("127.0.0.1", proxy_port), ProxyHandler))
        servers[-1].upstream = (host, int(port))
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
    log("ready", token_port=a.token_port, metadata_port=a.metadata_port, proxy_ports=a.proxy_port,
        account=key["client_email"])
    # The token endpoint's /healthz answers last: once it does, all is up.
    token_server.serve_forever()


if __name__ == "__main__":
    main()
