"""`kabar chat` in tmux: the screen says what happens. Notes from kabar carry no fake sender
("*:", "!:"); a message to an account that does not exist is marked "not delivered" once (its
chat-state bounce is not a second line); /help shows every command in full; an unknown command
says so; a contact's status text is shown; the status bar shows the presence announced (dnd and
its text, not "online"); Ctrl-C with a half-typed line keeps the line and says how to quit, a
second Ctrl-C quits. A subscription request that arrives meanwhile shows with a hint that works as
written: a bare /approve approves it.

Run: /usr/bin/python3 test_kabar_chat_screen.py --kabard PATH --kabarctl PATH
"""
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import client_matrix  # noqa: E402
import kabartest  # noqa: E402
from test_client_chat import Tmux  # noqa: E402


def main():
    args = kabartest.parse_args()
    R = kabartest.Results("test_kabar_chat_screen")
    tmp = tempfile.mkdtemp(prefix="kabar-screen-")
    tmux = Tmux(tmp)
    listener = None
    try:
        with client_matrix.kabard_with_kabar(args, tmp) as (srv, k):
            alice, bob = k.befriend(R)
            r = k.run("status", "away", "at lunch", user="bob")
            R.check(r.returncode == 0, "bob saves the status away, 'at lunch'")
            listener = k.listen("bob")
            R.check(listener.wait(lambda e: e.get("type") == "ready") is not None, "bob listens")

            e = k.terminal_env("alice")
            tmux.start("alice", f"{k.binary} chat", e)
            ok, text = tmux.wait("alice", f"{bob} - away: at lunch")
            R.check(ok, "the conversation header shows bob's show and status text\n" + text)

            tmux.keys("alice", "/status dnd busy")
            ok, text = tmux.wait("alice", f"dnd (busy) as {alice}/")
            R.check(ok and "online as" not in text,
                    "the status bar shows the announced dnd and its text\n" + text)
            ev = listener.wait(lambda e: e.get("type") == "presence" and e.get("show") == "dnd")
            R.check(ev is not None and ev.get("status") == "busy", f"bob sees dnd, busy: {ev}")

            tmux.keys("alice", "/help")
            ok, text = tmux.wait("alice", "/quit              leave")
            R.check(ok and "/approve [JID]" in text and "/file PATH" in text and
                    "/status SHOW [TEXT]" in text, "/help shows every command in full\n" + text)
            tmux.keys("alice", "/frobnicate")
            ok, text = tmux.wait("alice", "unknown command /frobnicate: /help lists the commands")
            R.check(ok, "an unknown command says so\n" + text)

            nobody = f"nobody@{srv.domain}"
            tmux.keys("alice", f"/to {nobody}")
            tmux.keys("alice", "hello?")
            ok, text = tmux.wait("alice", "(not delivered: service-unavailable)")
            time.sleep(1)  # a second bounce, if one came, would be on screen by now
            text = tmux.capture("alice")
            R.check(ok and text.count("not delivered") == 1 and "*:" not in text and "!:" not in text,
                    "a message to an unknown account: marked not delivered, once, no '!:'\n" + text)

            # A request that arrives while the chat is open: the hint works as written (a bare
            # /approve answers the one request waiting).
            srv.add_user("carol", "Carol-Secret-3")
            r = k.run("roster", "add", alice, user="carol", password="Carol-Secret-3")
            R.check(r.returncode == 0, f"carol asks alice ({r.stderr.strip()})")
            ok, text = tmux.wait("alice", "carol@localhost asks to see your presence: /approve or /deny")
            R.check(ok, "the request shows with its hint\n" + text)
            tmux.keys("alice", "/approve")
            ok, text = tmux.wait("alice", "approved carol@localhost")
            R.check(ok, "a bare /approve, as the hint says, approves it\n" + text)

            # The line and Ctrl-C in one write, as a paste followed at once by Ctrl-C: the key
            # comes after the text it follows (as the terminal's interrupt character it would
            # flush the unread text and quit).
            tmux.key("alice", "half a thought", "C-c")
            ok, text = tmux.wait("alice", "Ctrl-C again quits without it")
            R.check(ok and "> half a thought" in text and tmux.alive("alice"),
                    "Ctrl-C with a half-typed line keeps it and says how to quit\n" + text)
            tmux.key("alice", "C-c")
            deadline = time.time() + 10
            while tmux.alive("alice") and time.time() < deadline:
                time.sleep(0.1)
            R.check(not tmux.alive("alice"), "a second Ctrl-C quits")
    finally:
        tmux.kill()
        if listener:
            listener.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    R.finish()


if __name__ == "__main__":
    main()
