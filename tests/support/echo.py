#!/usr/bin/env python3
"""A TCP echo worker for corral's tests: listens on $HOST:$PORT and echoes
every byte back; on the client's half-close it finishes sending and closes."""
import os
import socket
import threading


def serve(conn):
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)


def main():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"])))
    srv.listen(512)
    print(f"echo worker {os.environ.get('CORRAL_WORKER_ID', '-')} on {os.environ['PORT']}", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
