#!/usr/bin/python3
"""test_dicom_reference.py - our pixel path against real tools, on every file of
../shared/data/dicom (MANIFEST.csv) plus PNG/JPEG from cxr4.

For each decodable DICOM file, `cxrtriage preprocess` (our path) is compared with DCMTK's own
renderer `dcm2pnm` given the same VOI choice (+Wi 1, +Wl 1, or +Ww c w for our percentile window),
resized here by area averaging into the same letterbox; Pearson r must be >= 0.99. DCMTK has no
JPEG 2000 codec, so for J2K files the codestream is pulled out with pydicom, decoded by OpenJPEG's
`opj_decompress`; our decoded samples must equal it exactly, and the DICOM rebuilt around those
samples (pydicom, explicit VR little endian) is what dcm2pnm renders. Deflated Image Frame
Compression (unknown to DCMTK 3.6.7 and pydicom 2.3): frame 0's fragments (pydicom) inflated by
Python's zlib and unpacked by numpy must equal our samples exactly. JPEG-LS that DCMTK rejects
(we use CharLS then): our samples must equal GDCM's (gdcmconv --raw). Segmented palettes: our
RGB must equal pydicom's apply_color_lut. Files under bad/ must fail
with the expected kind of error; good files known not decodable (said why below) must fail with
the right message. PNG/JPEG: our reading must match ImageMagick's.

Usage: test_dicom_reference.py CXRTRIAGE DATA_DIR TMPDIR [--quick]
Prints one line per file and "N passed, N failed" at the end; exit 1 on any failure.
"""
import csv
import os
import re
import subprocess
import sys

import numpy as np
import pydicom
from pydicom.encaps import generate_pixel_data_frame

SIZE = 256
MIN_R = 0.99
J2K = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
       "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"}

DEFLATE_FRAME = "1.2.840.10008.1.2.8.1"

# JPEG-LS files DCMTK 3.6.7 (and so dcml2pnm) rejects, which we decode with CharLS: checked
# against GDCM (`gdcmconv --raw`, read back by pydicom), whose rebuilt file dcm2pnm renders.
JLS_BY_GDCM = {"pydicomdata_JLSL_08_07_0_1F.dcm"}

# PALETTE COLOR with Segmented Palette Color LUTs: RGB checked against pydicom's
# apply_color_lut, and the rendering against dcm2pnm.
SEGMENTED_PALETTE = {"pydicomdata_gdcm-US-ALOKA-16_big.dcm"}

# Good files we cannot decode, with the reason and the message we must give.
KNOWN_UNDECODABLE = {
}

# bad/ files: the kind of error each must give (regex over our message).
BAD_EXPECT = [
    ("cut inside header", r"truncated|malformed"),
    ("truncated", r"truncated|malformed|Delimitation|corrupt"),
    ("garbage after magic", r"malformed|not DICOM|truncated"),
    ("PixelData shorter", r"pixel data has \d+ bytes"),
    ("non-image", r"not an image: no Pixel Data"),
    ("no File Meta / no DICM", r"not a DICOM"),
    ("J2K codestream shorter", r"Delimitation|corrupt|truncated|JPEG 2000"),
]


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def read_pnm(path):
    """Reads a PGM/PPM (binary P5/P6 or ASCII P2/P3) as a float array (H, W) or (H, W, 3)."""
    with open(path, "rb") as f:
        data = f.read()
    toks, pos = [], 0
    while len(toks) < 4:
        m = re.compile(rb"\s*(#[^\n]*\n\s*)*([^\s#]+)").match(data, pos)
        toks.append(m.group(2))
        pos = m.end()
    magic, w, h, maxv = toks[0].decode(), int(toks[1]), int(toks[2]), int(toks[3])
    ch = 3 if magic in ("P3", "P6") else 1
    if magic in ("P2", "P3"):
        a = np.array(data[pos:].split(), dtype=np.float64)
    else:
        pos += 1
        dt = np.dtype(">u2") if maxv > 255 else np.uint8
        a = np.frombuffer(data[pos:], dtype=dt, count=w * h * ch).astype(np.float64)
    a = a[: w * h * ch].reshape(h, w, ch) / maxv
    return a[:, :, 0] if ch == 1 else a


def read_gray8(path, w, h):
    """ImageMagick's reading of any image as 8-bit grey."""
    out = subprocess.run(["convert", path, "-colorspace", "gray", "-depth", "8", "gray:-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(out, dtype=np.uint8)[: w * h].reshape(h, w).astype(np.float64) / 255.0


def area_matrix(n, m):
    """(m, n) matrix: output j averages [j*n/m, (j+1)*n/m) by overlap."""
    W = np.zeros((m, n))
    step = n / m
    for j in range(m):
        a, b = j * step, (j + 1) * step
        for i in range(int(np.floor(a)), min(n, int(np.ceil(b)))):
            W[j, i] = (min(b, i + 1) - max(a, i)) / step
    return W


def letterbox(img, size):
    h, w = img.shape
    if w >= h:
        ow, oh = size, max(1, int(round(h * size / w)))
    else:
        oh, ow = size, max(1, int(round(w * size / h)))
    small = area_matrix(h, oh) @ img @ area_matrix(w, ow).T
    return small, (size - ow) // 2, (size - oh) // 2, ow, oh


def luminance(a):
    return a if a.ndim == 2 else 0.299 * a[:, :, 0] + 0.587 * a[:, :, 1] + 0.114 * a[:, :, 2]


def pearson(a, b):
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    d = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / d) if d > 0 else (1.0 if np.allclose(a, b, atol=2 / 255) else 0.0)


def kv(line):
    return dict(p.split("=", 1) for p in line.split() if "=" in p)


def j2k_check(cxr, path, ds, tmp):
    """Our decoded samples vs opj_decompress on the same codestream; returns (ok, msg, array)."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    cs = next(generate_pixel_data_frame(ds.PixelData, frames))
    ext = ".jp2" if cs[4:8] == b"jP  " else ".j2k"
    src, raw = os.path.join(tmp, "cs" + ext), os.path.join(tmp, "opj.rawl")
    with open(src, "wb") as f:
        f.write(cs)
    r = run(["opj_decompress", "-i", src, "-o", raw])
    if r.returncode != 0:
        return False, "opj_decompress failed: " + r.stderr.strip()[-200:], None
    ours = os.path.join(tmp, "ours.raw")
    r = run([cxr, "preprocess", path, "-o", os.path.join(tmp, "x.png"), "--samples", ours])
    if r.returncode != 0:
        return False, "our decode failed: " + r.stderr.strip(), None
    info = kv(r.stdout.strip().splitlines()[-1])
    w, h, ch = int(info["width"]), int(info["height"]), int(info["channels"])
    a = np.fromfile(ours, dtype="<i4").reshape(h, w, ch)
    # opj_decompress .rawl: planar, little endian, 8 or 16 bits per sample by precision, and
    # each sample masked to its precision (two's complement for signed components).
    prec = int(info["bits"])
    ref = np.fromfile(raw, dtype="<u2" if prec > 8 else np.uint8)
    if ref.size != w * h * ch:
        return False, f"opj output has {ref.size} samples, ours {w * h * ch}", None
    ref = ref.reshape(ch, h, w).transpose(1, 2, 0).astype(np.int64)
    diff = int(np.abs(ref - (a.astype(np.int64) & ((1 << prec) - 1))).max())
    if diff != 0:
        return False, f"decoded samples differ from opj_decompress (max |d| = {diff})", None
    return True, f"samples == opj_decompress ({w}x{h}x{ch})", a


def our_samples(cxr, path, tmp):
    """Our decoded samples of frame 0 (preprocess --samples) as an (h, w, ch) int32 array."""
    ours = os.path.join(tmp, "ours.raw")
    r = run([cxr, "preprocess", path, "-o", os.path.join(tmp, "x.png"), "--samples", ours])
    if r.returncode != 0:
        return None, "our decode failed: " + r.stderr.strip()
    info = kv(r.stdout.strip().splitlines()[-1])
    w, h, ch = int(info["width"]), int(info["height"]), int(info["channels"])
    return np.fromfile(ours, dtype="<i4").reshape(h, w, ch), info


def deflate_check(cxr, path, tmp):
    """Deflated Image Frame Compression: pydicom 2.3 cannot decode it, but gives the fragments;
    Python's zlib inflates frame 0 (raw deflate) and numpy unpacks it; ours must be equal."""
    import zlib
    ds = pydicom.dcmread(path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    data = next(generate_pixel_data_frame(ds.PixelData, frames))
    raw = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data)
    h, w, spp, ba = int(ds.Rows), int(ds.Columns), int(ds.SamplesPerPixel), int(ds.BitsAllocated)
    n = h * w * spp
    if ba == 1:
        ref = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")[:n]
    else:
        ref = np.frombuffer(raw, dtype={8: np.uint8, 16: "<u2"}[ba])[:n]
    if ref.size != n:
        return False, f"zlib gives {ref.size} samples, {n} expected"
    ref = ref.reshape(h, w, spp).astype(np.int64)
    a, info = our_samples(cxr, path, tmp)
    if a is None:
        return False, info
    if a.shape != ref.shape:
        return False, f"shape {a.shape} vs zlib {ref.shape}"
    diff = int(np.abs(a.astype(np.int64) - ref).max())
    if diff != 0:
        return False, f"samples differ from zlib + numpy (max |d| = {diff})"
    if ref.min() == ref.max():
        return False, "reference frame is constant: the check would prove nothing"
    return True, f"samples == zlib raw inflate + unpackbits ({w}x{h}x{spp}, {ba} bit)"


def gdcm_check(cxr, path, tmp):
    """Our samples vs GDCM's decoding (gdcmconv --raw); returns (ok, msg, native file)."""
    if run(["dcml2pnm", path, os.path.join(tmp, "r.pgm")]).returncode == 0:
        return False, "dcml2pnm decodes it now: compare with DCMTK instead", None
    native = os.path.join(tmp, "gdcm_raw.dcm")
    r = run(["gdcmconv", "--raw", path, native])
    if r.returncode != 0:
        return False, "gdcmconv --raw failed: " + r.stderr.strip()[-200:], None
    ds = pydicom.dcmread(native)
    ref = ds.pixel_array.astype(np.int64)
    ref = ref.reshape(ref.shape[0], ref.shape[1], -1)
    a, info = our_samples(cxr, path, tmp)
    if a is None:
        return False, info, None
    if a.shape != ref.shape:
        return False, f"shape {a.shape} vs gdcm {ref.shape}", None
    bs = int(ds.BitsStored)
    if a.min() < 0 or a.max() > (1 << bs) - 1 or a.min() == a.max():
        return False, f"samples {a.min()}..{a.max()}: outside 0..{(1 << bs) - 1} or constant", None
    diff = int(np.abs(a.astype(np.int64) - ref).max())
    if diff != 0:
        return False, f"samples differ from gdcmconv --raw (max |d| = {diff})", None
    h, w, ch = a.shape
    return True, f"samples == gdcmconv --raw ({w}x{h}x{ch}, {a.min()}..{a.max()})", native


def palette_check(cxr, path, tmp):
    """PALETTE COLOR with Segmented Palette Color LUTs: our RGB samples vs pydicom's
    apply_color_lut (which expands segmented LUTs) on pydicom's indices; returns (ok, msg, rgb)."""
    from pydicom.pixel_data_handlers.util import apply_color_lut
    ds = pydicom.dcmread(path)
    if "SegmentedRedPaletteColorLookupTableData" not in ds:
        return False, "no segmented LUT: this check is for segmented palettes", None
    arr = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[0]
    ref = apply_color_lut(arr, ds).astype(np.int64)
    a, info = our_samples(cxr, path, tmp)
    if a is None:
        return False, info, None
    if a.shape != ref.shape:
        return False, f"shape {a.shape} vs pydicom {ref.shape}", None
    diff = int(np.abs(a.astype(np.int64) - ref).max())
    if diff != 0:
        return False, f"RGB differs from pydicom apply_color_lut (max |d| = {diff})", None
    if len(np.unique(ref.reshape(-1, 3), axis=0)) < 16:
        return False, "fewer than 16 colours: the check would prove little", None
    h, w, ch = a.shape
    return True, f"RGB == pydicom apply_color_lut, segmented LUTs ({w}x{h}x{ch})", ref


def rebuild_native(ds, samples, out):
    """Writes ds with samples as explicit VR little-endian pixel data (for dcm2pnm)."""
    ds = ds.copy()
    h, w, ch = samples.shape
    bits = int(ds.BitsAllocated)
    dt = {8: (np.int8 if ds.PixelRepresentation else np.uint8),
          16: ("<i2" if ds.PixelRepresentation else "<u2")}[bits]
    ds.PixelData = samples.astype(dt).tobytes()
    ds["PixelData"].VR = "OW" if bits > 8 else "OB"
    ds.NumberOfFrames = 1
    if ch == 3:
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.is_implicit_VR, ds.is_little_endian = False, True
    ds.save_as(out, write_like_original=False)


def check_dicom(cxr, path, rel, ts, tmp):
    base = os.path.basename(rel)
    r = run([cxr, "preprocess", path, "-o", os.path.join(tmp, "ours.png"), "--size", str(SIZE)])
    if base in KNOWN_UNDECODABLE:
        if r.returncode == 0:
            return False, "decoded, but listed as known undecodable"
        if not re.search(KNOWN_UNDECODABLE[base], r.stderr) or path not in r.stderr:
            return False, "wrong error: " + r.stderr.strip()
        return True, "expected error: " + r.stderr.strip().split(": ", 1)[1]
    if r.returncode != 0:
        return False, "preprocess failed: " + r.stderr.strip()
    info = kv(r.stdout.strip().splitlines()[0])
    if ts == DEFLATE_FRAME:
        return deflate_check(cxr, path, tmp)
    render_src, note = path, ""
    if base in SEGMENTED_PALETTE:
        # dcm2pnm ignores segmented LUTs: it renders the RGB rebuilt from pydicom's instead.
        ok, msg, rgb = palette_check(cxr, path, tmp)
        if not ok:
            return False, msg
        note, render_src = msg + "; ", os.path.join(tmp, "native.dcm")
        rebuild_native(pydicom.dcmread(path), rgb, render_src)
    if base in JLS_BY_GDCM:
        ok, msg, native = gdcm_check(cxr, path, tmp)
        if not ok:
            return False, msg
        note, render_src, ts = msg + "; ", native, "1.2.840.10008.1.2.1"
    if ts in J2K:
        ds = pydicom.dcmread(path)
        ok, msg, samples = j2k_check(cxr, path, ds, tmp)
        if not ok:
            return False, msg
        note = msg + "; "
        render_src = os.path.join(tmp, "native.dcm")
        rebuild_native(ds, samples, render_src)
    voi = info["voi"]
    opts = {"window": ["+Wi", "1"], "voi-lut": ["+Wl", "1"],
            "percentile": ["+Ww", info["center"], info["width_voi"]], "none": []}[voi]
    ref_path = os.path.join(tmp, "ref.pnm")
    # DCMTK's renderers: dcm2pnm (native, RLE), dcmj2pnm (JPEG), dcml2pnm (JPEG-LS)
    tool = "dcm2pnm"
    if ts.startswith("1.2.840.10008.1.2.4.5") or ts.startswith("1.2.840.10008.1.2.4.70") or \
            ts.startswith("1.2.840.10008.1.2.4.57"):
        tool = "dcmj2pnm"
    elif ts in ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"):
        tool = "dcml2pnm"
    rr = run([tool, "+F", "1"] + opts + ["+opw", render_src, ref_path])
    if rr.returncode != 0:
        return False, "dcm2pnm failed: " + rr.stderr.strip()[-300:]
    ref = luminance(read_pnm(ref_path))
    small, ox, oy, ow, oh = letterbox(ref, SIZE)
    if (ow, oh) != (int(info["out_width"]), int(info["out_height"])):
        return False, f"letterbox {ow}x{oh} vs ours {info['out_width']}x{info['out_height']}"
    ours = read_gray8(os.path.join(tmp, "ours.png"), SIZE, SIZE)[oy:oy + oh, ox:ox + ow]
    rho = pearson(ours, small)
    ok = rho >= MIN_R
    return ok, f"{note}voi={voi} r={rho:.5f}"


def check_bad(cxr, path, rel, source, tmp):
    r = run([cxr, "preprocess", path, "-o", os.path.join(tmp, "bad.png")])
    if "renamed" in rel:
        # Detection is by content: a PNG named .dcm is read as the PNG it is; the DICOM reader
        # itself refuses it.
        ri = run([cxr, "inspect", path])
        if r.returncode == 0 and re.search(r"Format\s+PNG", ri.stdout):
            return True, "read as PNG (detected by content, not by the .dcm name)"
        return False, "PNG named .dcm not recognised by content"
    if r.returncode == 0:
        return False, "bad file decoded without error"
    if path not in r.stderr:
        return False, "error does not name the file: " + r.stderr.strip()
    for key, pat in BAD_EXPECT:
        if key in source:
            if re.search(pat, r.stderr):
                return True, "expected error: " + r.stderr.strip().split(": ", 2)[-1][:90]
            return False, f"wrong kind of error for '{key}': " + r.stderr.strip()
    return False, "no expectation for: " + source


def check_raster(cxr, path, tmp):
    """A PNG or JPEG: ours vs ImageMagick's reading, resized the same way."""
    r = run([cxr, "preprocess", path, "-o", os.path.join(tmp, "ours.png"), "--size", str(SIZE)])
    if r.returncode != 0:
        return False, "preprocess failed: " + r.stderr.strip()
    info = kv(r.stdout.strip().splitlines()[0])
    w, h = int(info["width"]), int(info["height"])
    ref = read_gray8(path, w, h)
    small, ox, oy, ow, oh = letterbox(ref, SIZE)
    ours = read_gray8(os.path.join(tmp, "ours.png"), SIZE, SIZE)[oy:oy + oh, ox:ox + ow]
    rho, dmax = pearson(ours, small), float(np.abs(ours - small).max()) * 255
    return rho >= MIN_R and dmax <= 2.0, f"r={rho:.5f} max|d|={dmax:.2f}/255"


def main():
    cxr, data, tmp = sys.argv[1], sys.argv[2], sys.argv[3]
    quick = "--quick" in sys.argv
    passed = failed = 0
    rmin = 1.0
    with open(os.path.join(data, "dicom", "MANIFEST.csv")) as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        rel = row["file"]
        path = os.path.join(data, "dicom", rel)
        if rel.startswith("bad/"):
            ok, msg = check_bad(cxr, path, rel, row["source"], tmp)
        else:
            ok, msg = check_dicom(cxr, path, rel, row["transfer_syntax_uid"], tmp)
            m = re.search(r"r=([0-9.]+)", msg)
            if ok and m:
                rmin = min(rmin, float(m.group(1)))
        print(("ok   " if ok else "FAIL ") + rel + ": " + msg, flush=True)
        passed, failed = passed + ok, failed + (not ok)
    cxr4 = os.path.join(data, "cxr4")
    rasters = []
    for cls in sorted(os.listdir(cxr4)) if os.path.isdir(cxr4) else []:
        d = os.path.join(cxr4, cls)
        if os.path.isdir(d):
            rasters += [os.path.join(d, n) for n in sorted(os.listdir(d))[: 1 if quick else 3]]
    for p in rasters:
        jpg = os.path.join(tmp, "as.jpg")
        subprocess.run(["convert", p, "-quality", "92", jpg], check=True)
        for src in (p, jpg):
            ok, msg = check_raster(cxr, src, tmp)
            print(("ok   " if ok else "FAIL ") + os.path.relpath(p, data) +
                  (" (as JPEG)" if src == jpg else "") + ": " + msg, flush=True)
            passed, failed = passed + ok, failed + (not ok)
    print(f"min Pearson r over decodable DICOM files: {rmin:.5f}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
