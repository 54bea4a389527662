"""A minimal WSGI app for gunicorn behind corral (tests/real_software.rs).

    gunicorn wsgi_app:app        # fd mode: gunicorn takes LISTEN_FDS itself

GET / answers 200 with `worker=<CORRAL_WORKER_ID> pid=<pid> server=gunicorn`
(the pid of gunicorn's worker process that served it).
"""

import os


def app(environ, start_response):
    body = ("worker=%s pid=%d server=gunicorn\n" % (os.environ.get("CORRAL_WORKER_ID"), os.getpid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
