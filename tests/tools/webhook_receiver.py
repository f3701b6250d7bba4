#!/usr/bin/python3
"""webhook_receiver.py - a test EHR webhook endpoint (stdlib only) that records what it gets and
fails on demand. Reused by the sender's and, later, the daemon's integration tests.

  /usr/bin/python3 webhook_receiver.py --port P --log FILE [--host 127.0.0.1]
      [--actions LIST] [--control FILE] [--tls-cert PEM --tls-key PEM [--tls-client-ca PEM]]
      [--hmac-key KEY] [--token TOKEN] [--lifetime SECONDS] [--ready FILE]

Behaviour per request, from an action LIST (comma separated, one action consumed per request,
the last one repeats; default "200"):
  NNN          answer status NNN with a small JSON body {"status":NNN,"n":<request number>}
  NNN:ra=V     the same with "Retry-After: V"; V "date+S" sends an HTTP-date S seconds ahead
  hang:S       read the request, then answer nothing for S seconds and close the connection
  cut          send "200" with Content-Length 1000 and only 20 bytes of body, then close
  close        close the connection without an answer
  redirect     "301" with "Location: /elsewhere"
--tls-client-ca PEM: mutual TLS, a client certificate signed by PEM is required.
--control FILE: while FILE exists, its first line is one action for every request (read on
each request, so a test can change the behaviour of a running receiver).

Log (--log): one JSON object per line, flushed at once:
  {"kind":"connect","conn":C}                          a TCP connection accepted (TLS included)
  {"kind":"tls_error","conn":C,"error":"..."}          a TLS handshake that failed
  {"kind":"request","n":N,"conn":C,"method":..,"path":..,"headers":{..},"body":"..",
   "action":"..","token_ok":bool|null,"hmac_ok":bool|null,"ts_skew_s":int|null,
   "t":<Unix time in seconds (float) when the whole request had been read>}
Counting distinct "conn" values of the requests shows connection reuse (keep-alive).
token_ok: "Authorization: Bearer <--token>" matched (null without --token).
hmac_ok: X-Cxrtriage-Signature equals "sha256=" + hex HMAC-SHA256(--hmac-key,
  "<X-Cxrtriage-Timestamp>.<raw body>"), compared with hmac.compare_digest (null without key).
--ready FILE is written once the socket listens (so a test needs no sleep). --lifetime bounds
the run (default 60 s); SIGTERM stops it at once. Nagle is off (disable_nagle_algorithm).
"""
import argparse
import email.utils
import hashlib
import hmac
import http.server
import json
import os
import signal
import socket
import ssl
import sys
import threading
import time


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.n = 0
        self.conns = 0
        self.actions = [a for a in args.actions.split(",") if a]
        self.log = open(args.log, "a", encoding="utf-8")

    def write(self, rec):
        with self.lock:
            self.log.write(json.dumps(rec, sort_keys=True) + "\n")
            self.log.flush()

    def next_conn(self):
        with self.lock:
            self.conns += 1
            return self.conns

    def next_action(self):
        with self.lock:
            self.n += 1
            n = self.n
            actions = self.actions
            if self.args.control and os.path.exists(self.args.control):
                with open(self.args.control, encoding="utf-8") as f:
                    return n, f.readline().strip() or "200"
            if not actions:
                return n, "200"
            i = n - 1
            return n, actions[i] if i < len(actions) else actions[-1]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # PEERS.md: else ~40 ms per request
    server_version = "webhook_receiver/1"

    def setup(self):
        super().setup()
        self.conn_id = getattr(self.request, "conn_id", None) or self.server.state.next_conn()
        if not getattr(self.request, "conn_id", None):
            self.server.state.write({"kind": "connect", "conn": self.conn_id})

    def log_message(self, fmt, *args):  # quiet: the JSON log is the record
        pass

    def do_POST(self):
        self.handle_any()

    def do_PUT(self):
        self.handle_any()

    def do_GET(self):
        self.handle_any()

    def handle_any(self):
        st = self.server.state
        args = st.args
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        arrived = time.time()
        n, action = st.next_action()
        token_ok = None
        if args.token is not None:
            token_ok = hmac.compare_digest(self.headers.get("Authorization", ""),
                                           "Bearer " + args.token)
        hmac_ok = None
        skew = None
        if args.hmac_key is not None:
            ts = self.headers.get("X-Cxrtriage-Timestamp", "")
            sig = self.headers.get("X-Cxrtriage-Signature", "")
            mac = hmac.new(args.hmac_key.encode(), ts.encode() + b"." + body, hashlib.sha256)
            hmac_ok = hmac.compare_digest(sig, "sha256=" + mac.hexdigest())
            try:
                skew = int(time.time()) - int(ts)
            except ValueError:
                skew = None
        st.write({"kind": "request", "n": n, "conn": self.conn_id, "method": self.command,
                  "path": self.path, "headers": {k: v for k, v in self.headers.items()},
                  "body": body.decode("utf-8", "replace"), "action": action,
                  "token_ok": token_ok, "hmac_ok": hmac_ok, "ts_skew_s": skew, "t": arrived})
        self.act(n, action)

    def act(self, n, action):
        if action.startswith("hang:"):
            time.sleep(float(action[5:]))
            self.close_connection = True
            return
        if action == "close":
            self.close_connection = True
            return
        if action == "cut":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 1000\r\n\r\n" + b'{"partial": "xxxxxx')
            self.wfile.flush()
            self.close_connection = True
            return
        headers = {}
        if action == "redirect":
            status = 301
            headers["Location"] = "/elsewhere"
        else:
            code, _, opt = action.partition(":")
            status = int(code)
            if opt.startswith("ra="):
                v = opt[3:]
                if v.startswith("date+"):
                    v = email.utils.formatdate(time.time() + float(v[5:]), usegmt=True)
                headers["Retry-After"] = v
        payload = json.dumps({"status": status, "n": n}).encode()
        if status >= 400:
            payload = json.dumps({"status": status, "n": n,
                                  "error": "rejected by webhook_receiver\r\nline2"}).encode()
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: a sender opening tens of connections at once
    # (the daemon submits up to 64 reports per tick) had SYNs dropped and retried after 1-3 s.
    request_queue_size = 128

    def finish_request(self, request, client_address):
        # The TLS handshake runs here, in the connection's own thread, so a client that
        # refuses our certificate cannot stall the accept loop.
        if self.ssl_ctx is not None:
            conn = self.state.next_conn()
            self.state.write({"kind": "connect", "conn": conn})
            try:
                tls = self.ssl_ctx.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as e:
                self.state.write({"kind": "tls_error", "conn": conn, "error": str(e)})
                return
            try:
                tls.conn_id = conn
            except AttributeError:
                pass
            try:
                self.RequestHandlerClass(tls, client_address, self)
            finally:
                try:
                    tls.close()
                except OSError:
                    pass
            return
        self.RequestHandlerClass(request, client_address, self)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--actions", default="200")
    p.add_argument("--control")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--tls-client-ca")
    p.add_argument("--hmac-key")
    p.add_argument("--token")
    p.add_argument("--lifetime", type=float, default=60.0)
    p.add_argument("--ready")
    args = p.parse_args()

    srv = Server((args.host, args.port), Handler)
    srv.state = State(args)
    srv.ssl_ctx = None
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        if args.tls_client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(args.tls_client_ca)
        srv.ssl_ctx = ctx
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    threading.Timer(args.lifetime, lambda: os._exit(0)).start()
    if args.ready:
        with open(args.ready + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(args.ready + ".tmp", args.ready)
    srv.serve_forever(poll_interval=0.1)


if __name__ == "__main__":
    sys.exit(main())
