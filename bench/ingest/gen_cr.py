#!/usr/bin/python3
"""gen_cr.py OUTDIR N [SOURCE.dcm ...] - N realistic chest CR files for the ingest benchmark.

Each file is a Computed Radiography image of 2500 rows x 2048 columns, 16 bits allocated,
12 stored (MONOCHROME2), uncompressed Explicit VR Little Endian (10 MB), with its own Study,
Series and SOP Instance UIDs. The pixels come from real radiographs (the SOURCE files, read
with pydicom, uncompressed): windowed to their 0.5-99.5 percentiles, inverted when
MONOCHROME1, upscaled bilinearly to 2500x2048 and mapped to 12 bits; each copy then gets its
own gain, offset, shift of a few pixels and Gaussian quantum noise, so no two files carry the
same pixels and none is synthetic noise. Needs Debian's python3-pydicom and python3-numpy
(visible to /usr/bin/python3 only).
"""
import os
import sys

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROWS, COLS = 2500, 2048
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


def resize(img, rows, cols):
    """Bilinear resize of a 2-D float32 array (separable: rows, then columns)."""
    def axis_weights(n_in, n_out):
        x = (np.arange(n_out, dtype=np.float32) + 0.5) * (n_in / n_out) - 0.5
        x = np.clip(x, 0, n_in - 1)
        i0 = np.floor(x).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, (x - i0).astype(np.float32)

    r0, r1, rw = axis_weights(img.shape[0], rows)
    img = img[r0] * (1 - rw)[:, None] + img[r1] * rw[:, None]
    c0, c1, cw = axis_weights(img.shape[1], cols)
    return img[:, c0] * (1 - cw)[None, :] + img[:, c1] * cw[None, :]


def base_image(path):
    ds = pydicom.dcmread(path)
    a = ds.pixel_array.astype(np.float32)
    if "RescaleSlope" in ds:
        a = a * float(ds.RescaleSlope) + float(getattr(ds, "RescaleIntercept", 0))
    lo, hi = np.percentile(a, [0.5, 99.5])
    a = np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        a = 1 - a
    return resize(a, ROWS, COLS) * 4095.0


def write(path, pixels, k):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = generate_uid(prefix="1.2.826.0.1.3680043.8.498.1.")
    ds = FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.SOPClassUID = CR_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CR"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PatientName = f"BENCH^INGEST{k:05d}"
    ds.PatientID = f"BENCH{k:05d}"
    ds.AccessionNumber = f"BI{k:07d}"
    ds.StudyDate = ds.SeriesDate = "20260101"
    ds.StudyTime = ds.SeriesTime = "120000"
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, 1
    ds.Manufacturer = "cxrtriage bench/ingest (derived from public test radiographs)"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = [0.15, 0.15]
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, write_like_original=False)


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    out, n, sources = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    os.makedirs(out, exist_ok=True)
    bases = [base_image(s) for s in sources]
    rng = np.random.default_rng(20261202)
    for k in range(n):
        a = bases[k % len(bases)]
        dy, dx = rng.integers(-20, 21, size=2)
        a = np.roll(a, (int(dy), int(dx)), axis=(0, 1))
        a = a * rng.uniform(0.9, 1.1) + rng.uniform(-100, 100)
        a = a + rng.standard_normal(a.shape, dtype=np.float32) * 8.0
        write(os.path.join(out, f"cr{k:05d}.dcm"), np.clip(a, 0, 4095).astype(np.uint16), k)


if __name__ == "__main__":
    main()
