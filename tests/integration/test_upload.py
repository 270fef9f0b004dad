"""HTTP File Upload (XEP-0363) on kabard's HTTP listener: slixmpp (Debian's python3-slixmpp
1.8.3) finds the upload service and asks for a slot with its XEP-0363 plugin, the file goes up by
HTTP PUT (the plugin's own upload_file fails on Python 3.11, see FIELD-NOTES), another client
downloads the same bytes; the size limit and the quota answered with the XEP's errors; bad HTTP
(wrong length, unknown slot, a second PUT) refused; kabard restarted keeps the file.

Run: /usr/bin/python3 test_upload.py --kabard PATH --kabarctl PATH
"""
import asyncio
import hashlib
import http.client
import logging
import os
import ssl
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
from kabartest import http_request  # noqa: E402
from xmpp_raw import error_condition, login, q, tostr  # noqa: E402

import slixmpp  # noqa: E402

R = kabartest.Results("upload")
NS = "urn:xmpp:http:upload:0"
STEP = 15.0
MAX = 3 * 1024 * 1024
QUOTA = 5 * 1024 * 1024


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0363")
        self.whitespace_keepalive = False
        self.ready = asyncio.get_event_loop().create_future()
        self.add_event_handler("session_start", lambda _: self.ready.done() or
                               self.ready.set_result("session"))
        self.add_event_handler("failed_auth", lambda _: self.ready.done() or
                               self.ready.set_result("failed_auth"))


async def slixmpp_part(k, payload):
    c = Client("alice@localhost/up", "alice-pw")
    c.connect(("127.0.0.1", k.port), force_starttls=True)
    try:
        R.check(await asyncio.wait_for(c.ready, STEP) == "session", "slixmpp logged in")
        # The plugin's find_upload_service() trips over Python 3.11 ("Passing coroutines is
        # forbidden") like its upload_file(): the same disco walk by hand.
        service = None
        items = await asyncio.wait_for(c["xep_0030"].get_items(jid="localhost"), STEP)
        for jid, _, _ in items["disco_items"]["items"]:
            info = await asyncio.wait_for(c["xep_0030"].get_info(jid=jid), STEP)
            if ("store", "file") in [i[:2] for i in info["disco_info"]["identities"]] and \
                    NS in info["disco_info"]["features"]:
                service = jid
        R.check(str(service) == "upload.localhost", "slixmpp finds upload.localhost by disco")
        slot = await asyncio.wait_for(
            c["xep_0363"].request_slot(service, "photo 1.jpg", len(payload), "image/jpeg"),
            STEP)
        put = slot["http_upload_slot"]["put"]["url"]
        get = slot["http_upload_slot"]["get"]["url"]
        R.check(put.startswith("http://127.0.0.1:%d/upload/" % k.http_port) and get == put,
                "slixmpp gets a slot on kabard's HTTP listener (%s)" % put)
        return get, put
    finally:
        try:
            await asyncio.wait_for(c.disconnect(wait=1.0), 3.0)
        except Exception:  # noqa: BLE001
            c.abort()


def slot(c, name, size, ctype="application/octet-stream"):
    return c.iq("get", "<request xmlns='%s' filename='%s' size='%d' content-type='%s'/>"
                % (NS, name, size, ctype), to="upload.localhost")


def urls(r):
    s = r.find(q(NS, "slot"))
    return s.find(q(NS, "put")).get("url"), s.find(q(NS, "get")).get("url")


def main():
    logging.basicConfig(level=logging.ERROR)
    args = kabartest.parse_args()
    http_port = kabartest.free_port()
    config = "[upload]\nmax_file_size = %d\nquota = %d\n" % (MAX, QUOTA)
    k = kabartest.Kabard(args, config=config, extra_flags=("--http", "127.0.0.1:%d" % http_port))
    k.http_port = http_port
    payload = os.urandom(2 * 1024 * 1024)
    with k:
        k.add_user("alice", "alice-pw")
        k.add_user("bob", "bob-pw")
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        get_url = put_url = None
        try:
            get_url, put_url = loop.run_until_complete(asyncio.wait_for(
                slixmpp_part(k, payload), 60))
        except Exception as e:  # noqa: BLE001
            R.check(False, "slixmpp part raised %s: %s" % (type(e).__name__, e))
        kabartest.shutdown_loop(loop)
        if put_url:
            st, _, _ = http_request("PUT", put_url, payload, {"Content-Type": "image/jpeg"})
            R.check(st == 201, "the file goes up by HTTP PUT -> 201 (%d)" % st)
            st, _, _ = http_request("PUT", put_url, b"again", {"Content-Type": "image/jpeg"})
            R.check(st == 409, "a second PUT to the same slot -> 409 (%d)" % st)
            # bob downloads what alice uploaded
            st, data, hdrs = http_request("GET", get_url)
            ctype = hdrs.get("content-type")
            R.check(st == 200 and hashlib.sha256(data).digest() == hashlib.sha256(payload).digest()
                    and ctype == "image/jpeg",
                    "another client downloads the same 2 MiB, as image/jpeg (%d, %s)" % (st, ctype))
        st, _, _ = http_request("GET", "http://127.0.0.1:%d/upload/%s/x" % (http_port, "0" * 32))
        R.check(st == 404, "an unknown slot -> 404 (%d)" % st)

        a = login(k.port, "alice", "alice-pw", resource="raw")
        r = slot(a, "huge.bin", MAX + 1)
        err = r.find("{jabber:client}error")
        big = err.find("%s/%s" % (q(NS, "file-too-large"), q(NS, "max-file-size"))) \
            if err is not None else None
        R.check(error_condition(r) == "not-acceptable" and big is not None
                and big.text == str(MAX),
                "a file over the limit -> not-acceptable with file-too-large (%s)" % tostr(r)[:300])
        r = slot(a, "second.bin", MAX)  # 2 MiB stored + 3 MiB = the 5 MiB quota: still fits
        R.check(r.get("type") == "result", "a slot within the quota is granted")
        r = slot(a, "third.bin", 1024)
        R.check(error_condition(r) == "resource-constraint" and r.find(
            "{jabber:client}error").get("type") == "wait",
            "beyond the quota -> resource-constraint, type wait (%s)" % error_condition(r))
        r = slot(a, "../etc/passwd", 10)
        R.check(error_condition(r) == "bad-request", "a file name with a slash -> bad-request")
        b = login(k.port, "bob", "bob-pw", resource="raw")
        # A name that would be hidden, carries a newline (a line of the slot's meta file), a C1
        # CSI and a right-to-left override ("evil<RLO>gpj.exe" shows as "evilexe.jpg"): the slot
        # is granted under the sanitized name.
        r = slot(b, ".x&#10;y&#x9B;&#x202E;gpj.exe", 1)
        R.check(r.get("type") == "result" and urls(r)[0].endswith("/xygpj.exe"),
                "a slot's name is sanitized like a Jingle file name (%s)" %
                (urls(r)[0] if r.get("type") == "result" else tostr(r)[:300]))
        r = slot(b, "bob.txt", 5, "text/plain")
        R.check(r.get("type") == "result", "quota is per account: bob still gets a slot")
        put, get = urls(r)
        st, _, _ = http_request("PUT", put, b"hell", {"Content-Type": "text/plain"})
        R.check(st == 400, "a PUT whose length is not the slot's size -> 400 (%d)" % st)
        st, _, _ = http_request("PUT", put, b"hello", {"Content-Type": "text/html"})
        R.check(st == 400, "a PUT with another Content-Type than the slot's -> 400 (%d)" % st)
        st, _, _ = http_request("PUT", put, b"hello", {"Content-Type": "text/plain"})
        st2, data, _ = http_request("GET", get)
        R.check(st == 201 and st2 == 200 and data == b"hello",
                "after the refusals the right PUT still works (%d, %d)" % (st, st2))
        a.close()
        b.close()
        R.check(k.alive(), "kabard alive")
        if get_url:
            # An idle keep-alive HTTP connection does not hold up a stop.
            u = urllib.parse.urlsplit(get_url)
            idle = http.client.HTTPConnection(u.hostname, u.port, timeout=15)
            idle.request("HEAD", u.path)
            R.check(idle.getresponse().status == 200, "HEAD of the uploaded file -> 200")
            t0 = time.monotonic()
            rc = k.stop()
            R.check(rc == 0 and time.monotonic() - t0 < 5, "kabard stops at once with an idle "
                    "HTTP connection open (rc=%s, %.1f s)" % (rc, time.monotonic() - t0))
            idle.close()
            k.start()
            st, data, _ = http_request("GET", get_url)
            R.check(st == 200 and len(data) == len(payload),
                    "after a restart the file is still served (%d)" % st)
    R.finish()


if __name__ == "__main__":
    main()
