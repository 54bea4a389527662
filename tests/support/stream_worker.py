"""A port-mode worker whose connections must never move to another worker
(tests/real_software.rs, workers.stateless).

It listens on $HOST:$PORT and tells connections apart by their first bytes:

- the HTTP/2 preface (`PRI * HTTP/2.0`, h2c with prior knowledge): served
  with the `h2` package; every request is answered with
  `worker=<CORRAL_WORKER_ID> pid=<pid> stream=<id>`;
- an HTTP/1.1 request with `Upgrade: echo`: answered `101 Switching
  Protocols`, then one line `worker=<id> pid=<pid>`, then every byte echoed;
- any other HTTP/1.x request: `200` with `worker=<id> pid=<pid>`, kept
  alive unless the request says `Connection: close`;
- anything else is what a worker sees when someone else's stream is handed
  to it mid-way (h2 frames without the preface, bytes of an upgraded
  connection): it prints `FOREIGN first bytes ...` (to corral's log) and
  closes.

On SIGTERM it stops listening, ends its HTTP/2 connections with GOAWAY and
closes them, closes its upgraded and idle connections, and exits 0.
"""

import asyncio
import os
import signal
import sys

import h2.config
import h2.connection
import h2.events

WORKER = os.environ.get("CORRAL_WORKER_ID")
PID = os.getpid()
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
METHODS = (b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ")
open_connections = set()


def say(text):
    print("worker %s pid %d: %s" % (WORKER, PID, text), flush=True)


class Connection:
    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self.h2 = None

    def close(self):
        if self.h2 is not None:
            try:
                self.h2.close_connection()
                self.writer.write(self.h2.data_to_send())
            except Exception:
                pass
        self.writer.close()

    async def serve(self):
        first = b""
        while len(first) < len(PREFACE):
            try:
                # Bytes that stop short of a preface or a request line (a
                # frame of someone else's stream) are judged after a second.
                chunk = await asyncio.wait_for(self.reader.read(len(PREFACE) - len(first)), 1.0 if first else None)
            except asyncio.TimeoutError:
                break
            if not chunk:
                break
            first += chunk
            if not PREFACE.startswith(first[: len(PREFACE)]) and (
                any(first.startswith(m) for m in METHODS) or b"\n" in first
            ):
                break
        if not first:
            return  # a TCP health check: connected, sent nothing
        if first.startswith(PREFACE):
            await self.serve_h2(first)
        elif any(first.startswith(m) for m in METHODS):
            await self.serve_http1(first)
        else:
            say("FOREIGN first bytes on a new connection: %r" % first)

    async def serve_h2(self, first):
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        self.h2.initiate_connection()
        self.writer.write(self.h2.data_to_send())
        data = first
        while True:
            if data:
                for event in self.h2.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        body = ("worker=%s pid=%d stream=%d\n" % (WORKER, PID, event.stream_id)).encode()
                        self.h2.send_headers(
                            event.stream_id,
                            [(":status", "200"), ("content-length", str(len(body))), ("content-type", "text/plain")],
                        )
                        self.h2.send_data(event.stream_id, body, end_stream=True)
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        self.writer.write(self.h2.data_to_send())
                        return
                self.writer.write(self.h2.data_to_send())
                await self.writer.drain()
            data = await self.reader.read(65536)
            if not data:
                return

    async def serve_http1(self, data):
        while True:
            while b"\r\n\r\n" not in data:
                chunk = await self.reader.read(65536)
                if not chunk:
                    return
                data += chunk
            head, data = data.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if headers.get("upgrade", "").lower() == "echo":
                self.writer.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n"
                    + ("worker=%s pid=%d\n" % (WORKER, PID)).encode()
                    + data
                )
                await self.writer.drain()
                while True:
                    chunk = await self.reader.read(65536)
                    if not chunk:
                        return
                    self.writer.write(chunk)
                    await self.writer.drain()
            body = ("worker=%s pid=%d\n" % (WORKER, PID)).encode()
            self.writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            )
            await self.writer.drain()
            if headers.get("connection", "").lower() == "close":
                return
            if not data:
                chunk = await self.reader.read(65536)
                if not chunk:
                    return
                data = chunk


async def handle(reader, writer):
    connection = Connection(reader, writer)
    open_connections.add(connection)
    try:
        await connection.serve()
    except (ConnectionError, OSError):
        pass
    except Exception as error:  # a protocol error: say so, close
        say("error: %r" % error)
    finally:
        open_connections.discard(connection)
        writer.close()


async def main():
    server = await asyncio.start_server(handle, os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"]))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    say("listening")
    await stop.wait()
    server.close()
    say("SIGTERM: closing %d connections" % len(open_connections))
    for connection in list(open_connections):
        connection.close()
    await asyncio.sleep(0.2)
    sys.exit(0)


asyncio.run(main())
