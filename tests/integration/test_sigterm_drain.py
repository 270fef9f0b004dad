"""SIGTERM finishes what kabard has read (issue 16, item 3).

A sender bursts 1,000 messages to an offline user; as soon as kabard has read every byte of them
from the socket (its receive queue for the connection is empty in /proc/net/tcp), kabard gets
SIGTERM. It must handle all it read before it exits: each message is stored offline or bounced
to the sender with an error (the default share of one sender in one account's queue is 500, so
some are bounced). After a restart: stored + bounced == 1,000, and the stored ones arrive at the
recipient's next login."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
from kabartest import offline_count, server_rx_queue  # noqa: E402
from xmpp_raw import NS_CLIENT, XmppError, login, online, q  # noqa: E402

R = kabartest.Results("sigterm_drain")
PW = "pw-term"
N = 1000


def main():
    args = kabartest.parse_args()
    k = kabartest.Kabard(args)
    try:
        k.start()
        for u in ("sender", "away"):
            k.add_user(u, PW)

        @R.section
        def burst_then_sigterm():
            c = login(k.port, "sender", PW, "s")
            client_port = c.sock.getsockname()[1]
            c.send("".join("<message to='away@localhost' type='chat' id='t%d'><body>m%d</body>"
                           "</message>" % (i, i) for i in range(N)))
            # Read by kabard (no byte waits in its socket), not necessarily handled yet.
            deadline = time.monotonic() + 30
            while server_rx_queue(k.port, client_port) not in (0, None) and \
                    time.monotonic() < deadline:
                time.sleep(0.001)
            t0 = time.monotonic()
            rc = k.stop(timeout=30)
            print("kabard stopped %.2f s after SIGTERM (exit %s)" % (time.monotonic() - t0, rc),
                  flush=True)
            R.check(rc == 0, "kabard exits 0 on SIGTERM")
            # What kabard wrote before it went: errors for the bounced ones, then the stream
            # error.
            c.timeout = 10
            c.wait_closed(10)
            bounced = {e.get("id") for e in c.queue
                       if e.tag == q(NS_CLIENT, "message") and e.get("type") == "error"}
            k.start()
            stored = offline_count(k, "away")
            print("sent %d, stored %d, bounced %d" % (N, stored, len(bounced)), flush=True)
            R.check(stored + len(bounced) == N,
                    "stored + bounced == sent (%d + %d == %d)" % (stored, len(bounced), N))
            a = online(k.port, "away", PW, "p", roster=False)
            got = set()
            deadline = time.monotonic() + 60
            while len(got) < stored and time.monotonic() < deadline:
                try:
                    a._read_some(time.monotonic() + 1)
                except XmppError:
                    pass
                for el in a.queue:
                    if el.tag == q(NS_CLIENT, "message"):
                        got.add(el.get("id"))
                a.queue = []
            R.check(len(got) == stored and not (got & bounced),
                    "the %d stored arrive at the next login (%d), none of them bounced too"
                    % (stored, len(got)))
            R.check(len(got | bounced) == N, "every message stored or bounced, once")
            a.close()

        burst_then_sigterm()
        R.check(k.stop() == 0, "kabard stops cleanly")
    finally:
        if R.failed:
            sys.stderr.write(k.read_log()[-4000:])
        k.cleanup()
    R.finish()


if __name__ == "__main__":
    main()
