#!/usr/bin/python3
"""check_bundle.py DIR - reads every DIR/<case>.fhir.json back and compares it with the inputs
in DIR/<case>.input.json (written by report_gen), following the mapping table in hl7/fhir.c:
entries and requests, identifiers, statuses, codes, values, references, times, and the exact
round trip of every string taken from DICOM (special characters, CR/LF, non-ASCII). The three
schema/profile validators run separately (check_fhir.cjs). Exit 1 on any difference."""
import datetime
import glob
import json
import math
import os
import re
import sys
import urllib.parse

DISCLAIMER = ("Decision support only, not a diagnosis: scores must be reviewed by a "
              "qualified radiologist.")
SNOMED = {"covid-19": "840539006", "viral pneumonia": "75570004"}
PRIO = {1: "URGENT", 2: "ROUTINE", 3: "NORMAL"}
UUID = re.compile(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
errors = []


def code_of(name):
    return re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_") or "_"


def instant(ms):
    t = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (ms % 1000)


def effective(sd):
    da, tm, tz = sd["study_date"], sd["study_time"], sd["tz_offset"]
    if not da or not re.fullmatch(r"\d{8}", da):
        return None
    try:
        datetime.date(int(da[:4]), int(da[4:6]), int(da[6:]))
    except ValueError:
        return None
    out = "%s-%s-%s" % (da[:4], da[4:6], da[6:])
    if not tm or not tz or not re.fullmatch(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?", tm):
        return out
    if int(tm[:2]) > 23 or int(tm[2:4] or 0) > 59 or int(tm[4:6] or 0) > 59:
        return out
    out += "T%s:%s:%s" % (tm[:2], tm[2:4] or "00", tm[4:6] or "00")
    if "." in tm:
        out += tm[6:]
    return out + tz[:3] + ":" + tz[3:]


def check(path):
    inp = json.load(open(path, encoding="utf-8"))
    name = inp["case"]
    b = json.load(open(path.replace(".input.json", ".fhir.json"), encoding="utf-8"))
    r, st = inp["result"], inp["settings"]
    pt, od, sd = r["patient"], r["order"], r["study"]

    def err(where, want, got):
        errors.append("%s: %s: expected %r, got %r" % (name, where, want, got))

    def eq(where, want, got):
        if want != got:
            err(where, want, got)

    idsys = st["id_system"] or "urn:cxrtriage:id"
    csys = st["code_system"] or "urn:cxrtriage:codes"
    corr = r["is_correction"]
    report_id = (r["previous_report_id"] if corr and r["previous_report_id"] else
                 "%s-%s" % (sd["study_uid"], r["model_digest"][:16]))
    eq("Bundle.type", "transaction", b.get("type"))
    entries = b["entry"]
    types = [e["resource"]["resourceType"] for e in entries]
    want_types = []
    if r["assessed"]:
        want_types = ["Device"] + ["Observation"] * len(r["class_names"])
        if r["triage_class"] >= 0 or r["priority"]:
            want_types.append("Observation")
    want_types.append("DiagnosticReport")
    eq("entry types", want_types, types)
    if types != want_types:
        return name
    urls = [e["fullUrl"] for e in entries]
    for u in urls:
        if not UUID.match(u):
            err("fullUrl", "urn:uuid (version 8)", u)
    eq("fullUrls unique", len(urls), len(set(urls)))

    def qv(v):  # FHIR search escaping, then percent-encoding
        return urllib.parse.quote(re.sub(r"([,|$\\])", r"\\\1", v), safe="-._~:")

    def cond(t, v, update):
        q = "identifier=%s|%s" % (qv(idsys), qv(v))
        return {"method": "PUT", "url": t + "?" + q} if update else \
            {"method": "POST", "url": t, "ifNoneExist": q}

    subj = None
    if pt["id"]:
        ident = {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                      "code": "MR", "display": "Medical record number"}]},
                 "value": pt["id"]}
        if st["patient_id_system"]:
            ident["system"] = st["patient_id_system"]
        if pt["issuer"]:
            ident["assigner"] = {"display": pt["issuer"]}
        subj = {"type": "Patient", "identifier": ident}
    study_ref = {"type": "ImagingStudy",
                 "identifier": {"system": "urn:dicom:uid", "value": "urn:oid:" + sd["study_uid"]}}
    eff = effective(sd)
    obs_status = "corrected" if corr else "preliminary"

    def triage_concept(cname):
        cod = []
        if cname.lower() in SNOMED:
            cod.append(SNOMED[cname.lower()])
        cod.append(code_of(cname))
        return cod

    results = []
    if r["assessed"]:
        dev = entries[0]
        dv = "model-sha256:" + r["model_digest"]
        eq("Device.identifier", [{"system": idsys, "value": dv}], dev["resource"].get("identifier"))
        eq("Device.request", cond("Device", dv, False), dev["request"])
        eq("Device.deviceName", [{"name": r["model_name"], "type": "model-name"}],
           dev["resource"].get("deviceName"))
        eq("Device.version", [{"value": r["model_version"]}], dev["resource"].get("version"))
        eq("Device.status", "active", dev["resource"].get("status"))
        for i, cname in enumerate(r["class_names"]):
            e = entries[1 + i]
            o = e["resource"]
            code = code_of(cname) + "_PROB"
            where = "Observation[%s]" % code
            eq(where + ".identifier", [{"system": idsys, "value": report_id + "-" + code}],
               o.get("identifier"))
            eq(where + ".request", cond("Observation", report_id + "-" + code, corr), e["request"])
            eq(where + ".status", obs_status, o.get("status"))
            eq(where + ".code", {"coding": [{"system": csys, "code": code,
                                             "display": cname + " probability"}]}, o.get("code"))
            want_v = math.floor(r["scores"][i] * 1e4 + 0.5) / 1e4
            q = o.get("valueQuantity", {})
            eq(where + ".valueQuantity", {"value": want_v, "unit": "1",
                                          "system": "http://unitsofmeasure.org", "code": "1"}, q)
            eq(where + ".subject", subj, o.get("subject"))
            eq(where + ".effectiveDateTime", eff, o.get("effectiveDateTime"))
            eq(where + ".issued", instant(r["analysis_ms"]), o.get("issued"))
            eq(where + ".device", {"reference": urls[0]}, o.get("device"))
            eq(where + ".derivedFrom", [study_ref], o.get("derivedFrom"))
            eq(where + ".category", "imaging", o["category"][0]["coding"][0]["code"])
            results.append({"reference": urls[1 + i]})
        if len(entries) > 2 + len(r["class_names"]):
            k = 1 + len(r["class_names"])
            o = entries[k]["resource"]
            eq("triage.identifier", [{"system": idsys, "value": report_id + "-TRIAGE_CLASS"}],
               o.get("identifier"))
            eq("triage.code", "TRIAGE_CLASS", o["code"]["coding"][0]["code"])
            if r["triage_class"] >= 0:
                cname = r["class_names"][r["triage_class"]]
                v = o.get("valueCodeableConcept", {})
                eq("triage.value codes", triage_concept(cname), [c["code"] for c in v.get("coding", [])])
                eq("triage.value text", cname, v.get("text"))
            else:
                eq("triage.value", None, o.get("valueCodeableConcept"))
            notes = ([{"text": "Triage reason: " + r["triage_reason"]}] if r["triage_reason"] else []) + \
                    ([{"text": "Triage rule: " + r["triage_rule"]}] if r["triage_rule"] else [])
            eq("triage.note", notes or None, o.get("note"))
            if r["priority"]:
                comp = o.get("component", [{}])[0]
                eq("triage.component code", "TRIAGE_PRIORITY", comp["code"]["coding"][0]["code"])
                eq("triage.component value", PRIO[r["priority"]],
                   comp["valueCodeableConcept"]["coding"][0]["code"])
            results.append({"reference": urls[k]})

    e = entries[-1]
    d = e["resource"]
    eq("DR.identifier", [{"system": idsys, "value": report_id}], d.get("identifier"))
    eq("DR.request", cond("DiagnosticReport", report_id, corr), e["request"])
    eq("DR.status", "cancelled" if not r["assessed"] else obs_status, d.get("status"))
    eq("DR.category", "RAD", d["category"][0]["coding"][0]["code"])
    if od["procedure_code"] and od["procedure_scheme"] == "LN":
        eq("DR.code", od["procedure_code"], d["code"]["coding"][0]["code"])
    else:
        eq("DR.code", "18748-4", d["code"]["coding"][0]["code"])
    eq("DR.subject", subj, d.get("subject"))
    eq("DR.effectiveDateTime", eff, d.get("effectiveDateTime"))
    eq("DR.issued", instant(inp["now_ms"]), d.get("issued"))
    eq("DR.imagingStudy", [study_ref], d.get("imagingStudy"))
    eq("DR.result", results or None, d.get("result"))
    if od["accession"]:
        eq("DR.basedOn accession", od["accession"], d["basedOn"][0]["identifier"]["value"])
        eq("DR.basedOn type", "ACSN", d["basedOn"][0]["identifier"]["type"]["coding"][0]["code"])
    else:
        eq("DR.basedOn", None, d.get("basedOn"))
    concl = d.get("conclusion", "")
    if not concl.endswith(" " + DISCLAIMER):
        err("DR.conclusion ends with the disclaimer", DISCLAIMER, concl[-120:])
    if r["assessed"] and r["priority"] and r["triage_reason"] and \
            "(" + r["triage_reason"] + ")" not in concl:
        err("DR.conclusion has the triage reason", r["triage_reason"], concl)
    n_inst, n_ser = r.get("n_instances", 0), r.get("n_series", 0)
    if n_inst and " Images received: %d in %d series." % (n_inst, n_ser) not in concl:
        err("DR.conclusion counts the images", (n_inst, n_ser), concl)
    for sk in r["skipped"]:
        if sk["reason"] not in concl or sk["sop_uid"] not in concl:
            err("DR.conclusion lists skipped image", sk, concl)
    if r["assessed"] and r["triage_class"] >= 0:
        cname = r["class_names"][r["triage_class"]]
        eq("DR.conclusionCode", triage_concept(cname),
           [c["code"] for c in d["conclusionCode"][0]["coding"]])
    else:
        eq("DR.conclusionCode", None, d.get("conclusionCode"))
    return name


def main():
    files = sorted(glob.glob(os.path.join(sys.argv[1], "*.input.json")))
    if not files:
        print("check_bundle: no cases in %s" % sys.argv[1])
        return 1
    for f in files:
        before = len(errors)
        name = check(f)
        print("%s: %s" % (name, "Bundle reads back equal" if len(errors) == before else "DIFFERENT"))
    for e in errors:
        print("  " + e)
    print("%d cases, %d differences" % (len(files), len(errors)))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
