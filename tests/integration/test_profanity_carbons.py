"""Profanity (Debian's 0.13.1, driven in tmux) with message carbons (XEP-0280).

Profanity enables carbons at login: kabard must accept (no "Server error enabling message
carbons"). A message that a second resource of the same account (slixmpp) sends to bob then
shows in Profanity's chat window with bob, as a sent carbon; one bob sends to that other
resource shows there too, as a received carbon.

Run: /usr/bin/python3 test_profanity_carbons.py --kabard PATH --kabarctl PATH
"""
import asyncio
import logging
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
from test_profanity import STEP, Peer, Tmux, next_matching, wait_pane  # noqa: E402

DOMAIN = "localhost"
TOTAL = 80.0
CARBONS_ERROR = "Server error enabling message carbons"


async def wait_log(path, needles, timeout=STEP):
    """Waits until one of `needles` is in the file at `path`; returns it, or None."""
    deadline = asyncio.get_event_loop().time() + timeout
    while asyncio.get_event_loop().time() < deadline:
        try:
            with open(path, errors="replace") as f:
                text = f.read()
        except OSError:
            text = ""
        for n in needles:
            if n in text:
                return n
        await asyncio.sleep(0.2)
    return None


async def login(r, kd, jid, pw):
    c = Peer(jid, pw)
    c.connect(("127.0.0.1", kd.port), force_starttls=True)
    try:
        outcome = await asyncio.wait_for(asyncio.shield(c.outcome), STEP)
    except asyncio.TimeoutError:
        outcome = "timeout"
    r.check(outcome == "session", f"slixmpp {jid} logs in ({outcome})")
    c.send_presence()
    return c


async def scenario(r, kd, tmux, home, peers):
    alice_pw, bob_pw = "prof-alice-pw", "prof-bob-pw"
    kd.add_user("alice", alice_pw)
    kd.add_user("bob", bob_pw)
    alice_jid, bob_jid = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
    bob = await login(r, kd, bob_jid + "/slix", bob_pw)
    other = await login(r, kd, alice_jid + "/other", alice_pw)
    peers += [bob, other]

    env = {"HOME": home, "XDG_CONFIG_HOME": os.path.join(home, ".config"),
           "XDG_DATA_HOME": os.path.join(home, ".local", "share"),
           "TERM": "xterm-256color", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    tmux.start("profanity -l DEBUG", env)
    found, text = await wait_pane(tmux, ["Profanity", "profanity"], timeout=10)
    if not r.check(found is not None, "profanity starts in tmux"):
        print(text)
        return
    tmux.keys(f"/connect {alice_jid} server 127.0.0.1 port {kd.port} tls trust")
    found, text = await wait_pane(tmux, ["Enter password:", "password:"], timeout=10)
    if not r.check(found is not None, "profanity asks for the password"):
        print(text)
        return
    tmux.keys(alice_pw)
    found, text = await wait_pane(tmux, ["logged in successfully", "Login failed"], timeout=STEP)
    if not r.check(found == "logged in successfully", f"profanity logs in ({found})"):
        print(text)
        return
    # Profanity enables carbons right after login and logs the answer: wait for it (an event,
    # not a pause), then open the chat window with bob.
    log = os.path.join(home, ".local", "share", "profanity", "logs", "profanity.log")
    enabled = await wait_log(log, ["Message carbons enabled", CARBONS_ERROR])
    r.check(enabled == "Message carbons enabled",
            f"profanity enables carbons ({enabled})")
    tmux.keys(f"/msg {bob_jid}")
    await wait_pane(tmux, [bob_jid], timeout=STEP)
    body_sent = "Sent from the other resource 5e1d"
    other.send_message(mto=bob_jid, mbody=body_sent, mtype="chat")
    m = await next_matching(bob.messages, lambda m: m["body"] == body_sent)
    r.check(m is not None, "bob gets the message from alice's other resource")
    found, text = await wait_pane(tmux, [body_sent], timeout=STEP)
    if not r.check(found is not None, "profanity shows it (a sent carbon)"):
        print(text)
    body_recv = "From bob to the other resource 77aa"
    bob.send_message(mto=alice_jid + "/other", mbody=body_recv, mtype="chat")
    m = await next_matching(other.messages, lambda m: m["body"] == body_recv)
    r.check(m is not None, "alice's other resource gets bob's message")
    found, text = await wait_pane(tmux, [body_recv], timeout=STEP)
    if not r.check(found is not None, "profanity shows it (a received carbon)"):
        print(text)
    text = tmux.capture()
    r.check(CARBONS_ERROR not in text, f"no \"{CARBONS_ERROR}\"")
    tmux.keys("/quit")


def main():
    args = kabartest.parse_args()
    r = kabartest.Results("profanity_carbons")
    logging.basicConfig(level=logging.CRITICAL)
    if shutil.which("profanity") is None or shutil.which("tmux") is None:
        r.check(False, "profanity and tmux are installed")
        r.finish()
    home = tempfile.mkdtemp(prefix="kabar-profc-")
    tmux = Tmux(home)
    try:
        with kabartest.Kabard(args) as kd:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            peers = []
            try:
                loop.run_until_complete(
                    asyncio.wait_for(scenario(r, kd, tmux, home, peers), TOTAL))
            except asyncio.TimeoutError:
                r.check(False, f"scenario finished within {TOTAL:.0f} s")
            finally:
                tmux.kill()
                for p in peers:
                    p.abort()
                loop.run_until_complete(asyncio.sleep(0.2))
                kabartest.shutdown_loop(loop)
            r.check(kd.alive(), "kabard still running at the end")
    finally:
        tmux.kill()
        if r.failed:
            log = os.path.join(home, ".local", "share", "profanity", "logs", "profanity.log")
            try:
                with open(log) as f:
                    sys.stderr.write("---- profanity log (tail) ----\n" + f.read()[-4000:] + "\n")
            except OSError:
                pass
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    r.finish()


if __name__ == "__main__":
    main()
