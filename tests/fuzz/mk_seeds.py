#!/usr/bin/env python3
"""mk_seeds.py - writes the synthetic seed inputs of tests/fuzz/corpus/{pdu,hl7,fhir,config}.

Run from anywhere: python3 tests/fuzz/mk_seeds.py. Every value is made up (no patient data).
The DICOM seeds of corpus/dicom and corpus/model were made earlier by other means (see README).
"""
import os
import re
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- DICOM upper layer (PS3.8 section 9.3) -------------------------------------------------
def item(kind, body):
    return struct.pack(">BBH", kind, 0, len(body)) + body


def assoc_rq(called=b"CXRTRIAGE", calling=b"FUZZSCU", contexts=()):
    body = struct.pack(">HH", 1, 0) + called.ljust(16) + calling.ljust(16) + bytes(32)
    body += item(0x10, b"1.2.840.10008.3.1.1.1")
    for pcid, abstract, syntaxes in contexts:
        sub = item(0x30, abstract) + b"".join(item(0x40, ts) for ts in syntaxes)
        body += item(0x20, bytes([pcid, 0, 0, 0]) + sub)
    user = item(0x51, struct.pack(">I", 16384)) + item(0x52, b"1.2.826.0.1.3680043.2.1545.1")
    user += item(0x55, b"FUZZ_0")
    body += item(0x50, user)
    return struct.pack(">BBI", 1, 0, len(body)) + body


def pdata(pcid, command, data):
    mch = (1 if command else 0) | 2  # last fragment
    pdv = struct.pack(">I", len(data) + 2) + bytes([pcid, mch]) + data
    return struct.pack(">BBI", 4, 0, len(pdv)) + pdv


def uid(s):
    b = s.encode()
    return b + b"\0" if len(b) % 2 else b


def implicit(group, elem, value):
    return struct.pack("<HHI", group, elem, len(value)) + value


def command(elements):
    body = b"".join(implicit(g, e, v) for g, e, v in elements)
    return implicit(0, 0, struct.pack("<I", len(body))) + body


def explicit(group, elem, vr, value):
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
        return struct.pack("<HH", group, elem) + vr + b"\0\0" + struct.pack("<I", len(value)) + value
    return struct.pack("<HH", group, elem) + vr + struct.pack("<H", len(value)) + value


def text(s):
    b = s.encode()
    return b + b" " if len(b) % 2 else b


US = lambda v: struct.pack("<H", v)
VERIFICATION = "1.2.840.10008.1.1"
CR = "1.2.840.10008.5.1.4.1.1.1"
IMPLICIT, EXPLICIT = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"
SOP = "1.2.826.0.1.3680043.8.498.1.1.1"
STUDY, SERIES = "1.2.826.0.1.3680043.8.498.1.2", "1.2.826.0.1.3680043.8.498.1.3"
RELEASE = bytes([5, 0, 0, 0, 0, 4, 0, 0, 0, 0])
ABORT = bytes([7, 0, 0, 0, 0, 4, 0, 0, 0, 0])

echo_rq = command([(0, 2, uid(VERIFICATION)), (0, 0x100, US(0x30)), (0, 0x110, US(1)),
                   (0, 0x800, US(0x101))])
store_rq = command([(0, 2, uid(CR)), (0, 0x100, US(1)), (0, 0x110, US(2)), (0, 0x700, US(0)),
                    (0, 0x800, US(0)), (0, 0x1000, uid(SOP))])
dataset = b"".join([
    explicit(0x0008, 0x0016, b"UI", uid(CR)), explicit(0x0008, 0x0018, b"UI", uid(SOP)),
    explicit(0x0008, 0x0060, b"CS", text("CR")), explicit(0x0010, 0x0010, b"PN", text("FUZZ^TEST")),
    explicit(0x0010, 0x0020, b"LO", text("FZ0001")),
    explicit(0x0020, 0x000D, b"UI", uid(STUDY)), explicit(0x0020, 0x000E, b"UI", uid(SERIES)),
    explicit(0x0028, 0x0002, b"US", US(1)), explicit(0x0028, 0x0004, b"CS", text("MONOCHROME2")),
    explicit(0x0028, 0x0010, b"US", US(4)), explicit(0x0028, 0x0011, b"US", US(4)),
    explicit(0x0028, 0x0100, b"US", US(8)), explicit(0x0028, 0x0101, b"US", US(8)),
    explicit(0x0028, 0x0102, b"US", US(7)), explicit(0x0028, 0x0103, b"US", US(0)),
    explicit(0x7FE0, 0x0010, b"OB", bytes(range(0, 256, 16))),
])
ctx_echo = (1, VERIFICATION.encode(), [IMPLICIT.encode()])
ctx_cr = (3, CR.encode(), [EXPLICIT.encode(), IMPLICIT.encode()])

put("pdu", "echo.bin", assoc_rq(contexts=[ctx_echo]) + pdata(1, True, echo_rq) + RELEASE)
put("pdu", "store.bin", assoc_rq(contexts=[ctx_echo, ctx_cr]) + pdata(3, True, store_rq)
    + pdata(3, False, dataset) + RELEASE)
put("pdu", "assoc_abort.bin", assoc_rq(contexts=[ctx_cr]) + ABORT)
# DCMTK reads a UI value starting with '=' as a UID's name to look up; answering a command
# with such a UID leaked the response's elements (368 bytes) before the listener checked them.
echo_rq_name = command([(0, 2, uid("=" + VERIFICATION)), (0, 0x100, US(0x30)), (0, 0x110, US(1)),
                        (0, 0x800, US(0x101))])
put("pdu", "regress_echo_rq_uid_name_leak.bin",
    assoc_rq(contexts=[ctx_echo]) + pdata(1, True, echo_rq_name) + RELEASE)
store_rq_name = command([(0, 2, uid("=" + CR)), (0, 0x100, US(1)), (0, 0x110, US(2)),
                         (0, 0x700, US(0)), (0, 0x800, US(0)), (0, 0x1000, uid("=" + SOP))])
put("pdu", "regress_store_rq_uid_name_leak.bin", assoc_rq(contexts=[ctx_echo, ctx_cr])
    + pdata(3, True, store_rq_name) + pdata(3, False, dataset) + RELEASE)
put("pdu", "wrong_called.bin", assoc_rq(called=b"NOTUS", contexts=[ctx_echo]))
put("pdu", "reject_calling.bin", assoc_rq(calling=b"REJECTME", contexts=[ctx_echo]))
put("pdu", "busy.bin", assoc_rq(calling=b"BUSYSCU", contexts=[ctx_echo]))
put("pdu", "no_context.bin", assoc_rq(contexts=[(5, b"1.2.3.4", [IMPLICIT.encode()])]))
put("pdu", "release_only.bin", RELEASE)

# ---- reports (layout in report_input.h) -----------------------------------------------------
FIELDS = ["study_uid", "study_date", "study_time", "tz_offset", "patient_id", "issuer", "name",
          "birth_date", "sex", "accession", "placer", "filler", "req_proc", "proc_code",
          "proc_scheme", "proc_meaning", "triage_reason", "triage_rule", "model_name",
          "model_version", "model_digest", "previous_control_id", "previous_report_id",
          "sending_app", "sending_fac", "recv_app", "recv_fac", "id_system", "code_system",
          "patient_id_system", "c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7",
          "s0", "r0", "s1", "r1", "s2", "r2", "s3", "r3"]


def report(flags, classes, priority, nskip, triage, scores, values):
    head = bytes([flags, (classes - 1) | (priority << 3) | (nskip << 5), triage])
    head += bytes(scores + [0] * (8 - len(scores))) + bytes([1, 2, 0, 0, 0])
    assert len(head) == 16
    return head + b"\0".join(values.get(f, "").encode() for f in FIELDS)


base = {"study_uid": STUDY, "study_date": "20251202", "study_time": "101530.25",
        "tz_offset": "+0100", "patient_id": "FZ0001", "issuer": "FUZZHOSP",
        "name": "Test^Fuzz^A^Dr^III", "birth_date": "19700101", "sex": "F",
        "accession": "ACC123", "placer": "PL1", "filler": "FI1", "req_proc": "RP1",
        "triage_reason": "COVID-19 0.912 >= 0.412", "triage_rule": "urgent if COVID-19 >= 0.412",
        "model_name": "cxr4", "model_version": "1.0", "model_digest": "0123456789abcdef0123",
        "sending_app": "CXR-AI-GW", "recv_app": "EHR", "c0": "COVID-19", "c1": "Lung Opacity",
        "c2": "Normal", "c3": "Viral Pneumonia"}
hostile = dict(base, patient_id="ID|1^2~3\\4&5\r\nMSH|x", name="Ra\u00fcl^J\u00f6 ^\r=\u5c71\u7530^\u592a\u90ce",
               accession="A\rOBX|1|ST|", sending_app="APP|X", recv_fac="F^\\E\\",
               proc_code="36554-4", proc_scheme="LN", proc_meaning="XR Chest\tview",
               triage_reason='quote " and \\ backslash \x01', s0="1.2.3", r0="lateral\rview")
corr = dict(base, previous_control_id="CXR00000000000000001", previous_report_id="rep-1")
for target in ("hl7", "fhir"):
    put(target, "assessed.bin", report(0x01, 4, 1, 0, 1, [230, 20, 5, 1], base))
    put(target, "hostile.bin", report(0x05 | 0x20, 4, 2, 1, 3, [10, 20, 200, 30], hostile))
    put(target, "correction.bin", report(0x03 | 0x10 | 0x40, 4, 3, 0, 0, [1, 2, 3, 4], corr))
    put(target, "not_assessed.bin", report(0x00, 1, 0, 2, 0, [],
                                           dict(base, s0="1.2.3.4", r0="lateral", s1="1.2.3.5",
                                                r1="small image")))

# ---- configuration ---------------------------------------------------------------------------
with open(os.path.join(HERE, "..", "..", "config", "cxrtriage.conf.example")) as f:
    example = f.read()
stripped = "\n".join(l for l in example.splitlines() if l.strip() and not l.lstrip().startswith(("#", ";")))
put("config", "example.conf", (re.sub(r"\n(\[)", r"\n\n\1", stripped) + "\n").encode())
put("config", "named_dests.conf", b"""[report]
formats = hl7, fhir
[webhook ehr2]
url = https://ehr.example/hook
format = fhir
bearer_token = abc
[mllp ris]
host = 127.0.0.1
port = 2575
[triage]
thresholds = COVID-19=0.4, Lung Opacity=0.35
[dicom]
allowed_calling_aets = PACS, MOD@10.0.0.1
""")
put("config", "errors.conf", b"""[daemon]
workers = many
nokey = 1
[nosection]
x = y
[dicom]
port = 99999
ae_title = THIS_IS_FAR_TOO_LONG_FOR_AN_AE
""")
put("config", "set_triples.bin", b"\0dicom\0port\0104\0triage\0thresholds\0A=0.5, B=0.25\0"
    b"daemon\0workers\0x\0")
