"""Response head and body in one socket write.

hypercorn's HTTP/1.1 protocol writes a response's head, then its body, each with its own send on
the socket; on loopback each send also pays for the receiving side's processing, and the two
sends were some 15% of a worker's CPU under single-message pushes (py-spy, push@1). Here the head
of a response whose length is known (a Content-Length, as every answer queen builds has) waits
for the first piece of its body and leaves with it; a streamed response (no Content-Length) is
written as before, so nothing waits on a body that is still being produced.

hypercorn builds its protocol objects by name, so `install` swaps the class in the one module
that names it; tests/integration/test_lean_path.py checks the bytes on the wire.
"""

from __future__ import annotations

import h11
import hypercorn.protocol
from hypercorn.events import RawData
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.typing import H11SendableEvent


class OneWriteH11Protocol(H11Protocol):
    _held_head = b""

    async def _send_h11_event(self, event: H11SendableEvent) -> None:
        try:
            data = self.connection.send(event)
        except h11.LocalProtocolError:
            if self.connection.their_state != h11.ERROR:
                raise
            return
        if isinstance(event, h11.Response) and _has_length(event):
            self._held_head = data
            return
        if self._held_head:
            data, self._held_head = self._held_head + data, b""
        await self.send(RawData(data=data))


def _has_length(response: h11.Response) -> bool:
    return any(name == b"content-length" for name, _ in response.headers)


def install() -> None:
    """Workers call this once before serving."""
    hypercorn.protocol.H11Protocol = OneWriteH11Protocol  # type: ignore[attr-defined]
