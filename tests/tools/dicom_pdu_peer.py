#!/usr/bin/python3
"""dicom_pdu_peer.py - a hostile DICOM upper-layer peer on a raw TCP socket (stdlib only), for
tests/reliability/hostile_peers.sh. It writes the PDUs of DICOM PS3.8 section 9.3 by hand, so it
can also write the ones no real SCU would: wrong lengths, truncated or oversized PDUs, unknown
types, garbage, a stall in the middle of a PDU, a C-STORE that stops half-way.

  /usr/bin/python3 dicom_pdu_peer.py --port P [--host 127.0.0.1] [--aec CXRTRIAGE]
      [--aet HOSTILE] [--file DICOM] [--wait S] CASE

Prints one JSON object on stdout:
  {"case": .., "outcome": "accepted|rejected|aborted|released|closed|reset|timeout|stored",
   "elapsed_s": <seconds from the last byte we sent until the daemon answered or closed>,
   "detail": {..}}
 rejected: A-ASSOCIATE-RJ (detail: result, source, reason); aborted: A-ABORT (source, reason);
 closed: the daemon closed the connection without a PDU; timeout: nothing within --wait s.

Cases (each opens its own connection):
  silent          connect and send nothing
  stall-rq        send the first half of an A-ASSOCIATE-RQ, then nothing
  stall-pdata     associate, then a P-DATA-TF header announcing 4000 bytes and only 10 of them
  stall-dataset   associate, C-STORE-RQ, the first half of --file's data set, then nothing
  half-store      associate, C-STORE-RQ, the first half of --file's data set, then close
  bad-length      an A-ASSOCIATE-RQ whose PDU length is 20 bytes short of its items
  truncated       an A-ASSOCIATE-RQ header announcing the whole PDU, half of it, then close
  oversized       a PDU header of type 1 with length 0xFFFFFFFF and 64 bytes
  oversized-pdata associate, then a P-DATA-TF header with length 0xFFFFFFFF and 64 bytes
  unknown-type    a PDU of type 0x0A (undefined) first
  unknown-type-assoc  associate, then a PDU of type 0x0A
  garbage-after-rq    a valid A-ASSOCIATE-RQ followed at once by 512 random bytes
  pdata-first     a P-DATA-TF before any association
  many-contexts N an A-ASSOCIATE-RQ with N presentation contexts (PS3.8 allows 128; their IDs
                  wrap), each proposing 2 transfer syntaxes: about 73 bytes per context
  long-aet        both AE title fields 16 bytes of control bytes, 0xFF, '=' and '%n'
  long-user-item  an implementation version name of 4000 bytes (PS3.7 allows 16)
  associate       a normal A-ASSOCIATE-RQ; then A-RELEASE-RQ if accepted
  store           associate, C-STORE --file, release (outcome "stored" with the status)
  hold N          open N associations at once, each proposing --file's SOP class; once all
                  are answered print {"held": [outcomes]} on stderr, wait until the file named
                  by --go exists, then C-STORE --file-list's files (one per association) and
                  release each; outcome "stored" when every admitted association stored Success
"""
import argparse
import json
import os
import socket
import struct
import sys
import time

APP_CONTEXT = b"1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPL_CLASS = b"1.2.826.0.1.3680043.10.1234.1"
GARBAGE = b"\xde\xad\xbe\xef" * 128  # first byte: no such PDU type (deterministic)


def uid_bytes(u):
    b = u.encode("ascii")
    return b + b"\0" if len(b) % 2 else b


def item(t, body):
    return struct.pack(">BBH", t, 0, len(body)) + body


def pdu(t, body, length=None):
    return struct.pack(">BBI", t, 0, len(body) if length is None else length) + body


def ae(s):
    return s.encode("ascii")[:16].ljust(16, b" ") if isinstance(s, str) else s


def associate_rq(aec, aet, contexts, impl_name=b"HOSTILE_PEER", raw_aes=None):
    """contexts: [(abstract syntax, [transfer syntaxes])]; PC IDs 1, 3, 5, ... (wrapping)."""
    parts = [item(0x10, APP_CONTEXT)]  # joined once: 15000 contexts make 1.1 MB
    for i, (asx, tss) in enumerate(contexts):
        pcid = (2 * i + 1) % 256
        body = struct.pack(">BBBB", pcid, 0, 0, 0) + item(0x30, uid_bytes(asx).rstrip(b"\0"))
        for ts in tss:
            body += item(0x40, uid_bytes(ts).rstrip(b"\0"))
        parts.append(item(0x20, body))
    user = item(0x51, struct.pack(">I", 16384)) + item(0x52, IMPL_CLASS) + item(0x55, impl_name)
    parts.append(item(0x50, user))
    items = b"".join(parts)
    called, calling = raw_aes if raw_aes else (ae(aec), ae(aet))
    return pdu(0x01, struct.pack(">HH", 1, 0) + called + calling + b"\0" * 32 + items)


def elem(group, el, value):
    return struct.pack("<HHI", group, el, len(value)) + value


def cstore_command(sop_class, sop_inst, msg_id=1):
    body = (elem(0, 0x0002, uid_bytes(sop_class)) + elem(0, 0x0100, struct.pack("<H", 1)) +
            elem(0, 0x0110, struct.pack("<H", msg_id)) + elem(0, 0x0700, struct.pack("<H", 0)) +
            elem(0, 0x0800, struct.pack("<H", 0)) + elem(0, 0x1000, uid_bytes(sop_inst)))
    return elem(0, 0x0000, struct.pack("<I", len(body))) + body


def pdata(pcid, data, command, last):
    mch = (1 if command else 0) | (2 if last else 0)
    pdv = struct.pack(">IBB", len(data) + 2, pcid, mch) + data
    return pdu(0x04, pdv)


def read_dicom(path):
    """(SOP class, SOP instance, transfer syntax, data set bytes) of a Part 10 file whose meta
    group is explicit VR little endian (as every Part 10 file's is)."""
    raw = open(path, "rb").read()
    if raw[128:132] != b"DICM":
        raise SystemExit(f"{path}: not a DICOM Part 10 file")
    pos, meta = 132, {}
    while pos + 8 <= len(raw):
        grp, el = struct.unpack_from("<HH", raw, pos)
        if grp != 2:
            break
        vr = raw[pos + 4:pos + 6]
        if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT", b"UC", b"UR", b"OF", b"OD", b"OL", b"OV"):
            ln = struct.unpack_from("<I", raw, pos + 8)[0]
            val = raw[pos + 12:pos + 12 + ln]
            pos += 12 + ln
        else:
            ln = struct.unpack_from("<H", raw, pos + 6)[0]
            val = raw[pos + 8:pos + 8 + ln]
            pos += 8 + ln
        meta[el] = val.rstrip(b"\0 ").decode("ascii", "replace")
    return meta[0x0002], meta[0x0003], meta[0x0010], raw[pos:]


class Conn:
    def __init__(self, args):
        self.args = args
        self.s = socket.create_connection((args.host, args.port), timeout=10)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.t_sent = time.monotonic()

    def send(self, b):
        """The daemon may close while we still send (a PDU it refuses from its header): that
        is an answer too, which the next read reports (closed or reset)."""
        try:
            self.s.sendall(b)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.t_sent = time.monotonic()

    def recv_exact(self, n, deadline):
        buf = b""
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.s.settimeout(left)
            try:
                chunk = self.s.recv(n - len(buf))
            except socket.timeout:
                raise TimeoutError from None
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def read_pdu(self, wait):
        """(type, body) or an outcome string: closed, reset, timeout."""
        deadline = time.monotonic() + wait
        try:
            h = self.recv_exact(6, deadline)
            t, _, ln = struct.unpack(">BBI", h)
            if ln > (1 << 24):
                return "bad-pdu-from-daemon", None
            return t, self.recv_exact(ln, deadline)
        except TimeoutError:
            return "timeout", None
        except EOFError:
            return "closed", None
        except (ConnectionResetError, BrokenPipeError):
            return "reset", None

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def describe(t, body):
    """outcome, detail for a PDU (or an outcome string from read_pdu)."""
    if isinstance(t, str):
        return t, {}
    if t == 0x02:
        ctx = accepted_contexts(body)
        return "accepted", {"contexts": ctx if len(ctx) <= 8 else {"count": len(ctx)}}
    if t == 0x03:
        return "rejected", {"result": body[1], "source": body[2], "reason": body[3]}
    if t == 0x07:
        return "aborted", {"source": body[2], "reason": body[3]}
    if t == 0x06:
        return "released", {}
    return f"pdu-0x{t:02x}", {"length": len(body)}


def accepted_contexts(body):
    """{pcid: transfer syntax} of the presentation contexts an A-ASSOCIATE-AC accepts."""
    out, pos = {}, 68
    while pos + 4 <= len(body):
        t, _, ln = struct.unpack_from(">BBH", body, pos)
        if t == 0x21 and body[pos + 6] == 0:
            sub = body[pos + 8:pos + 4 + ln]
            if len(sub) >= 4 and sub[0] == 0x40:
                sl = struct.unpack_from(">H", sub, 2)[0]
                out[body[pos + 4]] = sub[4:4 + sl].rstrip(b"\0 ").decode()
        pos += 4 + ln
    return out


def wait_answer(c, wait):
    t, body = c.read_pdu(wait)
    out, detail = describe(t, body)
    return out, detail, round(time.monotonic() - c.t_sent, 3)


def file_contexts(args):
    cls, _, ts, _ = read_dicom(args.file)
    return [(cls, [ts])]


def associate(args, contexts):
    c = Conn(args)
    c.send(associate_rq(args.aec, args.aet, contexts))
    out, detail, el = wait_answer(c, args.wait)
    return c, out, detail, el


def status_of(cmd):
    pos = 0
    while pos + 8 <= len(cmd):
        g, e, ln = struct.unpack_from("<HHI", cmd, pos)
        if (g, e) == (0, 0x0900):
            return struct.unpack_from("<H", cmd, pos + 8)[0]
        pos += 8 + ln
    return None


def cstore(c, pcid, path, msg_id=1, fraction=1.0):
    cls, inst, _, ds = read_dicom(path)
    c.send(pdata(pcid, cstore_command(cls, inst, msg_id), True, True))
    n = len(ds) if fraction >= 1.0 else int(len(ds) * fraction) // 2 * 2  # PDVs are even
    chunk = 16000
    for off in range(0, n, chunk):
        part = ds[off:min(off + chunk, n)]
        last = fraction >= 1.0 and off + chunk >= n
        c.send(pdata(pcid, part, False, last))
    return inst


def read_store_rsp(c, wait):
    cmd = b""
    while True:
        t, body = c.read_pdu(wait)
        if t != 0x04:
            return describe(t, body)[0], None
        pos = 0
        last = False
        while pos + 6 <= len(body):
            ln, _, mch = struct.unpack_from(">IBB", body, pos)
            cmd += body[pos + 6:pos + 4 + ln]
            last = last or (mch & 3) == 3
            pos += 4 + ln
        if last:
            return "stored", status_of(cmd)


def release(c, wait):
    c.send(pdu(0x05, b"\0\0\0\0"))
    return describe(*c.read_pdu(wait))[0]


def run_case(args):
    case = args.case
    if case == "silent":
        c = Conn(args)
        return wait_answer(c, args.wait)
    if case in ("stall-rq", "truncated"):
        rq = associate_rq(args.aec, args.aet, [(VERIFICATION, [IMPLICIT_LE])])
        c = Conn(args)
        c.send(rq[:len(rq) // 2])
        if case == "truncated":
            c.s.shutdown(socket.SHUT_WR)
        return wait_answer(c, args.wait)
    if case == "bad-length":
        rq = associate_rq(args.aec, args.aet, [(VERIFICATION, [IMPLICIT_LE])])
        rq = rq[:2] + struct.pack(">I", len(rq) - 6 - 20) + rq[6:]
        c = Conn(args)
        c.send(rq)
        return wait_answer(c, args.wait)
    if case == "oversized":
        c = Conn(args)
        c.send(struct.pack(">BBI", 1, 0, 0xFFFFFFFF) + os.urandom(64))
        return wait_answer(c, args.wait)
    if case == "unknown-type":
        c = Conn(args)
        c.send(pdu(0x0A, os.urandom(64)))
        return wait_answer(c, args.wait)
    if case == "pdata-first":
        c = Conn(args)
        c.send(pdata(1, cstore_command("1.2.840.10008.5.1.4.1.1.1", "1.2.3.4"), True, True))
        return wait_answer(c, args.wait)
    if case == "garbage-after-rq":
        c = Conn(args)
        c.send(associate_rq(args.aec, args.aet, [(VERIFICATION, [IMPLICIT_LE])]) + GARBAGE)
        out, detail, el = wait_answer(c, args.wait)
        if out == "accepted":  # then the garbage is read as the next PDU
            out2, d2, el = wait_answer(c, args.wait)
            detail = {"first": "accepted", "then": out2, **d2}
            out = out2
        return out, detail, el
    if case == "many-contexts":
        ctx = [(VERIFICATION, [IMPLICIT_LE, EXPLICIT_LE])] * args.count
        rq = associate_rq(args.aec, args.aet, ctx)  # before connecting: acse_timeout runs
        c = Conn(args)
        c.send(rq)
        out, detail, el = wait_answer(c, args.wait)
        if out == "accepted":
            detail["release"] = release(c, args.wait)
        return out, detail, el
    if case == "long-aet":  # both AE fields filled to 16 bytes with control bytes and 0xFF
        c = Conn(args)
        aes = (bytes(range(1, 17)), b"\xff" * 8 + b"=\n\r\t%s%n")
        c.send(associate_rq(args.aec, args.aet, [(VERIFICATION, [IMPLICIT_LE])], raw_aes=aes))
        return wait_answer(c, args.wait)
    if case == "long-user-item":  # an implementation version name of 4000 bytes (max 16)
        c = Conn(args)
        c.send(associate_rq(args.aec, args.aet, [(VERIFICATION, [IMPLICIT_LE])],
                            impl_name=b"X" * 4000))
        return wait_answer(c, args.wait)
    if case == "associate":
        c, out, detail, el = associate(args, [(VERIFICATION, [IMPLICIT_LE])])
        if out == "accepted":
            detail["release"] = release(c, args.wait)
        return out, detail, el
    # the cases below need an accepted association
    ctx = file_contexts(args) if args.file else [(VERIFICATION, [IMPLICIT_LE])]
    c, out, detail, el = associate(args, ctx)
    if out != "accepted":
        return "not-accepted:" + out, detail, el
    pcid = next(iter(detail["contexts"]), 1)
    if case == "stall-pdata":
        c.send(struct.pack(">BBI", 4, 0, 4000) + os.urandom(10))
        return wait_answer(c, args.wait)
    if case == "oversized-pdata":
        c.send(struct.pack(">BBI", 4, 0, 0xFFFFFFFF) + os.urandom(64))
        return wait_answer(c, args.wait)
    if case == "unknown-type-assoc":
        c.send(pdu(0x0A, os.urandom(64)))
        return wait_answer(c, args.wait)
    if case in ("stall-dataset", "half-store"):
        if not detail["contexts"]:
            return "context-not-accepted", detail, el
        inst = cstore(c, pcid, args.file, fraction=0.5)
        if case == "half-store":
            c.close()
            return "sent-half-and-closed", {"sop_instance_uid": inst}, 0.0
        out, d2, el = wait_answer(c, args.wait)
        d2["sop_instance_uid"] = inst
        return out, d2, el
    if case == "store":
        if not detail["contexts"]:
            return "context-not-accepted", detail, el
        inst = cstore(c, pcid, args.file)
        out, status = read_store_rsp(c, args.wait)
        rel = release(c, args.wait) if out == "stored" else None
        return out, {"status": status, "sop_instance_uid": inst, "release": rel}, 0.0
    raise SystemExit(f"unknown case {case}")


def hold(args):
    """N associations at once; wait for --go; a C-STORE on each admitted one; release."""
    files = args.file_list
    conns = []
    ctx = file_contexts(args)
    for _ in range(args.count):
        c = Conn(args)
        c.send(associate_rq(args.aec, args.aet, ctx))
        conns.append(c)
    held = []
    for c in conns:
        out, detail, _ = wait_answer(c, args.wait)
        held.append((out, detail))
    print(json.dumps({"held": [o for o, _ in held]}), file=sys.stderr, flush=True)
    deadline = time.monotonic() + args.wait
    while args.go and not os.path.exists(args.go) and time.monotonic() < deadline:
        time.sleep(0.05)
    results = []
    fi = 0
    for c, (out, detail) in zip(conns, held):
        if out != "accepted":
            results.append({"association": out, **detail})
            continue
        pcid = next(iter(detail["contexts"]), 1)
        inst = cstore(c, pcid, files[fi % len(files)], msg_id=fi + 1)
        fi += 1
        o, status = read_store_rsp(c, args.wait)
        results.append({"association": "accepted", "store": o, "status": status,
                        "sop_instance_uid": inst, "release": release(c, args.wait)})
    ok = all(r.get("status") == 0 and r.get("release") == "released"
             for r in results if r["association"] == "accepted")
    return ("stored" if ok else "store-failed"), {"results": results}, 0.0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--aec", default="CXRTRIAGE")
    p.add_argument("--aet", default="HOSTILE")
    p.add_argument("--file")
    p.add_argument("--file-list", nargs="*", default=[])
    p.add_argument("--go")
    p.add_argument("--wait", type=float, default=30.0)
    p.add_argument("case")
    p.add_argument("count", nargs="?", type=int, default=1)
    args = p.parse_args()
    t0 = time.monotonic()
    if args.case == "hold":
        out, detail, el = hold(args)
    else:
        out, detail, el = run_case(args)
    print(json.dumps({"case": args.case, "outcome": out, "elapsed_s": el, "detail": detail,
                      "total_s": round(time.monotonic() - t0, 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
