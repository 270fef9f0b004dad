// TLS setup: the server's certificate, generated self-signed on first start when none is
// configured (so a fresh install is encrypted from its first connection).
#pragma once

#include <filesystem>
#include <string>

namespace kabar::server {

// Writes a self-signed certificate for `domain` (P-256 key, SAN DNS:domain, 10 years) to
// cert_path and key_path (key mode 0600). Throws std::runtime_error on failure.
void generate_self_signed(const std::string& domain, const std::filesystem::path& cert_path,
                          const std::filesystem::path& key_path);

}  // namespace kabar::server
