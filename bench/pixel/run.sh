#!/usr/bin/env bash
# bench/pixel/run.sh [BUILD_DIR=build/release] [RUNS=7] - our decode + preprocess of a 2048 x
# 2500 16-bit CR against DCMTK converting the same file, side by side in one run.
#
# The test image is made here in a temporary directory (nothing large is committed): the NEMA
# RG1 chest CR of ../shared/data/dicom (J2K, 1841 x 1955, 15-bit MONOCHROME1) is decoded with
# opj_decompress, resized to 2048 x 2500 with numpy, written as explicit VR little endian with
# pydicom, and encoded with dcmcjpeg +e1 (JPEG lossless SV1), dcmcjpls +el (JPEG-LS lossless)
# and opj_compress (J2K lossless, encapsulated with pydicom).
#
# Timed, median of RUNS after one warm-up, all with the header's window (+Wi 1) to 224 x 224:
#   ours (in-process)  bench_pixel: read + decode + Modality LUT + VOI + invert + resize
#   ours (CLI)         cxrtriage preprocess FILE -o out.png: the same plus process start, PNG write
#   dcmtk              dcm2pnm / dcmj2pnm / dcml2pnm +Wi 1 FILE out.pgm (decode + write, no resize)
#                      for J2K, which DCMTK cannot decode: opj_decompress of the codestream to PGM
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build/release}
runs=${2:-7}
data=${CXR_DATA_DIR:-../shared/data}
src="$data/dicom/pydicomdata_RG1_J2KI_CR_chest.dcm"
[ -f "$src" ] || { echo "needs $src"; exit 77; }
[ -x "$build/bench/pixel/bench_pixel" ] || { echo "build first: scripts/build.sh release"; exit 1; }
T=$(mktemp -d "${TMPDIR:-/tmp}/cxr-bench.XXXXXX")
trap 'rm -rf "$T"' EXIT

/usr/bin/python3 - "$src" "$T" <<'PY'
import subprocess, sys
import numpy as np, pydicom
from pydicom.encaps import generate_pixel_data_frame, encapsulate
src, T = sys.argv[1], sys.argv[2]
ds = pydicom.dcmread(src)
open(f"{T}/rg1.j2k", "wb").write(next(generate_pixel_data_frame(ds.PixelData, 1)))
subprocess.run(["opj_decompress", "-i", f"{T}/rg1.j2k", "-o", f"{T}/rg1.rawl"], check=True,
               capture_output=True)
w, h = int(ds.Columns), int(ds.Rows)
img = np.fromfile(f"{T}/rg1.rawl", dtype="<u2").reshape(h, w).astype(np.float64)
H, W = 2500, 2048
ys = np.clip((np.arange(H) + 0.5) * h / H - 0.5, 0, h - 1)
xs = np.clip((np.arange(W) + 0.5) * w / W - 0.5, 0, w - 1)
y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
big = (img[y0][:, x0] * (1 - fy) * (1 - fx) + img[y0][:, x1] * (1 - fy) * fx +
       img[y1][:, x0] * fy * (1 - fx) + img[y1][:, x1] * fy * fx)
big = np.clip(np.rint(big), 0, 32767).astype(np.uint16)
ds.Rows, ds.Columns = H, W
ds.PixelData = big.tobytes()
ds["PixelData"].VR = "OW"
ds["PixelData"].is_undefined_length = False
ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
ds.is_little_endian, ds.is_implicit_VR = True, False
ds.save_as(f"{T}/cr_explicit_le.dcm", write_like_original=False)
with open(f"{T}/big.pgm", "wb") as f:
    f.write(b"P5\n%d %d\n32767\n" % (W, H))
    f.write(big.astype(">u2").tobytes())
subprocess.run(["opj_compress", "-i", f"{T}/big.pgm", "-o", f"{T}/big.j2k"], check=True,
               capture_output=True)
ds.PixelData = encapsulate([open(f"{T}/big.j2k", "rb").read()])
ds["PixelData"].is_undefined_length = True
ds["PixelData"].VR = "OB"
ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"
ds.save_as(f"{T}/cr_j2k_lossless.dcm", write_like_original=False)
PY
dcmcjpeg +e1 "$T/cr_explicit_le.dcm" "$T/cr_jpeg_lossless.dcm"
dcmcjpls +el "$T/cr_explicit_le.dcm" "$T/cr_jpegls.dcm"

/usr/bin/python3 - "$T" "$build" "$runs" <<'PY'
import statistics, subprocess, sys, time
T, build, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
def wall(cmd):
    subprocess.run(cmd, check=True, capture_output=True)
    t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        t.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(t)
cases = [("uncompressed (explicit LE)", "cr_explicit_le.dcm", ["dcm2pnm"]),
         ("JPEG lossless SV1", "cr_jpeg_lossless.dcm", ["dcmj2pnm"]),
         ("JPEG-LS lossless", "cr_jpegls.dcm", ["dcml2pnm"]),
         ("JPEG 2000 lossless", "cr_j2k_lossless.dcm", None)]
print(f"2048 x 2500 16-bit CR (15 bits stored, MONOCHROME1), median of {runs} runs, ms")
print(f"{'encoding':28} {'ours in-proc':>12} {'ours CLI':>10} {'DCMTK/peer':>11} {'peer/ours':>10}")
for name, f, tool in cases:
    p = f"{T}/{f}"
    out = subprocess.run([f"{build}/bench/pixel/bench_pixel", p, "224", str(runs)], check=True,
                         capture_output=True, text=True).stdout
    ours = float(out.split()[0].split("=")[1])
    cli = wall([f"{build}/cli/cxrtriage", "preprocess", p, "-o", f"{T}/o.png"])
    if tool:
        peer = wall(tool + ["+Wi", "1", p, f"{T}/o.pgm"])
        pname = tool[0]
    else:
        peer = wall(["opj_decompress", "-i", f"{T}/big.j2k", "-o", f"{T}/o.pgm"])
        pname = "opj_decompress"
    print(f"{name:28} {ours:12.1f} {cli:10.1f} {peer:11.1f} {peer / ours:9.2f}x  ({pname})")
PY
