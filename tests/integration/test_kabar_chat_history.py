"""`kabar chat` keeps a local history per account (SQLite under $XDG_DATA_HOME/kabar, mode 0600):
messages from one run are on screen when the conversation opens in the next, and PageUp/PageDown
scroll through more than a screen of them, also through a message taller than the screen. The
file is an SQLite database. Driven in tmux.

Run: /usr/bin/python3 test_kabar_chat_history.py --kabard PATH --kabarctl PATH
"""
import os
import shutil
import stat
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import client_matrix  # noqa: E402
import kabartest  # noqa: E402
import xmpp_raw  # noqa: E402
from test_client_chat import Tmux  # noqa: E402

COUNT = 40  # more than the 30-row pane shows
LONG = "LONG-START " + " ".join(f"w{i:03d}" for i in range(600)) + " LONG-END"


def page(tmux, key, before, timeout=10):
    """Presses PageUp or PageDown and waits for the screen to change; the new screen."""
    tmux.key("alice", key)
    deadline = time.time() + timeout
    text = tmux.capture("alice")
    while text == before and time.time() < deadline:
        time.sleep(0.05)
        text = tmux.capture("alice")
    return text


def main():
    args = kabartest.parse_args()
    R = kabartest.Results("test_kabar_chat_history")
    tmp = tempfile.mkdtemp(prefix="kabar-history-")
    tmux = Tmux(tmp)
    try:
        with client_matrix.kabard_with_kabar(args, tmp) as (srv, k):
            alice, bob = k.befriend(R)
            e = k.terminal_env("alice")
            e["XDG_DATA_HOME"] = os.path.join(tmp, "xdg-data")

            tmux.start("alice", f"{k.binary} chat", e)
            ok, text = tmux.wait("alice", f"online as {alice}")
            R.check(ok, "alice's chat connects\n" + text)
            # bob's notes from one connection (a kabar run each would take a login each).
            c = xmpp_raw.login(srv.port, "bob", client_matrix.PASSWORDS["bob"])
            for i in range(1, COUNT + 1):
                c.message(alice, f"note {i:02d} from bob")
            ok, text = tmux.wait("alice", f"note {COUNT:02d} from bob")
            R.check(ok, "alice's chat shows bob's notes as they come\n" + text)
            # A message taller than the screen (issue 20: after one, PageUp did nothing).
            c.message(alice, LONG)
            c.close()
            ok, text = tmux.wait("alice", "LONG-END")
            R.check(ok, "alice's chat shows its end\n" + text)
            listener = k.listen("bob")  # its client confirms delivery (XEP-0184)
            R.check(listener.wait(lambda e: e.get("type") == "ready") is not None, "bob listens")
            tmux.keys("alice", "thanks for all the notes")
            ok, text = tmux.wait("alice", "me: thanks for all the notes ✓")
            R.check(ok, "alice replies; the reply is delivered\n" + text)
            listener.stop()
            tmux.keys("alice", "/quit")
            deadline = time.time() + 10
            while tmux.alive("alice") and time.time() < deadline:
                time.sleep(0.1)
            R.check(not tmux.alive("alice"), "alice quits")

            path = os.path.join(tmp, "xdg-data", "kabar", f"history-{alice}.db")
            R.check(os.path.exists(path), f"the history is {path}")
            if os.path.exists(path):
                mode = stat.S_IMODE(os.stat(path).st_mode)
                R.check(mode == 0o600, f"the history file is mode 0600 ({oct(mode)})")
                with open(path, "rb") as f:
                    R.check(f.read(16) == b"SQLite format 3\0", "the history file is SQLite")
            for name in os.listdir(os.path.dirname(path)):
                mode = stat.S_IMODE(os.stat(os.path.join(os.path.dirname(path), name)).st_mode)
                R.check(mode == 0o600, f"{name} is mode 0600 ({oct(mode)})")

            # A new run: the conversation with bob (the first contact) opens with its history.
            tmux.start("alice", f"{k.binary} chat", e)
            ok, text = tmux.wait("alice", "me: thanks for all the notes ✓")
            R.check(ok, "the next run shows the last messages, with their delivery marks\n" + text)
            R.check("note 01 from bob" not in text, "the oldest ones are above the screen")
            R.check("LONG-END" in text and "LONG-START" not in text,
                    "the long message's end is on screen, its start above it\n" + text)
            pages = []
            for _ in range(10):  # PageUp, a page at a time, through the long message
                text = page(tmux, "PPage", text)
                pages.append(text)
                if "bob: note 01 from bob" in text:
                    break
            R.check("bob: note 01 from bob" in text and "PageDown for newer" in text and
                    any("bob: LONG-START" in t for t in pages) and len(pages) >= 2 and
                    any(f"bob: note {COUNT:02d} from bob" in t for t in pages),
                    f"PageUp goes through the long message to the oldest ones ({len(pages)} "
                    "pages)\n" + text)
            for _ in range(len(pages)):
                text = page(tmux, "NPage", text)
            R.check("me: thanks for all the notes ✓" in text and "note 01 from bob" not in text
                    and "PageDown for newer" not in text,
                    "as many PageDowns go back to the newest\n" + text)
            tmux.keys("alice", "/quit")
    finally:
        tmux.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    R.finish()


if __name__ == "__main__":
    main()
