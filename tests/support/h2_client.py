"""An HTTP/2 client (h2c, prior knowledge, over a plain socket) for
tests/real_software.rs: one connection, a GET on a new stream every
INTERVAL seconds, until the connection ends or SECONDS pass.

    python3 h2_client.py HOST PORT SECONDS INTERVAL

Prints `ready` once the first answer came, then one JSON line at the end:
{"responses": N, "bodies": [distinct "worker=.. pid=.." texts],
 "ended": "goaway" | "eof" | "reset" | "timeout" | "error: ...",
 "unanswered": streams sent and never answered or refused}
"""

import json
import select
import socket
import sys
import time

import h2.config
import h2.connection
import h2.events

host, port, seconds, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
sock = socket.create_connection((host, port), timeout=5)
conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
conn.initiate_connection()
sock.sendall(conn.data_to_send())

responses = 0
bodies = set()
pending = {}
ended = None
said_ready = False
deadline = time.time() + seconds
next_request = time.time()
goaway_last_stream = None

while ended is None:
    now = time.time()
    if now >= deadline:
        ended = "timeout"
        break
    if now >= next_request and goaway_last_stream is None:
        stream = conn.get_next_available_stream_id()
        conn.send_headers(
            stream, [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "%s:%d" % (host, port))],
            end_stream=True,
        )
        pending[stream] = b""
        try:
            sock.sendall(conn.data_to_send())
        except OSError as error:
            ended = "reset" if isinstance(error, ConnectionResetError) else "error: %r" % error
            break
        next_request = now + interval
    ready, _, _ = select.select([sock], [], [], max(0.0, min(next_request, deadline) - time.time()))
    if not ready:
        continue
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        ended = "reset"
        break
    except OSError as error:
        ended = "error: %r" % error
        break
    if not data:
        ended = "goaway" if goaway_last_stream is not None else "eof"
        break
    for event in conn.receive_data(data):
        if isinstance(event, h2.events.DataReceived):
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if event.stream_id in pending:
                pending[event.stream_id] += event.data
        elif isinstance(event, h2.events.StreamEnded):
            body = pending.pop(event.stream_id, b"")
            responses += 1
            text = body.decode(errors="replace").strip()
            bodies.add(text.rsplit(" stream=", 1)[0])
            if not said_ready:
                said_ready = True
                print("ready", flush=True)
        elif isinstance(event, h2.events.StreamReset):
            pending.pop(event.stream_id, None)
        elif isinstance(event, h2.events.ConnectionTerminated):
            goaway_last_stream = event.last_stream_id
            for stream in [s for s in pending if s > (event.last_stream_id or 0)]:
                pending.pop(stream)  # refused by the GOAWAY: never processed
    try:
        out = conn.data_to_send()
        if out:
            sock.sendall(out)
    except OSError:
        pass

print(json.dumps({"responses": responses, "bodies": sorted(bodies), "ended": ended, "unanswered": len(pending)}), flush=True)
