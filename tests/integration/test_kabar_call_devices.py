#!/usr/bin/python3
"""`kabar call` to `kabar listen --answer-calls` with the default sound devices, no WAV files
(issue 19): ALSA for real, on a machine without sound hardware. Each side's HOME has an
.asoundrc whose default PCM is ALSA's file plugin over the null device: capture reads a raw
S16_LE 48 kHz mono file (a sine sweep, then silence), playback writes one. The null device hands
out and takes samples as fast as it is asked (aplay "plays" two seconds through it in 16 ms), so
this also checks that the engine paces them: a capture read faster than 48 kHz would skip
through the sweep, and the playback file holds about as much as the call lasted.
- both ways: a 3-second sweep from each side's capture file arrives in the other side's playback
  file, its frequency track followed (callmedia.check_sweep_samples); neither side warns;
- a device that does not exist (--audio-device) is said once on stderr and the call goes on to
  its end (exit 0); --no-audio-device opens nothing (the playback file is not written).

Run by ctest as: /usr/bin/python3 test_kabar_call_devices.py --kabard PATH --kabarctl PATH.
"""
import array
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402
from callmedia import RATE, Kabar, check_sweep_samples, show, sweep_samples  # noqa: E402

R = kabartest.Results("kabar_call_devices")
section = R.section
PW = {"alice": "alice-pw", "bob": "bob-pw"}
LOOP = ("--host-address", "127.0.0.1")
SWEEPS = {"alice": (300, 3000), "bob": (2500, 400)}
# After the sweep: silence, longer than any call here (past the end of its infile the file plugin
# hands out whatever the null device left in the buffer).
PAD_SECONDS = 20


def asoundrc(capture_path, playback_path):
    """The default PCM: capture from a raw file, playback into one, both over "null"."""
    return """pcm.!default {
  type asym
  playback.pcm {
    type file
    slave.pcm "null"
    file "%s"
    format "raw"
  }
  capture.pcm {
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "%s"
    format "raw"
  }
}
""" % (playback_path, capture_path)


def read_raw(path):
    a = array.array("h")
    with open(path, "rb") as f:
        a.frombytes(f.read())
    return a


@section
def sweeps_through_devices(args, work):
    with kabartest.Kabard(args) as k:
        for u, p in PW.items():
            k.add_user(u, p)
        kabar = Kabar(args, work, "127.0.0.1:%d" % k.port, PW)
        captured, played = {}, {}
        for user, (f0, f1) in SWEEPS.items():
            home = kabar.home(user)
            os.makedirs(home, exist_ok=True)
            captured[user] = os.path.join(work, user + "-microphone.raw")
            played[user] = os.path.join(work, user + "-speaker.raw")
            samples = sweep_samples(f0, f1)
            samples.extend(array.array("h", bytes(2 * RATE * PAD_SECONDS)))
            with open(captured[user], "wb") as f:
                f.write(samples.tobytes())
            with open(os.path.join(home, ".asoundrc"), "w") as f:
                f.write(asoundrc(captured[user], played[user]))

        bob = kabar.listen("bob", "--answer-calls", *LOOP)
        try:
            if not R.check(bob.wait(lambda e: e.get("type") == "ready", timeout=20) is not None,
                           "bob listens"):
                return
            r = kabar.run("alice", "call", "bob@localhost", "--duration", "4", *LOOP)
            R.check(r.returncode == 0 and any(x.startswith("connected to bob@localhost/")
                                              for x in r.stdout.splitlines()),
                    "alice's call connects and ends with exit 0 (%s)" % show(r))
            R.check("sound device" not in r.stderr,
                    "alice's side opens the default devices without a warning (%s)" % show(r))
            end = bob.wait(lambda e: e.get("type") == "call-ended", timeout=10)
            R.check(end is not None and end.get("reason") == "success",
                    "bob's side ends, hung up by alice (%s)" % end)
        finally:
            bob.stop()
        R.check("sound device" not in bob.stderr,
                "bob's side opens the default devices without a warning (%s)" % bob.stderr[-600:])
        for hearer, speaker in (("bob", "alice"), ("alice", "bob")):
            try:
                got = read_raw(played[hearer])
            except OSError as e:
                R.check(False, "%s's playback file is there (%s)" % (hearer, e))
                continue
            f0, f1 = SWEEPS[speaker]
            check_sweep_samples(R, "%s heard %s through the devices" % (hearer, speaker), got,
                                f0, f1)
            # Played at the call's pace: about as long as the call, not the whole capture file.
            R.check(len(got) < 8 * RATE, "%s's device played %.1f s in a 4-second call" % (
                hearer, len(got) / RATE))

        # A device that does not exist: said once; the call goes on. bob opens none at all.
        os.remove(played["bob"])
        bob = kabar.listen("bob", "--answer-calls", "--no-audio-device", *LOOP)
        try:
            if not R.check(bob.wait(lambda e: e.get("type") == "ready", timeout=20) is not None,
                           "no device: bob listens"):
                return
            r = kabar.run("alice", "call", "bob@localhost", "--duration", "2",
                          "--audio-device", "kabar-no-such-pcm", *LOOP)
            warnings = [x for x in r.stderr.splitlines() if "sound device" in x]
            R.check(r.returncode == 0 and len(warnings) == 1 and
                    "sound device 'kabar-no-such-pcm': cannot open" in warnings[0] and
                    "without sound" in warnings[0],
                    "a device that cannot be opened is one warning and the call goes on (%s)" %
                    show(r))
            end = bob.wait(lambda e: e.get("type") == "call-ended", timeout=10)
            R.check(end is not None and end.get("reason") == "success" and
                    int(end.get("received", "0")) >= 50,
                    "bob receives alice's silence to the end (%s)" % end)
        finally:
            bob.stop()
        R.check(not os.path.exists(played["bob"]) and "sound device" not in bob.stderr,
                "--no-audio-device: bob opened no device")
        R.check(k.alive(), "kabard alive")


def main():
    args = kabartest.parse_args()
    work = tempfile.mkdtemp(prefix="kabar-call-devices-")
    try:
        sweeps_through_devices(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    R.finish()


if __name__ == "__main__":
    main()
