# One client for benches/instructions/run.sh: N requests, each on a new
# connection ("close") or all on one kept-alive connection ("keep").
import socket, sys
n = int(sys.argv[1]); keep = sys.argv[2] == "keep"
req = b"GET / HTTP/1.1\r\nHost: x\r\n" + (b"" if keep else b"Connection: close\r\n") + b"\r\n"
def read_resp(s):
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(body) < length:
        body += s.recv(65536)
if keep:
    s = socket.create_connection(("127.0.0.1", 18500))
    for _ in range(n):
        s.sendall(req); read_resp(s)
    s.close()
else:
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", 18500))
        s.sendall(req); read_resp(s); s.close()
