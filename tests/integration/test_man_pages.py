"""The man pages kabar(1), kabard(8) and kabarctl(8), generated at build time by help2man from the
binaries' own --help, say what --help says: every option any of the three prints (with all
subcommands) is in its page, as are the version, the hand-written sections (exit status) and
every environment variable its sources read.

Run: /usr/bin/python3 test_man_pages.py --kabard PATH --kabarctl PATH
"""
import os
import re
import subprocess

import kabartest

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    args = kabartest.parse_args()
    R = kabartest.Results("test_man_pages")
    bindir = os.path.dirname(os.path.abspath(args.kabard))
    mandir = os.path.join(os.path.dirname(bindir), "man")
    for name, section, help_flag in (("kabar", 1, "--help-all"), ("kabard", 8, "--help"),
                                     ("kabarctl", 8, "--help-all")):
        page = os.path.join(mandir, f"{name}.{section}")
        if not R.check(os.path.exists(page), f"{page} was built (help2man: make deps installs it)"):
            continue
        with open(page) as f:
            text = f.read().replace("\\-", "-").replace("\\(hy", "-")
        h = subprocess.run([os.path.join(bindir, name), help_flag], capture_output=True,
                           text=True, stdin=subprocess.DEVNULL, timeout=10)
        options = sorted(set(re.findall(r"--[a-z][a-z0-9-]+", h.stdout)))
        R.check(h.returncode == 0 and len(options) >= 3, f"{name} {help_flag}: {options}")
        missing = [o for o in options if o not in text]
        R.check(not missing, f"{name}({section}) names every option of {help_flag}: missing {missing}")
        v = subprocess.run([os.path.join(bindir, name), "--version"], capture_output=True,
                           text=True, stdin=subprocess.DEVNULL, timeout=10).stdout.split()
        R.check(len(v) >= 2 and v[1] in text, f"{name}({section}) carries the version {v[1:2]}")
        R.check(f'.TH {name.upper()} "{section}"' in text, f"{name}({section}) is section {section}")
        if name != "kabarctl":
            R.check(".SH \"EXIT STATUS\"" in text or ".SH EXIT STATUS" in text,
                    f"{name}({section}) has the exit status section")
        # Every environment variable the program's sources read is in its page.
        src = os.path.join(HERE, "..", "..", "src", "apps", name)
        names = set()
        for fn in os.listdir(src):
            if fn.endswith(".cc"):
                with open(os.path.join(src, fn)) as f:
                    names |= set(re.findall(r'"((?:KABAR|XDG)_[A-Z0-9_]+)"', f.read()))
        missing = sorted(n for n in names if n not in text)
        R.check(not missing, f"{name}({section}) names every environment variable it reads "
                f"({sorted(names)}): missing {missing}")
    R.finish()


if __name__ == "__main__":
    main()
