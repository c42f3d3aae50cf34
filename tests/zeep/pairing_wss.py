"""A POS pairing over WSS with the Python `websockets` client (tests/pairing.rs runs it).

Usage: pairing_wss.py URL CAFILE BODY
Connects with a pinned ssl context (only CAFILE is trusted), sends BODY as one text message,
prints every message it gets, then a last line `close=<code> reason=<reason>`.
"""
import asyncio
import ssl
import sys

import websockets


async def main(url: str, cafile: str, body: str) -> None:
    ctx = ssl.create_default_context(cafile=cafile)
    async with websockets.connect(url, ssl=ctx, open_timeout=20, close_timeout=20) as ws:
        await ws.send(body)
        try:
            async for msg in ws:
                sys.stdout.write(msg if isinstance(msg, str) else msg.decode())
                sys.stdout.write("\n")
        except websockets.ConnectionClosed:
            pass
        print(f"close={ws.close_code} reason={ws.close_reason}")


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(*sys.argv[1:4]), 60))
