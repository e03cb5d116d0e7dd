"""A site's uplink on loopback, that can be cut and restored: a TCP relay between the agent and the API.
The demo drops the link with it, the benchmark holds an outage with it, and the tests lose a response
in it. It listens on a loopback address only.

- `cut()`: every open connection is reset and new ones are closed at once, as the agent sees a link
  that went down; `restore()` lets connections through again.
- `hold()`: what the API answers is kept in the relay instead of delivered (the API did the work, the
  agent never hears of it: a lost response); `held` is what it kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress


class LinkProxy:
    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1", port: int = 0) -> None:
        for address in (host, target_host):
            if not ipaddress.ip_address(address).is_loopback:
                raise ValueError(f"{address} is not a loopback address: the link relays on this machine only")
        self.target_host, self.target_port = target_host, target_port
        self.host, self.port = host, port
        self.up = True
        self.holding = False
        self.held = bytearray()
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> LinkProxy:
        self._server = await asyncio.start_server(self._relay, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self._reset_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        self.up = False
        self._reset_all()

    def restore(self) -> None:
        self.up = True

    def hold(self) -> None:
        self.holding = True

    def release(self) -> None:
        """Stop holding; the connections whose answers were held are reset (those answers are lost)."""
        self.holding = False
        self._reset_all()

    def _reset_all(self) -> None:
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if not self.up:
            client_writer.transport.abort()
            return
        try:
            target_reader, target_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            client_writer.transport.abort()  # the API is not there: the agent sees a reset
            return
        self.connections += 1
        self._open |= {client_writer, target_writer}
        try:
            await asyncio.gather(self._pipe(client_reader, target_writer, upstream=True),
                                 self._pipe(target_reader, client_writer, upstream=False))
        finally:
            for writer in (client_writer, target_writer):
                self._open.discard(writer)
                writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if not upstream and self.holding:
                    self.held += data
                    continue
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
