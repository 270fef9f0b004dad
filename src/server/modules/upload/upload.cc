#include "server/modules/upload/upload.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <system_error>

#include "server/c2s_session.h"
#include "xmpp/hex.h"
#include "xmpp/jingle.h"
#include "xmpp/namespaces.h"
#include "xmpp/scram.h"
#include "xmpp/stanza.h"

namespace kabar::server {

namespace ns = xmpp::ns;
namespace fs = std::filesystem;

namespace {

constexpr const char* kUpload = "urn:xmpp:http:upload:0";
constexpr const char* kDataForms = "jabber:x:data";
constexpr std::int64_t kSlotLifetimeMs = 5 * 60 * 1000;

bool is_secret(std::string_view s) {
  return s.size() == 32 && s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

// RFC 3986 percent-encoding of everything but the unreserved characters.
std::string url_encode(std::string_view in) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : in) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

// The headers every stored file is served with, so that no upload acts as a page of the upload
// origin (a text/html or SVG file with scripts would run with that origin's rights):
// - Content-Disposition (RFC 6266): attachment (saved, not shown) unless the type is an image,
//   audio or video a browser shows inline; SVG, an image type that can carry scripts, is an
//   attachment too. The uploader's file name goes in filename* (RFC 8187 encoding).
// - X-Content-Type-Options: nosniff, so the browser keeps the declared type.
// - Content-Security-Policy: nothing may load, and the document is sandboxed (no scripts, a
//   unique origin), should a browser render it anyway.
template <typename Response>
void set_served_file_headers(Response& res, std::string_view content_type,
                             std::string_view filename) {
  std::string type(content_type);
  // Stored as the uploader gave it: anything a header cannot carry is replaced.
  const bool printable = std::all_of(type.begin(), type.end(), [](char c) {
    return static_cast<unsigned char>(c) >= 0x20 && static_cast<unsigned char>(c) < 0x7f;
  });
  if (type.empty() || !printable) type = "application/octet-stream";
  std::string media = type.substr(0, type.find(';'));
  std::transform(media.begin(), media.end(), media.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  while (!media.empty() && media.back() == ' ') media.pop_back();
  const bool inline_type =
      (media.starts_with("image/") || media.starts_with("audio/") || media.starts_with("video/")) &&
      !media.starts_with("image/svg");
  std::string disposition = inline_type ? "inline" : "attachment";
  if (!filename.empty()) disposition += "; filename*=UTF-8''" + url_encode(filename);
  res.set(http::field::server, "kabard");
  res.set(http::field::content_type, type);
  res.set(http::field::content_disposition, disposition);
  res.set("X-Content-Type-Options", "nosniff");
  res.set("Content-Security-Policy", "default-src 'none'; sandbox");
}

struct Meta {
  std::string owner, content_type, filename;
  std::uint64_t size = 0;
  std::int64_t created_ms = 0;
};

bool read_meta(const fs::path& dir, Meta& m) {
  std::ifstream in(dir / "meta");
  std::string size, created;
  if (!std::getline(in, m.owner) || !std::getline(in, m.content_type) || !std::getline(in, size) ||
      !std::getline(in, created) || !std::getline(in, m.filename)) {
    return false;
  }
  try {
    m.size = std::stoull(size);
    m.created_ms = std::stoll(created);
  } catch (const std::exception&) {
    return false;
  }
  std::error_code ec;
  return fs::file_size(dir / "file", ec) == m.size && !ec;
}

}  // namespace

Upload::Upload(Server& server, HttpServer& http)
    : server_(server),
      http_(http),
      jid_("upload." + server.config().domain),
      dir_(server.config().data_dir / "uploads") {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) throw std::runtime_error("cannot create " + dir_.string() + ": " + ec.message());
  load();
  http_.route("/upload/", [this](HttpExchange& ex) { return serve(ex); });
}

void Upload::load() {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    Meta m;
    if (entry.is_directory() && is_secret(entry.path().filename().string()) &&
        read_meta(entry.path(), m)) {
      used_[m.owner] += m.size;
    } else {
      fs::remove_all(entry.path(), ec);  // an upload cut off by a restart
    }
  }
}

std::uint64_t Upload::used_by(const std::string& owner) const {
  auto it = used_.find(owner);
  return it == used_.end() ? 0 : it->second;
}

void Upload::sweep(std::int64_t now_ms) {
  for (auto it = slots_.begin(); it != slots_.end();) {
    if (it->second.expires_ms != 0 && now_ms > it->second.expires_ms) {
      used_[it->second.owner] -= std::min(used_[it->second.owner], it->second.size);
      it = slots_.erase(it);
    } else {
      ++it;
    }
  }
  const std::int64_t keep_ms = std::int64_t{server_.config().upload_expire_after_s} * 1000;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    Meta m;
    if (!read_meta(entry.path(), m) || now_ms - m.created_ms <= keep_ms) continue;
    fs::remove_all(entry.path(), ec);
    used_[m.owner] -= std::min(used_[m.owner], m.size);
    spdlog::info("upload: {} of {} expired", m.filename, m.owner);
  }
}

awaitable<void> Upload::handle_iq(SessionPtr from, xml::Element iq) {
  const std::string_view type = iq.attr("type");
  if (type != "get" && type != "set") co_return;
  const xml::Element* q = iq.first_child();
  const Config& cfg = server_.config();
  if (q != nullptr && q->is("query", ns::kDiscoInfo) && type == "get") {
    xml::Element reply = xmpp::make_iq_result(iq);
    xml::Element& query = reply.add_child("query", ns::kDiscoInfo);
    xml::Element& id = query.add_child("identity", ns::kDiscoInfo);
    id.set_attr("category", "store");
    id.set_attr("type", "file");
    id.set_attr("name", "HTTP File Upload");
    query.add_child("feature", ns::kDiscoInfo).set_attr("var", ns::kDiscoInfo);
    query.add_child("feature", ns::kDiscoInfo).set_attr("var", kUpload);
    // XEP-0363 §3 with XEP-0128: the size limit, so clients need not ask.
    xml::Element& x = query.add_child("x", kDataForms);
    x.set_attr("type", "result");
    xml::Element& ft = x.add_child("field", kDataForms);
    ft.set_attr("var", "FORM_TYPE").set_attr("type", "hidden");
    ft.add_child("value", kDataForms).add_text(kUpload);
    x.add_child("field", kDataForms)
        .set_attr("var", "max-file-size")
        .add_child("value", kDataForms)
        .add_text(std::to_string(cfg.upload_max_file_size));
    from->send(reply);
    co_return;
  }
  if (q != nullptr && q->is("query", ns::kDiscoItems) && type == "get") {
    xml::Element reply = xmpp::make_iq_result(iq);
    reply.add_child("query", ns::kDiscoItems);
    from->send(reply);
    co_return;
  }
  if (q == nullptr || !q->is("request", kUpload) || type != "get") {
    from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "service-unavailable"));
    co_return;
  }
  std::string filename(q->attr("filename"));
  std::uint64_t size = 0;
  try {
    std::size_t used = 0;
    const std::string s(q->attr("size"));
    size = std::stoull(s, &used);
    if (used != s.size() || s.empty() || s[0] == '-') size = 0;
  } catch (const std::exception&) {
    size = 0;
  }
  if (filename.empty() || filename.size() > 255 ||
      filename.find_first_of(std::string("/\\\0", 3)) != std::string::npos || filename == "." ||
      filename == ".." || size == 0) {
    from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "bad-request",
                                      "a file name and a positive size are required"));
    co_return;
  }
  // The name goes into the slot's URL, a line of its meta file and the log, and whoever downloads
  // it may save the file under it: it keeps every promise of a name offered over Jingle (valid
  // UTF-8, no control or bidi characters, no leading dot, at most 255 bytes).
  filename = xmpp::jingle::safe_file_name(filename);
  if (size > cfg.upload_max_file_size) {
    xml::Element err =
        xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "not-acceptable",
                               "File too large. The maximum file size is " +
                                   std::to_string(cfg.upload_max_file_size) + " bytes");
    if (xml::Element* e = err.child("error")) {
      e->add_child("file-too-large", kUpload)
          .add_child("max-file-size", kUpload)
          .add_text(std::to_string(cfg.upload_max_file_size));
    }
    from->send(err);
    co_return;
  }
  const std::string owner = from->jid().bare_str();
  if (used_by(owner) + size > cfg.upload_quota) {
    from->send(xmpp::make_error_reply(iq, xmpp::ErrorType::kWait, "resource-constraint",
                                      "Quota reached: " + std::to_string(used_by(owner)) + " of " +
                                          std::to_string(cfg.upload_quota) + " bytes in use"));
    co_return;
  }
  const std::string secret = xmpp::to_hex(server_.random().bytes(16));
  slots_[secret] = Slot{owner, filename, std::string(q->attr("content-type")), size,
                        server_.now_ms() + kSlotLifetimeMs};
  used_[owner] += size;
  const std::string url = http_.base_url() + "/upload/" + secret + "/" + url_encode(filename);
  xml::Element reply = xmpp::make_iq_result(iq);
  xml::Element& slot = reply.add_child("slot", kUpload);
  slot.add_child("put", kUpload).set_attr("url", url);
  slot.add_child("get", kUpload).set_attr("url", url);
  from->send(reply);
}

awaitable<bool> Upload::serve(HttpExchange& ex) {
  // /upload/SECRET/NAME
  const std::string target(ex.header().target());
  const std::string rest = target.substr(std::string("/upload/").size());
  const std::string id = rest.substr(0, rest.find('/'));
  if (!is_secret(id)) co_return co_await ex.respond(http::status::not_found, "not found\n");
  switch (ex.header().method()) {
    case http::verb::put:
      co_return co_await put(ex, id);
    case http::verb::get:
      co_return co_await get(ex, id, false);
    case http::verb::head:
      co_return co_await get(ex, id, true);
    default:
      co_return co_await ex.respond(http::status::method_not_allowed, "PUT, GET or HEAD\n");
  }
}

awaitable<bool> Upload::put(HttpExchange& ex, const std::string& id) {
  auto it = slots_.find(id);
  if (it == slots_.end()) {
    std::error_code ec;
    const bool exists = fs::exists(dir_ / id / "meta", ec);
    co_await ex.discard_body();
    co_return co_await ex.respond(exists ? http::status::conflict : http::status::not_found,
                                  exists ? "already uploaded\n" : "no such slot\n");
  }
  Slot& slot = it->second;
  const auto length = ex.parser.content_length();
  if (!length || *length != slot.size) {
    spdlog::debug("upload: PUT {}: length {} for a slot of {}", id, length ? *length : 0,
                  slot.size);
    co_await ex.discard_body();
    co_return co_await ex.respond(http::status::bad_request,
                                  "Content-Length must be the size given for the slot\n");
  }
  const std::string ctype(ex.header()[http::field::content_type]);
  if (!slot.content_type.empty() && ctype != slot.content_type) {
    spdlog::debug("upload: PUT {}: type '{}' for a slot of '{}'", id, ctype, slot.content_type);
    co_await ex.discard_body();
    co_return co_await ex.respond(http::status::bad_request,
                                  "Content-Type must be the type given for the slot\n");
  }
  slot.expires_ms = 0;  // in progress: the sweep leaves it alone
  const fs::path dir = dir_ / id;
  std::error_code fec;
  fs::create_directories(dir, fec);
  std::FILE* f = std::fopen((dir / "file.part").c_str(), "wb");
  if (f == nullptr) {
    slot.expires_ms = server_.now_ms() + kSlotLifetimeMs;
    co_await ex.respond(http::status::internal_server_error, "cannot store the file\n");
    co_return false;
  }
  std::array<char, 64 * 1024> buf;
  std::uint64_t got = 0;
  bool ok = true;
  auto& body = ex.parser.get().body();
  while (!ex.parser.is_done()) {
    body.data = buf.data();
    body.size = buf.size();
    boost::system::error_code ec;
    co_await http::async_read(ex.sock, ex.buffer, ex.parser,
                              asio::redirect_error(asio::use_awaitable, ec));
    if (ec == http::error::need_buffer) ec = {};
    const std::size_t n = buf.size() - body.size;
    if (n > 0 && std::fwrite(buf.data(), 1, n, f) != n) ok = false;
    got += n;
    ex.touch();
    if (ec || !ok) {
      ok = false;
      break;
    }
  }
  ok = std::fclose(f) == 0 && ok && got == slot.size;
  it = slots_.find(id);  // the map may have changed while the body came in
  if (!ok || it == slots_.end()) {
    spdlog::debug("upload: PUT {}: body ended after {} of {} bytes", id, got, slot.size);
    fs::remove_all(dir, fec);
    if (it != slots_.end()) it->second.expires_ms = server_.now_ms() + kSlotLifetimeMs;
    co_return false;  // the connection broke or the body was short: nothing to answer on
  }
  const Slot done = it->second;
  slots_.erase(it);
  {
    std::ofstream meta(dir / "meta.part");
    meta << done.owner << '\n'
         << done.content_type << '\n'
         << done.size << '\n'
         << server_.now_ms() << '\n'
         << done.filename << '\n';
  }
  fs::rename(dir / "file.part", dir / "file", fec);
  if (!fec) fs::rename(dir / "meta.part", dir / "meta", fec);
  if (fec) {
    fs::remove_all(dir, fec);
    used_[done.owner] -= std::min(used_[done.owner], done.size);
    co_return co_await ex.respond(http::status::internal_server_error, "cannot store the file\n");
  }
  spdlog::info("upload: {} stored {} ({} bytes)", done.owner, done.filename, done.size);
  co_return co_await ex.respond(http::status::created, "");
}

awaitable<bool> Upload::get(HttpExchange& ex, const std::string& id, bool head) {
  Meta m;
  if (!read_meta(dir_ / id, m)) {
    co_return co_await ex.respond(http::status::not_found, "not found\n");
  }
  const unsigned version = ex.header().version();
  const bool keep = ex.header().keep_alive();
  boost::system::error_code ec;
  if (head) {
    http::response<http::empty_body> res{http::status::ok, version};
    set_served_file_headers(res, m.content_type, m.filename);
    res.content_length(m.size);
    res.keep_alive(keep);
    co_await http::async_write(ex.sock, res, asio::redirect_error(asio::use_awaitable, ec));
    co_return !ec && keep;
  }
  http::file_body::value_type file;
  file.open((dir_ / id / "file").c_str(), beast::file_mode::scan, ec);
  if (ec) co_return co_await ex.respond(http::status::not_found, "not found\n");
  http::response<http::file_body> res{http::status::ok, version};
  set_served_file_headers(res, m.content_type, m.filename);
  res.body() = std::move(file);
  res.prepare_payload();
  res.keep_alive(keep);
  co_await http::async_write(ex.sock, res, asio::redirect_error(asio::use_awaitable, ec));
  co_return !ec && keep;
}

}  // namespace kabar::server
