"""Stream management (XEP-0198) with slixmpp's xep_0198 plugin (Debian's python3-slixmpp 1.8.3):
it enables stream management with resumption, its socket is killed (no stream close), it
reconnects and resumes, and the messages another client sent before and meanwhile arrive exactly
once, in order.

Run: /usr/bin/python3 test_slixmpp_sm.py --kabard PATH --kabarctl PATH
"""
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
import slixtest  # noqa: E402
from slixtest import STEP  # noqa: E402
from xmpp_raw import online  # noqa: E402

TOTAL = 60.0  # the whole scenario
PW = {"alice": "alice-pw", "bob": "bob-pw"}


class SmClient(slixtest.Client):
    def __init__(self, jid, password):
        super().__init__(jid, password, ("xep_0198",))
        self.bodies = []
        self.got_message = asyncio.Event()
        self.add_event_handler("session_start", lambda e: self.send_presence())
        self.add_event_handler("message", self._on_bodies)

    def _on_bodies(self, msg):
        if msg["type"] in ("chat", "normal"):
            self.bodies.append(msg["body"])
            self.got_message.set()

    async def wait_bodies(self, n):
        while len(self.bodies) < n:
            self.got_message.clear()
            await asyncio.wait_for(self.got_message.wait(), STEP)


async def scenario(r, kd):
    alice = SmClient("alice@localhost/slix", PW["alice"])
    alice.connect_to(kd.port)
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
    alice.connect_to(kd.port)
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
    slixtest.quiet_logging()
    with kabartest.Kabard(args) as kd:
        for user, pw in PW.items():
            kd.add_user(user, pw)
        with slixtest.Loop(r, TOTAL) as lp:
            lp.run(scenario(r, kd))
        r.check(kd.alive(), "kabard still running at the end")
    r.finish()


if __name__ == "__main__":
    main()
