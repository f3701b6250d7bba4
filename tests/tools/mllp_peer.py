#!/usr/bin/python3
"""mllp_peer.py - a test EHR MLLP listener on python3-hl7's asyncio server (Debian python3-hl7).

  /usr/bin/python3 mllp_peer.py --port P --log FILE [--host 127.0.0.1] [--mode MODE]
      [--lifetime SECONDS] [--ready FILE]

MODE decides the answer to every message:
  AA, AE, AR, CA, CE, CR   a real ACK (python-hl7 create_ack): MSA-1 = MODE, MSA-2 = MSH-10
  wrong                    an AA whose MSA-2 is "WRONG" + MSH-10 (not the message's control id)
  noack                    read the message and answer nothing (the connection stays open)
  broken                   an answer without the 0x0B start block, then close
  close                    close the connection without answering
Log: one JSON line per message: {"n":N,"conn":C,"control_id":"..","segments":K,"mode":"..",
"message":"<the ER7 text, segments ended by CR>","t":<Unix time it was read>}.
--ready FILE is written once listening; --lifetime bounds the run (default 60 s).
"""
import argparse
import asyncio
import json
import os
import signal
import sys
import time

import hl7
from hl7.mllp import start_hl7_server


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--mode", default="AA")
    p.add_argument("--lifetime", type=float, default=60.0)
    p.add_argument("--ready")
    args = p.parse_args()
    log = open(args.log, "a", encoding="utf-8")
    counters = {"n": 0, "conn": 0}

    async def handle(reader, writer):
        counters["conn"] += 1
        conn = counters["conn"]
        try:
            while not writer.is_closing():
                msg = await reader.readmessage()
                counters["n"] += 1
                ctl = str(msg.segment("MSH")[10])
                log.write(json.dumps({"n": counters["n"], "conn": conn, "control_id": ctl,
                                      "segments": len(msg), "mode": args.mode,
                                      "message": str(msg), "t": time.time()}) + "\n")
                log.flush()
                mode = args.mode
                if mode == "noack":
                    continue
                if mode == "close":
                    break
                if mode == "broken":
                    writer.write(b"MSH|^~\\&|EHR|HOSP\rMSA|AA|" + ctl.encode() + b"\r\x1c\r")
                    await writer.drain()
                    break
                if mode == "wrong":
                    ack = msg.create_ack("AA")
                    ack.segment("MSA")[2] = hl7.Field("", ["WRONG" + ctl])
                    writer.writemessage(ack)
                else:
                    writer.writemessage(msg.create_ack(mode))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionResetError):
            pass
        finally:
            writer.close()

    async def serve():
        async with await start_hl7_server(handle, host=args.host, port=args.port) as srv:
            if args.ready:
                with open(args.ready + ".tmp", "w") as f:
                    f.write(str(os.getpid()))
                os.replace(args.ready + ".tmp", args.ready)
            await asyncio.wait_for(srv.serve_forever(), timeout=args.lifetime)

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    try:
        asyncio.run(serve())
    except asyncio.TimeoutError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
