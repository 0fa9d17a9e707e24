"""Drive headless Chromium over the DevTools protocol with the standard library only.

:func:`open_page` starts ``chromium --headless --remote-debugging-port=0``, connects to the browser's
DevTools websocket (a minimal RFC 6455 client over a plain socket on 127.0.0.1), opens a page on a
``file://`` URL, and records every console message, uncaught exception, log entry and network
request while the page loads. The page can then be queried with JavaScript, driven with real mouse
and key events, resized, and captured as a PNG.

Used by the dashboard browser test and to make the screenshot in ``docs/_static/dashboard.png``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--mute-audio",
    "--hide-scrollbars",
)


def chromium_path() -> str | None:
    """The Chromium executable, or ``None`` when it is not installed."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class _WebSocket:
    """A minimal client websocket: text frames out (masked), frames in (unmasked)."""

    def __init__(self, url: str, timeout: float) -> None:
        match = re.fullmatch(r"ws://([^:/]+):(\d+)(/.*)", url)
        if match is None:
            raise ValueError(f"unexpected DevTools websocket URL {url!r}")
        host, port, path = match.group(1), int(match.group(2)), match.group(3)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        header = b""
        while b"\r\n\r\n" not in header:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            header += chunk
        head, self.buffer = header.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buffer)))
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode())

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._read(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack(">H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack(">Q", self._read(8))
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(n)
            if mask is not None:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the websocket")
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            message += payload
            if b0 & 0x80:
                return message.decode()

    def close(self) -> None:
        with suppress(OSError):
            self._send_frame(0x8, b"")
        self.sock.close()


@dataclass
class Page:
    """A page opened by :func:`open_page`, with what it did while loading."""

    ws: _WebSocket
    session: str
    timeout: float
    console: list[dict[str, Any]] = field(default_factory=list)
    exceptions: list[dict[str, Any]] = field(default_factory=list)
    log_entries: list[dict[str, Any]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    _next_id: int = 0

    def _record(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.consoleAPICalled":
            self.console.append(params)
        elif method == "Runtime.exceptionThrown":
            self.exceptions.append(params)
        elif method == "Log.entryAdded":
            self.log_entries.append(params.get("entry", {}))
        elif method == "Network.requestWillBeSent":
            self.requests.append(params.get("request", {}).get("url", ""))

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send a command to the page and wait for its result (events are recorded meanwhile)."""
        self._next_id += 1
        call_id = self._next_id
        message = {"id": call_id, "method": method, "params": params or {}}
        message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == call_id:
                if "error" in reply:
                    raise RuntimeError(f"DevTools {method} failed: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self._record(reply)
        raise TimeoutError(f"DevTools {method} did not answer within {self.timeout} s")

    def wait_for(self, event: str) -> dict[str, Any]:
        """Wait for an event of the page, recording every other event."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv())
            self._record(message)
            if message.get("method") == event:
                params: dict[str, Any] = message.get("params", {})
                return params
        raise TimeoutError(f"no {event} within {self.timeout} s")

    def evaluate(self, expression: str, *, await_promise: bool = False) -> Any:
        """Evaluate JavaScript in the page and return its (JSON) value; with ``await_promise``
        wait for the promise the expression returns and return its value."""
        params: dict[str, Any] = {"expression": expression, "returnByValue": True}
        if await_promise:
            params["awaitPromise"] = True
        result = self.send("Runtime.evaluate", params)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def set_viewport(self, width: int, height: int) -> None:
        """Emulate a viewport of ``width`` x ``height`` CSS pixels (scale factor 1)."""
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def navigate(self, url: str) -> None:
        """Load ``url`` and wait for its load event."""
        self.send("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")

    def mouse(self, kind: str, x: float, y: float, *, clicks: int = 0) -> None:
        """Dispatch a real mouse event at viewport coordinates ``(x, y)``: ``kind`` is
        ``mouseMoved``, ``mousePressed`` or ``mouseReleased`` (left button)."""
        params: dict[str, Any] = {"type": kind, "x": x, "y": y}
        if kind != "mouseMoved":
            params.update(button="left", clickCount=max(1, clicks))
        else:
            params["button"] = "none"
        self.send("Input.dispatchMouseEvent", params)

    def key(self, key: str, code: str | None = None, key_code: int | None = None) -> None:
        """Press and release one key (e.g. ``"ArrowRight"``) on the focused element."""
        codes = {"ArrowLeft": 37, "ArrowRight": 39, "ArrowUp": 38, "ArrowDown": 40, "Escape": 27}
        params: dict[str, Any] = {
            "key": key,
            "code": code or key,
            "windowsVirtualKeyCode": key_code or codes.get(key, 0),
        }
        self.send("Input.dispatchKeyEvent", {"type": "keyDown", **params})
        self.send("Input.dispatchKeyEvent", {"type": "keyUp", **params})

    def screenshot(self, path: Path, *, full_page: bool = False) -> Path:
        """Capture the viewport (or, with ``full_page``, the whole page) as a PNG file."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
            size = self.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
            )
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}
        shot = self.send("Page.captureScreenshot", params)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries, as text."""
        out = [
            f"console.{c.get('type')}: {[a.get('value', a.get('description')) for a in c.get('args', [])]}"
            for c in self.console
            if c.get("type") in ("error", "assert")
        ]
        out += [f"exception: {e.get('exceptionDetails', {})}" for e in self.exceptions]
        out += [
            f"log {e.get('source')}: {e.get('text')} {e.get('url', '')}"
            for e in self.log_entries
            if e.get("level") == "error"
        ]
        return out


@contextmanager
def open_page(
    url: str, *, width: int = 1400, height: int = 2000, timeout: float = 30.0
) -> Iterator[Page]:
    """Open ``url`` in headless Chromium and yield the loaded :class:`Page`.

    Console, exception, log and network events are recorded from before the navigation starts.

    Raises:
        RuntimeError: if Chromium is not installed or does not start.
    """
    exe = chromium_path()
    if exe is None:
        raise RuntimeError("chromium is not installed")
    # Chromium's helper processes may still write to the profile while it is removed.
    with tempfile.TemporaryDirectory(prefix="le-chromium-", ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen(
            [
                exe,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        ws: _WebSocket | None = None
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + timeout
            while True:
                if port_file.exists():
                    lines = port_file.read_text().split("\n")
                    if len(lines) >= 2 and lines[1].strip():
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("chromium did not open its DevTools port")
                time.sleep(0.05)
            port, path = lines[0].strip(), lines[1].strip()
            ws = _WebSocket(f"ws://127.0.0.1:{port}{path}", timeout)
            ws.send(
                json.dumps(
                    {"id": 1, "method": "Target.createTarget", "params": {"url": "about:blank"}}
                )
            )
            target = _reply(ws, 1, timeout)["targetId"]
            ws.send(
                json.dumps(
                    {
                        "id": 2,
                        "method": "Target.attachToTarget",
                        "params": {"targetId": target, "flatten": True},
                    }
                )
            )
            session = _reply(ws, 2, timeout)["sessionId"]
            page = Page(ws=ws, session=session, timeout=timeout, _next_id=10)
            for domain in ("Page", "Runtime", "Log", "Network"):
                page.send(f"{domain}.enable")
            page.set_viewport(width, height)
            page.navigate(url)
            yield page
        finally:
            if ws is not None:
                ws.close()
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _reply(ws: _WebSocket, call_id: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = json.loads(ws.recv())
        if message.get("id") == call_id:
            if "error" in message:
                raise RuntimeError(f"DevTools call {call_id} failed: {message['error']}")
            result: dict[str, Any] = message["result"]
            return result
    raise TimeoutError(f"DevTools call {call_id} did not answer within {timeout} s")
