"""Converse.js's OMEMO start-up against a real kabard, in raw XML, over TCP, ws:// and wss://:
every IQ it sends gets a result or an error (an IQ left unanswered stalls Converse's page).

The sequence is the one Converse.js 14 sent on the wire (seen in the browser test's WebSocket
frames): after bind, stream management with resumption, then a burst of login requests (PEP
items, disco, vCard, roster, the OMEMO device lists), initial presence with entity capabilities
(the server's disco#info question answered), carbons and the block list; then, once its keys
are made, the legacy bundle (about 9 KB) and device list published with publish-options
`pubsub#access_model=open` in one write with an <r/>, then the omemo:2 device list, the
omemo:2 bundles with `max_items=max` and the contacts' device lists, with acks in between.

Each round is on a fresh account (its nodes do not exist: auto-create with the options as
configuration). Then the same account from a second device, two connections publishing to the
same nodes at once; a burst cut into small pieces (the frames and stanzas split across reads); a
node whose configuration does not meet the options (Converse's fallback: precondition-not-met,
the owner configures the node, publishes again).

Run: /usr/bin/python3 test_omemo_publish.py --kabard PATH --kabarctl PATH
"""
import base64
import hashlib
import os
import socket
import sys
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
from kabartest import free_port  # noqa: E402
import ws_raw  # noqa: E402
import xmpp_raw  # noqa: E402
from xmpp_raw import NS_CLIENT, q, tostr  # noqa: E402

R = kabartest.Results("omemo_publish")
DOMAIN = "localhost"
PUBSUB = "http://jabber.org/protocol/pubsub"
OWNER = PUBSUB + "#owner"
ERRORS = PUBSUB + "#errors"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_SM = "urn:xmpp:sm:3"
AXOLOTL = "eu.siacs.conversations.axolotl"
OMEMO2 = "urn:xmpp:omemo:2"
TIMEOUT = 20.0


def b64(seed, n=33):
    return base64.b64encode(hashlib.sha256(seed.encode()).digest()[:n - 1] + b"\x05").decode()


def options(**fields):
    return ("<publish-options><x type=\"submit\" xmlns=\"jabber:x:data\">"
            "<field type=\"hidden\" var=\"FORM_TYPE\"><value>%s#publish-options</value></field>"
            % PUBSUB + "".join("<field var=\"pubsub#%s\"><value>%s</value></field>" % (k, v)
                               for k, v in fields.items()) + "</x></publish-options>")


class Burst:
    """IQ requests as Converse writes them (`from` the bare JID, `to` it too for PEP), each with
    its id, so that the answers can be counted."""

    def __init__(self, bare, tag):
        self.bare = bare
        self.tag = tag
        self.n = 0
        self.ids = []

    def iq(self, type_, payload, to=None, frm=None):
        self.n += 1
        iid = "%s-%d:sendIQ" % (self.tag, self.n)
        self.ids.append(iid)
        attrs = ""
        if frm:
            attrs += ' from="%s"' % frm
        attrs += ' id="%s"' % iid
        if to:
            attrs += ' to="%s"' % to
        return '<iq%s type="%s" xmlns="jabber:client">%s</iq>' % (attrs, type_, payload)

    def pep(self, type_, payload, to=None):
        return self.iq(type_, '<pubsub xmlns="%s">%s</pubsub>' % (PUBSUB, payload),
                       to=to or self.bare, frm=self.bare)

    def items(self, node, to=None):
        return self.pep("get", '<items node="%s"/>' % node, to)

    def publish(self, node, item, opts):
        return self.pep("set", '<publish node="%s">%s</publish>%s' % (node, item, opts))


def legacy_bundle(device):
    prekeys = "".join('<preKeyPublic preKeyId="%d">%s</preKeyPublic>'
                      % (i, b64("pk%d-%d" % (device, i))) for i in range(100))
    return ('<item><bundle xmlns="%s"><signedPreKeyPublic signedPreKeyId="0">%s'
            '</signedPreKeyPublic><signedPreKeySignature>%s</signedPreKeySignature>'
            '<identityKey>%s</identityKey><prekeys>%s</prekeys></bundle></item>'
            % (AXOLOTL, b64("spk%d" % device), b64("sig%d" % device, 64), b64("ik%d" % device),
               prekeys))


def v2_bundle(device):
    prekeys = "".join('<pk id="%d">%s</pk>' % (i, b64("v2pk%d-%d" % (device, i), 32))
                      for i in range(100))
    return ('<item id="%d"><bundle xmlns="%s"><spk id="0">%s</spk><spks>%s</spks><ik>%s</ik>'
            '<prekeys>%s</prekeys></bundle></item>'
            % (device, OMEMO2, b64("v2spk%d" % device, 32), b64("v2sig%d" % device, 64),
               b64("v2ik%d" % device, 32), prekeys))


CAPS_FEATURES = sorted([DISCO_INFO, "http://jabber.org/protocol/caps", "urn:xmpp:carbons:2",
                        AXOLOTL + ".devicelist+notify", OMEMO2 + ":devices+notify",
                        "urn:xmpp:bookmarks:1+notify"])


def caps_ver():
    s = "client/web//Converse<" + "".join(f + "<" for f in CAPS_FEATURES)
    return base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()


def caps_answer(iq):
    query = iq.find(q(DISCO_INFO, "query"))
    node = query.get("node") if query is not None else ""
    feats = "".join('<feature var="%s"/>' % f for f in CAPS_FEATURES)
    return ('<iq id="%s" to="%s" type="result" xmlns="jabber:client"><query node="%s" xmlns="%s">'
            '<identity category="client" name="Converse" type="web"/>%s</query></iq>'
            % (iq.get("id"), iq.get("from") or DOMAIN, node, DISCO_INFO, feats))


class Side:
    """One logged-in client over TCP or WebSocket: sends bursts in one write (or cut in pieces)
    and reads until every IQ it asked has an answer, answering what the server asks meanwhile
    (the caps disco#info, SM <r/>), as Converse does."""

    def __init__(self, kind, k, user, password, resource):
        self.kind = kind
        self.handled = 0  # stanzas received, for SM acks
        self.sm = False
        if kind == "tcp":
            self.c = xmpp_raw.login(k.port, user, password, resource=resource, mech="PLAIN",
                                    timeout=TIMEOUT)
            self.jid = self.c.jid
        else:
            self.c = ws_raw.WsClient(k.https_port if kind == "wss" else k.http_port,
                                     tls=kind == "wss", timeout=TIMEOUT)
            self.jid = self.c.login(user, password, resource=resource)
        self.bare = self.jid.split("/")[0]
        self.answers = {}  # id -> the answer
        self.other = []    # everything else received, in order

    def write(self, xmls, piece=None):
        if self.kind == "tcp":
            data = "".join(xmls).encode()
        else:
            data = b"".join(ws_raw.frame(1, x) for x in xmls)
        sock = self.c.sock
        if piece is None:
            sock.sendall(data)
            return
        for at in range(0, len(data), piece):
            sock.sendall(data[at:at + piece])

    def _next(self, deadline):
        left = deadline - time.time()
        if left <= 0:
            raise TimeoutError("nothing more arrived")
        if self.kind == "tcp":
            c = self.c
            if not c.queue:
                c._read_some(time.monotonic() + left)
                if not c.queue:
                    return None
            return c.queue.pop(0)
        return self.c.next_element(left)

    def wait_answers(self, ids, timeout=TIMEOUT):
        """Reads until each of `ids` is answered (result or error); the ids never answered."""
        deadline = time.time() + timeout
        missing = [i for i in ids if i not in self.answers]
        while missing:
            try:
                el = self._next(deadline)
            except (TimeoutError, xmpp_raw.Timeout, xmpp_raw.StreamClosed, ws_raw.WsError):
                break
            if el is None:
                continue
            self.take(el)
            missing = [i for i in ids if i not in self.answers]
        return missing

    def take(self, el):
        if el.tag in (q(NS_SM, "r"),):
            self.send_now(['<a h="%d" xmlns="%s"/>' % (self.handled, NS_SM)])
            return
        if el.tag.startswith("{%s}" % NS_SM):
            self.other.append(el)
            return
        if el.tag.startswith("{%s}" % NS_CLIENT):
            self.handled += 1
        if el.tag == q(NS_CLIENT, "iq") and el.get("type") in ("result", "error"):
            self.answers[el.get("id")] = el
        elif el.tag == q(NS_CLIENT, "iq") and el.get("type") == "get" and \
                el.find(q(DISCO_INFO, "query")) is not None:
            self.send_now([caps_answer(el)])
        else:
            self.other.append(el)

    def send_now(self, xmls):
        self.write(xmls)

    def close(self):
        try:
            if self.kind == "tcp":
                self.c.close()
            else:
                self.c.send("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>")
                self.c.shutdown()
        except OSError:
            pass


def login_burst(b, device):
    """What Converse sends right after bind, in the writes it made them in."""
    bare = b.bare
    return [
        ['<enable resume="true" xmlns="%s"/>' % NS_SM,
         b.items("urn:xmpp:reactions:popular:0").replace('<items ', '<items max_items="1" '),
         b.iq("get", '<query xmlns="%s"/>' % DISCO_INFO, to=DOMAIN, frm=bare + "/web"),
         b.iq("get", '<vCard xmlns="vcard-temp"/>'),
         b.iq("get", '<query xmlns="jabber:iq:roster"/>'),
         b.iq("get", '<query xmlns="%s"/>' % DISCO_INFO, to=bare),
         '<r xmlns="%s"/>' % NS_SM,
         b.items(AXOLOTL + ".devicelist")],
        [b.iq("get", '<query xmlns="http://jabber.org/protocol/disco#items"/>', to=DOMAIN),
         '<presence xmlns="jabber:client"><priority>0</priority><x xmlns="vcard-temp:x:update"/>'
         '<c hash="sha-1" node="https://conversejs.org" ver="%s" '
         'xmlns="http://jabber.org/protocol/caps"/></presence>' % caps_ver(),
         b.iq("get", '<pubsub xmlns="%s"><items node="urn:xmpp:bookmarks:1"/></pubsub>' % PUBSUB),
         '<r xmlns="%s"/>' % NS_SM],
        [b.items(OMEMO2 + ":devices"),
         b.iq("get", '<query xmlns="%s"/>' % DISCO_INFO, to="upload." + DOMAIN),
         b.iq("set", '<enable xmlns="urn:xmpp:carbons:2"/>'),
         b.iq("get", '<blocklist xmlns="urn:xmpp:blocking"/>')],
    ]


def omemo_burst(b, device, devices, contact):
    """The publishes once the keys are made: legacy bundle and device list at once (one write,
    with an <r/>), then the omemo:2 ones and the contact's lists."""
    devs = "".join('<device id="%d"/>' % d for d in devices)
    return [
        [b.publish("%s.bundles:%d" % (AXOLOTL, device), legacy_bundle(device),
                   options(access_model="open")),
         b.publish(AXOLOTL + ".devicelist",
                   '<item id="current"><list xmlns="%s">%s</list></item>' % (AXOLOTL, devs),
                   options(access_model="open")),
         '<r xmlns="%s"/>' % NS_SM],
        [b.publish(OMEMO2 + ":devices",
                   '<item id="current"><devices xmlns="%s">%s</devices></item>' % (OMEMO2, devs),
                   options(access_model="open")),
         b.items(AXOLOTL + ".devicelist", to=contact)],
        [b.publish(OMEMO2 + ":bundles", v2_bundle(device),
                   options(access_model="open", max_items="max")),
         b.items(OMEMO2 + ":devices", to=contact)],
    ]


def run_round(k, kind, user, device, devices, piece=None, what=""):
    """A login and OMEMO's publishes; checks every IQ was answered and the publishes succeeded."""
    side = Side(kind, k, user, user + "-pw", "web%d" % device)
    b = Burst(side.bare, "%s-%s-%d" % (kind, user, device))
    writes = login_burst(b, device) + omemo_burst(b, device, devices, "bob@" + DOMAIN)
    for w in writes:
        side.write(w, piece)
    missing = side.wait_answers(b.ids)
    R.check(not missing, "%s %s: every IQ of %d answered (unanswered: %s)"
            % (kind, what, len(b.ids), missing))
    failed = []
    for iid, el in side.answers.items():
        if iid not in b.ids:
            continue
        if el.find(q(PUBSUB, "pubsub")) is not None and el.get("type") != "result" and \
                el.find(".//" + q(PUBSUB, "publish")) is not None:
            failed.append(tostr(el)[:300])
    R.check(not failed, "%s %s: the publishes succeeded (%s)" % (kind, what, failed[:2]))
    return side


def concurrent_devices(k, kind, user):
    """Two devices of one fresh account publish to the same new nodes at the same time."""
    a = Side(kind, k, user, user + "-pw", "dev-a")
    c = Side(kind, k, user, user + "-pw", "dev-b")
    ba = Burst(a.bare, "%s-%s-a" % (kind, user))
    bc = Burst(c.bare, "%s-%s-b" % (kind, user))
    wa = omemo_burst(ba, 101, [101], "bob@" + DOMAIN)
    wc = omemo_burst(bc, 202, [202], "bob@" + DOMAIN)
    for w in (wa, wc):
        w[0].insert(0, '<enable resume="true" xmlns="%s"/>' % NS_SM)
    for x, y in zip(wa, wc):
        a.write(x)
        c.write(y)
    ma = a.wait_answers(ba.ids)
    mc = c.wait_answers(bc.ids)
    R.check(not ma and not mc, "%s: two devices publishing to the same new nodes at once: every "
            "IQ answered (unanswered: %s %s)" % (kind, ma, mc))
    results = [s.answers[i].get("type") for s, ids in ((a, ba.ids), (c, bc.ids)) for i in ids
               if i in s.answers and "publish" in tostr(s.answers[i])]
    R.check(results and all(t == "result" for t in results),
            "%s: both devices' publishes succeeded (%s)" % (kind, results))
    a.close()
    c.close()


def precondition_fallback(k, kind, user):
    """A node made without the options (access model presence): Converse's publish with
    access_model=open is refused precondition-not-met, it configures the node and publishes
    again; each step answered."""
    side = Side(kind, k, user, user + "-pw", "fallback")
    b = Burst(side.bare, "%s-%s-f" % (kind, user))
    node = AXOLOTL + ".devicelist"
    item = '<item id="current"><list xmlns="%s"><device id="7"/></list></item>' % AXOLOTL
    side.write([b.publish(node, item, "")])
    first = b.ids[-1]
    side.write([b.publish(node, item, options(access_model="open"))])
    second = b.ids[-1]
    missing = side.wait_answers([first, second])
    el = side.answers.get(second)
    R.check(not missing and side.answers[first].get("type") == "result" and el is not None and
            el.get("type") == "error" and el.find(".//" + q(ERRORS, "precondition-not-met"))
            is not None, "%s: options the node does not meet: precondition-not-met (%s)"
            % (kind, tostr(el)[:300] if el is not None else missing))
    side.write([b.iq("get", '<pubsub xmlns="%s"><configure node="%s"/></pubsub>' % (OWNER, node),
                     to=side.bare, frm=side.bare)])
    get_id = b.ids[-1]
    side.write([b.iq("set", '<pubsub xmlns="%s"><configure node="%s"><x type="submit" '
                     'xmlns="jabber:x:data"><field type="hidden" var="FORM_TYPE"><value>%s#'
                     'node_config</value></field><field var="pubsub#access_model"><value>open'
                     '</value></field></x></configure></pubsub>' % (OWNER, node, PUBSUB),
                     to=side.bare, frm=side.bare),
                b.publish(node, item, options(access_model="open"))])
    missing = side.wait_answers([get_id] + b.ids[-2:])
    types = [side.answers[i].get("type") for i in [get_id] + b.ids[-2:] if i in side.answers]
    R.check(not missing and types == ["result"] * 3,
            "%s: configured, then published with the options (%s)" % (kind, types))
    side.close()


def main():
    args = kabartest.parse_args()
    http_port = free_port()
    https_port = free_port()
    k = kabartest.Kabard(args, config="[sm]\nresume_timeout = 2\n",
                         extra_flags=["--http", f"127.0.0.1:{http_port}", "--https",
                                      f"127.0.0.1:{https_port}", "--threads", "2"])
    k.http_port = http_port
    k.https_port = https_port
    with k:
        k.add_user("bob", "bob-pw")
        n = 0
        for kind in ("tcp", "ws", "wss"):
            R.section(kind)
            n += 1
            user = "fresh%d" % n
            k.add_user(user, user + "-pw")
            s = run_round(k, kind, user, 1000 + n, [1000 + n], what="fresh account")
            s.close()
            # The same account from a second device (its nodes exist now).
            s = run_round(k, kind, user, 2000 + n, [1000 + n, 2000 + n], what="second device")
            s.close()
            n += 1
            user = "split%d" % n
            k.add_user(user, user + "-pw")
            s = run_round(k, kind, user, 3000 + n, [3000 + n], piece=997,
                          what="fresh account, every write cut in 997-byte pieces")
            s.close()
            n += 1
            user = "twice%d" % n
            k.add_user(user, user + "-pw")
            concurrent_devices(k, kind, user)
            n += 1
            user = "fallback%d" % n
            k.add_user(user, user + "-pw")
            precondition_fallback(k, kind, user)
        R.check(k.alive(), "kabard still running")
    R.finish()


if __name__ == "__main__":
    main()
