"""credhost.aio: the same operations as awaitables. The event loop keeps
running during a transfer, calls run concurrently, and cancelling the
awaiting task cancels the transfer itself (nothing is stored)."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time

import pytest

import credhost
import credhost.aio
from conftest import MIB, http, zip_bytes


class EndlessSlowSource:
    """About 25 MiB/s for ever: an upload that is well under way (multipart
    parts or resumable chunks sent) when it is cancelled."""

    def __init__(self) -> None:
        self.reads = 0

    def read(self, n: int) -> bytes:
        self.reads += 1
        time.sleep(0.04)
        return b"\0" * n


def leftovers(b, name):
    """What the server shows of an upload of ``name`` that did not complete."""
    if b.kind == "local_s3":
        import boto3
        from botocore.config import Config

        s3 = boto3.client(
            "s3",
            endpoint_url=b.svc["CREDHOST_TEST_S3_ENDPOINT"],
            aws_access_key_id=b.svc["CREDHOST_TEST_S3_ACCESS_KEY"],
            aws_secret_access_key=b.svc["CREDHOST_TEST_S3_SECRET_KEY"],
            region_name=b.svc["CREDHOST_TEST_S3_REGION"],
            config=Config(s3={"addressing_style": "path"}),
        )
        ups = s3.list_multipart_uploads(Bucket=b.bucket, Prefix=name).get("Uploads", [])
        return {"open multipart uploads": len(ups)} if ups else None
    if b.kind == "gcp":
        status, body = http("GET", f'{b.svc["CREDHOST_TEST_GCS_ENDPOINT"]}/_proxy/stats?object={name}')
        stats = json.loads(body)
        assert stats["bytes_up"] > 0, "the upload was under way"
        return stats if stats["initiations"] > stats["cancellations"] else None
    return None


@pytest.mark.parametrize("kind", ["fs", "local_s3", "gcp"])
def test_every_operation_awaits(kind, make_backend, tmp_path):
    b = make_backend(kind)

    async def main():
        c = credhost.aio.Credentials(config=b.config)
        assert c.platform in ("local", "gcp")
        data = zip_bytes(3 * MIB, 9)
        name = b.name("aio")
        loop_thread = threading.get_ident()
        ups, downs = [], []

        def on(calls):
            def progress(done, total):
                assert threading.get_ident() != loop_thread, "progress runs off the event loop"
                calls.append((done, total))

            return progress

        put = await c.upload_project(name, io.BytesIO(data), progress=on(ups))
        assert put.size == len(data)
        assert ups[-1] == (len(data), len(data))
        path = await c.download_project(b.bucket, name, tmp_path, progress=on(downs))
        assert open(path, "rb").read() == data
        assert downs[-1] == (len(data), len(data))
        token = await c.get_registry_token()
        assert isinstance(token, credhost.Secret)
        assert (await c.registry_auth()).registry_token == token
        env = await c.get_credentials()
        assert env["PROJECTS_BUCKET"] == b.bucket
        assert (await c.check()).ok
        assert any(p.status == "loaded" for p in await c.plugins())
        if b.has_urls:
            assert (await c.presign("GET", b.bucket, name)).method == "GET"
        await c.delete_project(b.bucket, name)
        with pytest.raises(credhost.NotFound):
            await c.download_project(b.bucket, name, tmp_path / "gone")
        shared = credhost.aio.Credentials.from_sync(c.sync)
        assert await shared.get_registry_token() == token

    asyncio.run(main())


def test_the_loop_runs_while_transfers_run_concurrently(make_backend):
    b = make_backend("local_s3")

    async def main():
        c = credhost.aio.Credentials(config=b.config)
        ticks = 0
        done = False

        async def ticker():
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0.01)

        tick = asyncio.ensure_future(ticker())
        blobs = [zip_bytes(2 * MIB + i, i) for i in range(5)]
        names = [b.name(f"gather{i}") for i in range(5)]
        started = time.monotonic()
        results = await asyncio.gather(*(c.upload_project(n, io.BytesIO(d)) for n, d in zip(names, blobs)))
        elapsed = time.monotonic() - started
        done = True
        await tick
        assert [r.size for r in results] == [len(d) for d in blobs]
        # A loop blocked by the transfers would not tick at all while they run.
        assert ticks >= elapsed / 0.01 * 0.1, (ticks, elapsed)

    asyncio.run(main())


@pytest.mark.parametrize("kind", ["fs", "local_s3", "gcp"])
def test_cancelling_the_task_cancels_the_transfer(kind, make_backend):
    b = make_backend(kind)
    name = b.name("cancelled")
    source = EndlessSlowSource()

    async def main():
        c = credhost.aio.Credentials(config=b.config)
        await c.get_registry_token()  # provider built
        task = asyncio.ensure_future(c.upload_project(name, source))
        await asyncio.sleep(2.0)
        assert source.reads > 0
        if b.kind == "local_s3":
            for _ in range(100):
                if leftovers(b, name):
                    break
                await asyncio.sleep(0.1)
            assert leftovers(b, name), "a multipart upload is under way"
        task.cancel()
        started = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - started

    took = asyncio.run(asyncio.wait_for(main(), 60))
    assert took < 15, took
    reads = source.reads
    time.sleep(0.5)
    assert source.reads == reads, "the source is no longer read"
    with pytest.raises(credhost.NotFound):
        b.credentials().download_project(b.bucket, name)
    assert leftovers(b, name) is None


def test_a_cancel_token_stops_a_blocking_call(make_backend):
    from credhost import _credhost

    b = make_backend("fs")
    c = b.credentials()
    token = _credhost.CancelToken()
    import threading

    threading.Timer(0.5, token.cancel).start()
    with pytest.raises(credhost.Cancelled) as e:
        c._upload_project(b.name("token"), EndlessSlowSource(), True, token)
    assert e.value.kind == "cancelled" and token.cancelled
