#!/usr/bin/python3
"""What durable ingest costs on this disk: no DICOM, no network, no scoring.

durable_write.py OUT_DIR K FILE...: copies the files into OUT_DIR with K threads (file i goes to
thread i mod K, as the benchmark splits the set between K associations), each copy made durable
the way the daemon keeps a received instance before it answers Success: written to a temporary
file in 1 MiB writes with the writeback of each started at once (sync_file_range, as the
listener does while a data set arrives, so the fsync waits only for the tail), fsynced, renamed,
the directory fsynced. Prints the wall seconds. The data are read from the page cache (the
benchmark sends the same files just before), as storescu reads them.
"""
import ctypes
import os
import sys
import threading
import time


def main():
    out, k, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    os.makedirs(out, exist_ok=True)
    dfd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    errors = []
    libc = ctypes.CDLL(None, use_errno=True)
    sfr = libc.sync_file_range
    sfr.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    SYNC_FILE_RANGE_WRITE = 2

    def work(t):
        try:
            for i in range(t, len(files), k):
                with open(files[i], "rb") as f:
                    data = memoryview(f.read())
                tmp = os.path.join(out, f".tmp.{i}")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                try:
                    off = 0
                    while off < len(data):  # 1 MiB writes: the kernel copies, the GIL is free
                        off += os.write(fd, data[off:off + (1 << 20)])
                        sfr(fd, 0, 0, SYNC_FILE_RANGE_WRITE)  # dirty pages only, no wait
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.rename(tmp, os.path.join(out, f"{i}.dcm"))
                os.fsync(dfd)
        except OSError as e:  # reported after the join: a failed run has no figure
            errors.append(str(e))

    t0 = time.monotonic()
    threads = [threading.Thread(target=work, args=(t,)) for t in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.monotonic() - t0
    os.close(dfd)
    if errors:
        sys.exit(f"durable_write: {errors[0]}")
    print(f"{secs:.6f}")


if __name__ == "__main__":
    main()
