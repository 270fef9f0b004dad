#!/usr/bin/python3
"""Calls between `kabar` and a browser (issue 19): StanzaJS (npm `stanza` 12, bundled by esbuild
at test time) in Debian's Chromium with fake media, driven by playwright-core
(call_browser.mjs, call_browser_page.js), logged in over kabard's WebSocket endpoint.
- browser to browser (the harness): alice's page proposes a call with video (XEP-0353, done by
  the page: StanzaJS has no JMI) to bob's bare JID, bob's page proceeds and accepts the
  session-initiate; both pages' getStats() show audio and video received and decoded;
- kabar to the browser: `kabar call bob@localhost --video` (a WAV sine and a Y4M pattern in) to
  bob's page, which answers; the page decodes kabar's audio and video, kabar's --audio-out WAV
  holds the browser's fake microphone (a tone) and its --video-out Y4M holds frames;
- a voice call from kabar that the page answers and hangs up (kabar exits 0, ended by the
  contact); a call from kabar that the page declines (JMI reject, busy: kabar exits 8);
- the browser to kabar: alice's page sends a plain session-initiate (no proposal) to
  `kabar listen --answer-calls`'s full JID, then a XEP-0353 proposal to its bare JID (both with
  video), then a voice-only proposal; each is answered, the page decodes kabar's audio (Web Audio
  hears kabar's tone) and video, kabar's files hold the page's tone and frames (none for voice);
- the page proposes a call to `kabar listen` (not answering), which says it rings, and retracts it;
- the page offers audio and H.264-only video to `kabar listen` (no H.264 in kabar): kabar answers
  the video content with senders='none' (a=inactive), the call goes on with audio.
Chromium's fake microphone plays a 600 Hz tone (--use-file-for-fake-audio-capture), kabar sends an
880 Hz one: each side checks it hears the other's.
Everything runs in a network namespace of its own with only `lo` (unshare -n), so Chromium and
kabar gather host candidates on 127.0.0.1 only.

Skipped (exit 0) when the kabar beside kabard has no `call` command.

Run: /usr/bin/python3 test_call_browser.py --kabard PATH --kabarctl PATH
"""
import array
import json
import math
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import wave

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
from kabartest import free_port  # noqa: E402
import xmpp_raw  # noqa: E402

R = kabartest.Results("call_browser")
section = R.section
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
MODULES = os.path.join(ROOT, "web", "node_modules")
RATE = 48000
W, H, FPS = 320, 240, 30
KABAR_TONE = 880  # what kabar sends (--audio-in)
BROWSER_TONE = 600  # Chromium's fake microphone (--use-file-for-fake-audio-capture)


def in_own_netns():
    """Re-runs this test in a network namespace with only lo (once); False when it cannot."""
    if os.environ.get("KABAR_CALL_BROWSER_NETNS") == "1":
        return True
    if not shutil.which("unshare") or subprocess.run(
            ["unshare", "-n", "true"], capture_output=True).returncode != 0:
        return False
    env = dict(os.environ, KABAR_CALL_BROWSER_NETNS="1")
    os.execvpe("unshare", ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
                           sys.executable, *sys.argv], env)
    return True  # not reached


# ---- media files ---------------------------------------------------------------------------------

def write_tone(path, freq, seconds):
    n = int(seconds * RATE)
    samples = array.array("h", (int(10000 * math.sin(2 * math.pi * freq * i / RATE))
                                for i in range(n)))
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(samples.tobytes())


def write_pattern(path, frames):
    """Moving vertical waves, frames long."""
    row = [int(128 + 80 * math.sin(2 * math.pi * x / 64)) for x in range(W + 4 * frames)]
    chroma = bytes([128]) * (2 * (W // 2) * (H // 2))
    with open(path, "wb") as f:
        f.write(b"YUV4MPEG2 W%d H%d F%d:1 Ip A1:1 C420jpeg\n" % (W, H, FPS))
        for n in range(frames):
            f.write(b"FRAME\n" + bytes(row[4 * n:4 * n + W]) * H + chroma)


def wav_summary(path):
    """(seconds, rms of the loudest 100 ms window, dominant frequency by zero crossings there)."""
    try:
        with wave.open(path, "rb") as w:
            rate = w.getframerate()
            a = array.array("h")
            a.frombytes(w.readframes(w.getnframes()))
    except (OSError, EOFError, wave.Error):
        return 0.0, 0.0, 0.0
    best, best_at, win = 0.0, 0, rate // 10
    for i in range(0, max(0, len(a) - win), win):
        rms = math.sqrt(sum(x * x for x in a[i:i + win]) / win)
        if rms > best:
            best, best_at = rms, i
    seg = a[best_at:best_at + win]
    crossings = sum(1 for j in range(1, len(seg)) if seg[j - 1] < 0 <= seg[j])
    return len(a) / rate, best, crossings * rate / max(1, len(seg))


def y4m_frames(path):
    try:
        with open(path, "rb") as f:
            return f.read().count(b"FRAME")
    except OSError:
        return 0


# ---- the browser -------------------------------------------------------------------------------

class Browser:
    """call_browser.mjs: commands as JSON lines in, the pages' events as JSON lines out."""

    def __init__(self, env):
        self.proc = subprocess.Popen(["node", os.path.join(HERE, "call_browser.mjs")], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.q = queue.Queue()
        self.events = []
        self.logs = []
        self.stderr = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"event": "log", "line": line.rstrip()}
            if ev.get("event") == "log":
                self.logs.append("%s: %s" % (ev.get("page"), ev.get("line")))
                if os.environ.get("KABAR_CALL_BROWSER_VERBOSE"):
                    print("  page log %s: %s" % (ev.get("page"), str(ev.get("line"))[:8000]),
                          flush=True)
                continue
            if ev.get("event") != "stats":
                print("  page:", json.dumps(ev)[:300], flush=True)
            self.q.put(ev)
        self.q.put({"event": "exit"})

    def send(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def wait(self, pred, timeout=20):
        for ev in self.events:
            if pred(ev):
                self.events.remove(ev)
                return ev
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                ev = self.q.get(timeout=max(0.05, deadline - time.time()))
            except queue.Empty:
                break
            if ev.get("event") in ("fail", "exit"):
                print("  browser:", ev, flush=True)
            if pred(ev):
                return ev
            self.events.append(ev)
        return None

    def on(self, page, name, timeout=20, **kv):
        return self.wait(lambda e: e.get("page") == page and e.get("event") == name and
                         all(e.get(k) == v for k, v in kv.items()), timeout)

    def stats(self, page):
        self.send(cmd="stats", name=page)
        ev = self.on(page, "stats", timeout=10)
        return ev["stats"] if ev else {}

    def until_decoded(self, page, sid, audio=50, video=10, tone=None, timeout=20):
        """Polls the page's getStats() until session `sid` has received `audio` audio packets,
        decoded half a second of audio and `video` video frames (0: none wanted), and (tone) the
        loudest frequency of what it hears is that tone's; (True, stats) or (False, the last)."""
        deadline = time.time() + timeout
        last = {}
        while time.time() < deadline:
            st = self.stats(page)
            r = st.get(sid)
            if r:
                last = r
                a = r.get("inbound", {}).get("audio", {})
                v = r.get("inbound", {}).get("video", {})
                if a.get("packets", 0) >= audio and a.get("samples", 0) >= RATE // 2 and (
                        not video or v.get("framesDecoded", 0) >= video) and (
                        not tone or (abs(r.get("peakHz", 0) - tone) <= tone * 0.03 and
                                     r.get("peakDb", -200) > -70)):
                    return True, r
            time.sleep(0.25)
        return False, last

    def until_sent(self, page, sid, packets, timeout=15):
        """Waits until the page has sent `packets` audio packets in session `sid` (~50 a second),
        measured by its outbound counters rather than a sleep."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            o = self.stats(page).get(sid, {}).get("outbound", {})
            if o.get("audio", {}).get("packets", 0) >= packets:
                return True
            time.sleep(0.25)
        return False

    def close(self):
        try:
            self.send(cmd="quit")
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def befriend(port, a, b):
    """Mutual presence subscription between a and b, by raw clients."""
    ca = xmpp_raw.online(port, a, a + "-pw", resource="setup")
    cb = xmpp_raw.online(port, b, b + "-pw", resource="setup")
    for x, y, cy, xn in ((ca, b, cb, a), (cb, a, ca, b)):
        x.presence(to=f"{y}@localhost", type="subscribe")
        cy.expect_presence(type="subscribe", timeout=10)
        cy.presence(to=f"{xn}@localhost", type="subscribed")
    ca.iq("get", "<ping xmlns='urn:xmpp:ping'/>")
    cb.iq("get", "<ping xmlns='urn:xmpp:ping'/>")
    ca.close()
    cb.close()


class Kabar:
    def __init__(self, binary, work, port):
        self.binary = binary
        self.work = work
        self.port = port

    def env(self, user):
        e = dict(os.environ)
        e["HOME"] = os.path.join(self.work, "home-" + user)
        os.makedirs(e["HOME"], exist_ok=True)
        for k in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME"):
            e.pop(k, None)
        e["KABAR_JID"] = user + "@localhost"
        e["KABAR_PASSWORD"] = user + "-pw"
        e["KABAR_SERVER"] = "127.0.0.1:%d" % self.port
        e["KABAR_INSECURE"] = "1"
        return e


def show(r):
    return "exit %s, out %r, err %r" % (r.returncode, r.stdout[-800:], r.stderr[-800:])


def dump_logs(browser, what):
    if R.failed:
        sys.stderr.write("---- page logs (%s, last 60) ----\n%s\n" % (
            what, "\n".join(x[:3000] for x in browser.logs[-60:])))


# ---- the sections ------------------------------------------------------------------------------

@section
def browser_to_browser(k, browser):
    browser.send(cmd="call", name="alice", to="bob@localhost", video=True, jmi=True)
    prop = browser.on("alice", "proposed")
    R.check(prop is not None, "b2b: alice's page proposes a call (XEP-0353)")
    jmi = browser.on("bob", "jmi", kind="propose")
    R.check(jmi is not None and jmi.get("media") == ["audio", "video"],
            "b2b: bob's page gets the proposal, audio and video (%s)" % jmi)
    inc = browser.on("bob", "incoming")
    R.check(inc is not None and prop is not None and inc.get("sid") == prop.get("id"),
            "b2b: bob's page gets alice's session-initiate, its sid the proposal's id (%s)" % inc)
    sid = prop and prop.get("id")
    R.check(browser.on("bob", "accepted", sid=sid) is not None, "b2b: bob's page accepts")
    for page in ("alice", "bob"):
        ok, st = browser.until_decoded(page, sid, tone=BROWSER_TONE)
        R.check(ok, "b2b: %s's page decodes audio (the other page's %d Hz tone) and video (%s)" % (
            page, BROWSER_TONE, st))
    browser.send(cmd="hangup", name="alice")
    R.check(browser.on("bob", "terminated", sid=sid) is not None,
            "b2b: alice hangs up, bob's page ends")
    browser.on("alice", "terminated", timeout=5, sid=sid)


def write_inputs(work):
    wav, y4m = os.path.join(work, "kabar-tone.wav"), os.path.join(work, "kabar.y4m")
    if not os.path.exists(wav):
        write_tone(wav, KABAR_TONE, 6)
        write_pattern(y4m, 3 * FPS)
    return wav, y4m


@section
def kabar_to_browser(k, browser, kabar, work):
    wav, y4m = write_inputs(work)
    a_out, v_out = os.path.join(work, "k2b-heard.wav"), os.path.join(work, "k2b-saw.y4m")
    proc = subprocess.Popen([kabar.binary, "call", "bob@localhost", "--video", "--duration", "4",
                             "--audio-in", wav, "--video-in", y4m, "--audio-out", a_out,
                             "--video-out", v_out, "--host-address", "127.0.0.1",
                             "--ring-timeout", "20", "--connect-timeout", "15"],
                            env=kabar.env("alice"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        jmi = browser.on("bob", "jmi", kind="propose")
        R.check(jmi is not None and jmi.get("from", "").startswith("alice@localhost/") and
                jmi.get("media") == ["audio", "video"],
                "k2b: bob's page gets kabar's proposal, audio and video (%s)" % jmi)
        inc = browser.on("bob", "incoming")
        R.check(inc is not None and jmi is not None and inc.get("sid") == jmi.get("id"),
                "k2b: kabar's session-initiate reaches the page (%s)" % inc)
        sid = inc and inc.get("sid")
        R.check(browser.on("bob", "accepted", sid=sid) is not None, "k2b: bob's page accepts")
        ok, st = browser.until_decoded("bob", sid, tone=KABAR_TONE)
        R.check(ok, "k2b: the page decodes kabar's audio (its %d Hz tone) and video (%s)" % (
            KABAR_TONE, st))
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    lines = out.splitlines()
    R.check(proc.returncode == 0, "k2b: kabar call exits 0 (exit %s, out %r, err %r)" % (
        proc.returncode, out[-1500:], err[-1500:]))
    R.check(any(x.startswith("connected to bob@localhost/") for x in lines),
            "k2b: kabar prints connected (%s)" % lines)
    R.check(browser.on("bob", "terminated", timeout=10, sid=sid) is not None,
            "k2b: kabar hangs up after 4 s, the page's session ends")
    secs, rms, freq = wav_summary(a_out)
    R.check(secs >= 2 and rms > 300 and abs(freq - BROWSER_TONE) < BROWSER_TONE * 0.05,
            "k2b: kabar's --audio-out holds the browser's %d Hz tone (%.1f s, loudest rms %.0f, "
            "about %.0f Hz)" % (BROWSER_TONE, secs, rms, freq))
    frames = y4m_frames(v_out)
    R.check(frames >= 30, "k2b: kabar's --video-out holds the browser's frames (%d)" % frames)


@section
def browser_to_kabar(k, browser, kabar, work):
    wav, y4m = write_inputs(work)
    # A plain session-initiate to kabar's full JID, a proposal to its bare JID (both with video),
    # and a proposal of a voice call, which kabar answers with audio only although it has video.
    for how, video in (("plain", True), ("jmi", True), ("voice", False)):
        a_out = os.path.join(work, "b2k-%s-heard.wav" % how)
        v_out = os.path.join(work, "b2k-%s-saw.y4m" % how)
        listen = kabartest.JsonLines(
            [kabar.binary, "listen", "--json", "--answer-calls", "--audio-in", wav, "--video-in",
             y4m, "--audio-out", a_out, "--video-out", v_out, "--host-address", "127.0.0.1",
             "--connect-timeout", "15"], kabar.env("bob"))
        try:
            if not R.check(listen.wait(lambda e: e.get("type") == "ready", timeout=20)
                           is not None, "b2k %s: kabar listens" % how):
                continue
            pres = browser.wait(lambda e: e.get("page") == "alice" and
                                e.get("event") == "presence" and
                                e.get("from", "").startswith("bob@localhost/kabar"), 10)
            full = pres and pres.get("from")
            R.check(full and full.startswith("bob@localhost/"),
                    "b2k %s: alice's page sees kabar online (%s)" % (how, full))
            if how == "plain":
                browser.send(cmd="call", name="alice", to=full, video=video, jmi=False)
                init = browser.on("alice", "initiated", peer=full)
                sid = init and init.get("sid")
            else:
                browser.send(cmd="call", name="alice", to="bob@localhost", video=video, jmi=True)
                prop = browser.on("alice", "proposed")
                sid = prop and prop.get("id")
                pr = browser.on("alice", "jmi", kind="proceed", id=sid)
                R.check(pr is not None and pr.get("id") == sid,
                        "b2k %s: kabar answers the page's proposal with proceed (%s)" % (how, pr))
            call = listen.wait(lambda e: e.get("type") == "call", timeout=10)
            R.check(call is not None and call.get("from", "").startswith("alice@localhost/") and
                    call.get("media") == ("audio and video" if video else "audio"),
                    "b2k %s: kabar sees the page's call (%s)" % (how, call))
            acc = browser.on("alice", "session-accepted", sid=sid)
            R.check(acc is not None, "b2k %s: kabar's session-accept reaches the page" % how)
            conn = listen.wait(lambda e: e.get("type") == "call-state" and
                               e.get("state") == "connected", timeout=20)
            R.check(conn is not None, "b2k %s: kabar connects (%s)" % (how, conn))
            ok, st = browser.until_decoded("alice", sid, tone=KABAR_TONE, video=10 if video else 0)
            R.check(ok, "b2k %s: the page decodes kabar's audio (its %d Hz tone)%s (%s)"
                    % (how, KABAR_TONE, " and video" if video else "", st))
            if not video:
                R.check(not st.get("inbound", {}).get("video") and
                        not st.get("outbound", {}).get("video"),
                        "b2k %s: no video either way (%s)" % (how, st))
            # Three seconds of the page's media into kabar's files.
            browser.until_sent("alice", sid, 150)
            browser.send(cmd="hangup", name="alice")
            end = listen.wait(lambda e: e.get("type") == "call-ended", timeout=10)
            R.check(end is not None and end.get("reason") == "success" and
                    end.get("by") == "peer",
                    "b2k %s: the page hangs up, kabar's call ends (%s)" % (how, end))
            browser.on("alice", "terminated", timeout=5, sid=sid)
        finally:
            rc = listen.stop()
            if R.failed:
                sys.stderr.write("---- kabar listen stderr ----\n%s\n" % listen.stderr[-3000:])
        R.check(rc in (0, -15), "b2k %s: kabar listen stops cleanly (exit %s)" % (how, rc))
        secs, rms, freq = wav_summary(a_out)
        R.check(secs >= 2 and rms > 300 and abs(freq - BROWSER_TONE) < BROWSER_TONE * 0.05,
                "b2k %s: kabar's --audio-out holds the page's %d Hz tone (%.1f s, loudest rms "
                "%.0f, about %.0f Hz)" % (how, BROWSER_TONE, secs, rms, freq))
        frames = y4m_frames(v_out)
        R.check(frames >= 30 if video else frames == 0,
                "b2k %s: kabar's --video-out holds the page's frames (%d)" % (how, frames))


@section
def page_hangs_up(k, browser, kabar, work):
    """A voice call from kabar that the page answers and then ends (session-terminate)."""
    wav, _ = write_inputs(work)
    a_out = os.path.join(work, "k2b-voice-heard.wav")
    proc = subprocess.Popen([kabar.binary, "call", "bob@localhost", "--audio-in", wav,
                             "--audio-out", a_out, "--host-address", "127.0.0.1",
                             "--ring-timeout", "20", "--connect-timeout", "15"],
                            env=kabar.env("alice"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        jmi = browser.on("bob", "jmi", kind="propose")
        R.check(jmi is not None and jmi.get("media") == ["audio"],
                "voice: bob's page gets kabar's proposal, audio only (%s)" % jmi)
        inc = browser.on("bob", "incoming")
        sid = inc and inc.get("sid")
        R.check(browser.on("bob", "accepted", sid=sid) is not None,
                "voice: bob's page accepts kabar's voice call")
        ok, st = browser.until_decoded("bob", sid, video=0, tone=KABAR_TONE)
        R.check(ok and not st.get("inbound", {}).get("video"),
                "voice: the page decodes kabar's %d Hz tone, no video (%s)" % (KABAR_TONE, st))
        browser.until_sent("bob", sid, 100)
        browser.send(cmd="hangup", name="bob")
        out, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    R.check(proc.returncode == 0 and "ended: success, by the contact" in out,
            "voice: the page hangs up, kabar call exits 0, ended by the contact (exit %s, out %r, "
            "err %r)" % (proc.returncode, out[-600:], err[-600:]))
    secs, rms, freq = wav_summary(a_out)
    R.check(secs >= 0.5 and rms > 300 and abs(freq - BROWSER_TONE) < BROWSER_TONE * 0.05,
            "voice: kabar's --audio-out holds the page's %d Hz tone (%.1f s, loudest rms %.0f, "
            "about %.0f Hz)" % (BROWSER_TONE, secs, rms, freq))


@section
def page_declines(k, browser, kabar, work):
    """kabar calls bob's page, which declines with busy (XEP-0353 reject)."""
    browser.send(cmd="answer", name="bob", on=False)
    proc = subprocess.Popen([kabar.binary, "call", "bob@localhost", "--host-address", "127.0.0.1",
                             "--ring-timeout", "20"], env=kabar.env("alice"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        jmi = browser.on("bob", "jmi", kind="propose")
        R.check(jmi is not None and jmi.get("media") == ["audio"],
                "decline: bob's page gets kabar's proposal, audio only (%s)" % jmi)
        if jmi:
            browser.send(cmd="jmi", name="bob", to=jmi["from"], kind="reject", id=jmi["id"],
                         reason="busy")
        out, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    R.check(proc.returncode == 8 and "ended: busy, by the contact" in out,
            "decline: kabar call exits 8, busy by the contact (exit %s, out %r, err %r)" % (
                proc.returncode, out[-600:], err[-600:]))
    browser.send(cmd="answer", name="bob", on=True)


@section
def h264_only(k, browser, kabar, work):
    """The page offers audio and H.264-only video to kabar listen, which has no H.264. kabar's
    session-accept answers the video content with senders='none' (src/client/call.cc, answer()):
    StanzaJS makes it an a=inactive m-line, and the call goes on with audio. Leaving the content
    out, as kabar did before, gave StanzaJS an answer with one m-line fewer than its offer, which
    Chromium refuses (and StanzaJS takes no content-remove, XEP-0166 §7.2.5, either)."""
    listen = kabartest.JsonLines([kabar.binary, "listen", "--json", "--answer-calls",
                                  "--host-address", "127.0.0.1", "--connect-timeout", "15"],
                                 kabar.env("bob"))
    try:
        if not R.check(listen.wait(lambda e: e.get("type") == "ready", timeout=20) is not None,
                       "h264: kabar listens"):
            return
        browser.send(cmd="call", name="alice", to="bob@localhost", video=True, jmi=True,
                     videoCodec="H264")
        prop = browser.on("alice", "proposed")
        sid = prop and prop.get("id")
        acc = browser.on("alice", "session-accepted", sid=sid, timeout=10)
        ok, st = browser.until_decoded("alice", sid, video=0, timeout=10)
        R.check(ok, "h264: the call goes on with audio (%s; accepted %s)" % (st, acc))
        browser.send(cmd="hangup", name="alice")
        end = listen.wait(lambda e: e.get("type") == "call-ended", timeout=10)
        print("  kabar end:", end)
    finally:
        listen.stop()


@section
def page_retracts(k, browser, kabar, work):
    """The page proposes a call to kabar listen, which rings (and says so), and retracts it."""
    listen = kabartest.JsonLines([kabar.binary, "listen", "--json", "--host-address",
                                  "127.0.0.1"], kabar.env("bob"))
    try:
        if not R.check(listen.wait(lambda e: e.get("type") == "ready", timeout=20) is not None,
                       "retract: kabar listens, not answering"):
            return
        browser.send(cmd="call", name="alice", to="bob@localhost", video=False, jmi=True)
        prop = browser.on("alice", "proposed")
        sid = prop and prop.get("id")
        call = listen.wait(lambda e: e.get("type") == "call", timeout=10)
        R.check(call is not None and call.get("id") == sid, "retract: kabar rings (%s)" % call)
        ring = browser.on("alice", "jmi", kind="ringing", id=sid)
        R.check(ring is not None, "retract: kabar tells the page it rings (XEP-0353 ringing)")
        browser.send(cmd="jmi", name="alice", to="bob@localhost", kind="retract", id=sid,
                     reason="cancel")
        end = listen.wait(lambda e: e.get("type") == "call-ended", timeout=10)
        R.check(end is not None and end.get("reason") == "cancel" and end.get("by") == "peer",
                "retract: kabar stops ringing, cancelled by the caller (%s)" % end)
    finally:
        listen.stop()


def main():
    args = kabartest.parse_args()
    kabar_bin = os.path.join(os.path.dirname(os.path.abspath(args.kabard)), "kabar")
    helps = subprocess.run([kabar_bin, "call", "--help"], capture_output=True, text=True)
    if helps.returncode != 0 or "--audio-out" not in helps.stdout:
        print("skipped: kabar has no call command (%s)" % kabar_bin, flush=True)
        sys.exit(0)
    for mod in ("stanza", "esbuild", "events", "playwright-core"):
        if not os.path.exists(os.path.join(MODULES, mod, "package.json")):
            R.check(False, "%s is installed in web/node_modules (scripts/install-deps.sh)" % mod)
            R.finish()
    netns = in_own_netns()
    R.check(True, "in a network namespace with only lo: %s" % netns)
    t0 = time.time()
    work = tempfile.mkdtemp(prefix="kabar-call-browser-")
    http_port = free_port()
    k = kabartest.Kabard(args, extra_flags=["--http", f"127.0.0.1:{http_port}",
                                            "--threads", "2"])
    browser = None
    try:
        with k:
            for u in ("alice", "bob"):
                k.add_user(u, u + "-pw")
            befriend(k.port, "alice", "bob")
            fake = os.path.join(work, "browser-tone.wav")
            write_tone(fake, BROWSER_TONE, 10)
            env = dict(os.environ, KABAR_WEB_MODULES=MODULES, KABAR_FAKE_AUDIO=fake,
                       KABAR_WS=f"ws://127.0.0.1:{http_port}/xmpp-websocket",
                       KABAR_BUNDLE=os.path.join(work, "call.js"))
            browser = Browser(env)
            R.check(browser.wait(lambda e: e.get("event") == "bundled", 60) is not None,
                    "StanzaJS bundled by esbuild")
            for name, answer in (("alice", False), ("bob", True)):
                browser.send(cmd="open", name=name, jid=f"{name}@localhost",
                             password=name + "-pw", answer=answer)
                online = R.check(browser.on(name, "online", timeout=30) is not None,
                                 "%s's page logs in over ws://" % name)
            if online:
                browser_to_browser(k, browser)
                kabar = Kabar(kabar_bin, work, k.port)
                kabar_to_browser(k, browser, kabar, work)
                page_hangs_up(k, browser, kabar, work)
                page_declines(k, browser, kabar, work)
                browser.send(cmd="close", name="bob")
                browser.on("bob", "closed", timeout=10)
                browser_to_kabar(k, browser, kabar, work)
                page_retracts(k, browser, kabar, work)
                h264_only(k, browser, kabar, work)
            R.check(k.alive(), "kabard still running")
    finally:
        if browser:
            browser.close()
            dump_logs(browser, "all")
            if R.failed:
                sys.stderr.write("---- node stderr ----\n%s\n" % "".join(browser.stderr)[-3000:])
        if R.failed or os.environ.get("KABAR_KEEP"):
            print("work files kept in", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("took %.1f s" % (time.time() - t0), flush=True)
    R.finish()


if __name__ == "__main__":
    main()
