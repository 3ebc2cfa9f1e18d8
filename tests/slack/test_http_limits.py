"""Slack HTTP mode under idle, slow and too many connections: real events are still answered, the rest cut off."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import yaml

from bots.slack.http_server import HttpLimits
from tests.conftest import make_settings
from tests.fakes.slack_api import im_message, sign
from tests.slack.conftest import SIGNING_SECRET, StartSlack
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
EOF_WITHIN = 5.0  # seconds a closed connection may take to show as closed on a loaded machine
Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def open_idle(port: int, count: int, first_bytes: bytes = b"") -> list[Connection]:
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(count)]
    for _, writer in connections:
        if first_bytes:
            writer.write(first_bytes)
    return connections


async def closed_by_server(connection: Connection) -> bytes:
    """What the server sent before closing; times out if it never closes."""
    reader, _ = connection
    return await asyncio.wait_for(reader.read(), EOF_WITHIN)


async def close_all(connections: list[Connection]) -> None:
    for _, writer in connections:
        writer.close()
    await asyncio.gather(*(writer.wait_closed() for _, writer in connections), return_exceptions=True)


def test_host_defaults_to_loopback_and_the_container_opens_it() -> None:
    assert make_settings().host == "127.0.0.1"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert any(line.startswith("ENV ") and " HOST=0.0.0.0" in line for line in dockerfile.splitlines())
    gateway = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["gateway"]
    assert gateway["environment"]["HOST"] == "0.0.0.0"
    defaults = HttpLimits()
    assert defaults.keepalive_seconds <= 75 and defaults.header_seconds <= 15 and defaults.body_seconds <= 15


async def test_http_mode_listens_on_the_host_setting(start_slack: StartSlack) -> None:
    rig = await start_slack("http", host=None)  # no override: HOST decides
    assert [host for host, _ in rig.adapter.addresses] == ["127.0.0.1"]


async def test_200_idle_connections_do_not_stop_a_real_event_and_are_closed_after_the_header_timeout(
    start_slack: StartSlack,
) -> None:
    limits = HttpLimits(header_seconds=1.0, body_seconds=1.0, keepalive_seconds=2.0, max_connections=300)
    rig = await start_slack("http", http_limits=limits)
    assert rig.adapter.port is not None
    idle = await open_idle(rig.adapter.port, 100)
    loris = await open_idle(rig.adapter.port, 100, b"POST /slack/events HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    try:
        assert await rig.deliver(im_message("still there?")) == 200
        assert (await rig.outcome()).result == "answered"
        assert rig.reply_texts("D1") == ["echo: still there?"]
        closed = await asyncio.gather(*(closed_by_server(c) for c in idle + loris))
        assert closed == [b""] * 200  # closed without an answer, well before aiohttp's 3630 s
    finally:
        await close_all(idle + loris)


async def test_connections_over_the_cap_are_closed_at_once(start_slack: StartSlack) -> None:
    rig = await start_slack("http", http_limits=HttpLimits(max_connections=20))
    assert rig.adapter.port is not None
    held = await open_idle(rig.adapter.port, 20)
    try:

        async def all_counted() -> bool:
            return rig.adapter.open_connections == 20

        await wait_until(all_counted, timeout=5)
        extra = await open_idle(rig.adapter.port, 1)
        assert await closed_by_server(extra[0]) == b""
        await close_all(held)

        async def none_open() -> bool:
            return rig.adapter.open_connections == 0

        await wait_until(none_open, timeout=5)
        assert await rig.deliver(im_message("after the flood")) == 200  # slots free again once they close
    finally:
        await close_all(held)


async def test_a_body_that_trickles_gets_408_and_the_connection_closes(start_slack: StartSlack) -> None:
    rig = await start_slack("http", http_limits=HttpLimits(body_seconds=1.0))
    assert rig.adapter.port is not None
    body = json.dumps(rig.slack.event_callback(im_message("slow body"))).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in sign(body, SIGNING_SECRET).items())
    request = f"POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{head}"
    request += f"Content-Length: {len(body)}\r\n\r\n"
    [connection] = await open_idle(rig.adapter.port, 1, request.encode() + body[:10])
    try:
        answer = await closed_by_server(connection)
        assert answer.startswith(b"HTTP/1.1 408")
    finally:
        await close_all([connection])


async def test_an_idle_keep_alive_connection_closes_after_the_keep_alive(start_slack: StartSlack) -> None:
    rig = await start_slack("http", http_limits=HttpLimits(keepalive_seconds=1.0))
    assert rig.adapter.port is not None
    [connection] = await open_idle(rig.adapter.port, 1, b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        reader, _ = connection
        status = await asyncio.wait_for(reader.readline(), EOF_WITHIN)
        assert status.startswith(b"HTTP/1.1 404")
        await closed_by_server(connection)  # then nothing more: the server closes the idle connection
    finally:
        await close_all([connection])
