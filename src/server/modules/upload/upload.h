// HTTP File Upload (XEP-0363) as the component upload.<domain>: a client asks for a slot (name,
// size, type), gets a PUT and a GET URL on kabard's HTTP listener, uploads, and sends the GET URL
// to whoever should have the file (an offline contact, typically). The URLs carry the slot's
// secret (128 random bits). Limits: a maximum file size, a quota per account, and expiry of old
// files. Files live under DATA_DIR/uploads/<secret>/ with a small metadata file beside them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <unordered_map>

#include "server/http/http_server.h"
#include "server/server.h"

namespace kabar::server {

class Upload {
 public:
  Upload(Server& server, HttpServer& http);

  const std::string& jid() const { return jid_; }
  awaitable<void> handle_iq(SessionPtr from, xml::Element iq);
  // Deletes files past their expiry and slots never used; run now and then.
  void sweep(std::int64_t now_ms);
  std::uint64_t used_by(const std::string& owner) const;

 private:
  struct Slot {
    std::string owner;
    std::string filename;
    std::string content_type;
    std::uint64_t size = 0;
    std::int64_t expires_ms = 0;  // a slot not used by then is forgotten
  };

  awaitable<bool> serve(HttpExchange& ex);
  awaitable<bool> put(HttpExchange& ex, const std::string& id);
  awaitable<bool> get(HttpExchange& ex, const std::string& id, bool head);
  void load();

  Server& server_;
  HttpServer& http_;
  std::string jid_;
  std::filesystem::path dir_;
  std::unordered_map<std::string, Slot> slots_;          // by secret, not yet uploaded
  std::unordered_map<std::string, std::uint64_t> used_;  // bytes per owner, stored or promised
};

}  // namespace kabar::server
