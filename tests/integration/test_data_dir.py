"""One kabard per data directory: a second one on the same directory refuses to start with one
line naming the directory and the running kabard's pid, and exits 1; kabarctl still works while
kabard runs; once kabard has stopped, the directory can be used again."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kabartest  # noqa: E402

R = kabartest.Results("data_dir")


def second_kabard(args, k):
    cmd = [args.kabard, "--domain", "localhost", "--data-dir", k.data_dir,
           "--c2s", "127.0.0.1:%d" % kabartest.free_port(),
           "--c2s-tls", "127.0.0.1:%d" % kabartest.free_port()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20,
                          stdin=subprocess.DEVNULL)


def main():
    args = kabartest.parse_args()
    k = kabartest.Kabard(args)
    k2 = None
    try:
        k.start()
        r = second_kabard(args, k)
        lines = r.stderr.strip().splitlines()
        R.check(r.returncode == 1, "a second kabard on the same data directory exits 1 (%s)"
                % r.returncode)
        R.check(len(lines) == 1, "with one line on stderr (%r)" % r.stderr[-300:])
        R.check(bool(lines) and k.data_dir in lines[0] and "pid %d" % k.proc.pid in lines[0],
                "naming the directory and the running kabard's pid (%s)"
                % (lines[0] if lines else ""))
        R.check(k.alive(), "the first kabard keeps running")
        k.add_user("alice", "alice-pw")
        listed = k.ctl("user", "list", check=False)
        R.check(listed.returncode == 0 and listed.stdout.split() == ["alice"],
                "kabarctl works while kabard runs (%s)" % listed.stdout.strip())
        R.check(k.stop() == 0, "the first kabard stops cleanly")
        # The same directory, lock file and all: free again once its kabard has ended.
        k2 = kabartest.Kabard(args)
        k2.cmd[k2.cmd.index("--data-dir") + 1] = k.data_dir
        k2.start()
        R.check(k2.alive(), "then a new kabard starts on the directory")
        R.check(k2.stop() == 0, "and stops cleanly")
    finally:
        for x in (k, k2):
            if x is not None:
                x.cleanup()
    R.finish()


if __name__ == "__main__":
    main()
