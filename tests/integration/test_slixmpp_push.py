"""Push notifications (XEP-0357) with Debian's python3-slixmpp 1.8.3 and raw XML.

kabard has no server-to-server links, so the app server's push service is a client of the same
kabard on loopback: the stub, pushserver@localhost/app (slixmpp), records every pubsub publish it
gets and answers it (result, or an error for the nodes it is told to refuse). Debian's slixmpp
1.8.3 ships no xep_0357 plugin: alice's <enable/> and <disable/> are built here and sent with
slixmpp's IQ machinery.

- alice's account announces urn:xmpp:push:0 (disco#info of her bare JID);
- alice enables with a publish-options form and logs out; bob writes three messages at once: the
  stub gets one notification (from the server's JID, to the node, the summary form with
  message-count 1 and the sender but no body, the publish-options), and the messages wait
  offline for alice's next login;
- alice (slixmpp's xep_0198, resumption on) enables again, her socket dies without a stream
  close (hibernation); bob writes: the stub is notified, alice resumes and gets the message;
- raw XML: enable without jid or node, a malformed jid, a form of another FORM_TYPE, someone
  else's account, a disable without jid; disable stops the notifications;
- the stub answers an error: that registration is gone from the store;
- registrations survive a restart of kabard; deleting the account deletes them.

Run: /usr/bin/python3 test_slixmpp_push.py --kabard PATH --kabarctl PATH
"""
import asyncio
import os
import sys
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
import slixtest  # noqa: E402
from slixtest import STEP  # noqa: E402
from xmpp_raw import error_condition, online, q, NS_CLIENT  # noqa: E402

from slixmpp.xmlstream.handler import Callback  # noqa: E402
from slixmpp.xmlstream.matcher import MatchXPath  # noqa: E402

TOTAL = 120.0
DOMAIN = "localhost"
PUSH = "urn:xmpp:push:0"
PUBSUB = "http://jabber.org/protocol/pubsub"
XDATA = "jabber:x:data"
SERVICE = f"pushserver@{DOMAIN}/app"
PW = {"alice": "alice-pw", "bob": "bob-pw", "pushserver": "push-pw"}


class PushStub(slixtest.Client):
    """The app server's push service: records publishes, answers them."""

    def __init__(self):
        super().__init__(SERVICE, PW["pushserver"], ("xep_0030",))
        self.publishes = asyncio.Queue()
        self.refuse = set()  # nodes answered with <item-not-found/>
        self.register_handler(Callback(
            "push publish", MatchXPath(f"{{{NS_CLIENT}}}iq/{{{PUBSUB}}}pubsub"), self._on_publish))

    def _on_publish(self, iq):
        if iq["type"] != "set":
            return
        publish = iq.xml.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish")
        self.publishes.put_nowait(iq.xml)
        reply = iq.reply()
        if publish is not None and publish.get("node") in self.refuse:
            reply["type"] = "error"
            reply["error"]["type"] = "cancel"
            reply["error"]["condition"] = "item-not-found"
        reply.send()


def summary(iq):
    """The fields of the notification's summary form, by var."""
    x = iq.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish/{{{PUBSUB}}}item/{{{PUSH}}}notification"
                f"/{{{XDATA}}}x")
    if x is None:
        return {}
    return {f.get("var"): f.findtext(f"{{{XDATA}}}value") for f in x.findall(f"{{{XDATA}}}field")}


def enable_xml(node, secret=None):
    form = ""
    if secret is not None:
        form = (f"<x xmlns='{XDATA}' type='submit'><field var='FORM_TYPE'><value>"
                "http://jabber.org/protocol/pubsub#publish-options</value></field>"
                f"<field var='secret'><value>{secret}</value></field></x>")
    return f"<enable xmlns='{PUSH}' jid='{SERVICE}' node='{node}'>{form}</enable>"


async def slix_enable(c, payload):
    res = await c.raw_iq("set", payload)
    return res["type"]


async def login(kd, c):
    """c with its session started (and stream management enabled, when it has xep_0198), or
    RuntimeError."""
    c.connect_to(kd.port)
    await c.expect("session_start")
    if c.plugin.enabled("xep_0198"):
        await c.expect("sm_enabled")
    return c


def alice_client(sm=False):
    return slixtest.Client(f"alice@{DOMAIN}/phone", PW["alice"],
                           ("xep_0030", "xep_0198") if sm else ("xep_0030",))


async def no_publish(stub, wait=1.5):
    return await kabartest.next_matching(stub.publishes, lambda _: True, wait) is None


def rows(kd, where=""):
    return kabartest.sqlite_count(kd, "SELECT COUNT(*) FROM push_registration" + where)


async def slixmpp_part(r, kd, clients):
    stub = await login(kd, PushStub())
    clients.append(stub)
    stub.send_presence()
    alice = await login(kd, alice_client())
    info = await alice["xep_0030"].get_info(jid=f"alice@{DOMAIN}", timeout=STEP)
    r.check(PUSH in info["disco_info"]["features"],
            "alice's bare JID announces urn:xmpp:push:0 (§4)")
    r.check(await slix_enable(alice, enable_xml("node-1", "s3cr3t")) == "result",
            "enable with a publish-options form: result")
    alice.send_presence()
    await asyncio.wait_for(alice.disconnect(wait=1.0), 3.0)

    # Offline: a burst of three messages, one notification.
    bob = online(kd.port, "bob", PW["bob"], "raw")
    for i in range(1, 4):
        bob.message(f"alice@{DOMAIN}", f"offline {i}")
    bob.iq("get", "<ping xmlns='urn:xmpp:ping'/>")  # the three are routed once this is answered
    got = await kabartest.next_matching(stub.publishes, lambda _: True, STEP)
    r.check(got is not None, "a message to alice, offline, notifies the push service")
    if got is not None:
        form = summary(got)
        publish = got.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish")
        r.check(got.get("from") == DOMAIN and publish is not None
                and publish.get("node") == "node-1",
                f"published from the server's JID to the node ({got.get('from')})")
        r.check(form.get("FORM_TYPE") == "urn:xmpp:push:summary"
                and form.get("message-count") == "1"
                and form.get("last-message-sender") == f"bob@{DOMAIN}/raw",
                f"the summary form: count 1, bob's full JID ({form})")
        r.check("last-message-body" not in form, "no body by default")
        secret = got.findtext(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish-options/{{{XDATA}}}x"
                              f"/{{{XDATA}}}field[@var='secret']/{{{XDATA}}}value")
        r.check(secret == "s3cr3t", "the enable form goes out as publish-options")
    r.check(await no_publish(stub), "the rest of the burst is coalesced: one notification")
    r.check(kabartest.offline_count(kd, "alice") == 3, "the messages wait offline")

    # Back: the offline messages arrive; then hibernation (stream management).
    alice = await login(kd, alice_client(sm=True))
    clients.append(alice)
    r.check(bool(alice.plugin["xep_0198"].sm_id), "slixmpp enabled stream management with resume")
    alice.send_presence()
    got = []
    for _ in range(3):
        m = await kabartest.next_matching(alice.messages, lambda m: bool(m["body"]), STEP)
        if m is not None:
            got.append(m["body"])
    r.check(got == ["offline 1", "offline 2", "offline 3"], f"alice gets them at login ({got})")
    r.check(await slix_enable(alice, enable_xml("node-1", "s3cr3t")) == "result",
            "enabled again on the new session")
    # Everything acknowledged first: what the session holds unacknowledged when it hibernates
    # is notified at once (the unit tests cover that).
    alice.plugin["xep_0198"].send_ack()
    await asyncio.sleep(0.3)
    alice.transport.abort()  # the socket dies: no stream close
    await alice.expect("disconnected")
    await asyncio.sleep(0.5)
    bob.message(f"alice@{DOMAIN}", "while hibernating")
    got = await kabartest.next_matching(stub.publishes, lambda _: True, STEP)
    r.check(got is not None and summary(got).get("message-count") == "1",
            "a message to the hibernating session notifies the push service")
    r.check(kabartest.offline_count(kd, "alice") == 0, "it waits in the session, not offline")
    alice.connect_to(kd.port)
    await alice.expect("session_resumed")
    m = await kabartest.next_matching(alice.messages, lambda m: m["body"] == "while hibernating",
                                      STEP)
    r.check(m is not None, "alice resumes and gets it")
    bob.message(f"alice@{DOMAIN}", "while connected")
    m = await kabartest.next_matching(alice.messages, lambda m: m["body"] == "while connected",
                                      STEP)
    r.check(m is not None and await no_publish(stub),
            "connected and active: no notification")
    # Acknowledged before leaving: a message the client never acknowledged would be stored
    # offline at the stream's end (XEP-0198 §5), and notified as any offline message.
    alice.plugin["xep_0198"].send_ack()
    await asyncio.sleep(0.3)
    await asyncio.wait_for(alice.disconnect(wait=1.0), 3.0)
    r.check(await no_publish(stub, 1.0) and kabartest.offline_count(kd, "alice") == 0,
            "alice acknowledged everything and logged out: nothing stored, nothing notified")
    clients.remove(alice)
    bob.close()
    return stub


def raw_part(r, kd):
    alice = online(kd.port, "alice", PW["alice"], "raw")

    def cond(payload, to=None):
        res = alice.iq("set", payload, to=to)
        return res.get("type"), error_condition(res)

    r.check(cond(f"<enable xmlns='{PUSH}' node='n'/>") == ("error", "bad-request"),
            "enable without 'jid': bad-request")
    r.check(cond(f"<enable xmlns='{PUSH}' jid='{SERVICE}'/>") == ("error", "bad-request"),
            "enable without 'node': bad-request")
    r.check(cond(f"<enable xmlns='{PUSH}' jid='a@b@c' node='n'/>") == ("error", "jid-malformed"),
            "enable with a malformed 'jid': jid-malformed")
    r.check(cond(f"<enable xmlns='{PUSH}' jid='{SERVICE}' node='n'><x xmlns='{XDATA}' "
                 "type='submit'><field var='FORM_TYPE'><value>urn:example</value></field></x>"
                 "</enable>") == ("error", "bad-request"),
            "a form that is not publish-options: bad-request")
    r.check(cond(enable_xml("n"), to=f"bob@{DOMAIN}") == ("error", "forbidden"),
            "enabling on someone else's account: forbidden")
    r.check(cond(f"<disable xmlns='{PUSH}'/>") == ("error", "bad-request"),
            "disable without 'jid': bad-request")
    r.check(cond(enable_xml("node-2")) == ("result", None), "a second node: result")
    r.check(rows(kd, " WHERE username = 'alice'") == 2, "two registrations stored")
    r.check(cond(f"<disable xmlns='{PUSH}' jid='{SERVICE}' node='node-2'/>") == ("result", None)
            and rows(kd, " WHERE username = 'alice'") == 1,
            "disable with a node removes that one")
    r.check(cond(f"<disable xmlns='{PUSH}' jid='{SERVICE}'/>") == ("result", None)
            and rows(kd, " WHERE username = 'alice'") == 0,
            "disable without a node removes every node of the service")
    alice.close()


async def after_disable(r, kd, stub):
    bob = online(kd.port, "bob", PW["bob"], "raw2")
    bob.message(f"alice@{DOMAIN}", "nobody is told")
    got = await kabartest.next_matching(stub.publishes, lambda _: True, 2.0)
    r.check(got is None, "disabled: no more notifications"
            + ("" if got is None else f" (got {ET.tostring(got, encoding='unicode')})"))

    # An error answer disables the registration (§8).
    alice = online(kd.port, "alice", PW["alice"], "raw")
    stub.refuse.add("node-err")
    res = alice.iq("set", enable_xml("node-err"))
    r.check(res.get("type") == "result", "enable node-err")
    alice.close()
    await asyncio.sleep(0.3)
    bob.message(f"alice@{DOMAIN}", "refused")
    got = await kabartest.next_matching(stub.publishes, lambda _: True, STEP)
    r.check(got is not None, "node-err is notified and answers <item-not-found/>")
    n = -1
    for _ in range(50):
        n = rows(kd, " WHERE node = 'node-err'")
        if n == 0:
            break
        await asyncio.sleep(0.1)
    r.check(n == 0, f"the error disabled that registration ({n} left)")

    # For the restart: node-1 again.
    alice = online(kd.port, "alice", PW["alice"], "raw")
    r.check(alice.iq("set", enable_xml("node-1", "before")).get("type") == "result"
            and alice.iq("set", enable_xml("node-1", "after")).get("type") == "result"
            and rows(kd, " WHERE username = 'alice'") == 1,
            "node-1 enabled twice before the restart: one registration")
    alice.close()
    bob.close()


async def after_restart(r, kd, clients):
    r.check(rows(kd, " WHERE username = 'alice'") == 1, "the registration is still stored")
    stub = await login(kd, PushStub())
    clients.append(stub)
    stub.send_presence()
    bob = online(kd.port, "bob", PW["bob"], "raw")
    bob.message(f"alice@{DOMAIN}", "after the restart")
    got = await kabartest.next_matching(stub.publishes, lambda _: True, STEP)
    r.check(got is not None and summary(got).get("last-message-sender") == f"bob@{DOMAIN}/raw",
            "after a restart kabard notifies the stored registration")
    secret = None if got is None else got.findtext(
        f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish-options/{{{XDATA}}}x"
        f"/{{{XDATA}}}field[@var='secret']/{{{XDATA}}}value")
    r.check(secret == "after", f"with the options of the last enable of that node (§5: {secret})")
    bob.close()


def main():
    args = kabartest.parse_args()
    r = kabartest.Results("slixmpp_push")
    slixtest.quiet_logging()
    with kabartest.Kabard(args) as kd:
        for user, pw in PW.items():
            kd.add_user(user, pw)
        with slixtest.Loop(r, TOTAL) as lp:
            stub = lp.run(slixmpp_part(r, kd, lp.clients), "the slixmpp part")
            raw_part(r, kd)
            if stub is not None:
                lp.run(after_disable(r, kd, stub), "disable and errors")
            lp.abort_clients()
            r.check(kd.stop() == 0, "kabard stops on SIGTERM")
            kd.start()
            lp.run(after_restart(r, kd, lp.clients), "after the restart")
            lp.abort_clients()
            kd.ctl("user", "delete", "alice")
            n = rows(kd, " WHERE username = 'alice'")
            r.check(n == 0, f"deleting alice deletes her registrations ({n} left)")
        r.check(kd.alive(), "kabard still running at the end")
    r.finish()


if __name__ == "__main__":
    main()
