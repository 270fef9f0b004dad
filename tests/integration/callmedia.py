"""Shared by the tests of kabar's calls (test_kabar_call.py, test_kabar_call_devices.py): sine
sweeps to send and the check that what was heard follows them, and kabar run for one user with a
private HOME.
"""
import array
import bisect
import math
import os
import subprocess
import wave

import kabartest

RATE = 48000
SWEEP_SECONDS = 3.0


# ---- the sweeps and their check ----------------------------------------------------------------

def sweep_samples(f0, f1, seconds=SWEEP_SECONDS):
    """A linear sweep from f0 to f1 Hz, `seconds` long, 48 kHz mono 16-bit samples."""
    n = int(seconds * RATE)
    k = (f1 - f0) / (2 * seconds)
    return array.array("h", (int(12000 * math.sin(2 * math.pi * (f0 * t + k * t * t)))
                             for t in (i / RATE for i in range(n))))


def write_sweep(path, f0, f1, seconds=SWEEP_SECONDS):
    """The sweep as a WAV file."""
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(sweep_samples(f0, f1, seconds).tobytes())


def read_wav(path):
    with wave.open(path, "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2 or w.getframerate() != RATE:
            raise ValueError("%s: %d channels, %d bytes, %d Hz" % (
                path, w.getnchannels(), w.getsampwidth(), w.getframerate()))
        a = array.array("h")
        a.frombytes(w.readframes(w.getnframes()))
        return a


def follow_sweep(received, f0, f1, seconds=SWEEP_SECONDS):
    """How many 50 ms windows of `received` follow the sweep f0 -> f1 (`seconds` long) within 5%
    (+10 Hz), the received audio shifted by the best offset into the sweep (the calls connect at
    slightly different times, and the first packets may be lost): (windows, matching, offset)."""
    # Upward zero crossings, interpolated between samples, found once.
    xs = []
    for i in range(1, len(received)):
        a, b = received[i - 1], received[i]
        if a < 0 <= b:
            xs.append(i - 1 + (-a) / (b - a))
    window = RATE // 20

    def frequency(start):
        lo = bisect.bisect_left(xs, start)
        hi = bisect.bisect_left(xs, start + window - 1)
        if hi - lo < 3:
            return 0
        return (hi - lo - 1) * RATE / (xs[hi - 1] - xs[lo])

    best = (0, 0, 0.0)
    offset = -0.3
    while offset <= 2.0:
        windows = matching = 0
        start = 0.05
        while start + 0.05 <= seconds - 0.05:
            at = start - offset
            if at >= 0:
                i = int(at * RATE)
                if i + window > len(received):
                    break
                windows += 1
                expected = f0 + (f1 - f0) * (start + 0.025) / seconds
                if abs(frequency(i) - expected) <= 0.05 * expected + 10:
                    matching += 1
            start += 0.05
        if matching > best[1]:
            best = (windows, matching, offset)
        offset += 0.005
    return best


def check_sweep_samples(R, label, got, f0, f1, seconds=SWEEP_SECONDS, fraction=0.9):
    """Checks (into kabartest.Results `R`) that the samples `got` follow the sweep f0 -> f1
    (`seconds` long) in at least `fraction` of its 50 ms windows, and cover most of it (a window
    every 50 ms but the first and last)."""
    windows, matching, offset = follow_sweep(got, f0, f1, seconds)
    return R.check(windows >= int(seconds * 20 * 0.75) and matching >= int(windows * fraction),
                   "%s: %.1f s received, the %d-%d Hz sweep's frequency track matches in %d of "
                   "%d windows, %.0f%% (at least %.0f%% wanted; offset %.3f s)" % (
                       label, len(got) / RATE, f0, f1, matching, windows,
                       100.0 * matching / max(1, windows), 100 * fraction, offset))


def check_sweep(R, label, path, f0, f1, seconds=SWEEP_SECONDS, fraction=0.9):
    """The same for a received WAV file."""
    try:
        got = read_wav(path)
    except (OSError, EOFError, ValueError, wave.Error) as e:
        R.check(False, "%s: the received WAV is readable (%s)" % (label, e))
        return
    check_sweep_samples(R, label, got, f0, f1, seconds, fraction)


# ---- running kabar ------------------------------------------------------------------------------

class Kabar:
    """The kabar binary beside kabard, for users with passwords `pw` (user -> password), each with
    a private HOME; `netns` maps a user to the network namespace it runs in (none: this one)."""

    def __init__(self, args, workdir, server, pw, netns=None):
        self.binary = os.path.join(os.path.dirname(os.path.abspath(args.kabard)), "kabar")
        self.workdir = workdir
        self.server = server
        self.pw = pw
        self.netns = netns or {}

    def home(self, user):
        return os.path.join(self.workdir, "home-" + user)

    def env(self, user):
        e = dict(os.environ)
        e["HOME"] = self.home(user)
        os.makedirs(e["HOME"], exist_ok=True)
        for k in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME"):
            e.pop(k, None)
        e["KABAR_JID"] = user + "@localhost"
        e["KABAR_PASSWORD"] = self.pw[user]
        e["KABAR_SERVER"] = self.server
        e["KABAR_INSECURE"] = "1"
        return e

    def argv(self, user, *a):
        ns = self.netns.get(user)
        return (["ip", "netns", "exec", ns] if ns else []) + [self.binary, *a]

    def run(self, user, *a, timeout=45):
        return subprocess.run(self.argv(user, *a), env=self.env(user), capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=timeout)

    def listen(self, user, *a):
        return kabartest.JsonLines(self.argv(user, "listen", "--json", *a), self.env(user))


def show(r):
    return "exit %s; stdout: %s; stderr: %s" % (r.returncode, r.stdout.strip()[-600:],
                                                 r.stderr.strip()[-600:])
