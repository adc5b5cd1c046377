"""A recording provider for the end-to-end figure: `python -m bench.recorder --bind HOST:PORT`.

It speaks the provider contract's happy path (POST /message → 200) and notes, for each call,
its Idempotency-Key (the message id) and the CLOCK_MONOTONIC time at which the request's head
arrived. CLOCK_MONOTONIC is one clock for every process of the machine, so these times compare
directly with the open-loop client's due times. GET /receipts answers them all as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson

_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"


def _answer(body: bytes) -> bytes:
    return _OK % (len(body), body)


class Recorder:
    """Receipts in arrival order: [message id, monotonic ns]."""

    def __init__(self) -> None:
        self.receipts: list[tuple[str, int]] = []

    async def serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                arrived = time.monotonic_ns()
                writer.write(await self._handle(head, arrived, reader))
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _handle(self, head: bytes, arrived: int, reader: asyncio.StreamReader) -> bytes:
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        await reader.readexactly(int(headers.get("content-length", "0")))
        if method == "POST" and path == "/message":
            self.receipts.append((headers.get("idempotency-key", ""), arrived))
            return _answer(b'{"status":"accepted"}')
        if path == "/receipts":
            return _answer(orjson.dumps(self.receipts))
        if path == "/reset":
            self.receipts.clear()
        return _answer(b'{"status":"ok"}')


async def serve(host: str, port: int) -> None:
    recorder = Recorder()
    server = await asyncio.start_server(recorder.serve_connection, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.recorder", description=__doc__)
    parser.add_argument("--bind", required=True, help="HOST:PORT")
    args = parser.parse_args(argv)
    host, port = args.bind.rsplit(":", 1)
    asyncio.run(serve(host, int(port)))


if __name__ == "__main__":
    main()
