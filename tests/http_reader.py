"""A strict HTTP/1.1 client end for tests that speak raw bytes: pipelining, handover, framing."""

from __future__ import annotations

import trio


class Client:
    """The client's end, reading answers strictly: a status line, headers, then exactly the
    body the framing announces (Content-Length or chunks), nothing more."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def send(self, raw: bytes) -> None:
        await self.stream.send_all(raw)

    async def _until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError
            self.buffer += data
        taken, _, self.buffer = self.buffer.partition(marker)
        return taken

    async def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError
            self.buffer += data
        taken, self.buffer = self.buffer[:size], self.buffer[size:]
        return taken

    async def answer(self, head: bool = False) -> tuple[int, dict[bytes, bytes], bytes]:
        """One answer; `head`: to a HEAD request, whose framing headers announce no body."""
        status_line, *lines = (await self._until(b"\r\n\r\n")).split(b"\r\n")
        version, status, _ = status_line.split(b" ", 2)
        assert version == b"HTTP/1.1"
        headers: dict[bytes, bytes] = {}
        for line in lines:
            name, _, value = line.partition(b": ")
            assert name.lower() not in headers
            headers[name.lower()] = value
        if head:
            return int(status), headers, b""
        if b"content-length" in headers:
            assert b"transfer-encoding" not in headers
            return int(status), headers, await self._exactly(int(headers[b"content-length"]))
        if headers.get(b"transfer-encoding") == b"chunked":
            body = b""
            while size := int(await self._until(b"\r\n"), 16):
                body += await self._exactly(size)
                assert await self._exactly(2) == b"\r\n"
            assert await self._exactly(2) == b"\r\n"
            return int(status), headers, body
        return int(status), headers, b""

    async def closed(self) -> bool:
        return self.buffer == b"" and await self.stream.receive_some(65536) == b""
