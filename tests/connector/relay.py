"""Test plan R (docs/CONNECTOR.md) with the real Python `websockets` client: a device and a POS
against a snapgate server that tests/connector_py.rs starts on loopback. One case per run:

    relay.py CASE --base ws://127.0.0.1:P --http http://127.0.0.1:P --admin http://127.0.0.1:A
             --device ID:SECRET --pos ID:SECRET [--pos2 ID:SECRET] [--cafile ca.pem]
             [--grace S] [--ping S] [--pong S] [--terminal TOKEN:SERIAL]

Prints "ok CASE" and exits 0 when every check holds; any failed check raises. Every wait is
bounded by a timeout; nothing here sleeps to synchronise.
"""

import argparse
import asyncio
import base64
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

T = 15  # seconds: the bound on any single wait


def check(cond, what):
    if not cond:
        raise AssertionError(what)


class Ctx:
    def __init__(self, a):
        self.a = a
        self.ssl = None
        if a.cafile:
            self.ssl = ssl.create_default_context(cafile=a.cafile)

    def http(self, path, data=None, headers=None, method=None):
        req = urllib.request.Request(self.a.http + path, data=data, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=T, context=self.ssl) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode()

    def token(self, cred):
        cid, secret = cred.split(":", 1)
        auth = base64.b64encode(f"{cid}:{secret}".encode()).decode()
        status, headers, body = self.http(
            f"/oauth2/v1/{self.a.domain}/token",
            data=b"grant_type=client_credentials",
            headers={"Authorization": "Basic " + auth,
                     "Content-Type": "application/x-www-form-urlencoded"},
        )
        check(status == 200, f"token: {status} {body}")
        return json.loads(body)["access_token"]

    def admin_device(self, tsn):
        with urllib.request.urlopen(self.a.admin + "/admin/connector/devices", timeout=T) as r:
            for d in json.loads(r.read())["devices"]:
                if d["tsn"] == tsn:
                    return d
        return None

    async def until(self, pred, what):
        """Poll pred() every 10 ms, at most T seconds."""
        for _ in range(T * 100):
            if pred():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("timed out waiting for " + what)

    def ws(self, url, bearer, **kw):
        kw.setdefault("max_size", 4 << 20)
        return connect(url, additional_headers={"Authorization": "Bearer " + bearer},
                       ssl=self.ssl if url.startswith("wss") else None, compression=None,
                       proxy=None, ping_interval=None, open_timeout=T, close_timeout=T, **kw)

    async def listen(self, path, bearer, msg, base=None):
        async with self.ws((base or self.a.base) + path, bearer) as l:
            await l.send(json.dumps(msg))
            answer = json.loads(await asyncio.wait_for(l.recv(), T))
            try:
                await asyncio.wait_for(l.recv(), T)
                raise AssertionError("the listener sent a second message")
            except ConnectionClosed as e:
                code = e.rcvd.code if e.rcvd else None
        return answer, code

    async def register(self, bearer, tsn, base=None):
        a, code = await self.listen("/cloud-connector/v1/device-listener", bearer,
                                    {"type": "register", "tsn": tsn}, base)
        check(code == 1000 and a.get("type") == "connection", f"register: {a} {code}")
        check(a["expires_in"] == 60, f"JWT lifetime {a}")
        return a

    async def claim(self, bearer, tsn, takeover=False):
        return await self.listen("/cloud-connector/v1/pos-listener", bearer,
                                 {"type": "claim", "tsn": tsn, "takeover": takeover})

    async def device(self, bearer, tsn, base=None, **kw):
        a = await self.register(bearer, tsn, base)
        d = await self.ws(a["url"], a["token"], **kw)
        # The server attaches the connection (and writes its presence) just after the
        # handshake: wait for that, so that a claim which follows finds the device.
        key = "online" if base else "connected_here"
        await self.until(lambda: (self.admin_device(tsn) or {}).get(key), f"{tsn} attached")
        return d

    async def pos(self, bearer, tsn, takeover=False):
        a, code = await self.claim(bearer, tsn, takeover)
        check(a.get("type") == "session", f"claim: {a} {code}")
        return await self.ws(a["url"], a["token"])


async def closed_with(ws, what):
    """Read until the close; return its code (None if there was no close frame)."""
    try:
        for _ in range(100_000):
            await asyncio.wait_for(ws.recv(), T)
    except ConnectionClosed as e:
        return e.rcvd.code if e.rcvd else None
    raise AssertionError(what + ": never closed")


async def status_of(coro):
    try:
        ws = await coro
        await ws.close()
        return 101
    except InvalidStatus as e:
        return e.response.status_code


# --- R1: the token endpoint -------------------------------------------------------------------

async def case_token(c):
    cid, secret = c.a.device.split(":", 1)
    url = f"{c.a.http}/oauth2/v1/{c.a.domain}/token"
    curl = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", str(T)]
    if c.a.cafile:
        curl += ["--cacert", c.a.cafile]
    out = subprocess.run(curl + ["-u", f"{cid}:{secret}", "-d", "grant_type=client_credentials", url],
                         capture_output=True, text=True, timeout=T, check=True).stdout
    body, code = out.rsplit("\n", 1)
    check(code == "200", f"curl: {out}")
    v = json.loads(body)
    check(v["token_type"] == "Bearer" and v["expires_in"] > 0 and v["access_token"], body)
    out = subprocess.run(curl + ["-u", f"{cid}:wrong", "-d", "grant_type=client_credentials", url],
                         capture_output=True, text=True, timeout=T, check=True).stdout
    body, code = out.rsplit("\n", 1)
    check(code == "401" and json.loads(body)["error"] == "invalid_client", out)
    check(secret not in out, "the secret is not echoed")
    # Body authentication, a bad grant, a missing grant.
    form = "application/x-www-form-urlencoded"
    s, h, b = c.http(f"/oauth2/v1/{c.a.domain}/token",
                     data=urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": cid,
                                                  "client_secret": secret}).encode(),
                     headers={"Content-Type": form})
    check(s == 200 and h.get("cache-control") == "no-store", f"{s} {h} {b}")
    auth = "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode()
    s, _, b = c.http(f"/oauth2/v1/{c.a.domain}/token", data=b"grant_type=password",
                     headers={"Authorization": auth, "Content-Type": form})
    check(s == 400 and json.loads(b)["error"] == "unsupported_grant_type", b)
    s, _, b = c.http(f"/oauth2/v1/{c.a.domain}/token", data=b"scope=x",
                     headers={"Authorization": auth, "Content-Type": form})
    check(s == 400 and json.loads(b)["error"] == "invalid_request", b)
    # A bad token is refused before the upgrade.
    st = await status_of(c.ws(c.a.base + "/cloud-connector/v1/device-listener", "not-a-token"))
    check(st == 401, f"bad bearer: {st}")
    # A POS client may not open the device listener.
    st = await status_of(c.ws(c.a.base + "/cloud-connector/v1/device-listener", c.token(c.a.pos)))
    check(st == 403, f"wrong role: {st}")


# --- R2: the happy path -----------------------------------------------------------------------

def message(i):
    if i % 2 == 0:
        return f"text {i} ✓ " + "y" * (i % 113)
    return bytes((i * 7 + j) % 256 for j in range(i % 1500))


async def case_happy(c):
    dev = await c.device(c.token(c.a.device), "ACME/T100/000123")
    pos = await c.pos(c.token(c.a.pos), "ACME/T100/000123")
    n = 1000

    async def send_all(ws):
        for i in range(n):
            await ws.send(message(i))

    async def recv_all(ws, who):
        for i in range(n):
            m = await asyncio.wait_for(ws.recv(), T)
            check(m == message(i), f"{who} #{i}: {m!r:.80} != {message(i)!r:.80}")

    await asyncio.gather(send_all(pos), send_all(dev), recv_all(dev, "device"), recv_all(pos, "pos"))
    await pos.close()
    await dev.close()


# --- R3: connection JWTs ----------------------------------------------------------------------

async def case_jwt(c):
    access = c.token(c.a.device)
    a = await c.register(access, "T-A")
    b = await c.register(access, "T-B")
    first = await c.ws(a["url"], a["token"])
    check(await status_of(c.ws(a["url"], a["token"])) == 401, "replay is 401")
    check(await status_of(c.ws(a["url"], b["token"])) == 403, "another tsn's JWT is 403")
    await first.close()


# --- R4: claims -------------------------------------------------------------------------------

async def case_claims(c):
    dev = await c.device(c.token(c.a.device), "T1")
    pos_access = c.token(c.a.pos)
    first = await c.pos(pos_access, "T1")
    a, code = await c.claim(c.token(c.a.pos2), "T1", takeover=True)
    check(a.get("error") == "session_busy" and a.get("status") == 409 and code == 4409, f"busy: {a} {code}")
    second = await c.pos(pos_access, "T1", takeover=True)
    check(await closed_with(first, "takeover") == 4001, "takeover closes the first holder with 4001")
    await second.send("hello")
    check(await asyncio.wait_for(dev.recv(), T) == "hello", "the new holder relays")
    a, code = await c.claim(pos_access, "NO-SUCH", False)
    check(a.get("error") == "unknown_device" and a.get("status") == 404 and code == 4404, f"unknown: {a}")
    await dev.close()  # a clean close: the device is offline now
    check(await closed_with(second, "device closed") == 4002, "POS told 4002")
    a, code = await c.claim(pos_access, "T1")
    check(a.get("error") == "device_offline" and a.get("status") == 409, f"offline: {a}")


# --- R5: an abrupt device drop ----------------------------------------------------------------

async def case_drop(c):
    grace = c.a.grace
    dev_access = c.token(c.a.device)
    dev = await c.device(dev_access, "T1")
    pos = await c.pos(c.token(c.a.pos), "T1")
    # Within the grace: abort (no close frame), send while the device is away, come back.
    t0 = time.monotonic()
    dev.transport.abort()
    await c.until(lambda: (c.admin_device("T1") or {}).get("in_grace"), "the server to see the drop")
    detected = time.monotonic() - t0
    check(0 <= detected < 5, f"drop detected after {detected:.3f} s")
    for i in range(20):
        await pos.send(f"held {i}")
    await c.until(lambda: c.admin_device("T1")["session"]["buffered_messages"] == 20, "buffering")
    dev = await c.device(dev_access, "T1")
    await pos.send("live")
    for i in range(20):
        check(await asyncio.wait_for(dev.recv(), T) == f"held {i}", f"buffered #{i} in order")
    check(await asyncio.wait_for(dev.recv(), T) == "live", "then the live one")
    # Past the grace: the POS gets 4002 and takes its local-mode branch.
    t0 = time.monotonic()
    dev.transport.abort()
    code = await closed_with(pos, "grace")
    took = time.monotonic() - t0
    local_mode = code == 4002
    check(local_mode, f"POS closed with {code}")
    check(grace <= took + 0.05 and took < grace + 5, f"4002 after {took:.3f} s, grace {grace}")


# --- R6: a half-open connection ---------------------------------------------------------------

class FreezableProxy:
    """A TCP proxy that can stop forwarding (no FIN, no RST): a half-open path."""

    def __init__(self, target):
        self.target = target
        self.thawed = asyncio.Event()
        self.thawed.set()
        self.server = None

    async def start(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def pipe(self, r, w):
        try:
            while True:
                data = await r.read(65536)
                if not data:
                    break
                await self.thawed.wait()
                w.write(data)
                await w.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if self.thawed.is_set():
                w.close()

    async def handle(self, r, w):
        host, port = self.target
        ur, uw = await asyncio.open_connection(host, port)
        await asyncio.gather(self.pipe(r, uw), self.pipe(ur, w))

    def freeze(self):
        self.thawed.clear()


async def case_halfopen(c):
    host, port = urllib.parse.urlsplit(c.a.base).hostname, urllib.parse.urlsplit(c.a.base).port
    proxy = FreezableProxy((host, port))
    pport = await proxy.start()
    via = f"ws://127.0.0.1:{pport}"
    dev = await c.device(c.token(c.a.device), "T1", base=via)
    pos = await c.pos(c.token(c.a.pos), "T1")
    await pos.send("before")
    check(await asyncio.wait_for(dev.recv(), T) == "before", "relay through the proxy")
    t0 = time.monotonic()
    proxy.freeze()
    code = await closed_with(pos, "half-open device")
    took = time.monotonic() - t0
    bound = c.a.ping + c.a.pong + c.a.grace
    check(code == 4002, f"POS closed with {code}")
    check(c.a.grace <= took + 0.05 and took < bound + 3, f"closed after {took:.3f} s (ping+pong+grace {bound})")
    proxy.server.close()


# --- R7: limits -------------------------------------------------------------------------------

async def case_limits(c):
    dev_access, pos_access = c.token(c.a.device), c.token(c.a.pos)
    dev = await c.device(dev_access, "T1")
    pos = await c.pos(pos_access, "T1")
    # One 200 KiB frame: over the 128 KiB frame limit.
    await pos.send(b"\x01" * (200 << 10))
    check(await closed_with(pos, "oversize frame") == 1009, "oversize frame is 1009")
    # 900 KiB in 100 KiB fragments passes; 1.1 MiB in fragments is over the message limit.
    pos = await c.pos(pos_access, "T1")
    await pos.send([b"\x02" * (100 << 10)] * 9)
    check(await asyncio.wait_for(dev.recv(), T) == b"\x02" * (900 << 10), "900 KiB fragmented")
    try:
        await pos.send([b"\x03" * (100 << 10)] * 11)
    except ConnectionClosed:
        pass
    check(await closed_with(pos, "oversize message") == 1009, "oversize message is 1009")
    await dev.close()
    # A device that does not read: its queue passes the limit and it is closed with 1008.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    u = urllib.parse.urlsplit(c.a.base)
    sock.connect((u.hostname, u.port))
    a = await c.register(dev_access, "T2")
    slow = await c.ws(a["url"], a["token"], sock=sock, max_queue=1)
    # As `device` does: the claim must not race the server attaching the connection.
    await c.until(lambda: (c.admin_device("T2") or {}).get("connected_here"), "T2 attached")
    pos = await c.pos(pos_access, "T2")
    chunk = b"\x04" * (64 << 10)

    def slow_consumers():
        with urllib.request.urlopen(c.a.admin + "/metrics", timeout=T) as r:
            for line in r.read().decode().splitlines():
                if line.startswith('snapgate_connector_drops_total{reason="slow_consumer"}'):
                    return int(line.split()[-1])
        return 0

    try:
        for _ in range(512):  # at most 32 MiB
            await asyncio.wait_for(pos.send(chunk), T)
            if slow_consumers() > 0:
                break
    except ConnectionClosed:
        pass
    check(slow_consumers() > 0, "the server saw a slow consumer")
    # Read now: what the kernel holds, then the close frame.
    code = await closed_with(slow, "slow consumer")
    check(code == 1008, f"slow consumer closed with {code}")


# --- R8: rapid reconnects (frp#5526) ----------------------------------------------------------

async def case_rapid(c):
    dev_access = c.token(c.a.device)
    dev = await c.device(dev_access, "T1")
    pos = await c.pos(c.token(c.a.pos), "T1")
    for _ in range(10):
        newer = await c.device(dev_access, "T1")
        check(await closed_with(dev, "replaced") == 4001, "the older device connection gets 4001")
        dev = newer
    for _ in range(10):
        dev.transport.abort()
        dev = await c.device(dev_access, "T1")
    # Every stale grace timer runs out in this time; the live session must still be whole.
    await asyncio.sleep(3 * c.a.grace)
    await pos.send("alive?")
    check(await asyncio.wait_for(dev.recv(), T) == "alive?", "POS to device after the storm")
    await dev.send("alive")
    check(await asyncio.wait_for(pos.recv(), T) == "alive", "device to POS after the storm")
    d = c.admin_device("T1")
    check(d["connected_here"] and d["session"] is not None and not d["in_grace"], f"status {d}")


# --- Beyond R: a terminal with its TerminalAccessToken; claims by serial alone ----------------

async def case_terminal(c):
    """--terminal TOKEN:SERIAL (a RegisterTerminal token, merchant profile = --pos's merchant)."""
    tat, serial = c.a.terminal.rsplit(":", 1)
    fq = "PAX/A920/" + serial
    # Its own serial as make/model/serial; another serial is 403 / 4403.
    a, code = await c.listen("/cloud-connector/v1/device-listener", tat,
                             {"type": "register", "tsn": "PAX/A920/NOT" + serial})
    check(a.get("error") == "forbidden" and a.get("status") == 403 and code == 4403,
          f"another serial: {a} {code}")
    check(await status_of(c.ws(c.a.base + "/cloud-connector/v1/device-listener", "bm90IGEgdG9rZW4="))
          == 401, "a token that is not one is 401")
    dev = await c.device(tat, fq)
    # The POS claims by serial alone and is given the registered tsn.
    pos_access = c.token(c.a.pos)
    a, code = await c.claim(pos_access, serial)
    check(a.get("type") == "session" and a.get("tsn") == fq, f"claim by serial: {a} {code}")
    pos = await c.ws(a["url"], a["token"])
    for i in range(50):
        await pos.send(message(i))
        check(await asyncio.wait_for(dev.recv(), T) == message(i), "POS to device")
        await dev.send(message(i))
        check(await asyncio.wait_for(pos.recv(), T) == message(i), "device to POS")
    await pos.close()
    # A second device with the same serial under another make: a claim by serial alone is
    # ambiguous (409 / 4409); the fully qualified claim works.
    other = await c.device(c.token(c.a.device), "VRF/P400/" + serial)
    a, code = await c.claim(pos_access, serial)
    check(a.get("error") == "ambiguous_device" and a.get("status") == 409 and code == 4409,
          f"ambiguous: {a} {code}")
    a, code = await c.claim(pos_access, fq, takeover=True)
    check(a.get("type") == "session" and a.get("tsn") == fq, f"fully qualified: {a} {code}")
    await other.close()
    await dev.close()


CASES = {name[5:]: f for name, f in globals().items() if name.startswith("case_")}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("case", choices=sorted(CASES))
    for k in ("base", "http", "admin", "device", "pos"):
        p.add_argument("--" + k, required=True)
    p.add_argument("--pos2")
    p.add_argument("--terminal")
    p.add_argument("--cafile")
    p.add_argument("--domain", default="test")
    p.add_argument("--grace", type=float, default=1.0)
    p.add_argument("--ping", type=float, default=1.0)
    p.add_argument("--pong", type=float, default=1.0)
    a = p.parse_args()
    asyncio.run(asyncio.wait_for(CASES[a.case](Ctx(a)), 120))
    print("ok", a.case)


if __name__ == "__main__":
    sys.exit(main())
