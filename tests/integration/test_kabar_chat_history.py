"""`kabar chat` keeps a local history per account (SQLite under $XDG_DATA_HOME/kabar, mode 0600):
messages from one run are on screen when the conversation opens in the next, and PageUp/PageDown
scroll through more than a screen of them. Driven in tmux.

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
from test_client_chat import Tmux  # noqa: E402

COUNT = 40  # more than the 30-row pane shows


def main():
    args = kabartest.parse_args()
    R = kabartest.Results("test_kabar_chat_history")
    tmp = tempfile.mkdtemp(prefix="kabar-history-")
    tmux = Tmux(tmp)
    try:
        with kabartest.Kabard(args) as srv:
            for user, pw in client_matrix.PASSWORDS.items():
                srv.add_user(user, pw)
            k = client_matrix.Kabar(client_matrix.kabar_binary(args), srv.port, srv.domain, tmp)
            alice, bob = f"alice@{srv.domain}", f"bob@{srv.domain}"
            for user, argv in (("alice", ("add", bob)), ("bob", ("approve", alice)),
                               ("alice", ("approve", bob))):
                r = k.run("roster", *argv, user=user)
                R.check(r.returncode == 0, f"{user}: roster {' '.join(argv)}")
            e = {kk: v for kk, v in k.env("alice").items()
                 if kk.startswith("KABAR_") or kk in ("HOME", "PATH")}
            e["LANG"] = "C.UTF-8"
            e["XDG_DATA_HOME"] = os.path.join(tmp, "xdg-data")

            tmux.start("alice", f"{k.binary} chat", e)
            ok, text = tmux.wait("alice", f"online as {alice}")
            R.check(ok, "alice's chat connects\n" + text)
            for i in range(1, COUNT + 1):
                r = k.run("send", alice, f"note {i:02d} from bob", user="bob")
                if r.returncode != 0:
                    R.check(False, f"bob sends note {i} ({r.stderr.strip()})")
                    break
            ok, text = tmux.wait("alice", f"note {COUNT:02d} from bob")
            R.check(ok, "alice's chat shows bob's notes as they come\n" + text)
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
            for name in os.listdir(os.path.dirname(path)):
                mode = stat.S_IMODE(os.stat(os.path.join(os.path.dirname(path), name)).st_mode)
                R.check(mode == 0o600, f"{name} is mode 0600 ({oct(mode)})")

            # A new run: the conversation with bob (the first contact) opens with its history.
            tmux.start("alice", f"{k.binary} chat", e)
            ok, text = tmux.wait("alice", "me: thanks for all the notes ✓")
            R.check(ok and f"bob: note {COUNT:02d} from bob" in text,
                    "the next run shows the last messages, with their delivery marks\n" + text)
            R.check("note 01 from bob" not in text, "the oldest ones are above the screen")
            tmux.key("alice", "PPage")
            ok, text = tmux.wait("alice", "bob: note 01 from bob")
            R.check(ok and "PageDown for newer" in text, "PageUp shows the oldest ones\n" + text)
            tmux.key("alice", "NPage")
            ok, text = tmux.wait("alice", "me: thanks for all the notes ✓")
            R.check(ok and "note 01 from bob" not in text, "PageDown goes back to the newest\n" + text)
            tmux.keys("alice", "/quit")
    finally:
        tmux.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    R.finish()


if __name__ == "__main__":
    main()
