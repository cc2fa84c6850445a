"""fvt.serve.limits on a stand-in app (in memory, no network): a burst over --max-concurrency serves the
first N and refuses only the rest, and the count comes back down after errors."""

from __future__ import annotations

import asyncio

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")

from fvt.serve.limits import LimitConcurrency  # noqa: E402


def test_a_burst_over_the_limit_serves_the_first_n_and_refuses_the_rest():
    release = asyncio.Event()
    entered = []

    async def slow_app(scope, receive, send):
        entered.append(scope["path"])
        if scope["path"] == "/boom":
            raise RuntimeError("the route failed")
        if scope["method"] == "POST":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    app = LimitConcurrency(slow_app, limit=3)

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            burst = [asyncio.ensure_future(client.post("/v1/predict", content=b"x")) for _ in range(5)]
            while len(entered) < 3:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            refused = [t for t in burst if t.done()]
            get = await client.get("/healthz")  # requests without a body are not counted
            release.set()
            answers = await asyncio.gather(*burst)
            with pytest.raises(RuntimeError):
                await client.post("/boom", content=b"x")
            after = [await client.post("/v1/predict", content=b"x") for _ in range(4)]
            return refused, answers, get, after

    refused, answers, get, after = asyncio.run(go())
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 200, 200, 503, 503] and len(refused) == 2
    refusal = next(a for a in answers if a.status_code == 503)
    assert "max-concurrency 3" in refusal.json()["error"] and refusal.headers["retry-after"] == "1"
    assert get.status_code == 200
    assert [a.status_code for a in after] == [200] * 4 and app.active == 0  # freed after success and failure
