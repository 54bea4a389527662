"""A minimal ASGI app for uvicorn behind corral (tests/real_software.rs).

    uvicorn asgi_app:app --fd 3          # fd mode, as docs/fd-mode.md writes it
    uvicorn asgi_app:app --port $PORT    # port mode

GET / answers 200 with `worker=<CORRAL_WORKER_ID> pid=<pid> server=uvicorn`.
"""

import os

BODY = ("worker=%s pid=%d server=uvicorn\n" % (os.environ.get("CORRAL_WORKER_ID"), os.getpid())).encode()


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": BODY})
