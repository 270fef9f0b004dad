// Hands a server-side TLS 1.3 connection from OpenSSL to Record13 once OpenSSL's handshake is
// done, the way the kernel's TLS offload (kTLS) takes over a socket: OpenSSL does what is hard
// (the handshake, certificates, TLS 1.2), and an idle connection then holds only its keys.
//
// OpenSSL 3.0 has no API that hands out the application traffic secrets; its keylog callback
// does (CLIENT_TRAFFIC_SECRET_0 / SERVER_TRAFFIC_SECRET_0, the NSS key log format). The secrets
// go into a struct hung on the SSL object (ex_data), wiped when the SSL object is freed.
#pragma once

#include <openssl/ssl.h>

#include <memory>

#include "tls/record13.h"

namespace kabar::tls {

// Sets up a server SSL_CTX for handover: the keylog callback that captures the secrets, and no
// TLS 1.3 session tickets (a ticket is sent under the application keys, which would move
// OpenSSL's write sequence number past ours).
void enable_handover(SSL_CTX* ctx);

// Asks for the secrets of one connection; call before its handshake. False if it cannot be
// armed (the connection then simply stays on OpenSSL).
bool arm_handover(SSL* ssl);

// After SSL_do_handshake() returned 1 on an armed server connection: the record layer that
// carries the connection on from here, or null when OpenSSL must keep it (TLS 1.2, a secret
// missing, bytes OpenSSL has read but not returned, an unknown suite, ...). On success the
// caller frees the SSL object without SSL_shutdown(): nothing more may be written through it.
std::unique_ptr<Record13> take_over(SSL* ssl);

}  // namespace kabar::tls
