#!/usr/bin/env python3
"""A backend for the services tests: answers every HTTP GET with its own name, logs each
client's address (one line per request, flushed), and on /stream sends a line every 100 ms
for as long as the client stays (a long-lived connection through a service).

    python3 name_server.py NAME PORT LOG
"""
import http.server
import socketserver
import sys
import time

NAME, PORT, LOG = sys.argv[1], int(sys.argv[2]), sys.argv[3]
log = open(LOG, "a", buffering=1)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        log.write(f"{self.client_address[0]} {self.path}\n")
        if self.path.startswith("/stream"):
            self.send_response(200)
            self.end_headers()
            try:
                for i in range(600):
                    self.wfile.write(f"{NAME} {i}\n".encode())
                    self.wfile.flush()
                    time.sleep(0.1)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        body = f"{NAME}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


Server(("0.0.0.0", PORT), Handler).serve_forever()
