"""slixmpp to slixmpp through kabard's SOCKS5 bytestreams proxy (XEP-0065), Debian's
python3-slixmpp 1.8.3: the sender discovers the proxy in the server's disco items, offers it as
its only streamhost, the receiver connects to it, the sender activates, and 2 MiB of random bytes
go through with their SHA-256 checked.

Run: /usr/bin/python3 test_slixmpp_proxy65.py --kabard PATH --kabarctl PATH
"""
import asyncio
import hashlib
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
import slixtest  # noqa: E402

STEP = 15.0
SIZE = 2 * 1024 * 1024
R = kabartest.Results("slixmpp_proxy65")


class Client(slixtest.Client):
    def __init__(self, jid, password):
        super().__init__(jid, password, ("xep_0030", ("xep_0065", {"auto_accept": True})))
        self.received = bytearray()
        self.stream_opened = asyncio.get_event_loop().create_future()
        self.closed = asyncio.get_event_loop().create_future()
        self.add_event_handler("session_start", lambda e: self.send_presence())
        self.add_event_handler("socks5_stream", self._on_stream)
        self.add_event_handler("socks5_data", self._on_data)
        self.add_event_handler("socks5_closed", self._on_closed)

    def _on_stream(self, conn):
        if not self.stream_opened.done():
            self.stream_opened.set_result(conn)

    def _on_data(self, data):
        self.received.extend(data)

    def _on_closed(self, exc):
        if not self.closed.done():
            self.closed.set_result(exc)


async def scenario(k):
    sender = Client("alice@localhost/send", "alice-pw")
    receiver = Client("bob@localhost/recv", "bob-pw")
    outcomes = await slixtest.start_all(k.port, (sender, receiver), STEP)
    R.check(outcomes == ["session", "session"], "both slixmpp clients logged in (%s)" % outcomes)
    try:
        proxies = await asyncio.wait_for(sender["xep_0065"].discover_proxies(), STEP)
        R.check("proxy.localhost" in [str(j) for j in proxies],
                "slixmpp discovers proxy.localhost (%s)" % proxies)
        payload = os.urandom(SIZE)
        sock = await asyncio.wait_for(sender["xep_0065"].handshake("bob@localhost/recv"), STEP)
        R.check(sock is not None, "the bytestream through the proxy is activated")
        await asyncio.wait_for(receiver.stream_opened, STEP)
        for i in range(0, SIZE, 65536):
            await sock.write(payload[i:i + 65536])
        for _ in range(int(STEP * 10)):
            if len(receiver.received) >= SIZE:
                break
            await asyncio.sleep(0.1)
        R.check(hashlib.sha256(bytes(receiver.received)).hexdigest()
                == hashlib.sha256(payload).hexdigest(),
                "2 MiB from slixmpp to slixmpp through kabard's proxy, SHA-256 equal (%d bytes)"
                % len(receiver.received))
        # A close that came before the sender's would make the check below pass for nothing.
        R.check(not receiver.closed.done(),
                "the receiver's stream is still open before the sender closes it")
        sock.transport.close()
        await asyncio.wait_for(receiver.closed, STEP)
        R.check(True, "the sender's close reaches the receiver")
    finally:
        for c in (sender, receiver):
            await c.stop()


def main():
    slixtest.quiet_logging(logging.ERROR)
    args = kabartest.parse_args()
    port = kabartest.free_port()
    k = kabartest.Kabard(args, extra_flags=("--proxy65", "127.0.0.1:%d" % port))
    with k:
        k.add_user("alice", "alice-pw")
        k.add_user("bob", "bob-pw")
        with slixtest.Loop(R, 90) as lp:
            lp.run(scenario(k))
        R.check(k.alive(), "kabard alive")
    R.finish()


if __name__ == "__main__":
    main()
