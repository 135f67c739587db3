"""WebSocket helpers for tests: a real client (the ``websockets`` package) and a raw one."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from typing import Any
from urllib.parse import urlsplit

from django.test import Client
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

CHAT_PATH = "/ws/v1/chat/"
LIVE_PATH = "/ws/admin/live/"


def ws_connect(
    http_url: str, path: str = CHAT_PATH, *, cookie: str | None = None
) -> ClientConnection:
    """Connect as a browser on the gateway's own origin would (the origin check needs it)."""
    headers = {"Cookie": cookie} if cookie else None
    return connect(
        http_url.replace("http://", "ws://", 1) + path,
        origin=http_url,
        additional_headers=headers,
        open_timeout=10,
        max_size=None,
    )


def recv(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=timeout))


def send(ws: ClientConnection, frame: dict[str, Any] | str) -> None:
    ws.send(frame if isinstance(frame, str) else json.dumps(frame))


def recv_until(ws: ClientConnection, predicate, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Frames up to and including the first one ``predicate`` accepts."""
    deadline = time.monotonic() + timeout
    frames = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no matching frame in {timeout}s; got {frames[-5:]}")
        frame = recv(ws, remaining)
        frames.append(frame)
        if predicate(frame):
            return frames


def close_code(ws: ClientConnection, timeout: float = 10.0) -> int | None:
    """Read until the server closes; the code it closed with."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ws.recv(timeout=max(0.01, deadline - time.monotonic()))
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None
    except TimeoutError:
        return None
    return None


def authenticate(ws: ClientConnection, secret: str) -> dict[str, Any]:
    send(ws, {"type": "auth", "api_key": secret})
    frame = recv(ws)
    assert frame["type"] == "auth.ok", frame
    return frame


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


class RawWebSocket:
    """A bare client over a socket, for tests that must control reading (it never reads)."""

    def __init__(self, http_url: str, path: str = CHAT_PATH, *, rcvbuf: int = 16 * 1024) -> None:
        parts = urlsplit(http_url)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect((parts.hostname, parts.port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: {http_url}\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            data = self.sock.recv(1)
            if not data:
                raise ConnectionError("closed during the handshake")
            head += data
        assert b" 101 " in head.split(b"\r\n", 1)[0], head

    def send_text(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x81, 0x80 | length)
        elif length < 1 << 16:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send_json(self, frame: dict[str, Any]) -> None:
        self.send_text(json.dumps(frame))

    def close(self) -> None:
        self.sock.close()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")
