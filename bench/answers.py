#!/usr/bin/env python3
"""How long credhost takes to answer, whole process (start, load the plugin,
ask the service, print), against the local test services
(tests/services/up.sh): `credhost grant` (target 100 ms) and a kubelet's
`credhost kubelet-provider` request, cold (target 20 ms).

    bench/answers.py [--runs N]

Each case writes its own plugins.toml, runs the command once to warm the
page cache, then N times, and prints the median, the 90th percentile and
the slowest run in milliseconds (BENCHMARKS.md).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RELEASE = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target") / "release"


def services():
    env_file = Path(os.environ.get("CREDHOST_TEST_SERVICES_DIR") or REPO / "tests/services/.run") / "env"
    if not env_file.exists():
        sys.exit(f"bench/grant.py: {env_file} is missing: start the services with tests/services/up.sh")
    out = {}
    for line in env_file.read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            k, v = line[len("export "):].split("=", 1)
            out[k] = v
    return out


def cases(svc):
    token = (
        f'registry = {{ url = "http://{svc["CREDHOST_TEST_REGISTRY_TOKEN"]}", auth = "token", '
        'username_env = "REG_USER", password_env = "REG_PASS" }'
    )
    sts = svc["CREDHOST_TEST_STS_S3_ENDPOINT"]
    role = svc["CREDHOST_TEST_STS_ROLE_ARN"]
    head = f'plugin_dir = "{RELEASE}"\n'
    yield (
        "local: token registry, fs store",
        f'platform = "local"\n{head}[plugins.local.settings]\n{token}\n'
        'storage = { kind = "fs", root = "store", bucket = "projects" }\n',
        ["--repository", "bench/app", "--pull", "bench/base"],
    )
    yield (
        "local: token registry, SeaweedFS STS session, --with-keys",
        f'platform = "local"\n{head}[plugins.local.settings]\n{token}\n'
        f'storage = {{ kind = "s3", endpoint = "{sts}", bucket = "projects", access_key_id_env = "AWS_ACCESS_KEY_ID", '
        f'secret_access_key_env = "AWS_SECRET_ACCESS_KEY", grant_role_arn = "{role}" }}\n',
        ["--repository", "bench/app", "--with-keys"],
    )
    yield (
        "aws: SeaweedFS STS session, --with-keys",
        f'platform = "aws"\n{head}[plugins.aws.settings]\nregion = "us-east-1"\n'
        'registry = "123456789012.dkr.ecr.us-east-1.amazonaws.com"\nbucket = "projects"\n'
        f's3_endpoint_url = "{sts}"\nsts_endpoint_url = "{sts}"\nforce_path_style = true\njob_role_arn = "{role}"\n',
        ["--with-keys"],
    )
    yield (
        "aws: moto STS session and ECR token",
        f'platform = "aws"\n{head}[plugins.aws.settings]\nregion = "us-east-1"\n'
        'registry = "123456789012.dkr.ecr.us-east-1.amazonaws.com"\nbucket = "projects"\n'
        f'endpoint_url = "{svc["CREDHOST_TEST_MOTO_ENDPOINT"]}"\ns3_endpoint_url = "{sts}"\nforce_path_style = true\n'
        'job_role_arn = "arn:aws:iam::123456789012:role/bench"\n',
        ["--repository", "bench/app"],
    )


def timed(label, cmd, env, cwd, runs, stdin=None):
    """The p90 of `runs` runs of `cmd` after one warm-up, printed with the median and max."""
    times = []
    for i in range(runs + 1):
        t = time.perf_counter()
        r = subprocess.run(cmd, env=env, cwd=cwd, input=stdin, capture_output=True)
        elapsed = (time.perf_counter() - t) * 1000
        if r.returncode != 0:
            sys.exit(f"{label}: failed: {r.stderr.decode().strip()}")
        if i:
            times.append(elapsed)
    times.sort()
    p90 = times[max(0, int(len(times) * 0.9) - 1)]
    print(f"  {label:58} {statistics.median(times):6.1f} / {p90:6.1f} / {times[-1]:6.1f}")
    return p90


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20)
    args = p.parse_args()
    svc = services()
    binary = RELEASE / "credhost"
    env = dict(os.environ)
    env.update(
        REG_USER=svc["CREDHOST_TEST_REGISTRY_USER"],
        REG_PASS=svc["CREDHOST_TEST_REGISTRY_PASSWORD"],
        AWS_ACCESS_KEY_ID=svc["CREDHOST_TEST_S3_ACCESS_KEY"],
        AWS_SECRET_ACCESS_KEY=svc["CREDHOST_TEST_S3_SECRET_KEY"],
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        AWS_EC2_METADATA_DISABLED="true",
    )
    env.pop("AWS_SESSION_TOKEN", None)
    print(f"credhost grant, whole process, {args.runs} runs each (ms): median / p90 / max")
    worst = 0.0
    with tempfile.TemporaryDirectory() as d:
        for label, config, extra in cases(svc):
            cfg = Path(d) / "plugins.toml"
            cfg.write_text(config)
            cmd = [str(binary), "--config", str(cfg), "-q", "grant", "--project", "projects/bench.zip", *extra]
            worst = max(worst, timed(label, cmd, env, d, args.runs))
    print(f"slowest p90: {worst:.1f} ms (target 100 ms)")
    print(f"credhost kubelet-provider, cold, {args.runs} runs each (ms): median / p90 / max")
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "plugins.toml"
        cfg.write_text(
            f'platform = "local"\nplugin_dir = "{RELEASE}"\n[plugins.local.settings]\n'
            f'registry = {{ url = "http://{svc["CREDHOST_TEST_REGISTRY_BASIC"]}", auth = "basic", '
            'username_env = "REG_USER", password_env = "REG_PASS" }\n'
            'storage = { kind = "fs", root = "store", bucket = "projects" }\n'
        )
        request = json.dumps({
            "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
            "kind": "CredentialProviderRequest",
            "image": f'{svc["CREDHOST_TEST_REGISTRY_BASIC"]}/team/app:v1',
        }).encode()
        kenv = dict(env, CREDHOST_CONFIG=str(cfg))
        worst = max(
            timed("local: htpasswd registry, credhost kubelet-provider", [str(binary), "kubelet-provider"], kenv, d, args.runs, request),
            timed("the same through docker-credential-credhost", [str(RELEASE / "docker-credential-credhost")], kenv, d, args.runs, request),
        )
    print(f"slowest p90: {worst:.1f} ms (target 20 ms)")



if __name__ == "__main__":
    main()
