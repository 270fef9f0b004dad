"""RFC 6455 ping and pong on kabard's WebSocket endpoint: a client's ping is answered with a
pong carrying the same payload (§5.5.2, §5.5.3); kabard pings an idle connection itself (after
`[limits] idle_timeout`, here 1 s) with a ping frame, not an XMPP ping; a client that answers
stays connected (and chats on), one that does not is closed after `ping_timeout` (here 2 s, the
time a client on a loaded machine has to answer) with <connection-timeout/> and a close frame.
And the other end of a connection's life: what a client sends right before its close frame, in
the same write, is handled before the connection goes.

Run: /usr/bin/python3 test_websocket_keepalive.py --kabard PATH --kabarctl PATH
"""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
from kabartest import free_port  # noqa: E402
from ws_raw import WsClient, WsError, frame  # noqa: E402
import xmpp_raw  # noqa: E402
from xmpp_raw import tostr  # noqa: E402
import xml.etree.ElementTree as ET  # noqa: E402

R = kabartest.Results("websocket_keepalive")
NS_STREAMS = "urn:ietf:params:xml:ns:xmpp-streams"
PING, PONG, CLOSE, TEXT = 0x9, 0xA, 0x8, 0x1


def frames(c, until, timeout):
    """Reads frames until until(opcode, payload) holds; every frame read, in order. Stops early
    when the connection ends."""
    got = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            op, payload = c.next_frame(max(0.05, deadline - time.time()))
        except (TimeoutError, WsError, OSError):
            break
        got.append((op, payload))
        if until(op, payload):
            break
    return got


def closing_frames(k, http_port):
    """What a client sends right before its close frame, in the same write (a page closing just
    after its user sent a message, or as OMEMO publishes): handled, as the bytes before a TCP
    connection's end are, with stream management or without."""
    k.add_user("dora", "dora-pw")
    k.add_user("erin", "erin-pw")
    for n, sm in enumerate((False, True), 1):
        c = WsClient(http_port)
        c.login("dora", "dora-pw", resource="closing%d" % n)
        if sm:
            c.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
            c.next_element()
        body = "sent as the page closed %d" % n
        node = "urn:xmpp:test:closing:%d" % n
        data = (frame(TEXT, "<message xmlns='jabber:client' to='erin@localhost' type='chat'>"
                            "<body>%s</body></message>" % body) +
                frame(TEXT, "<iq xmlns='jabber:client' type='set' id='pub%d'><pubsub "
                            "xmlns='http://jabber.org/protocol/pubsub'><publish node='%s'>"
                            "<item id='current'><x xmlns='urn:xmpp:test'/></item></publish>"
                            "</pubsub></iq>" % (n, node)) +
                frame(CLOSE, b"\x03\xe9"))
        c.sock.sendall(data)
        got = frames(c, lambda op, p: op == CLOSE, 10)
        R.check(got and got[-1][0] == CLOSE and c.wait_eof(10),
                f"sm={sm}: the close frame answered, the connection closed ({got[-1:]})")
        deadline = time.time() + 10
        while kabartest.offline_count(k, "erin") < n and time.time() < deadline:
            time.sleep(0.1)
        R.check(kabartest.offline_count(k, "erin") == n,
                f"sm={sm}: the message sent just before the close frame was stored for the "
                f"offline contact ({kabartest.offline_count(k, 'erin')} stored)")
        check = xmpp_raw.login(k.port, "dora", "dora-pw", resource="check%d" % n)
        r = check.iq("get", "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items "
                            "node='%s'/></pubsub>" % node)
        R.check(r.get("type") == "result", f"sm={sm}: the publish sent just before the close "
                f"frame was made ({tostr(r)[:200]})")
        check.close()


def main():
    args = kabartest.parse_args()
    http_port = free_port()
    k = kabartest.Kabard(args, config="[limits]\nidle_timeout = 1\nping_timeout = 2\n",
                         extra_flags=["--http", f"127.0.0.1:{http_port}"])
    with k:
        for user in ("alice", "bob", "carol"):
            k.add_user(user, user + "-pw")
        alice = WsClient(http_port)
        alice.login("alice", "alice-pw", resource="answers")
        bob = WsClient(http_port)
        bob.login("bob", "bob-pw", resource="silent")
        carol = WsClient(http_port)
        carol.login("carol", "carol-pw", resource="pinger")

        # §5.5.2: a ping of the client's is answered with a pong, the same application data.
        carol.send_frame(PING, b"are you there?")
        got = frames(carol, lambda op, p: op == PONG, 10)
        R.check(got and got[-1] == (PONG, b"are you there?"),
                f"a client's ping answered with a pong of the same payload ({got[-1:]})")
        carol.shutdown()

        # kabard pings both once they are idle. alice answers each ping at once (as a browser
        # does by itself), on a thread of her own; bob answers none.
        alice_log = {"pings": 0, "texts": [], "closed": False}
        stop = threading.Event()

        def answer_pings():
            while not stop.is_set():
                try:
                    op, payload = alice.next_frame(0.2)
                except TimeoutError:
                    continue
                except (WsError, OSError):
                    alice_log["closed"] = True
                    return
                if op == PING:
                    alice.send_frame(PONG, payload)
                    alice_log["pings"] += 1
                elif op == TEXT:
                    alice_log["texts"].append(payload)
                elif op == CLOSE:
                    alice_log["closed"] = True
                    return

        t = threading.Thread(target=answer_pings, daemon=True)
        t.start()

        got = frames(bob, lambda op, p: op == CLOSE, 20)
        ops = [op for op, _ in got]
        R.check(PING in ops, f"the silent client was pinged ({ops})")
        errors = [ET.fromstring(p) for op, p in got
                  if op == TEXT and p.lstrip().startswith(b"<stream:error")]
        conditions = [c.tag.split("}")[1] for e in errors for c in e
                      if c.tag.startswith("{%s}" % NS_STREAMS) and not c.tag.endswith("}text")]
        R.check(conditions == ["connection-timeout"],
                f"the silent client got <connection-timeout/> ({conditions})")
        R.check(ops and ops[-1] == CLOSE, f"and a close frame ({ops})")
        R.check(bob.wait_eof(10), "and the connection closed")

        # alice, who answered, is still there after more pings: a message reaches her.
        deadline = time.time() + 20
        while alice_log["pings"] < 3 and not alice_log["closed"] and time.time() < deadline:
            time.sleep(0.05)
        R.check(alice_log["pings"] >= 3 and not alice_log["closed"],
                f"the idle client that answers was pinged again and again and kept ({alice_log})")
        dave = WsClient(http_port)
        dave.login("carol", "carol-pw", resource="sender")
        dave.message("alice@localhost/answers", "still there?")
        deadline = time.time() + 10
        while not any(b"still there?" in p for p in alice_log["texts"]) and \
                time.time() < deadline:
            time.sleep(0.05)
        R.check(any(b"still there?" in p for p in alice_log["texts"]),
                "the client that answered the pings is still connected (a message reached it)")
        xmpp_pings = [p for p in alice_log["texts"] if b"urn:xmpp:ping" in p]
        R.check(not xmpp_pings, f"over WebSocket a ping frame, no XMPP ping ({xmpp_pings[:1]})")
        stop.set()
        t.join(5)
        closing_frames(k, http_port)
        R.check(k.alive(), "kabard still running")
    R.finish()


if __name__ == "__main__":
    main()
