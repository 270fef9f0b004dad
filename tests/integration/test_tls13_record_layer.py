"""kabard's own TLS 1.3 record layer, end to end: after OpenSSL's handshake a TLS 1.3 connection
is handed over (kabard logs it), and `openssl s_client` then gets answers in each of the three
TLS 1.3 suites, across a KeyUpdate it requests (kabard must answer with one of its own), with a
stanza larger than one record, and a close_notify back when it closes. TLS 1.2 stays on
OpenSSL and works the same."""
import subprocess
import tempfile
import time

import kabartest

HEADER = ("<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' "
          "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>\n")


def iq(ident, filler=""):
    extra = f"<x xmlns='urn:kabar:test'>{filler}</x>" if filler else ""
    return (f"<iq type='get' id='{ident}'><query xmlns='jabber:iq:register'/>{extra}</iq>\n")


def s_client(port, *opts, steps):
    """Runs s_client with -msg, writing each step (text, or None for a pause); returns its output
    (through a file: -msg dumps every record, more than a pipe holds)."""
    with tempfile.TemporaryFile() as log:
        p = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-msg",
                              *opts], stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)
        time.sleep(1.0)  # the handshake
        for s in steps:
            if s is None:
                time.sleep(1.0)
            else:
                p.stdin.write(s.encode())
                p.stdin.flush()
        time.sleep(1.5)
        p.stdin.close()  # EOF: s_client sends close_notify and reads to the end
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.seek(0)
        return log.read().decode(errors="replace")


def main():
    args = kabartest.parse_args()
    R = kabartest.Results("tls13_record_layer")
    # The stream never authenticates: the pre-auth stanza limit (10,000 bytes by default) is
    # raised so that its 40 KB stanza, several records long, is taken.
    with kabartest.Kabard(args, extra_flags=["--log-level", "debug"],
                          config="[limits]\npreauth_stanza_bytes = 65536\n") as k:
        for suite in ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                      "TLS_CHACHA20_POLY1305_SHA256"):
            before = k.read_log().count("handed over to kabar's record layer")
            out = s_client(k.tls_port, "-tls1_3", "-ciphersuites", suite,
                           steps=[HEADER, None, iq("a1"), None, "K\n", None, iq("a2"), None,
                                  iq("big", "y" * 40000), None, "</stream:stream>\n", None])
            R.check(f"Cipher is {suite}" in out, f"{suite}: negotiated")
            R.check(k.read_log().count("handed over to kabar's record layer") == before + 1,
                    f"{suite}: kabard handed the connection over to its record layer")
            R.check("id='a1'" in out, f"{suite}: answer before the KeyUpdate")
            R.check(">>> TLS 1.3, Handshake [length 0005], KeyUpdate" in out,
                    f"{suite}: the client sent KeyUpdate(update_requested)")
            R.check("<<< TLS 1.3, Handshake [length 0005], KeyUpdate" in out,
                    f"{suite}: kabard answered with a KeyUpdate of its own")
            R.check("id='a2'" in out, f"{suite}: answer after the KeyUpdate, under new keys")
            R.check("id='big'" in out, f"{suite}: a 40 KB stanza (several records) answered")
            R.check("<<< TLS 1.3, Alert [length 0002], warning close_notify" in out,
                    f"{suite}: kabard's close_notify on close")
            R.check("fatal" not in out, f"{suite}: no fatal alert either way")
        before = k.read_log().count("handed over to kabar's record layer")
        out = s_client(k.tls_port, "-tls1_2", steps=[HEADER, None, iq("b1"), None])
        R.check("id='b1'" in out, "TLS 1.2: answered (on OpenSSL)")
        R.check(k.read_log().count("handed over to kabar's record layer") == before,
                "TLS 1.2: not handed over")
        R.check(k.alive(), "kabard still running")
    R.finish()


if __name__ == "__main__":
    main()
