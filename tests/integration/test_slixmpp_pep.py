"""Personal eventing (XEP-0163) and what rides on it, with slixmpp's own plugins (Debian's
python3-slixmpp 1.8.3: xep_0030, xep_0060, xep_0115, xep_0163, xep_0084, xep_0153, xep_0172,
xep_0049, xep_0128; XEP-0402 and XEP-0157 have no plugin there, so their stanzas are written by
hand and sent through slixmpp).

alice and bob become contacts (subscriptions both ways); eve is a stranger. Their clients
announce +notify through entity capabilities. alice publishes an avatar (XEP-0084 data and
metadata) and a nickname (XEP-0172): bob gets both by notification; a vCard avatar (XEP-0153)
reaches bob as the photo hash in alice's presence. alice sets bookmarks (XEP-0402), stores
private XML (XEP-0049) and reads both back after reconnecting and after a restart of kabard;
legacy private bookmarks show the native ones. alice deletes her nick node (bob hears of it), a
whitelist node refuses eve with <not-allowed/> and <closed-node/>, OMEMO device lists and bundles
(open nodes) are read by eve. The server's disco#info carries the contact addresses (XEP-0157).

Run: /usr/bin/python3 test_slixmpp_pep.py --kabard PATH --kabarctl PATH
"""
import asyncio
import base64
import hashlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
import slixtest  # noqa: E402
from slixtest import STEP, next_matching  # noqa: E402

from slixmpp.exceptions import IqError  # noqa: E402
from slixmpp.xmlstream import ElementBase  # noqa: E402

TOTAL = 150.0
DOMAIN = "localhost"
PUBSUB = "http://jabber.org/protocol/pubsub"
PUBSUB_ERRORS = "http://jabber.org/protocol/pubsub#errors"
BOOKMARKS = "urn:xmpp:bookmarks:1"
DEVICELIST = "eu.siacs.conversations.axolotl.devicelist"
AXOLOTL = "eu.siacs.conversations.axolotl"
CONFIG = """
[contact]
abuse = ["mailto:abuse@example.org", "xmpp:abuse@example.org"]
admin = ["xmpp:admin@example.org"]
support = ["https://example.org/support"]
"""
# A 1x1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def publish_options(**fields):
    x = ("<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' "
         "type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>")
    for k, v in fields.items():
        x += "<field var='pubsub#%s'><value>%s</value></field>" % (k, v)
    return x + "</x></publish-options>"


class Prefs(ElementBase):
    """A client's own private XML (any namespace), through slixmpp's xep_0049."""
    name = "prefs"
    namespace = "urn:example:prefs"
    plugin_attrib = "prefs"
    interfaces = {"theme"}
    sub_interfaces = {"theme"}


class Client(slixtest.Client):
    def __init__(self, jid, password):
        super().__init__(jid, password, (
            "xep_0030", "xep_0004", "xep_0128", "xep_0060", "xep_0115", "xep_0163", "xep_0084",
            "xep_0054", "xep_0153", "xep_0172", "xep_0049"))
        self["xep_0049"].register(Prefs)
        self.events = asyncio.Queue()
        self.presences = asyncio.Queue()
        for ev in ("avatar_metadata_publish", "user_nick_publish", "pubsub_publish",
                   "pubsub_delete", "pubsub_retract"):
            self.add_event_handler(ev, lambda m, ev=ev: self.events.put_nowait((ev, m)))
        self.add_event_handler("presence_available", lambda p: self.presences.put_nowait(p))


async def login(r, kd, user, resource, interests=()):
    c = Client(f"{user}@{DOMAIN}/{resource}", f"{user}-pw")
    for ns in interests:
        c["xep_0163"].add_interest(ns)
    await slixtest.login(r, kd, c, f"{user}/{resource}", presence=False)
    await c.get_roster(timeout=STEP)
    # The caps hash for the features registered so far, before the presence that carries it.
    await c["xep_0115"].update_caps(broadcast=False)
    c.send_presence()
    return c


async def until(pred, timeout=STEP):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.05)
    return pred()


async def iq_error(coro):
    try:
        await coro
        return None
    except IqError as e:
        return e.iq


async def contacts(r, a, b):
    """a and b subscribe to each other (slixmpp approves and asks back by default)."""
    a.send_presence_subscription(pto=b.boundjid.bare)
    ok = await until(lambda: a.client_roster[b.boundjid.bare]["subscription"] == "both"
                     and b.client_roster[a.boundjid.bare]["subscription"] == "both")
    r.check(ok, "alice and bob share presence both ways")


async def scenario(r, kd, clients):
    for u in ("alice", "bob", "eve"):
        kd.add_user(u, f"{u}-pw")
    alice = await login(r, kd, "alice", "laptop", (BOOKMARKS,))
    bob = await login(r, kd, "bob", "phone", (DEVICELIST,))
    eve = await login(r, kd, "eve", "street")
    clients += [alice, bob, eve]
    await contacts(r, alice, bob)

    # XEP-0157 on the server, XEP-0163 on the account.
    info = await bob["xep_0030"].get_info(jid=DOMAIN, timeout=STEP)
    forms = info["disco_info"].xml.findall("{jabber:x:data}x")
    addresses = {}
    for x in forms:
        fields = {f.get("var"): [v.text for v in f.findall("{jabber:x:data}value")]
                  for f in x.findall("{jabber:x:data}field")}
        if fields.get("FORM_TYPE") == ["http://jabber.org/network/serverinfo"]:
            addresses = fields
    r.check(addresses.get("abuse-addresses") == ["mailto:abuse@example.org",
                                                 "xmpp:abuse@example.org"]
            and addresses.get("support-addresses") == ["https://example.org/support"],
            "the server's disco#info has the serverinfo form with the configured addresses "
            f"({addresses})")
    info = await alice["xep_0030"].get_info(jid=f"alice@{DOMAIN}", timeout=STEP)
    r.check(("pubsub", "pep", None, None) in info["disco_info"]["identities"]
            or any(i[0] == "pubsub" and i[1] == "pep" for i in info["disco_info"]["identities"]),
            "the account is a pubsub/pep service")
    feats = info["disco_info"]["features"]
    r.check(all(PUBSUB + "#" + f in feats for f in ("publish", "publish-options", "auto-create",
                                                     "filtered-notifications", "access-whitelist",
                                                     "delete-nodes", "retrieve-items")),
            "it announces the pubsub features PEP needs")
    r.check(BOOKMARKS + "#compat" in feats and "jabber:iq:private" in feats,
            "and bookmarks compat and private storage")

    # XEP-0084: data, then metadata; bob's client asks for metadata+notify.
    avatar_id = hashlib.sha1(PNG).hexdigest()
    await alice["xep_0084"].publish_avatar(PNG, timeout=STEP)
    await alice["xep_0084"].publish_avatar_metadata(
        {"id": avatar_id, "type": "image/png", "bytes": len(PNG)}, timeout=STEP)
    ev = await next_matching(bob.events, lambda e: e[0] == "avatar_metadata_publish")
    r.check(ev is not None and str(ev[1]["from"]) == f"alice@{DOMAIN}",
            "bob gets alice's avatar metadata by +notify")
    info = None if ev is None else ev[1].xml.find(".//{urn:xmpp:avatar:metadata}info")
    r.check(info is not None and info.get("id") == avatar_id and info.get("type") == "image/png",
            "with the avatar's id and type")
    got = await bob["xep_0084"].retrieve_avatar(f"alice@{DOMAIN}", avatar_id, timeout=STEP)
    data = got.xml.findtext(".//{urn:xmpp:avatar:data}data") or ""
    r.check(base64.b64decode(data) == PNG, "bob fetches the avatar data (urn:xmpp:avatar:data)")

    # XEP-0172.
    await alice["xep_0172"].publish_nick("Alice W.", timeout=STEP)
    ev = await next_matching(bob.events, lambda e: e[0] == "user_nick_publish")
    r.check(ev is not None
            and ev[1].xml.findtext(".//{http://jabber.org/protocol/nick}nick") == "Alice W.",
            "bob gets alice's nickname by +notify")

    # XEP-0153: the vCard keeps the photo, the presence carries its hash.
    await alice["xep_0153"].set_avatar(avatar=PNG, mtype="image/png", timeout=STEP)
    p = await next_matching(bob.presences, lambda p: str(p["from"]).startswith("alice@")
                            and p.xml.find("{vcard-temp:x:update}x/{vcard-temp:x:update}photo")
                            is not None
                            and p.xml.find("{vcard-temp:x:update}x/{vcard-temp:x:update}photo").text
                            == hashlib.sha1(PNG).hexdigest())
    r.check(p is not None, "bob sees alice's photo hash in her presence (XEP-0153)")
    vcard = await bob["xep_0054"].get_vcard(f"alice@{DOMAIN}", timeout=STEP)
    r.check(vcard["vcard_temp"]["PHOTO"]["BINVAL"] == PNG, "and her vCard has the photo")

    # XEP-0402 bookmarks and XEP-0049 private storage, read back after reconnecting.
    await alice.raw_iq("set", (
        f"<pubsub xmlns='{PUBSUB}'><publish node='{BOOKMARKS}'>"
        f"<item id='council@conference.{DOMAIN}'><conference xmlns='{BOOKMARKS}' "
        "name='The Council' autojoin='true'><nick>Al</nick></conference></item></publish>"
        + publish_options(persist_items="true", max_items="max", send_last_published_item="never",
                          access_model="whitelist") + "</pubsub>"))
    ev = await next_matching(alice.events, lambda e: e[0] == "pubsub_publish"
                             and e[1]["pubsub_event"]["items"]["node"] == BOOKMARKS)
    r.check(ev is not None, "alice's own client hears of the bookmark (bookmarks:1+notify)")
    prefs = Prefs()
    prefs["theme"] = "dark"
    await alice["xep_0049"].store(prefs, timeout=STEP)
    alice.abort()
    alice = await login(r, kd, "alice", "desktop", (BOOKMARKS,))
    clients.append(alice)

    async def read_back(when):
        res = await alice["xep_0060"].get_items(f"alice@{DOMAIN}", BOOKMARKS, timeout=STEP)
        items = res.xml.findall(f".//{{{PUBSUB}}}item")
        conf = items[0].find(f"{{{BOOKMARKS}}}conference") if items else None
        r.check(len(items) == 1 and items[0].get("id") == f"council@conference.{DOMAIN}"
                and conf is not None and conf.get("autojoin") == "true",
                f"the bookmark reads back {when}")
        res = await alice["xep_0049"].retrieve("prefs", timeout=STEP)
        r.check(res["private"]["prefs"]["theme"] == "dark", f"the private XML reads back {when}")
        res = await alice.raw_iq("get", "<query xmlns='jabber:iq:private'>"
                                        "<storage xmlns='storage:bookmarks'/></query>")
        legacy = res.xml.findall(".//{storage:bookmarks}conference")
        r.check(len(legacy) == 1 and legacy[0].get("jid") == f"council@conference.{DOMAIN}",
                f"legacy private bookmarks show the native one {when} (XEP-0402 compat)")

    await read_back("after reconnecting")

    # OMEMO: open device list and bundle nodes, readable by a stranger; bob hears of the list.
    await alice.raw_iq("set", (
        f"<pubsub xmlns='{PUBSUB}'><publish node='{DEVICELIST}'><item id='current'>"
        f"<list xmlns='{AXOLOTL}'><device id='4223'/></list></item></publish>"
        + publish_options(access_model="open") + "</pubsub>"))
    await alice.raw_iq("set", (
        f"<pubsub xmlns='{PUBSUB}'><publish node='{AXOLOTL}.bundles:4223'><item id='current'>"
        f"<bundle xmlns='{AXOLOTL}'><signedPreKeyPublic signedPreKeyId='1'>AAAA"
        "</signedPreKeyPublic><identityKey>BBBB</identityKey></bundle></item></publish>"
        + publish_options(access_model="open") + "</pubsub>"))
    ev = await next_matching(bob.events, lambda e: e[0] == "pubsub_publish"
                             and e[1]["pubsub_event"]["items"]["node"] == DEVICELIST)
    r.check(ev is not None, "bob hears of alice's OMEMO device list (devicelist+notify)")
    res = await eve["xep_0060"].get_items(f"alice@{DOMAIN}", DEVICELIST, timeout=STEP)
    r.check(res.xml.find(f".//{{{AXOLOTL}}}device[@id='4223']") is not None,
            "eve, a stranger, reads the open device list")
    res = await eve["xep_0060"].get_items(f"alice@{DOMAIN}", f"{AXOLOTL}.bundles:4223",
                                          timeout=STEP)
    r.check(res.xml.find(f".//{{{AXOLOTL}}}identityKey") is not None,
            "and the open bundle")
    items = await eve["xep_0030"].get_items(jid=f"alice@{DOMAIN}", timeout=STEP)
    nodes = {i[1] for i in items["disco_items"]["items"]}
    r.check(nodes == {DEVICELIST, f"{AXOLOTL}.bundles:4223"},
            f"eve's disco#items of alice lists the open nodes only ({sorted(nodes)})")

    # Whitelist: eve is refused as XEP-0060 §6.5.9.5 says.
    err = await iq_error(eve["xep_0060"].get_items(f"alice@{DOMAIN}", BOOKMARKS, timeout=STEP))
    r.check(err is not None and err["error"]["condition"] == "not-allowed"
            and err.xml.find(f".//{{{PUBSUB_ERRORS}}}closed-node") is not None,
            "eve's request for the whitelist node is refused: not-allowed, closed-node")
    # Presence access: eve, no subscription, cannot read the nick; bob can.
    err = await iq_error(eve["xep_0060"].get_items(f"alice@{DOMAIN}",
                                                   "http://jabber.org/protocol/nick", timeout=STEP))
    r.check(err is not None and err["error"]["condition"] == "not-authorized"
            and err.xml.find(f".//{{{PUBSUB_ERRORS}}}presence-subscription-required") is not None,
            "eve's request for the presence node: not-authorized, presence-subscription-required")

    # Node deletion.
    await alice["xep_0060"].delete_node(f"alice@{DOMAIN}", "http://jabber.org/protocol/nick",
                                        timeout=STEP)
    ev = await next_matching(bob.events, lambda e: e[0] == "pubsub_delete")
    r.check(ev is not None, "bob hears of the deleted nick node")
    err = await iq_error(bob["xep_0060"].get_items(f"alice@{DOMAIN}",
                                                   "http://jabber.org/protocol/nick", timeout=STEP))
    r.check(err is not None and err["error"]["condition"] == "item-not-found",
            "the deleted node is item-not-found")

    for c in list(clients):
        c.abort()
    clients.clear()
    await asyncio.sleep(0.2)
    # Items outlive a restart.
    kd.stop()
    kd.start()
    alice = await login(r, kd, "alice", "again")
    clients.append(alice)
    await read_back("after kabard restarts")


def main():
    args = kabartest.parse_args()
    r = kabartest.Results("slixmpp_pep")
    slixtest.quiet_logging()
    with kabartest.Kabard(args, config=CONFIG) as kd:
        with slixtest.Loop(r, TOTAL) as lp:
            lp.run(scenario(r, kd, lp.clients))
        r.check(kd.alive(), "kabard still running at the end")
    r.finish()


if __name__ == "__main__":
    main()
