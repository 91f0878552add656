"""An SSE origin for the asyncapi.sse.proxy example: `GET /parcels/<id>/tracking` answers a
text/event-stream of three scans, the second of which breaks the document's schema (status
`lost` is not one of its values), then ends the stream.

Usage: sse_origin.py PORT EXPECTED_AUTHORITY. A request whose Host is not EXPECTED_AUTHORITY
is answered 421, so a test sees that the gateway sent the origin's own name. Prints
`listening` once it accepts connections.
"""

import http.server
import json
import re
import socketserver
import sys

PATH = re.compile(r"^/parcels/([A-Za-z0-9-]+)/tracking$")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        match = PATH.match(self.path)
        if self.headers.get("Host") != self.server.authority:
            self.send_error(421, "wrong authority " + str(self.headers.get("Host")))
            return
        if match is None:
            self.send_error(404)
            return
        parcel = match.group(1)
        scans = [
            {"status": "accepted", "depot": "north"},
            {"status": "lost"},
            {"status": "delivered", "depot": parcel},
        ]
        body = "".join(
            f"id: {index}\nevent: scan\ndata: {json.dumps(scan)}\n\n"
            for index, scan in enumerate(scans, 1)
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    port, authority = int(sys.argv[1]), sys.argv[2]
    server = Server(("127.0.0.1", port), Handler)
    server.authority = authority
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
