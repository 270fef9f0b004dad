"""Acknowledged means durable: a sender with stream management (XEP-0198) streams messages to a
recipient with stream management who is online and to one who is offline, while kabard is
SIGKILLed at random points (fixed seed) and started again on the same data directory.

After each restart the sender's <resume/> fails (the process that knew the session is gone), so
it logs in afresh and sends again, first, every message kabard had not acknowledged (counted as
resent), then new ones. The online recipient logs in again and gets what was in flight as
offline messages. The last round runs without a kill until everything is acknowledged; then the
offline recipient logs in and takes its queue.

Checked, with the counts printed:
- no loss: every message kabard acknowledged to the sender arrives;
- exactly once for what the recipient acknowledged: no message arrives again after kabard
  answered the recipient's <r/> that followed its <a/> covering the message (kabard had taken
  that ack, so the message must not come back after a crash), nor twice at the offline
  recipient unless the sender sent it twice;
- what may come twice is counted, not failed: messages the sender resent (kabard may have
  routed the first copy before it died) and messages the online recipient had not yet
  acknowledged when kabard died (XEP-0198 redelivers what was not acknowledged)."""
import os
import random
import signal
import sys
import threading
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
from xmpp_raw import NS_CLIENT, Conn, StreamClosed, XmppError, login, q  # noqa: E402

NS_SM = "urn:xmpp:sm:3"
STANZAS = {q(NS_CLIENT, n) for n in ("message", "presence", "iq")}
PW = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}
KILLS = 5
WINDOW = 40  # messages the sender keeps unacknowledged at most
SEED = 16

R = kabartest.Results("sm_kill")


def target(n):
    """Every third message to the offline recipient, the rest to the online one."""
    return "carol" if n % 3 == 2 else "bob"


class Sender:
    """alice: sends m<n>, asks for an ack after every 5 (as Conversations does)."""

    def __init__(self):
        self.next = 0
        self.unacked = []  # message numbers sent on this stream and not acknowledged, in order
        self.acked = set()
        self.resent = set()
        self.bounced = set()
        self.sm_id = None
        self.h_in = 0  # stanzas received from kabard (for its <r/>)
        self.c = None

    def connect(self, port):
        c = Conn(port)
        c.open_stream()
        c.starttls()
        c.authenticate("alice", PW["alice"])
        if self.sm_id is not None:
            # kabard was killed: the session it knew is gone with it.
            c.send("<resume xmlns='%s' previd='%s' h='%d'/>" % (NS_SM, self.sm_id, self.h_in))
            el = c.wait_for(lambda e: e.tag in (q(NS_SM, "resumed"), q(NS_SM, "failed")),
                            what="resumed or failed")
            R.check(el.tag == q(NS_SM, "failed"), "alice: resumption after a restart fails")
        c.bind("w")
        c.send("<enable xmlns='%s' resume='true'/>" % NS_SM)
        self.sm_id = c.expect(q(NS_SM, "enabled")).get("id")
        self.h_in = 0
        self.acked_on_stream = 0  # the last h kabard sent on this stream
        self.c = c
        # XEP-0198 §5: what was not acknowledged is sent again on the new stream.
        again = self.unacked
        self.unacked = []
        for n in again:
            self.resent.add(n)
            self.send(n)

    def send(self, n):
        self.c.send("<message to='%s@localhost' type='chat'><body>m%d</body></message>"
                    % (target(n), n))
        self.unacked.append(n)
        if len(self.unacked) % 5 == 0:
            self.c.send("<r xmlns='%s'/>" % NS_SM)

    def handle(self, el):
        if el.tag == q(NS_SM, "a"):
            # h counts from <enable/>: the first h-sent stanzas are handled (and durable).
            h = int(el.get("h"))
            done = h - self.acked_on_stream
            if done > 0:
                for n in self.unacked[:done]:
                    self.acked.add(n)
                self.unacked = self.unacked[done:]
                self.acked_on_stream = h
        elif el.tag == q(NS_SM, "r"):
            self.c.send("<a xmlns='%s' h='%d'/>" % (NS_SM, self.h_in))
        elif el.tag in STANZAS:
            self.h_in += 1
            if el.tag == q(NS_CLIENT, "message") and el.get("type") == "error":
                body = el.findtext(q(NS_CLIENT, "body")) or ""
                if body.startswith("m"):
                    self.bounced.add(int(body[1:]))

    def run(self, limit, stop):
        """Sends until `limit` messages exist and all are acknowledged (None: until the
        connection dies or `stop` is set)."""
        c = self.c
        try:
            while not stop.is_set():
                while len(self.unacked) < WINDOW and (limit is None or self.next < limit):
                    self.send(self.next)
                    self.next += 1
                if limit is not None and self.next >= limit:
                    if not self.unacked:
                        return
                    c.send("<r xmlns='%s'/>" % NS_SM)
                c.pump(0.03)
                for el in c.queue:
                    self.handle(el)
                c.queue = []
                if c.eof:
                    return
        except (StreamClosed, OSError, XmppError):
            return


class Receiver:
    """bob (online, stream management) or carol (logs in at the end)."""

    def __init__(self, name):
        self.name = name
        self.log = []  # (n, confirmed_before): every message received, in order
        self.confirmed = set()  # messages kabard has taken bob's ack of
        self.c = None
        self.h = 0
        self.stream_msgs = []  # (stanza count, n) on this stream
        self.asked = []  # h values of our <a/> each followed by an <r/>, not answered yet

    def connect(self, port):
        c = login(port, self.name, PW[self.name], "r")
        c.send("<enable xmlns='%s' resume='true'/>" % NS_SM)
        c.expect(q(NS_SM, "enabled"))
        self.c = c
        self.h = 0
        self.stream_msgs = []
        self.asked = []
        c.presence()
        # The presence is handled (the account available) once this answer comes, which the
        # server counts as a stanza like any other.
        r = c.iq("get", "<ping xmlns='urn:xmpp:ping'/>")
        if r.get("type") != "result":
            raise XmppError("ping failed")
        self.h += 1

    def handle(self, el):
        if el.tag in STANZAS:
            self.h += 1
            if el.tag == q(NS_CLIENT, "message"):
                body = el.findtext(q(NS_CLIENT, "body")) or ""
                if body.startswith("m"):
                    n = int(body[1:])
                    self.log.append((n, n in self.confirmed))
                    self.stream_msgs.append((self.h, n))
        elif el.tag == q(NS_SM, "r"):
            # Our ack, then a request: kabard answers it once it has taken the ack (in order).
            self.c.send("<a xmlns='%s' h='%d'/><r xmlns='%s'/>" % (NS_SM, self.h, NS_SM))
            self.asked.append(self.h)
        elif el.tag == q(NS_SM, "a") and self.asked:
            h = self.asked.pop(0)
            for count, n in self.stream_msgs:
                if count <= h:
                    self.confirmed.add(n)
            self.stream_msgs = [(k, n) for k, n in self.stream_msgs if k > h]

    def run(self, stop, quiet=None):
        """Reads until the connection dies, `stop` is set, or (quiet) nothing came for that
        long."""
        c = self.c
        last = time.monotonic()
        try:
            while not stop.is_set():
                c.pump(0.05)
                if c.queue:
                    last = time.monotonic()
                for el in c.queue:
                    self.handle(el)
                c.queue = []
                if c.eof:
                    return
                if quiet is not None and time.monotonic() - last > quiet:
                    return
        except (StreamClosed, OSError, XmppError):
            return

    def received(self):
        return Counter(n for n, _ in self.log)


def started(k, round_no):
    k.log_path = os.path.join(k.dir, "kabard-%d.log" % round_no)
    k.start()


@R.section
def kills(args):
    rng = random.Random(SEED)
    alice, bob, carol = Sender(), Receiver("bob"), Receiver("carol")
    # Room for every message to the offline recipient (its queue's limits would bounce some).
    k = kabartest.Kabard(args, config="[limits]\noffline_messages = 1000000\n"
                                       "offline_per_sender = 1000000\n")
    try:
        t0 = time.monotonic()
        for round_no in range(KILLS + 1):
            started(k, round_no)
            if round_no == 0:
                for user, pw in PW.items():
                    k.add_user(user, pw)
            bob.connect(k.port)
            alice.connect(k.port)
            stop = threading.Event()
            last = round_no == KILLS
            limit = alice.next + 300 if last else None
            tb = threading.Thread(target=bob.run, args=(stop,), daemon=True)
            ta = threading.Thread(target=alice.run, args=(limit, stop), daemon=True)
            tb.start()
            ta.start()
            if last:
                ta.join(60)
                R.check(not alice.unacked and not ta.is_alive(),
                        "alice: every message acknowledged in the last round")
                # bob takes what is on its way.
                stop.set()
                tb.join(10)
                bob.run(threading.Event(), quiet=1.0)
                bob.c.close()
                alice.c.close()
            else:
                time.sleep(rng.uniform(0.3, 1.5))
                k.proc.send_signal(signal.SIGKILL)
                k.proc.wait()
                k.log.close()
                ta.join(10)
                tb.join(10)
                stop.set()
                print("round %d: killed kabard; alice sent %d so far, %d acknowledged, %d "
                      "unacknowledged; bob received %d" % (round_no, alice.next, len(alice.acked),
                                                          len(alice.unacked), len(bob.log)),
                      flush=True)
        carol.connect(k.port)
        carol.run(threading.Event(), quiet=1.5)
        carol.c.close()
        elapsed = time.monotonic() - t0
        rc = k.stop()
        R.check(rc == 0, "kabard exits 0 on SIGTERM after the last round")

        sent = alice.next
        got = {"bob": bob.received(), "carol": carol.received()}
        lost = sorted(n for n in alice.acked if got[target(n)][n] == 0)
        never = sorted(n for n in range(sent) if got[target(n)][n] == 0)
        # bob: a message again after kabard took bob's ack of it.
        again_after_ack = sorted(n for n, confirmed in bob.log
                                 if confirmed and n not in alice.resent)
        dup_bob = sum(c - 1 for c in got["bob"].values() if c > 1)
        dup_carol = sum(c - 1 for c in got["carol"].values() if c > 1)
        dup_carol_not_resent = sorted(n for n, c in got["carol"].items()
                                      if c > 1 and n not in alice.resent)
        redelivered_bob = sum(1 for n, c in got["bob"].items() if c > 1 and n not in alice.resent)
        print("sm_kill: %d kills in %.1f s; %d messages sent, %d acknowledged by kabard, %d "
              "resent after a failed resumption; lost %d (acknowledged, never arrived), %d never "
              "arrived at all; duplicates: bob %d (%d of messages never resent: not yet "
              "acknowledged by bob when kabard died), carol %d; after bob's ack was taken: %d"
              % (KILLS, elapsed, sent, len(alice.acked), len(alice.resent), len(lost), len(never),
                 dup_bob, redelivered_bob, dup_carol, len(again_after_ack)), flush=True)
        R.check(not alice.bounced, "nothing bounced (%s)" % sorted(alice.bounced)[:10])
        R.check(not lost, "nothing kabard acknowledged is lost (%s)" % lost[:10])
        R.check(not never, "every message arrives once everything is acknowledged (%s)"
                % never[:10])
        R.check(not again_after_ack,
                "no message comes again after kabard took bob's ack of it (%s)"
                % again_after_ack[:10])
        R.check(not dup_carol_not_resent,
                "the offline recipient gets each message once unless it was resent (%s)"
                % dup_carol_not_resent[:10])
        R.check(sent > KILLS * 20, "messages were in flight at each kill (%d sent)" % sent)
    except BaseException:
        sys.stderr.write("---- kabard log (tail) ----\n" + k.read_log()[-4000:] + "\n")
        raise
    finally:
        k.cleanup()


def main():
    args = kabartest.parse_args()
    kills(args)
    R.finish()


if __name__ == "__main__":
    main()
