"""A WSGI app for the header-variant tests (TestHeaderVariants*): it answers, as JSON, every
HTTP_COUNTERSIGN* variable its server (wsgiref, which maps '-' and '_' alike, as Flask's and
Django's servers do) put in the environment, and answers with Countersign- headers spelled
in other ways. It prints "listening on PORT" once it serves."""
import json
import sys
from wsgiref.simple_server import make_server, WSGIRequestHandler


def app(environ, start_response):
    seen = {k: v for k, v in environ.items() if k.startswith("HTTP_COUNTERSIGN")}
    body = json.dumps(seen, sort_keys=True).encode()
    start_response("200 OK", [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Countersign_Receipt", "forged-by-the-app"),
        ("countersign-verified", "forged-by-the-app"),
        ("COUNTERSIGN.Countersignature", "forged-by-the-app"),
    ])
    return [body]


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


srv = make_server("127.0.0.1", 0, app, handler_class=Quiet)
print("listening on %d" % srv.server_port, flush=True)
srv.serve_forever()
