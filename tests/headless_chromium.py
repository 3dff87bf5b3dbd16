"""A headless Chromium driven over the DevTools protocol, with the standard library only.

Enough for page tests: open a URL, wait for its load event, evaluate JavaScript, and collect
what the page reported (console messages, uncaught exceptions, browser log entries such as
Content-Security-Policy violations, network requests, JavaScript dialogs). The websocket client
speaks just the subset of RFC 6455 the DevTools endpoint needs (text frames, client masking,
ping/pong, close).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
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
from urllib.parse import urlparse

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Flags that work as root in a container: no sandbox, no GPU, nothing fetched in the background.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
_WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary on PATH (or ``$CHROMIUM``), or None."""
    explicit = os.environ.get("CHROMIUM")
    if explicit and Path(explicit).exists():
        return explicit
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


class WebSocket:
    """A blocking websocket client for ``ws://`` URLs (text messages only)."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "ws":
            raise ValueError(f"only ws:// URLs are supported, got {url!r}")
        self._socket = socket.create_connection((parsed.hostname, parsed.port), timeout=timeout_s)
        self._buffer = b""
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        self._socket.sendall(
            (
                f"GET {parsed.path or '/'} HTTP/1.1\r\nHost: {parsed.hostname}:{parsed.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode("ascii")
        )
        while b"\r\n\r\n" not in self._buffer:
            self._buffer += self._receive_some()
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if " 101 " not in lines[0] + " ":
            raise ConnectionError(f"websocket handshake with {url} failed: {lines[0]}")
        expected = base64.b64encode(
            hashlib.sha1((key + _WEBSOCKET_GUID).encode("ascii")).digest()
        ).decode("ascii")
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:])
        }
        if headers.get("sec-websocket-accept") != expected:
            raise ConnectionError(f"websocket handshake with {url}: bad Sec-WebSocket-Accept")

    def _receive_some(self) -> bytes:
        chunk = self._socket.recv(1 << 16)
        if not chunk:
            raise ConnectionError("websocket closed by the browser")
        return chunk

    def _read_exact(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._buffer += self._receive_some()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        header = bytes([0x80 | opcode])
        size = len(payload)
        if size < 126:
            header += bytes([0x80 | size])
        elif size < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", size)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", size)
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        self._socket.sendall(header + mask + masked)

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode("utf-8"))

    def receive(self, timeout_s: float) -> str:
        """The next text message; raises ``TimeoutError`` after ``timeout_s``."""
        self._socket.settimeout(timeout_s)
        message = b""
        while True:
            first, second = self._read_exact(2)
            opcode, final = first & 0x0F, bool(first & 0x80)
            size = second & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", self._read_exact(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", self._read_exact(8))
            mask = self._read_exact(4) if second & 0x80 else None
            payload = self._read_exact(size)
            if mask is not None:
                payload = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
            if opcode == 0x9:  # ping
                self._send_frame(0xA, payload)
                continue
            if opcode == 0xA:  # pong
                continue
            if opcode == 0x8:
                raise ConnectionError("websocket closed by the browser")
            message += payload
            if final:
                return message.decode("utf-8")

    def close(self) -> None:
        with suppress(OSError):
            self._send_frame(0x8, b"")
        self._socket.close()


@dataclass
class PageReport:
    """What a page reported while it was open."""

    console: list[dict[str, Any]] = field(default_factory=list)  # Runtime.consoleAPICalled
    exceptions: list[dict[str, Any]] = field(default_factory=list)  # Runtime.exceptionThrown
    log_entries: list[dict[str, Any]] = field(default_factory=list)  # Log.entryAdded
    requests: list[str] = field(default_factory=list)  # Network.requestWillBeSent URLs
    dialogs: list[dict[str, Any]] = field(default_factory=list)  # Page.javascriptDialogOpening

    def errors(self) -> list[str]:
        """Console errors/warnings, uncaught exceptions, error/warning log entries, dialogs."""
        found = []
        for call in self.console:
            if call.get("type") in ("error", "warning", "assert"):
                texts = [str(arg.get("value", arg.get("description"))) for arg in call["args"]]
                found.append(f"console.{call['type']}: {' '.join(texts)}")
        for exception in self.exceptions:
            details = exception.get("exceptionDetails", {})
            description = details.get("exception", {}).get("description") or details.get("text")
            found.append(f"uncaught exception: {description}")
        for entry in self.log_entries:
            if entry["entry"].get("level") in ("error", "warning"):
                found.append(f"log {entry['entry']['level']}: {entry['entry'].get('text')}")
        for dialog in self.dialogs:
            found.append(f"dialog {dialog.get('type')}: {dialog.get('message')}")
        return found


class Page:
    """One browser tab, attached over a flattened DevTools session."""

    def __init__(self, browser: Browser, session_id: str) -> None:
        self._browser = browser
        self.session_id = session_id
        self.report = PageReport()

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._browser.call(method, params, session_id=self.session_id)

    def goto(self, url: str, timeout_s: float = 30.0) -> None:
        """Navigate and wait for the load event."""
        self._browser.loaded.discard(self.session_id)
        result = self.call("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise RuntimeError(f"navigation to {url} failed: {result['errorText']}")
        self._browser.wait_for(lambda: self.session_id in self._browser.loaded, timeout_s)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression (promises awaited)."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(
                "evaluation failed: "
                + str(details.get("exception", {}).get("description") or details.get("text"))
            )
        return result["result"].get("value")

    def settle(self, seconds: float = 0.3) -> None:
        """Let late events (console, log) arrive."""
        self._browser.pump(seconds)


class Browser:
    """A headless Chromium process and its DevTools connection."""

    def __init__(self, binary: str, user_data_dir: Path, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        self._next_id = 0
        self._pages: dict[str, Page] = {}
        self.loaded: set[str] = set()
        self._responses: dict[int, dict[str, Any]] = {}
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )
        try:
            self._socket = WebSocket(self._devtools_url(user_data_dir, timeout_s), timeout_s)
        except BaseException:
            self.process.kill()
            self.process.wait(timeout=10)
            raise

    def _devtools_url(self, user_data_dir: Path, timeout_s: float) -> str:
        """The browser's DevTools websocket URL, from the ``DevToolsActivePort`` file."""
        port_file = user_data_dir / "DevToolsActivePort"
        deadline = time.monotonic() + timeout_s
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"chromium exited early ({self.process.returncode}): {self.stderr()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"chromium did not open its DevTools port: {self.stderr()}")
            time.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        return f"ws://127.0.0.1:{port}{path}"

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")[-4000:]

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "id" in message:
            self._responses[message["id"]] = message
            return
        page = self._pages.get(message.get("sessionId", ""))
        if page is None:
            return
        method, params = message["method"], message.get("params", {})
        if method == "Page.loadEventFired":
            self.loaded.add(page.session_id)
        elif method == "Runtime.consoleAPICalled":
            page.report.console.append(params)
        elif method == "Runtime.exceptionThrown":
            page.report.exceptions.append(params)
        elif method == "Log.entryAdded":
            page.report.log_entries.append(params)
        elif method == "Network.requestWillBeSent":
            page.report.requests.append(params["request"]["url"])
        elif method == "Page.javascriptDialogOpening":
            page.report.dialogs.append(params)
            self._send("Page.handleJavaScriptDialog", {"accept": False}, page.session_id)

    def _send(self, method: str, params: dict[str, Any] | None, session_id: str | None) -> int:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session_id:
            message["sessionId"] = session_id
        self._socket.send(json.dumps(message))
        return self._next_id

    def pump(self, seconds: float) -> None:
        """Read and dispatch messages for ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self._dispatch(json.loads(self._socket.receive(left)))
            except TimeoutError:
                return

    def wait_for(self, condition, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out waiting for the browser")
            self._dispatch(json.loads(self._socket.receive(left)))

    def call(
        self, method: str, params: dict[str, Any] | None = None, session_id: str | None = None
    ) -> dict[str, Any]:
        """Send a DevTools command and return its result (events meanwhile are dispatched)."""
        message_id = self._send(method, params, session_id)
        self.wait_for(lambda: message_id in self._responses, self.timeout_s)
        response = self._responses.pop(message_id)
        if "error" in response:
            raise RuntimeError(f"{method} failed: {response['error']}")
        return response.get("result", {})

    def new_page(self) -> Page:
        """A fresh tab with the Page, Runtime, Log and Network domains enabled."""
        target_id = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session_id = self.call("Target.attachToTarget", {"targetId": target_id, "flatten": True})[
            "sessionId"
        ]
        page = Page(self, session_id)
        self._pages[session_id] = page
        for domain in ("Page", "Runtime", "Log", "Network"):
            page.call(f"{domain}.enable")
        return page

    def close(self) -> None:
        with suppress(OSError, RuntimeError, TimeoutError):
            self.call("Browser.close")
        self._socket.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self._stderr.close()


@contextmanager
def headless_chromium(binary: str, timeout_s: float = 30.0) -> Iterator[Browser]:
    """A started browser with a throwaway profile, closed (and its process reaped) on exit."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        browser = Browser(binary, Path(profile), timeout_s)
        try:
            yield browser
        finally:
            browser.close()
