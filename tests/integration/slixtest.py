"""What the slixmpp integration tests share (Debian's python3-slixmpp 1.8.3, /usr/bin/python3): a
base client for the kabard that kabartest starts, logging in, waiting on its queues, and the
asyncio loop the clients live on. Apart from kabartest so that the tests that do not use slixmpp
do not need it.

A test subclasses Client for what it records, logs in with login() (or start()/expect()), and
runs its scenario with Loop.
"""
import asyncio
import logging
import os
import ssl
import traceback
import xml.etree.ElementTree as ET

import slixmpp

import kabartest

STEP = 10.0  # seconds allowed for any one expected event, unless a test says otherwise

# The stream events a Client records for expect(); a wait for one ends on these three.
STREAM_EVENTS = ("session_start", "session_resumed", "sm_enabled", "disconnected",
                 "failed_auth", "connection_failed", "sm_failed")
FAILURES = ("failed_auth", "connection_failed", "sm_failed")


def quiet_logging(level=logging.CRITICAL):
    """Logs from `level` up only; slixmpp's all of it (DEBUG) when KABAR_IT_DEBUG is set."""
    logging.basicConfig(level=level)
    if os.environ.get("KABAR_IT_DEBUG"):
        logging.getLogger("slixmpp").setLevel(logging.DEBUG)


class Client(slixmpp.ClientXMPP):
    """A slixmpp client of kabard on loopback: kabard's self-signed certificate is accepted, no
    whitespace keepalives, `plugins` are registered in their order (a name, or (name, config)).

    - outcome: a future, the first of session_start ('session'), failed_auth ('failed_auth') and
      connection_failed ('connection_failed'; the client aborts rather than retrying);
    - messages: a queue of the "message" events keep_message() keeps (all unless overridden);
    - the stream events (STREAM_EVENTS) are recorded for expect().
    """

    def __init__(self, jid, password, plugins=()):
        super().__init__(jid, password)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.whitespace_keepalive = False
        for p in plugins:
            if isinstance(p, str):
                self.register_plugin(p)
            else:
                self.register_plugin(*p)
        self.outcome = asyncio.get_event_loop().create_future()
        self.messages = asyncio.Queue()
        self.stream_events = asyncio.Queue()
        self.seen = []  # stream events taken off the queue that no expect() has asked for yet
        self.add_event_handler("session_start", lambda e: self.settle("session"))
        self.add_event_handler("failed_auth", lambda e: self.settle("failed_auth"))
        self.add_event_handler("connection_failed",
                               lambda e: (self.settle("connection_failed"), self.abort()))
        for name in STREAM_EVENTS:
            self.add_event_handler(name, lambda e, name=name: self.stream_events.put_nowait(name))
        # Name-mangled: a subclass's own _on_message is not this one.
        self.add_event_handler("message", self.__on_message)

    def settle(self, value):
        """Sets the outcome unless it is set already."""
        if not self.outcome.done():
            self.outcome.set_result(value)

    def keep_message(self, msg):
        return True

    def __on_message(self, msg):
        if self.keep_message(msg):
            self.messages.put_nowait(msg)

    def connect_to(self, port):
        """Connects to kabard's client port on loopback, STARTTLS required."""
        self.connect(("127.0.0.1", port), force_starttls=True)

    async def start(self, port, timeout=STEP):
        """connect_to(port), then the outcome, or 'timeout' after `timeout` seconds."""
        self.connect_to(port)
        try:
            return await asyncio.wait_for(asyncio.shield(self.outcome), timeout)
        except asyncio.TimeoutError:
            return "timeout"

    async def expect(self, name, timeout=STEP):
        """Waits for stream event `name`, or takes it if it came already: they may come in any
        order, and the ones passed over are kept for a later expect(). RuntimeError when a
        failure (FAILURES) comes meanwhile or nothing does for `timeout` seconds."""
        while name not in self.seen:
            try:
                got = await asyncio.wait_for(self.stream_events.get(), timeout)
            except asyncio.TimeoutError:
                raise RuntimeError(f"nothing within {timeout:g} s while waiting for {name}") \
                    from None
            self.seen.append(got)
            if got in FAILURES:
                raise RuntimeError(f"{got} while waiting for {name}")
        self.seen.remove(name)

    async def stop(self):
        """Closes the stream (1 s for kabard's close, 3 s in all), or aborts when that fails."""
        try:
            await asyncio.wait_for(self.disconnect(wait=1.0), 3.0)
        except Exception:  # noqa: BLE001
            self.abort()

    async def raw_iq(self, type_, payload, to=None, timeout=STEP):
        """Sends an IQ of `type_` whose child is the XML text `payload`: the answer (an error
        answer raises slixmpp's IqError)."""
        iq = self.Iq()
        iq["type"] = type_
        if to:
            iq["to"] = to
        iq.append(ET.fromstring(payload))
        return await iq.send(timeout=timeout)


async def login(r, kd, c, what=None, presence=True):
    """Connects client c to kd and checks that its session starts within STEP ('WHAT logs in'),
    WHAT being the JID c asked for unless told; then c's initial presence unless told not to."""
    outcome = await c.start(kd.port)
    r.check(outcome == "session", f"{what or c.requested_jid} logs in ({outcome})")
    if presence:
        c.send_presence()
    return c


async def start_all(port, clients, timeout=STEP):
    """Connects the clients at once: their outcomes, in their order (asyncio.TimeoutError when
    one has none within `timeout` seconds)."""
    for c in clients:
        c.connect_to(port)
    return await asyncio.wait_for(asyncio.gather(*(c.outcome for c in clients)), timeout)


async def next_matching(queue, pred, timeout=STEP):
    """kabartest.next_matching with STEP for its timeout."""
    return await kabartest.next_matching(queue, pred, timeout)


async def collect(queue, seconds):
    """Everything that arrives on `queue` within `seconds`."""
    out = []
    end = asyncio.get_event_loop().time() + seconds
    while True:
        left = end - asyncio.get_event_loop().time()
        if left <= 0:
            return out
        try:
            out.append(await asyncio.wait_for(queue.get(), left))
        except asyncio.TimeoutError:
            return out


def drain(queue):
    """What `queue` holds now, taken out of it."""
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


class Loop:
    """The asyncio loop a test's slixmpp clients live on (a Client takes the loop that is current
    when it is made). run() runs a scenario within `total` seconds; the clients a scenario puts
    in `clients` are aborted by abort_clients() and at the end (close(), or leaving a with)."""

    def __init__(self, r, total):
        self.r = r
        self.total = total
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.clients = []

    def run(self, coro, what="scenario"):
        """coro's result; a timeout or an exception is a failed check, and None."""
        try:
            return self.loop.run_until_complete(asyncio.wait_for(coro, self.total))
        except asyncio.TimeoutError:
            self.r.check(False, f"{what} finished within {self.total:.0f} s")
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            self.r.check(False, f"{what} raised {type(e).__name__}: {e}")
        return None

    def abort_clients(self):
        for c in self.clients:
            c.abort()
        self.clients.clear()
        self.loop.run_until_complete(asyncio.sleep(0.2))

    def close(self):
        self.abort_clients()
        kabartest.shutdown_loop(self.loop)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
