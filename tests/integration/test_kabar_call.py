#!/usr/bin/python3
"""`kabar call` to `kabar listen --answer-calls` through kabard (issue 19): XEP-0353 and Jingle RTP
signalling through the server, the media (ICE, DTLS-SRTP, Opus, VP8) peer to peer.
- loopback: both clients gather on 127.0.0.1 only; a 3-second sine sweep (WAV) and a 2-second
  test pattern (Y4M, each frame's number coded in a band of blocks) go each way. Each received
  WAV's frequency track follows the sweep that was sent (50 ms windows, the frequency from zero
  crossings, within 5% + 10 Hz, as media_test checks it); each received Y4M has most frames, in
  order, above a PSNR floor against the frame sent with that number. Both sides print connected
  and ended, the caller hangs up after --duration and exits 0;
- declined (listen --reject-calls) and unanswered (listen without an answer, --ring-timeout):
  the caller exits 8 and says why, the callee sees the call and its end; no media path (the
  caller --relay-only without a TURN server): --connect-timeout hangs up, exit 9; an account
  that does not exist: exit 7 at once;
- relayed: the two clients in network namespaces of their own that cannot reach each other, each
  reaching only kabard's namespace, where Debian's coturn runs with use-auth-secret and kabard
  hands out its credentials (XEP-0215): 10-second sweeps (issue 19) and the same patterns, which
  can only go through the TURN relay (the caller with --relay-only, the callee finding it by ICE);
- relayed with 5% loss (issue 19: "the call survives 5% packet loss"): the same call again with
  5% of the UDP packets that each client's namespace sends dropped at random as they leave it, so
  each direction of media loses about 5% (alice's on its way to coturn, bob's likewise), and so do
  the STUN and TURN packets (ICE checks, allocations, refreshes: UDP too, as on a real lossy
  link); the TCP to kabard is spared. The issue says netem, but this kernel has no sch_netem
  (`tc qdisc add ... netem` answers "Specified qdisc kind is unknown"): an nftables netdev egress
  hook on each client's veth drops the packets instead (numgen random mod 100 < 5;
  kabartest.Netns.drop_udp), silently to the sender as netem's qdisc would. The call must connect
  and end as before, both sides' figures show 2-10% of packets lost, both received sweeps follow
  the track in at least 90% of their windows as loss-free ("intelligible": Opus's in-band FEC
  and concealment keep the track; see LOSSY for the measurements), and video still arrives:
  fewer frames (at least a third of the pattern's, in order) above the same PSNR floor.

Run by ctest as: /usr/bin/python3 test_kabar_call.py --kabard PATH --kabarctl PATH (the kabar
binary beside kabard is the one tested, so build-asan's works too).
"""
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
from callmedia import Kabar, check_sweep, show, write_sweep  # noqa: E402

R = kabartest.Results("kabar_call")
section = R.section
PW = {"alice": "alice-pw", "bob": "bob-pw"}
TURN_SECRET = "call-test-turn-secret"


# ---- the test pattern and its check ------------------------------------------------------------

W, H, FPS, FRAMES = 320, 240, 30, 60
CODE_BITS, CODE_W, CODE_H = 8, 40, 32  # the frame's number in a band of black and white blocks


def write_pattern(path, phase):
    """FRAMES frames of moving vertical waves under a band that codes the frame's number."""
    wave_row = [int(128 + 80 * math.sin(2 * math.pi * (x + phase) / 160))
                for x in range(W + 4 * FRAMES)]
    chroma = bytes([128]) * (2 * (W // 2) * (H // 2))
    with open(path, "wb") as f:
        f.write(b"YUV4MPEG2 W%d H%d F%d:1 Ip A1:1 C420jpeg\n" % (W, H, FPS))
        for n in range(FRAMES):
            code = b"".join((bytes([235]) if n >> (CODE_BITS - 1 - b) & 1 else bytes([16])) * CODE_W
                            for b in range(CODE_BITS))
            body = bytes(wave_row[4 * n:4 * n + W])
            f.write(b"FRAME\n" + code * CODE_H + body * (H - CODE_H) + chroma)


def read_y4m(path):
    """(width, height, [luma planes])."""
    with open(path, "rb") as f:
        data = f.read()
    head, _, rest = data.partition(b"\n")
    fields = {p[:1]: p[1:] for p in head.split()[1:]}
    w, h = int(fields[b"W"]), int(fields[b"H"])
    size = w * h + 2 * ((w + 1) // 2) * ((h + 1) // 2)
    planes, i = [], 0
    while i < len(rest):
        j = rest.index(b"\n", i) + 1
        if len(rest) < j + size:
            break
        planes.append(rest[j:j + w * h])
        i = j + size
    return w, h, planes


def frame_number(luma):
    n = 0
    for b in range(CODE_BITS):
        row = luma[(CODE_H // 2) * W:(CODE_H // 2 + 1) * W]
        block = row[b * CODE_W + 8:(b + 1) * CODE_W - 8]
        n = n * 2 + (1 if sum(block) / len(block) > 128 else 0)
    return n


def check_video(label, path, sent_path, least=FRAMES * 2 // 3):
    """At least `least` distinct frames of the pattern received, in order, above a PSNR floor."""
    try:
        w, h, got = read_y4m(path)
        _, _, sent = read_y4m(sent_path)
    except (OSError, ValueError, KeyError) as e:
        R.check(False, "%s: the received Y4M is readable (%s)" % (label, e))
        return
    R.check((w, h) == (W, H), "%s: %dx%d frames" % (label, w, h))
    numbers, psnrs = [], []
    for luma in got:
        n = frame_number(luma)
        if n >= len(sent):
            continue
        numbers.append(n)
        ref = sent[n]
        se = sum((a - b) * (a - b) for a, b in zip(luma[CODE_H * W::2], ref[CODE_H * W::2]))
        mse = se / ((len(ref) - CODE_H * W) // 2)
        psnrs.append(99.0 if mse == 0 else 10 * math.log10(255 * 255 / mse))
    distinct = len(set(numbers))
    mean = sum(psnrs) / len(psnrs) if psnrs else 0
    R.check(len(got) >= least and distinct >= least and numbers == sorted(numbers),
            "%s: %d frames received, %d of the %d sent (at least %d wanted), in order" % (
                label, len(got), distinct, FRAMES, least))
    R.check(psnrs and mean >= 30 and min(psnrs) >= 22,
            "%s: PSNR %.1f dB on average, %.1f at worst" % (label, mean, min(psnrs or [0])))


# ---- running kabar ------------------------------------------------------------------------------

# What a call must achieve, loss-free and with LOSS_PERCENT of the UDP packets dropped (the
# relayed section's second call). Loss-free, 90% of the sweep's 50 ms windows follow its track
# (the misses are where the received audio starts, and the odd window where jitter shifts a
# frame). With 5% loss, nine runs in a row (2026-12-07, on the shared 2-core machine) matched 197
# of 197 windows each way every time, and 193 of 197 in an earlier one: Opus's in-band FEC
# (OPUS_SET_INBAND_FEC, sized for 5%) recovers a lost packet from the next one, and its
# concealment covers the rare two in a row, so the loss-free 90% stands. Video loses more: a lost
# packet freezes the picture until the key frame its PLI asks for, and the pattern is only 2 s
# long; those runs received 37 to 60 distinct frames of the 60 (decoded 39 to 60), so a third
# (20) is the floor, and the same PSNR floor holds (35 dB at worst). The loss the two sides
# report was 2.9% to 6.9% (about 600 packets each way: 5% is 30 +- 5.3); 2-10% is over three
# standard deviations on either side.
LOSS_PERCENT = 5
RELAYED_SWEEP = 10  # seconds: issue 19's 10-second sweep (3 s on loopback)
CLEAN = {"fraction": 0.9, "frames": FRAMES * 2 // 3, "decoded": 40}
LOSSY = {"fraction": 0.9, "frames": FRAMES // 3, "decoded": 20, "lost": (2.0, 10.0)}


def sweep_call(kabar, work, label, caller_flags=(), callee_flags=(), seconds=3, loss=0):
    """alice calls bob (who answers) for `seconds` + 1 s, a sweep `seconds` long and a 2-second
    test pattern each way; checks both sides, the audio and the video. With `loss` (the percentage
    of UDP packets dropped on the way, set up by the caller), LOSSY's floors apply, and both
    sides' loss figures must show about that much loss."""
    want = LOSSY if loss else CLEAN
    a_in = os.path.join(work, "alice-sweep-%ds.wav" % seconds)
    b_in = os.path.join(work, "bob-sweep-%ds.wav" % seconds)
    a_vin, b_vin = os.path.join(work, "alice.y4m"), os.path.join(work, "bob.y4m")
    if not os.path.exists(a_in):
        write_sweep(a_in, 300, 3000, seconds)
        write_sweep(b_in, 2500, 400, seconds)
    if not os.path.exists(a_vin):
        write_pattern(a_vin, 0)
        write_pattern(b_vin, 80)
    a_out = os.path.join(work, label + "-alice-heard.wav")
    b_out = os.path.join(work, label + "-bob-heard.wav")
    a_vout = os.path.join(work, label + "-alice-saw.y4m")
    b_vout = os.path.join(work, label + "-bob-saw.y4m")
    duration = seconds + 1
    bob = kabar.listen("bob", "--answer-calls", "--audio-in", b_in, "--audio-out", b_out,
                       "--video-in", b_vin, "--video-out", b_vout, *callee_flags)
    try:
        if not R.check(bob.wait(lambda e: e.get("type") == "ready", timeout=20) is not None,
                       "%s: bob listens" % label):
            return
        t0 = time.time()
        r = kabar.run("alice", "call", "bob@localhost", "--video", "--duration", str(duration),
                      "--audio-in", a_in, "--audio-out", a_out, "--video-in", a_vin,
                      "--video-out", a_vout, *caller_flags)
        secs = time.time() - t0
        lines = r.stdout.splitlines()
        R.check(r.returncode == 0, "%s: kabar call exits 0 after %.1f s (%s)" % (label, secs,
                                                                                 show(r)))
        R.check(any(x.startswith("calling bob@localhost (audio and video)") for x in lines) and
                any(x.startswith("accepted by bob@localhost/") for x in lines) and
                any(x.startswith("connected to bob@localhost/") for x in lines),
                "%s: the caller prints calling, accepted, connected (%s)" % (label, lines))
        ended = [x for x in lines if " ended: " in x]
        after = "|".join("0:%02d" % d for d in range(duration, duration + 3))
        R.check(len(ended) == 1 and "packets sent" in ended[0] and "lost" in ended[0] and
                re.search(r"ended: success, by us, after (%s);" % after, ended[0]) is not None,
                "%s: the caller hangs up after %d s and prints the figures (%s)" % (
                    label, duration, ended))
        if loss:
            m = re.search(r"lost (\d+) \(([\d.]+)%\)", ended[0] if ended else "")
            lo, hi = want["lost"]
            R.check(m is not None and lo <= float(m.group(2)) <= hi,
                    "%s: alice's figures show %s%% lost (%d%% dropped; %.0f-%.0f%% wanted)" % (
                        label, m.group(2) if m else "?", loss, lo, hi))
        call = bob.wait(lambda e: e.get("type") == "call", timeout=5)
        R.check(call is not None and call.get("from", "").startswith("alice@localhost/") and
                call.get("media") == "audio and video",
                "%s: bob sees the call (%s)" % (label, call))
        conn = bob.wait(lambda e: e.get("type") == "call-state" and
                        e.get("state") == "connected", timeout=5)
        R.check(conn is not None, "%s: bob's side connects (%s)" % (label, conn))
        end = bob.wait(lambda e: e.get("type") == "call-ended", timeout=10)
        R.check(end is not None and end.get("reason") == "success" and end.get("by") == "peer" and
                int(end.get("duration", "0")) >= duration - 1,
                "%s: bob's side ends, hung up by alice (%s)" % (label, end))
        if end is not None and "received" in end:
            received, lost = int(end["received"]), int(end["lost"])
            frames = int(end.get("video_frames", "0"))
            pct = 100.0 * lost / max(1, received + lost)
            if loss:
                lo, hi = want["lost"]
                lost_ok = lo <= pct <= hi
            else:
                lost_ok = lost <= 10
            R.check(received >= 35 * duration and lost_ok and frames >= want["decoded"],
                    "%s: bob received %d packets, lost %d (%.1f%%), decoded %d video frames" % (
                        label, received, lost, pct, frames))
        else:
            R.check(False, "%s: bob's end has packet figures (%s)" % (label, end))
    finally:
        rc = bob.stop()
        if R.failed:
            sys.stderr.write("---- bob's stderr ----\n%s\n" % bob.stderr[-3000:])
    R.check(rc in (0, -15), "%s: bob's listen stops cleanly (exit %s)" % (label, rc))
    check_sweep(R, label + ": bob heard alice", b_out, 300, 3000, seconds, want["fraction"])
    check_sweep(R, label + ": alice heard bob", a_out, 2500, 400, seconds, want["fraction"])
    check_video(label + ": bob saw alice", b_vout, a_vin, want["frames"])
    check_video(label + ": alice saw bob", a_vout, b_vin, want["frames"])


@section
def loopback(args, work):
    with kabartest.Kabard(args) as k:
        for u, p in PW.items():
            k.add_user(u, p)
        kabar = Kabar(args, work, "127.0.0.1:%d" % k.port, PW)
        loop = ("--host-address", "127.0.0.1")
        sweep_call(kabar, work, "loopback", loop, loop)

        # Declined: bob's listen refuses every call.
        bob = kabar.listen("bob", "--reject-calls")
        try:
            R.check(bob.wait(lambda e: e.get("type") == "ready", timeout=20) is not None,
                    "decline: bob listens")
            # --host-address before the JID takes one address, not the JID too.
            r = kabar.run("alice", "call", *loop, "bob@localhost")
            R.check(r.returncode == 8 and "ended: decline, by the contact" in r.stdout and
                    "not taken (decline)" in r.stderr,
                    "decline: kabar call exits 8, declined by the contact (%s)" % show(r))
            end = bob.wait(lambda e: e.get("type") == "call-ended", timeout=5)
            R.check(end is not None and end.get("reason") == "decline" and end.get("by") == "us",
                    "decline: bob's side says it declined (%s)" % end)
        finally:
            bob.stop()

        # Unanswered: bob's listen shows the call and lets it ring; alice gives up after 2 s.
        bob = kabar.listen("bob")
        try:
            R.check(bob.wait(lambda e: e.get("type") == "ready", timeout=20) is not None,
                    "no answer: bob listens")
            t0 = time.time()
            r = kabar.run("alice", "call", "bob@localhost", "--ring-timeout", "2", *loop)
            secs = time.time() - t0
            R.check(r.returncode == 8 and "no answer from bob@localhost within 2 s" in r.stdout and
                    "not answered" in r.stderr and secs < 15,
                    "no answer: kabar call gives up and exits 8 in %.1f s (%s)" % (secs, show(r)))
            call = bob.wait(lambda e: e.get("type") == "call", timeout=5)
            end = bob.wait(lambda e: e.get("type") == "call-ended", timeout=5)
            R.check(call is not None and end is not None and end.get("reason") == "cancel" and
                    end.get("by") == "peer",
                    "no answer: bob saw the call ring, then withdrawn (%s, %s)" % (call, end))
        finally:
            bob.stop()

        # No media path: alice offers only relayed candidates and this kabard has no TURN, so ICE
        # has nothing to try; --connect-timeout hangs up.
        bob = kabar.listen("bob", "--answer-calls", *loop)
        try:
            R.check(bob.wait(lambda e: e.get("type") == "ready", timeout=20) is not None,
                    "no path: bob listens")
            t0 = time.time()
            r = kabar.run("alice", "call", "bob@localhost", "--relay-only", "--connect-timeout",
                          "3", *loop)
            secs = time.time() - t0
            R.check(r.returncode == 9 and "ended: connectivity-error (no media path within 3 s), "
                    "by us" in r.stdout and "the call failed" in r.stderr and secs < 15,
                    "no path: kabar call gives up after 3 s and exits 9 in %.1f s (%s)" % (
                        secs, show(r)))
            end = bob.wait(lambda e: e.get("type") == "call-ended", timeout=5)
            R.check(end is not None and end.get("by") == "peer",
                    "no path: bob's side ends with it (%s)" % end)
        finally:
            bob.stop()

        t0 = time.time()
        r = kabar.run("alice", "call", "nobody@localhost", *loop)
        R.check(r.returncode == 7 and "cannot be called: the server answered service-unavailable"
                in r.stderr and time.time() - t0 < 10,
                "an account that does not exist: exit 7 at once, not after --ring-timeout (%s)"
                % show(r))
        r = kabar.run("alice", "call", "not a jid")
        R.check(r.returncode == 2, "a bad JID is a usage error, exit 2 (%s)" % show(r))
        R.check(k.alive(), "kabard alive")


# ---- the relayed call: namespaces (kabartest.Netns) and coturn --------------------------------

def wait_for_text(path, text, proc, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(path, errors="replace") as f:
                if text in f.read():
                    return True
        except OSError:
            pass
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def stop_process(p, timeout=10):
    if p is not None and p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return p.returncode if p is not None else None


@section
def relayed(args, work):
    if shutil.which("turnserver") is None:
        R.check(False, "turnserver (Debian's coturn) is installed")
        return
    ns = kabartest.Netns("kcl", wait_running=True)
    kd = turn = None
    d = tempfile.mkdtemp(prefix="kabar-call-srv-")
    try:
        ns.up()
        r = ns.probe_a_to_b()
        R.check(r.returncode == 1, "relayed: namespace a cannot reach b (%s)" % r.stdout.strip())

        turn_log = os.path.join(d, "turn.log")
        turn = subprocess.Popen(
            ["ip", "netns", "exec", ns.srv, "turnserver", "-n", "-v", "--listening-ip=10.213.9.1",
             "--listening-port=3478", "--relay-ip=10.213.9.1", "--min-port=49152",
             "--max-port=65535", "--use-auth-secret", "--static-auth-secret=" + TURN_SECRET,
             "--realm=localhost", "--no-tls", "--no-dtls", "--no-cli", "--log-file=stdout",
             "--simple-log", "--pidfile=%s/turn.pid" % d, "--db=%s/turndb" % d],
            stdout=open(turn_log, "w"), stderr=subprocess.STDOUT)
        deadline = time.time() + 15
        listening = False
        while not listening and time.time() < deadline and turn.poll() is None:
            r = subprocess.run(["ip", "netns", "exec", ns.srv, "ss", "-Huln", "sport = :3478"],
                               capture_output=True, text=True)
            listening = "10.213.9.1:3478" in r.stdout
            if not listening:
                time.sleep(0.05)  # a poll interval
        R.check(listening, "relayed: coturn listens on 10.213.9.1:3478")

        data = os.path.join(d, "data")
        conf = os.path.join(d, "kabard.toml")
        with open(conf, "w") as f:
            f.write('[extdisco]\nservices = ["stun:10.213.9.1:3478", '
                    '"turn:10.213.9.1:3478?transport=udp"]\nturn_secret = "%s"\n' % TURN_SECRET)
        kd_log = os.path.join(d, "kabard.log")
        kd = subprocess.Popen(["ip", "netns", "exec", ns.srv, args.kabard, "--domain", "localhost",
                               "--data-dir", data, "--c2s", "10.213.9.1:5222", "--c2s-tls",
                               "10.213.9.1:5223", "--config", conf],
                              stdout=open(kd_log, "w"), stderr=subprocess.STDOUT)
        if not R.check(wait_for_text(kd_log, "10.213.9.1:5222", kd) or kd.poll() is None,
                       "relayed: kabard runs in the namespace"):
            return
        for u, p in PW.items():
            subprocess.run([args.kabarctl, "--data-dir", data, "user", "add", u], check=True,
                           capture_output=True, env=dict(os.environ, KABAR_PASSWORD=p),
                           stdin=subprocess.DEVNULL)
        kabar = Kabar(args, work, "10.213.9.1:5222", PW, netns={"alice": ns.a, "bob": ns.b})
        # kabard listens once the users can log in: wait for that, not for a time.
        deadline = time.time() + 20
        while time.time() < deadline:
            r = kabar.run("alice", "roster")
            if r.returncode == 0:
                break
            time.sleep(0.1)  # a poll interval: kabard opens its port soon after it starts
        R.check(r.returncode == 0, "relayed: alice logs in from namespace a (%s)" % show(r))
        # alice offers only her relayed candidates (--relay-only), bob everything he has: ICE
        # finds that only the relay works.
        sweep_call(kabar, work, "relayed", caller_flags=("--relay-only",), seconds=RELAYED_SWEEP)
        with open(turn_log, errors="replace") as f:
            log = f.read()
        allocations = log.count("ALLOCATE processed, success")
        R.check(allocations >= 2, "relayed: coturn granted %d allocations with kabard's "
                "credentials" % allocations)

        # The same call with LOSS_PERCENT of every UDP packet that a and b send dropped.
        label = "relayed, %d%% loss" % LOSS_PERCENT
        ns.drop_udp(LOSS_PERCENT)
        sweep_call(kabar, work, label, caller_flags=("--relay-only",), seconds=RELAYED_SWEEP,
                   loss=LOSS_PERCENT)
        print("  %s: the namespaces dropped %d and %d UDP packets" % ((label,) + ns.dropped()),
              flush=True)
    finally:
        rc = stop_process(kd)
        if kd is not None:
            R.check(rc == 0, "relayed: kabard stops cleanly (exit %s)" % rc)
        stop_process(turn)
        if R.failed:
            for name in ("kabard.log", "turn.log"):
                try:
                    with open(os.path.join(d, name), errors="replace") as f:
                        sys.stderr.write("---- %s (tail) ----\n%s\n" % (name, f.read()[-4000:]))
                except OSError:
                    pass
        ns.down()
        shutil.rmtree(d, ignore_errors=True)


def main():
    args = kabartest.parse_args()
    work = tempfile.mkdtemp(prefix="kabar-call-")
    try:
        loopback(args, work)
        relayed(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    R.finish()


if __name__ == "__main__":
    main()
