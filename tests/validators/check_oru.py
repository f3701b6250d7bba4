#!/usr/bin/python3
"""check_oru.py DIR - parses every DIR/*.hl7 with python-hl7 (Debian python3-hl7) and checks
that each field reads back equal to the input in the sidecar DIR/<case>.input.json that
report_gen wrote. The expected values are computed here from the inputs, following the mapping
table in hl7/oru.c, so a mapping error in the C code shows up as a difference. Exit 1 on any
difference, naming the case, the field, what was expected and what was read."""
import glob
import json
import math
import os
import re
import sys

import hl7

LOCAL = "99CXRAI"
SNOMED = {"covid-19": ("840539006", "Disease caused by severe acute respiratory syndrome coronavirus 2"),
          "viral pneumonia": ("75570004", "Viral pneumonia")}
PRIO = {1: ("URGENT", "Urgent"), 2: ("ROUTINE", "Routine"), 3: ("NORMAL", "Normal")}
DISCLAIMER = ("Decision support only, not a diagnosis: scores must be reviewed by a "
              "qualified radiologist.")
errors = []


def s(v):
    return v or ""


def text(v):
    """What a TX/FT value reads back as: python-hl7 turns \\.br\\ into CR; we send CRLF as one."""
    return s(v).replace("\r\n", "\r").replace("\n", "\r")


def code_of(name):
    c = re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_")
    return c or "_"


def dicom_ts(da, tm, tz):
    """The HL7 TS the builder makes from a DICOM DA/TM/offset (hl7/report.c rules)."""
    if not da or not re.fullmatch(r"\d{8}", da):
        return ""
    y, mo, d = int(da[:4]), int(da[4:6]), int(da[6:])
    if not (1 <= mo <= 12 and 1 <= d <= 31):
        return ""
    try:
        import datetime
        datetime.date(y, mo, d)
    except ValueError:
        return ""
    out = da
    if not tm or not re.fullmatch(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?", tm):
        return out
    hh, mm, ss = int(tm[:2]), int(tm[2:4] or 0), int(tm[4:6] or 0)
    if hh > 23 or mm > 59 or ss > 59:
        return out
    out += tm[:6]
    if "." in tm:
        out += "." + tm[7:11]
    if tz and re.fullmatch(r"[+-]\d{4}", tz):
        out += tz
    return out


def utc_ts(ms):
    import datetime
    t = datetime.datetime.fromtimestamp(ms // 1000, datetime.timezone.utc)
    return t.strftime("%Y%m%d%H%M%S") + "+0000"


def score4(x):
    return "%.4f" % (math.floor(x * 1e4 + 0.5) / 1e4)


class Case:
    def __init__(self, path):
        self.inp = json.load(open(path, encoding="utf-8"))
        self.name = self.inp["case"]
        raw = open(path.replace(".input.json", ".hl7"), encoding="utf-8", newline="").read()
        self.raw = raw
        if "\n" in raw:
            self.err("raw", "no LF", "an LF in the message")
        if not raw.endswith("\r"):
            self.err("raw", "ends with CR", repr(raw[-5:]))
        self.m = hl7.parse(raw)

    def err(self, where, want, got):
        errors.append("%s: %s: expected %r, read %r" % (self.name, where, want, got))

    def get(self, path):
        try:
            return self.m[path]
        except (IndexError, KeyError):
            return ""

    def seg_get(self, seg, path):
        """seg = (segment id, 1-based occurrence); path like 'F5.R1.C2'. python-hl7's accessor
        splits and un-escapes; a repetition or component that is not there reads as ''."""
        return self.get("%s%d.%s" % (seg[0], seg[1], path))

    def eq(self, path, want):
        got = self.get(path)
        if got != want:
            self.err(path, want, got)

    def seq(self, seg, label, path, want):
        got = self.seg_get(seg, path)
        if got != want:
            self.err("%s %s" % (label, path), want, got)


def check(path):
    c = Case(path)
    inp, r, st = c.inp, c.inp["result"], c.inp["settings"]
    m = c.m
    pt, od, sd = r["patient"], r["order"], r["study"]
    status = "C" if r["is_correction"] else "P"
    obr25 = "X" if not r["assessed"] else status

    # segment order
    want = ["MSH", "PID"] + (["PV1"] if st["send_pv1"] else []) + ["ORC", "OBR", "NTE"]
    if not r["assessed"]:
        want.append("NTE")
    if r["is_correction"]:
        want.append("NTE")
    rows = []  # (type, code) of each OBX in order
    if r["assessed"]:
        for n in r["class_names"]:
            rows.append(("NM", code_of(n) + "_PROB"))
        if r["triage_class"] >= 0:
            rows.append(("CWE", "TRIAGE_CLASS"))
        if r["priority"]:
            rows.append(("CWE", "TRIAGE_PRIORITY"))
    else:
        rows.append(("", "TRIAGE_CLASS"))
    rows.append(("ST", "110180"))
    if r["skipped"]:
        rows.append(("TX", "SKIPPED_IMAGES"))
    for t, code in rows:
        want.append("OBX")
        if code == "TRIAGE_PRIORITY":
            want += ["NTE"] * (bool(r["triage_reason"]) + bool(r["triage_rule"]))
    got = [str(sg[0]) for sg in m]
    if got != want:
        c.err("segments", want, got)
        return

    # MSH
    c.eq("MSH.F2", "^~\\&")
    c.eq("MSH.F3", s(st["sending_application"]) or "CXR-AI-GW")
    c.eq("MSH.F4", s(st["sending_facility"]))
    c.eq("MSH.F5", s(st["receiving_application"]))
    c.eq("MSH.F6", s(st["receiving_facility"]))
    c.eq("MSH.F7", utc_ts(inp["now_ms"]))
    c.eq("MSH.F9.R1.C1", "ORU")
    c.eq("MSH.F9.R1.C2", "R01")
    c.eq("MSH.F9.R1.C3", "ORU_R01")
    c.eq("MSH.F10", inp["control_id"])
    c.eq("MSH.F11", st["processing_id"])
    c.eq("MSH.F12", "2.5.1")
    c.eq("MSH.F18", "UNICODE UTF-8")

    # PID
    pid = ("PID", 1)
    c.seq(pid, "PID", "F1", "1")
    c.seq(pid, "PID", "F3.R1.C1", s(pt["id"]))
    c.seq(pid, "PID", "F3.R1.C4", s(pt["issuer"]))
    c.seq(pid, "PID", "F3.R1.C5", "MR")
    groups = s(pt["name"]).split("=", 2) if pt["name"] else []
    nonempty = [(i, g) for i, g in enumerate(groups) if g.strip("^")]
    reps = str(m.segment("PID")[5]).split("~") if str(m.segment("PID")[5]) else []
    if len(reps) != len(nonempty):
        c.err("PID-5 repetitions", len(nonempty), len(reps))
    for k, (gi, g) in enumerate(nonempty):
        comps = g.split("^", 4) + [""] * 5
        family, given, middle, prefix, suffix = comps[:5]
        for ci, want_c in enumerate([family, given, middle, suffix, prefix], start=1):
            c.seq(pid, "PID", "F5.R%d.C%d" % (k + 1, ci), want_c)
        c.seq(pid, "PID", "F5.R%d.C8" % (k + 1), "AIP"[gi] if len(nonempty) > 1 else "")
    c.seq(pid, "PID", "F7", dicom_ts(pt["birth_date"], None, None))
    sex = s(pt["sex"])
    c.seq(pid, "PID", "F8", sex if sex in ("", "M", "F", "O") else "U")
    if st["send_pv1"]:
        c.eq("PV1.F1", "1")
        c.eq("PV1.F2", "U")

    # ORC / OBR
    amap = st["accession_map"] or 1
    filler = s(od["filler_order"])
    if amap & 2 and od["accession"]:
        filler = od["accession"]
    c.eq("ORC.F1", "RE")
    c.eq("ORC.F2", s(od["placer_order"]))
    c.eq("ORC.F3", filler)
    c.eq("ORC.F5", "CM")
    obr = ("OBR", 1)
    c.seq(obr, "OBR", "F1", "1")
    c.seq(obr, "OBR", "F2", s(od["placer_order"]))
    c.seq(obr, "OBR", "F3", filler)
    if od["procedure_code"]:
        scheme = s(od["procedure_scheme"]) or "L"
        scheme = "SCT" if scheme in ("SRT", "SNM3", "SCT") else scheme
        proc = (od["procedure_code"], s(od["procedure_meaning"]), scheme)
    else:
        proc = ("36554-4", "XR Chest Single view", "LN")
    for i, v in enumerate(proc, start=1):
        c.seq(obr, "OBR", "F4.R1.C%d" % i, v)
    study_ts = dicom_ts(sd["study_date"], sd["study_time"], sd["tz_offset"])
    c.seq(obr, "OBR", "F7", study_ts)
    c.seq(obr, "OBR", "F18", s(od["accession"]) if amap & 1 else "")
    c.seq(obr, "OBR", "F19", s(od["requested_procedure_id"]))
    c.seq(obr, "OBR", "F22", utc_ts(r["analysis_ms"]))
    c.seq(obr, "OBR", "F24", "RAD")
    c.seq(obr, "OBR", "F25", obr25)

    # NTEs after OBR
    ntes = [("NTE", i + 1) for i in range(len(m.segments("NTE")))]
    c.seq(ntes[0], "NTE#1", "F3", DISCLAIMER)
    k = 1
    if not r["assessed"]:
        c.seq(ntes[k], "NTE#%d" % (k + 1), "F1", str(k + 1))
        k += 1
    if r["is_correction"]:
        prev = s(r["previous_control_id"]) or s(r["previous_report_id"])
        w = ("Correction: this report replaces the report sent as " + prev + "." if prev else
             "Correction: this report replaces the report sent earlier for this study.")
        c.seq(ntes[k], "NTE#%d" % (k + 1), "F3", text(w))

    # OBX rows
    obxs = [("OBX", i + 1) for i in range(len(m.segments("OBX")))]
    model_ei = (r["model_name"] + "-" + r["model_version"], "", r["model_digest"][:16])
    for i, (sg, (t, code)) in enumerate(zip(obxs, rows), start=1):
        lab = "OBX#%d(%s)" % (i, code)
        c.seq(sg, lab, "F1", str(i))
        c.seq(sg, lab, "F2", t)
        c.seq(sg, lab, "F3.R1.C1", code)
        c.seq(sg, lab, "F11", "X" if not r["assessed"] and code == "TRIAGE_CLASS" else status)
        c.seq(sg, lab, "F14", study_ts)
        for ci, v in enumerate(model_ei, start=1):
            c.seq(sg, lab, "F18.R1.C%d" % ci, v)
        c.seq(sg, lab, "F19", utc_ts(r["analysis_ms"]))
        if t == "NM":
            idx = [code_of(n) + "_PROB" for n in r["class_names"]].index(code)
            name = r["class_names"][idx]
            c.seq(sg, lab, "F3.R1.C2", name + " probability")
            c.seq(sg, lab, "F3.R1.C3", LOCAL)
            sct = SNOMED.get(name.lower())
            for ci, v in enumerate(sct + ("SCT",) if sct else ("", "", ""), start=4):
                c.seq(sg, lab, "F3.R1.C%d" % ci, v)
            c.seq(sg, lab, "F5", score4(r["scores"][idx]))
            if abs(float(c.seg_get(sg, "F5")) - r["scores"][idx]) > 5e-5 + 1e-12:
                c.err(lab + " F5", r["scores"][idx], c.seg_get(sg, "F5"))
            c.seq(sg, lab, "F6.R1.C1", "1")
            c.seq(sg, lab, "F6.R1.C3", "UCUM")
        elif code == "TRIAGE_CLASS" and r["assessed"]:
            name = r["class_names"][r["triage_class"]]
            sct = SNOMED.get(name.lower())
            want_v = (sct + ("SCT",) if sct else ()) + (code_of(name), name, LOCAL)
            for ci, v in enumerate(want_v, start=1):
                c.seq(sg, lab, "F5.R1.C%d" % ci, v)
        elif code == "TRIAGE_CLASS":
            c.seq(sg, lab, "F5", "")
        elif code == "TRIAGE_PRIORITY":
            pc, pd = PRIO[r["priority"]]
            c.seq(sg, lab, "F5.R1.C1", pc)
            c.seq(sg, lab, "F5.R1.C2", pd)
            c.seq(sg, lab, "F5.R1.C3", LOCAL)
            c.seq(sg, lab, "F8", "A" if r["priority"] == 1 else "")
        elif code == "110180":
            c.seq(sg, lab, "F3.R1.C3", "DCM")
            c.seq(sg, lab, "F5", sd["study_uid"])
        elif code == "SKIPPED_IMAGES":
            reps = str(m.segments("OBX")[sg[1] - 1][5]).split("~")
            if len(reps) != len(r["skipped"]):
                c.err(lab + " repetitions", len(r["skipped"]), len(reps))
            for j, sk in enumerate(r["skipped"], start=1):
                w = text((sk["sop_uid"] or "(no SOP Instance UID)") + ": " +
                         (sk["reason"] or "not applicable"))
                c.seq(sg, lab, "F5.R%d.C1" % j, w)
    # triage NTEs follow the priority row
    if r["assessed"] and r["priority"]:
        tn = [n for n in ntes[len(ntes) - (bool(r["triage_reason"]) + bool(r["triage_rule"])):]]
        wants = ([text("Triage reason: " + r["triage_reason"])] if r["triage_reason"] else []) + \
                ([text("Triage rule: " + r["triage_rule"])] if r["triage_rule"] else [])
        for j, (n, w) in enumerate(zip(tn, wants), start=1):
            c.seq(n, "triage NTE#%d" % j, "F3", w)
    return c.name


def main():
    files = sorted(glob.glob(os.path.join(sys.argv[1], "*.input.json")))
    if not files:
        print("check_oru: no cases in %s" % sys.argv[1])
        return 1
    for f in files:
        before = len(errors)
        name = check(f)
        print("%s: %s" % (name, "fields read back equal" if len(errors) == before else "DIFFERENT"))
    for e in errors:
        print("  " + e)
    print("python-hl7 %s: %d cases, %d differences" % (getattr(hl7, "__version__", "?"), len(files),
                                                      len(errors)))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
