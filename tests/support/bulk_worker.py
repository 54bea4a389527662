"""A worker for byte-exact transfers (tests/upgrade.rs): it listens on
$HOST:$PORT and reads one line from each connection:

- `download N`: sends N bytes of a counting pattern (the 32-bit
  little-endian words 0, 1, 2, ... back to back), then closes, so a client
  can check every byte's place: a byte lost, repeated or reordered shows;
- `echo`: echoes every byte after that line until the client half-closes,
  then finishes sending and closes.

Anything else (a health check that sends nothing) is closed.
"""

import array
import os
import sys

from echo import serve as echo_until_half_close  # beside this file
from worker_answer import listen_and_serve  # beside this file

WORDS_PER_CHUNK = 16 * 1024
assert array.array("I").itemsize == 4 and sys.byteorder == "little"


def download(conn, size):
    words = (size + 3) // 4
    sent = 0
    for start in range(0, words, WORDS_PER_CHUNK):
        chunk = array.array("I", range(start, min(start + WORDS_PER_CHUNK, words))).tobytes()
        chunk = chunk[: size - sent]
        conn.sendall(chunk)
        sent += len(chunk)


def echo(conn, first):
    """What came after the `echo` line, then tests/support/echo.py's loop."""
    if first:
        conn.sendall(first)
    echo_until_half_close(conn)


def serve(conn):
    with conn:
        try:
            head = b""
            while b"\n" not in head:
                data = conn.recv(4096)
                if not data:
                    return
                head += data
            line, rest = head.split(b"\n", 1)
            words = line.split()
            if words[:1] == [b"download"] and len(words) == 2:
                download(conn, int(words[1]))
            elif words == [b"echo"]:
                echo(conn, rest)
        except OSError as error:
            print("bulk worker %s: %s" % (os.environ.get("CORRAL_WORKER_ID"), error), flush=True)


def main():
    listen_and_serve(serve)


if __name__ == "__main__":
    main()
