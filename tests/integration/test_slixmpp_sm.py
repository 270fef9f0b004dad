"""Stream management (XEP-0198) with slixmpp's xep_0198 plugin (Debian's python3-slixmpp 1.8.3):
it enables stream management with resumption, its socket is killed (no stream close), it
reconnects and resumes, and the messages another client sent before and meanwhile arrive exactly
once, in order.

Run: /usr/bin/python3 test_slixmpp_sm.py --kabard PATH --kabarctl PATH
"""
import asyncio
import logging
import os
import ssl
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
from xmpp_raw import online  # noqa: E402

import slixmpp  # noqa: E402

STEP = 10.0   # seconds allowed for any one expected event
TOTAL = 60.0  # the whole scenario
PW = {"alice": "alice-pw", "bob": "bob-pw"}


class SmClient(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.register_plugin("xep_0198")
        self.whitespace_keepalive = False
        self.events = asyncio.Queue()
        self.seen = []
        self.bodies = []
        self.got_message = asyncio.Event()
        for name in ("session_start", "sm_enabled", "session_resumed", "sm_failed",
                     "disconnected", "failed_auth", "connection_failed"):
            self.add_event_handler(name, self._recorder(name))
        self.add_event_handler("message", self._on_message)

    def _recorder(self, name):
        def record(event):
            self.events.put_nowait(name)
            if name == "session_start":
                self.send_presence()
        return record

    def _on_message(self, msg):
        if msg["type"] in ("chat", "normal"):
            self.bodies.append(msg["body"])
            self.got_message.set()

    async def expect(self, name):
        """Waits for event `name` (or takes it if it came already, in any order)."""
        while True:
            if name in self.seen:
                self.seen.remove(name)
                return
            got = await asyncio.wait_for(self.events.get(), STEP)
            self.seen.append(got)
            if got in ("failed_auth", "connection_failed", "sm_failed"):
                raise RuntimeError("%s while waiting for %s" % (got, name))

    async def wait_bodies(self, n):
        while len(self.bodies) < n:
            self.got_message.clear()
            await asyncio.wait_for(self.got_message.wait(), STEP)


async def scenario(r, kd):
    alice = SmClient("alice@localhost/slix", PW["alice"])
    alice.connect(("127.0.0.1", kd.port), force_starttls=True)
    await alice.expect("sm_enabled")
    sm = alice.plugin["xep_0198"]
    r.check(bool(sm.sm_id), "slixmpp enabled stream management with resumption (id %s)" % sm.sm_id)
    await alice.expect("session_start")
    bob = online(kd.port, "bob", PW["bob"], "raw")
    for i in range(1, 6):
        bob.message("alice@localhost/slix", "b%d" % i)
    await alice.wait_bodies(5)
    # The socket dies: no stream close, no unavailable presence.
    alice.transport.abort()
    await alice.expect("disconnected")
    for i in range(6, 11):
        bob.message("alice@localhost/slix", "b%d" % i)
    bob.iq("get", "<ping xmlns='urn:xmpp:ping'/>")  # b6..b10 are routed once this is answered
    alice.connect(("127.0.0.1", kd.port), force_starttls=True)
    await alice.expect("session_resumed")
    r.check(True, "slixmpp resumed the session after its socket was killed")
    await alice.wait_bodies(10)
    await asyncio.sleep(1.0)  # anything sent twice would arrive now
    expected = ["b%d" % i for i in range(1, 11)]
    r.check(alice.bodies == expected,
            "every message arrived exactly once, in order: %s" % alice.bodies)
    bob.close()
    await asyncio.wait_for(alice.disconnect(wait=1.0), 3.0)


def main():
    args = kabartest.parse_args()
    r = kabartest.Results("slixmpp_sm")
    logging.basicConfig(level=logging.CRITICAL)
    if os.environ.get("KABAR_IT_DEBUG"):
        logging.getLogger("slixmpp").setLevel(logging.DEBUG)
    with kabartest.Kabard(args) as kd:
        for user, pw in PW.items():
            kd.add_user(user, pw)
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(asyncio.wait_for(scenario(r, kd), TOTAL))
        except asyncio.TimeoutError:
            r.check(False, f"scenario finished within {TOTAL:.0f} s")
        except Exception as e:  # noqa: BLE001
            r.check(False, "scenario raised %s: %s" % (type(e).__name__, e))
        finally:
            loop.run_until_complete(asyncio.sleep(0.2))
            kabartest.shutdown_loop(loop)
        r.check(kd.alive(), "kabard still running at the end")
    r.finish()


if __name__ == "__main__":
    main()
