#!/usr/bin/python3
"""kabar to kabar file transfer (Jingle FT, XEP-0234) through kabard, 50 MiB of random bytes with
the SHA-256 checked on both ends:
- direct: both clients on loopback, the receiver connects to the sender's own SOCKS5 listener;
- proxy: the two clients in network namespaces of their own, each reaching kabard (in a third
  namespace) through its own veth pair and not each other, so only kabard's XEP-0065 proxy works;
- ibb: the same namespaces with kabard's proxy switched off, so the transfer falls back to
  in-band bytestreams (XEP-0261/XEP-0047) by transport-replace, 50 MiB too (a stanza round trip
  per 32 KiB block: the slowest of these).
- offline: bob has no online resource, so sendfile uploads the file (XEP-0363, kabard's --http)
  and sends the link (XEP-0066); bob finds it when he comes online, the download is the same.
- resumed: the proxy path cut halfway with `ss -K`; the sender offers again and the receiver
  asks for the rest with a XEP-0234 <range offset/>, 50 MiB, hash checked over the whole file.
Plus the refusals: an offer over --max-file-size, and a name that tries to climb out of the
accept directory (sent as raw XML).

The namespaces are made with `ip netns` (root) and removed at the end, also on failure.
"""
import hashlib
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402

R = kabartest.Results("filetransfer")
section = R.section
PW = {"alice": "alice-pw", "bob": "bob-pw"}
MIB = 1024 * 1024


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def random_file(path, size):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 * MIB)
            f.write(os.urandom(n))
            left -= n
    return sha256_file(path)


class Kabar:
    """Runs the kabar binary for one user with a private HOME, optionally inside a netns."""

    def __init__(self, binary, workdir, server, netns=None):
        self.binary = binary
        self.workdir = workdir
        self.server = server
        self.netns = netns

    def env(self, user):
        e = dict(os.environ)
        e["HOME"] = os.path.join(self.workdir, "home-" + user)
        os.makedirs(e["HOME"], exist_ok=True)
        for k in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
            e.pop(k, None)
        e["KABAR_JID"] = f"{user}@localhost"
        e["KABAR_PASSWORD"] = PW[user]
        e["KABAR_SERVER"] = self.server
        e["KABAR_INSECURE"] = "1"
        return e

    def argv(self, user, *a):
        pre = ["ip", "netns", "exec", self.netns] if self.netns else []
        return pre + [self.binary, *a]

    def run(self, user, *a, timeout=240):
        return subprocess.run(self.argv(user, *a), env=self.env(user), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout)


class Listener(kabartest.JsonLines):
    """`kabar listen --json ...` in the background (in the client's network namespace, if any)."""

    def __init__(self, kabar, user, *extra):
        super().__init__(kabar.argv(user, "listen", "--json", *extra), kabar.env(user))

    def stop(self):
        super().stop()
        return self.stderr


def transfer(kabar, src, dest_dir, size, label, expect_transport, sender_flags=(),
             receiver_flags=()):
    """bob listens with --accept-files; alice sends `src` to bob's full JID; checks both ends."""
    want = random_file(src, size)
    li = Listener(kabar, "bob", "--accept-files", dest_dir, *receiver_flags)
    try:
        ready = li.wait(lambda e: e.get("type") == "ready", timeout=20)
        if not R.check(ready is not None, f"{label}: bob listens"):
            return
        t0 = time.time()
        r = kabar.run("alice", "sendfile", *sender_flags, ready["jid"], src)
        secs = time.time() - t0
        R.check(r.returncode == 0, f"{label}: sendfile exits 0 ({r.stderr.strip()[-300:]})")
        R.check(want in r.stdout and expect_transport in r.stdout,
                f"{label}: the sender reports {expect_transport} and the hash ({r.stdout.strip()})")
        ev = li.wait(lambda e: e.get("type") in ("file", "file-error"), timeout=60)
        ok = ev is not None and ev.get("type") == "file"
        R.check(ok, f"{label}: bob reports the file ({ev})")
        if not ok:
            return
        R.check(ev.get("transport") == expect_transport and ev.get("hash_checked") == "yes",
                f"{label}: over {expect_transport}, hash checked by the receiver")
        path = ev.get("path", "")
        R.check(os.path.dirname(path) == dest_dir and os.path.basename(path) ==
                os.path.basename(src), f"{label}: saved as {path}")
        R.check(os.path.isfile(path) and os.path.getsize(path) == size and
                sha256_file(path) == want,
                f"{label}: {size // MIB} MiB arrived intact in {secs:.1f} s")
        leftovers = [n for n in os.listdir(dest_dir) if n.endswith(".part")]
        R.check(not leftovers, f"{label}: no partial file left ({leftovers})")
    finally:
        err = li.stop()
        if R.failed:
            sys.stderr.write(f"---- bob's stderr ----\n{err[-3000:]}\n")


@section
def direct(args, work):
    proxy_port = kabartest.free_port()
    with kabartest.Kabard(args, extra_flags=["--proxy65", f"127.0.0.1:{proxy_port}"]) as k:
        for u, p in PW.items():
            k.add_user(u, p)
        kabar = Kabar(os.path.join(os.path.dirname(os.path.abspath(args.kabard)), "kabar"), work,
                      f"127.0.0.1:{k.port}")
        dest = os.path.join(work, "direct-in")
        os.makedirs(dest)
        transfer(kabar, os.path.join(work, "photo.bin"), dest, 50 * MIB, "direct", "s5b-direct")

        # A bare JID: sendfile picks bob's online resource from presence (mutual subscription).
        r1 = kabar.run("alice", "roster", "add", "bob@localhost")
        r2 = kabar.run("bob", "roster", "approve", "alice@localhost")
        r3 = kabar.run("alice", "roster", "approve", "bob@localhost")
        R.check(r1.returncode == r2.returncode == r3.returncode == 0, "alice and bob subscribed")
        li = Listener(kabar, "bob", "--accept-files", dest, "--max-file-size", "1000")
        try:
            li.wait(lambda e: e.get("type") == "ready")
            small = os.path.join(work, "small.txt")
            with open(small, "wb") as f:
                f.write(b"hello, bob\n")
            r = kabar.run("alice", "sendfile", "bob@localhost", small)
            R.check(r.returncode == 0 and "small.txt" in r.stdout,
                    f"bare JID: sent to bob's resource ({r.stdout.strip()} {r.stderr.strip()})")
            ev = li.wait(lambda e: e.get("type") == "file" and e.get("path", "").endswith(
                "small.txt"))
            R.check(ev is not None and open(ev["path"], "rb").read() == b"hello, bob\n",
                    "bare JID: bob has small.txt")
            # The same name again is saved under a new name, never over the first.
            r = kabar.run("alice", "sendfile", "bob@localhost", small)
            ev = li.wait(lambda e: e.get("type") == "file" and "small (1).txt" in e.get("path", ""))
            R.check(r.returncode == 0 and ev is not None, "a second small.txt becomes 'small (1).txt'")
            # Over --max-file-size: declined, the sender told so.
            big = os.path.join(work, "big.bin")
            random_file(big, 5000)
            r = kabar.run("alice", "sendfile", "bob@localhost", big)
            R.check(r.returncode != 0 and "declined" in r.stderr,
                    f"an offer over --max-file-size is declined ({r.stderr.strip()})")
            R.check(not os.path.exists(os.path.join(dest, "big.bin")), "nothing saved for it")
        finally:
            li.stop()
        r = kabar.run("alice", "sendfile", "bob@localhost", os.path.join(work, "small.txt"))
        R.check(r.returncode == 7 and "no online resource" in r.stderr and "no HTTP upload" in
                r.stderr, f"offline and no upload service: exit 7 ({r.stderr.strip()})")


@section
def offline(args, work):
    """bob is offline: sendfile uploads (XEP-0363) and sends the link with XEP-0066; bob gets it
    when he comes online and the download has the same bytes."""
    http_port = kabartest.free_port()
    with kabartest.Kabard(args, extra_flags=["--http", f"127.0.0.1:{http_port}"]) as k:
        for u, p in PW.items():
            k.add_user(u, p)
        kabar = Kabar(os.path.join(os.path.dirname(os.path.abspath(args.kabard)), "kabar"), work,
                      f"127.0.0.1:{k.port}")
        src = os.path.join(work, "holiday photo.jpg")
        want = random_file(src, 3 * MIB)
        r = kabar.run("alice", "sendfile", "bob@localhost", src)
        R.check(r.returncode == 0 and "uploaded" in r.stdout,
                f"offline: sendfile uploads ({r.stdout.strip()} {r.stderr.strip()})")
        li = Listener(kabar, "bob")
        try:
            ev = li.wait(lambda e: e.get("type") == "message" and e.get("url"), timeout=20)
            R.check(ev is not None and ev.get("body") == ev.get("url") and ev.get("delay"),
                    f"offline: bob gets the link later, as body and XEP-0066 url ({ev})")
            if ev:
                u = urllib.parse.urlsplit(ev["url"])
                c = http.client.HTTPConnection(u.hostname, u.port, timeout=15)
                c.request("GET", u.path)
                resp = c.getresponse()
                data = resp.read()
                c.close()
                R.check(resp.status == 200 and hashlib.sha256(data).hexdigest() == want and
                        resp.getheader("Content-Type") == "image/jpeg",
                        f"offline: the download has the same 3 MiB, as image/jpeg "
                        f"({resp.status}, {resp.getheader('Content-Type')})")
        finally:
            li.stop()
        r = kabar.run("alice", "sendfile", "--no-upload", "bob@localhost", src)
        R.check(r.returncode == 7, f"offline with --no-upload: exit 7 ({r.stderr.strip()})")


class NetnsKabard:
    """kabard inside the srv namespace, listening on 10.213.9.1."""

    def __init__(self, args, ns, proxy, config=""):
        self.dir = tempfile.mkdtemp(prefix="kabar-ft-")
        self.data_dir = os.path.join(self.dir, "data")
        self.args = args
        self.ns = ns
        cmd = ["ip", "netns", "exec", ns.srv, args.kabard, "--domain", "localhost", "--data-dir",
               self.data_dir, "--c2s", "10.213.9.1:5222", "--c2s-tls", "10.213.9.1:5223"]
        if proxy:
            cmd += ["--proxy65", "10.213.9.1:7777"]
        if config:
            path = os.path.join(self.dir, "kabard.toml")
            with open(path, "w") as f:
                f.write(config)
            cmd += ["--config", path]
        self.log_path = os.path.join(self.dir, "kabard.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        probe = ("import socket,sys\ntry:\n socket.create_connection(('10.213.9.1',5222),0.5)\n"
                 "except OSError:\n sys.exit(1)\n")
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("kabard exited early:\n" + open(self.log_path).read())
            if subprocess.run(["ip", "netns", "exec", ns.srv, "/usr/bin/python3", "-c", probe]
                              ).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("kabard did not listen in the namespace")

    def add_user(self, user, pw):
        env = dict(os.environ, KABAR_PASSWORD=pw)
        subprocess.run([self.args.kabarctl, "--data-dir", self.data_dir, "user", "add", user],
                       check=True, capture_output=True, env=env, stdin=subprocess.DEVNULL)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if R.failed:
            sys.stderr.write("---- kabard log (tail) ----\n" + open(self.log_path).read()[-4000:])
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.proc.returncode


class SplitKabar(Kabar):
    """alice runs in namespace a, bob in namespace b."""

    def __init__(self, binary, workdir, ns):
        super().__init__(binary, workdir, "10.213.9.1:5222")
        self.ns = ns

    def argv(self, user, *a):
        user_ns = self.ns.a if user == "alice" else self.ns.b
        return ["ip", "netns", "exec", user_ns, self.binary, *a]


def split_transfer(args, work, proxy, size, label, expect):
    ns = kabartest.Netns("kft")
    k = None
    try:
        ns.up()
        # Proof of the setup: a cannot reach b.
        r = ns.probe_a_to_b()
        R.check(r.returncode == 1, f"{label}: namespace a cannot reach b ({r.stdout.strip()})")
        k = NetnsKabard(args, ns, proxy)
        for u, p in PW.items():
            k.add_user(u, p)
        kabar = SplitKabar(os.path.join(os.path.dirname(os.path.abspath(args.kabard)), "kabar"),
                           work, ns)
        dest = os.path.join(work, label + "-in")
        os.makedirs(dest)
        transfer(kabar, os.path.join(work, label + ".bin"), dest, size, label, expect)
    finally:
        if k:
            rc = k.stop()
            R.check(rc == 0, f"{label}: kabard stops cleanly (exit {rc})")
        ns.down()


@section
def through_proxy(args, work):
    split_transfer(args, work, True, 50 * MIB, "proxy", "s5b-proxy")


@section
def in_band(args, work):
    split_transfer(args, work, False, 50 * MIB, "ibb", "ibb")


@section
def resumed(args, work):
    """The transfer's connection is cut halfway (alice's socket to the proxy destroyed with
    `ss -K`); alice offers the file again, bob answers with the offset he has (XEP-0234 range) and
    only the rest travels. The proxy is slowed to 16 MiB/s so there is a halfway to cut at."""
    ns = kabartest.Netns("kft")
    k = li = None
    try:
        ns.up()
        k = NetnsKabard(args, ns, True, config="[proxy65]\nbytes_per_second = 16777216\n")
        for u, p in PW.items():
            k.add_user(u, p)
        kabar = SplitKabar(os.path.join(os.path.dirname(os.path.abspath(args.kabard)), "kabar"),
                           work, ns)
        dest = os.path.join(work, "resume-in")
        os.makedirs(dest)
        src = os.path.join(work, "resume.bin")
        size = 50 * MIB
        want = random_file(src, size)
        li = Listener(kabar, "bob", "--accept-files", dest)
        ready = li.wait(lambda e: e.get("type") == "ready", timeout=20)
        if not R.check(ready is not None, "resume: bob listens"):
            return
        sender = subprocess.Popen(kabar.argv("alice", "sendfile", ready["jid"], src),
                                  env=kabar.env("alice"), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        cut_at = 0
        deadline = time.time() + 60
        while time.time() < deadline and sender.poll() is None:
            parts = [os.path.join(dest, n) for n in os.listdir(dest) if n.endswith(".part")]
            have = max([os.path.getsize(p) for p in parts] or [0])
            if have >= size // 3:
                subprocess.run(["ip", "netns", "exec", ns.a, "ss", "-K", "dst", "10.213.9.1",
                                "dport", "=", "7777"], capture_output=True)
                cut_at = have
                break
            time.sleep(0.02)
        R.check(0 < cut_at < size, f"resume: cut the bytestream after {cut_at} bytes")
        out, err = sender.communicate(timeout=180)
        R.check(sender.returncode == 0 and "resumed at byte" in out,
                f"resume: sendfile resumes and succeeds ({out.strip()} {err.strip()[-300:]})")
        broke = li.wait(lambda e: e.get("type") == "file-error", timeout=5)
        R.check(broke is not None, f"resume: bob saw the break ({broke})")
        ev = li.wait(lambda e: e.get("type") == "file", timeout=60)
        resumed_from = int(ev.get("resumed_from", "0")) if ev else 0
        R.check(ev is not None and resumed_from >= cut_at // 2 and
                ev.get("hash_checked") == "yes",
                f"resume: bob continued from byte {resumed_from}, hash checked ({ev})")
        R.check(ev is not None and sha256_file(ev["path"]) == want and
                os.path.getsize(ev["path"]) == size, "resume: 50 MiB intact after the resume")
        R.check(not [n for n in os.listdir(dest) if n.endswith(".part")],
                "resume: no partial file left")
    finally:
        if li:
            li.stop()
        if k:
            rc = k.stop()
            R.check(rc == 0, f"resume: kabard stops cleanly (exit {rc})")
        ns.down()


def main():
    args = kabartest.parse_args()
    work = tempfile.mkdtemp(prefix="kabar-ft-work-")
    try:
        direct(args, work)
        offline(args, work)
        through_proxy(args, work)
        in_band(args, work)
        resumed(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    R.finish()


if __name__ == "__main__":
    main()
