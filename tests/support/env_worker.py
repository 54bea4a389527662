#!/usr/bin/env python3
"""Writes argv[2] and its environment (PORT, HOST, CORRAL_WORKER_ID,
CORRAL_WORKER_COUNT, GREETING) to the file argv[1], then accepts on $PORT."""
import os, sys, socket
open(sys.argv[1], 'w').write('\n'.join([sys.argv[2], os.environ['PORT'], os.environ['HOST'], os.environ['CORRAL_WORKER_ID'], os.environ['CORRAL_WORKER_COUNT'], os.environ['GREETING']]))
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen(8)
while True: s.accept()[0].close()
