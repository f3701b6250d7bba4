import struct, sys, zlib
def read_png_gray8(path):
    data = open(path, 'rb').read()
    assert data[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
    pos, idat, w = 8, b'', None
    while pos < len(data):
        n, typ = struct.unpack('>I4s', data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if typ == b'IHDR':
            w, h, depth, ctype, _, _, inter = struct.unpack('>IIBBBBB', body)
            assert depth == 8 and ctype == 0 and inter == 0, 'want 8-bit grey, not interlaced'
        elif typ == b'IDAT':
            idat += body
        elif typ == b'IEND':
            break
    raw, rows, prev = zlib.decompress(idat), [], bytearray(w)
    for y in range(h):
        f, line = raw[y * (w + 1)], bytearray(raw[y * (w + 1) + 1:(y + 1) * (w + 1)])
        for x in range(w):
            a = line[x - 1] if x else 0
            b = prev[x]
            c = prev[x - 1] if x else 0
            if f == 1: line[x] = (line[x] + a) & 255
            elif f == 2: line[x] = (line[x] + b) & 255
            elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, rows
w, h, rows = read_png_gray8(sys.argv[1])
pad = (4 - w % 4) % 4
pixels = b''.join(r + b'\0' * pad for r in reversed(rows))
palette = b''.join(bytes((i, i, i, 0)) for i in range(256))
off = 14 + 40 + len(palette)
hdr = b'BM' + struct.pack('<IHHI', off + len(pixels), 0, 0, off)
info = struct.pack('<IiiHHIIiiII', 40, w, h, 1, 8, 0, len(pixels), 2835, 2835, 256, 256)
open(sys.argv[2], 'wb').write(hdr + info + palette + pixels)
