// Calls (include/kabar/call.h): XEP-0353 messages, the Jingle RTP session's state machine, and
// the seam to the media engine (client/media/media.h). The XML is made and read by
// xmpp/jingle_rtp; this file converts it to and from the engine's types and decides what to do.
#include "kabar/call.h"

#include <openssl/rand.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <cctype>
#include <charconv>
#include <map>

#include "client/client_impl.h"
#include "xmpp/hex.h"
#include "xmpp/jid.h"
#include "xmpp/jingle_rtp.h"
#include "xmpp/namespaces.h"
#include "xmpp/stanza.h"

namespace kabar::client {

namespace rtp = xmpp::jingle_rtp;

namespace {

// Trickled candidates kept for a session whose remote side is not known yet.
constexpr std::size_t kMaxPendingCandidates = 64;

// XEP-0353 §5: ids are globally unique; a UUIDv4 as the XEP recommends.
std::string call_uuid4() {
  unsigned char b[16];
  RAND_bytes(b, sizeof b);
  b[6] = static_cast<unsigned char>((b[6] & 0x0F) | 0x40);
  b[8] = static_cast<unsigned char>((b[8] & 0x3F) | 0x80);
  std::string hex = xmpp::to_hex({reinterpret_cast<const char*>(b), sizeof b});
  return hex.substr(0, 8) + '-' + hex.substr(8, 4) + '-' + hex.substr(12, 4) + '-' +
         hex.substr(16, 4) + '-' + hex.substr(20);
}

// RFC 3550 §8: an SSRC chosen at random; 0 is kept for "not signalled" (media::Stream).
std::uint32_t new_ssrc() {
  std::uint32_t v = 0;
  while (v == 0) RAND_bytes(reinterpret_cast<unsigned char*>(&v), sizeof v);
  return v;
}

std::string ascii_lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::optional<media::MediaKind> kind_of(std::string_view media) {
  if (media == "audio") return media::MediaKind::kAudio;
  if (media == "video") return media::MediaKind::kVideo;
  return std::nullopt;
}

const char* media_name(media::MediaKind k) {
  return k == media::MediaKind::kAudio ? "audio" : "video";
}

// ---- conversions between the XML structs and the engine's ----

media::IceCandidate to_media(const rtp::Candidate& c) {
  media::IceCandidate m;
  m.foundation = c.foundation;
  m.component = c.component;
  m.protocol = c.protocol;
  m.priority = c.priority;
  m.ip = c.ip;
  m.port = c.port;
  m.type = c.type;
  m.rel_addr = c.rel_addr;
  m.rel_port = c.rel_port;
  m.id = c.id;
  m.generation = c.generation;
  return m;
}

rtp::Candidate to_xml(const media::IceCandidate& m) {
  rtp::Candidate c;
  c.foundation = m.foundation;
  c.component = m.component;
  c.protocol = m.protocol;
  c.priority = m.priority;
  c.ip = m.ip;
  c.port = m.port;
  c.type = m.type;
  c.rel_addr = m.rel_addr;
  c.rel_port = m.rel_port;
  c.id = m.id.empty() ? call_uuid4().substr(0, 8) : m.id;
  c.generation = m.generation;
  return c;
}

media::Codec to_media(const rtp::PayloadType& p) {
  media::Codec c;
  c.payload_type = p.id;
  c.name = p.name;
  c.clockrate = p.clockrate;
  c.channels = p.channels;
  c.params = p.parameters;
  c.rtcp_fb = p.rtcp_fb;
  return c;
}

rtp::PayloadType to_xml(const media::Codec& c) {
  return rtp::PayloadType{c.payload_type, c.name, c.clockrate, c.channels, c.params, c.rtcp_fb};
}

const std::string* param_value(const rtp::PayloadType& p, std::string_view name) {
  for (const auto& [n, v] : p.parameters)
    if (n == name) return &v;
  return nullptr;
}

// Whether the initiator (or the responder) sends on a content with these senders (XEP-0166:
// both when absent).
bool we_send(std::string_view senders, bool initiator) {
  if (senders.empty() || senders == "both") return true;
  return senders == (initiator ? "initiator" : "responder");
}

// The offered payload types we have too (same name, clockrate and channels; RFC 3264 §6.1),
// in the offerer's order and with its ids; rtx only for a codec kept (its apt). Feedback is the
// offered feedback we also support.
std::vector<rtp::PayloadType> common_codecs(const std::vector<rtp::PayloadType>& offered,
                                            const std::vector<media::Codec>& ours) {
  std::vector<rtp::PayloadType> out;
  auto same = [](const rtp::PayloadType& p, const media::Codec& c) {
    return ascii_lower(p.name) == ascii_lower(c.name) &&
           (p.clockrate == 0 || p.clockrate == c.clockrate) && p.channels == c.channels;
  };
  for (const rtp::PayloadType& p : offered) {
    if (ascii_lower(p.name) == "rtx") continue;
    auto it = std::find_if(ours.begin(), ours.end(), [&](const auto& c) { return same(p, c); });
    if (it == ours.end()) continue;
    rtp::PayloadType kept = p;
    kept.rtcp_fb.clear();
    for (const auto& fb : p.rtcp_fb)
      if (std::find(it->rtcp_fb.begin(), it->rtcp_fb.end(), fb) != it->rtcp_fb.end())
        kept.rtcp_fb.push_back(fb);
    out.push_back(std::move(kept));
  }
  const bool have_rtx = std::any_of(
      ours.begin(), ours.end(), [](const media::Codec& c) { return ascii_lower(c.name) == "rtx"; });
  if (have_rtx) {
    std::vector<rtp::PayloadType> rtx;
    for (const rtp::PayloadType& p : offered) {
      if (ascii_lower(p.name) != "rtx") continue;
      const std::string* apt = param_value(p, "apt");
      if (apt && std::any_of(out.begin(), out.end(),
                             [&](const auto& k) { return std::to_string(k.id) == *apt; }))
        rtx.push_back(p);
    }
    out.insert(out.end(), rtx.begin(), rtx.end());
  }
  return out;
}

// RFC 5763 §5: the answerer to actpass (or passive) is active; to active, passive.
std::string answer_setup(std::string_view offered) {
  return offered == "active" ? "passive" : "active";
}

}  // namespace

// One call, from proposal to end. Lives in Impl::calls while it runs.
struct Call {
  CallInfo info;
  std::string peer_bare;
  bool jmi = false;                  // set up with XEP-0353 (so it ends with <finish/>)
  bool session = false;              // a Jingle session exists (initiate sent or received)
  bool remote_set = false;           // media::Session::set_remote was called
  std::string remote_ufrag;          // the peer's ICE ufrag, once known
  std::string transport_content;     // the content name our transport-info goes in (BUNDLE tag)
  std::string initiator;             // the session's initiator (full JID)
  std::optional<rtp::Action> offer;  // incoming: the session-initiate not yet answered
  std::vector<media::IceCandidate> pending;  // trickled before set_remote
  std::unique_ptr<media::Session> media;
  std::chrono::steady_clock::time_point active_since{};
  // Our SSRCs, one per kind, signalled in the description (XEP-0339) and given to the engine.
  std::uint32_t audio_ssrc = new_ssrc();
  std::uint32_t video_ssrc = 0;
  // Our RTCP CNAME for this call, announced with the SSRCs and used by the engine's RTCP.
  // A random one per call (RFC 7022 §4.2), so that calls cannot be linked by it.
  std::string cname = call_uuid4();
  std::uint32_t ssrc(media::MediaKind k) {
    if (k == media::MediaKind::kAudio) return audio_ssrc;
    while (video_ssrc == 0 || video_ssrc == audio_ssrc) video_ssrc = new_ssrc();
    return video_ssrc;
  }
};
using CallPtr = std::shared_ptr<Call>;

struct Calls::Impl : std::enable_shared_from_this<Impl> {
  Impl(Calls& o, Client& c, MediaFactory f) : owner(&o), client(&c), factory(std::move(f)) {}
  Calls* owner;
  Client* client;
  MediaFactory factory;
  std::map<std::string, CallPtr> calls;
  std::vector<HandlerToken> tokens;

  std::string me() const { return client->bound_jid(); }
  std::string my_bare() const { return bare_of(client->bound_jid()); }

  CallPtr find(const std::string& id) {
    auto it = calls.find(id);
    return it == calls.end() ? nullptr : it->second;
  }

  void set_state(Call& c, CallState s) {
    if (c.info.state == s || c.info.state == CallState::kEnded) return;
    c.info.state = s;
    if (s == CallState::kActive) c.active_since = std::chrono::steady_clock::now();
    if (owner && owner->on_state) owner->on_state(c.info);
  }

  void end(const CallPtr& c, CallEnd e) {
    if (c->info.state == CallState::kEnded) return;
    if (c->info.state == CallState::kActive)
      e.duration = std::chrono::duration_cast<std::chrono::seconds>(
          std::chrono::steady_clock::now() - c->active_since);
    c->info.state = CallState::kEnded;
    if (c->media) c->media->stop();
    calls.erase(c->info.id);
    if (owner && owner->on_ended) owner->on_ended(c->info, e);
  }

  // ---- sending ----

  void send_jmi(const std::string& to, rtp::JingleMessage m) {
    client->send_stanza(rtp::build_jmi(m, to, call_uuid4()));
  }

  void send_jmi(const Call& c, const std::string& to, const std::string& kind,
                const std::string& reason = {}, const std::string& text = {}) {
    rtp::JingleMessage m;
    m.kind = kind;
    m.id = c.info.id;
    m.reason = reason;
    m.reason_text = text;
    send_jmi(to, std::move(m));
  }

  rtp::Action action(const Call& c, std::string name) {
    rtp::Action a;
    a.action = std::move(name);
    a.sid = c.info.id;
    a.initiator = c.initiator;
    return a;
  }

  // Sends a Jingle IQ; with `essential`, an error answer (or none) ends the call.
  void send_jingle(const CallPtr& c, const rtp::Action& a, bool essential) {
    xml::Element iq("iq", xmpp::ns::kClient);
    iq.set_attr("type", "set").set_attr("to", c->info.peer);
    iq.add_child(rtp::build(a));
    if (!essential) {
      // Sent now, in order with what follows it (a terminate before its <finish/>); the answer
      // is not waited for.
      iq.set_attr("id", call_uuid4());
      client->send_stanza(iq);
      return;
    }
    auto watch = watch_iq(weak_from_this(), client, c->info.id, std::move(iq), essential);
    asio::co_spawn(client->io_context(), std::move(watch), asio::detached);
  }

  static awaitable<void> watch_iq(std::weak_ptr<Impl> weak, Client* client, std::string id,
                                  xml::Element iq, bool essential) {
    std::optional<xml::Element> reply = co_await client->send_iq(std::move(iq));
    auto self = weak.lock();
    if (!self || !essential) co_return;
    std::string cond = Client::iq_condition(reply);
    if (cond.empty()) co_return;
    CallPtr c = self->find(id);
    if (!c) co_return;
    // The peer refused the session (or never answered): nothing more to say to it.
    CallEnd e;
    e.reason = cond == "timeout" ? "timeout" : "general-error";
    e.text = cond == "timeout" ? "the contact's client did not answer"
                               : "the contact's client answered " + cond;
    e.by_peer = cond != "timeout";
    self->end(c, std::move(e));
  }

  // Ends a session we are part of: session-terminate (and, after XEP-0353, finish).
  void terminate(const CallPtr& c, const std::string& reason, const std::string& text,
                 bool by_peer = false) {
    if (c->session) {
      rtp::Action t = action(*c, "session-terminate");
      t.reason = reason;
      t.reason_text = text;
      send_jingle(c, t, false);
    }
    if (c->jmi) send_jmi(*c, c->info.peer, "finish", reason, text);
    end(c, CallEnd{reason, text, by_peer, {}});
  }

  // ---- the media engine ----

  void make_media(const CallPtr& c, bool controlling) {
    media::Config cfg = owner->config;
    cfg.controlling = controlling;
    cfg.cname = c->cname;
    media::Callbacks cb;
    // Called on the engine's thread: everything goes through the client's io_context.
    auto weak = weak_from_this();
    asio::io_context& io = client->io_context();
    const std::string id = c->info.id;
    cb.local_candidate = [weak, &io, id](const media::IceCandidate& cand) {
      asio::post(io, [weak, id, cand] {
        if (auto self = weak.lock()) self->on_local_candidate(id, cand);
      });
    };
    cb.gathering_done = [] {};
    cb.connected = [weak, &io, id] {
      asio::post(io, [weak, id] {
        if (auto self = weak.lock()) self->on_connected(id);
      });
    };
    cb.failed = [weak, &io, id](const std::string& why) {
      asio::post(io, [weak, id, why] {
        if (auto self = weak.lock()) self->on_failed(id, why);
      });
    };
    c->media = factory(std::move(cfg), std::move(cb));
  }

  rtp::Transport local_transport(const Call& c, std::string setup) {
    rtp::Transport t;
    media::IceCredentials cred = c.media->local_credentials();
    media::Fingerprint fp = c.media->local_fingerprint();
    t.ufrag = cred.ufrag;
    t.pwd = cred.pwd;
    t.fingerprint = rtp::Fingerprint{fp.hash, std::move(setup), fp.value};
    return t;
  }

  void on_local_candidate(const std::string& id, const media::IceCandidate& cand) {
    CallPtr c = find(id);
    if (!c || !c->session || !c->media) return;
    // XEP-0176 §4: one candidate per transport-info, as it is found (trickle). With BUNDLE the
    // first content's transport carries them for all.
    rtp::Action a = action(*c, "transport-info");
    rtp::Content content;
    content.name = c->transport_content;
    content.creator = "initiator";
    rtp::Transport t;
    media::IceCredentials cred = c->media->local_credentials();
    t.ufrag = cred.ufrag;
    t.pwd = cred.pwd;
    t.candidates.push_back(to_xml(cand));
    content.transport = std::move(t);
    a.contents.push_back(std::move(content));
    send_jingle(c, a, false);
  }

  void on_connected(const std::string& id) {
    if (CallPtr c = find(id)) set_state(*c, CallState::kActive);
  }

  void on_failed(const std::string& id, const std::string& why) {
    CallPtr c = find(id);
    if (!c) return;
    // XEP-0166 §7.4: a DTLS failure (the certificate does not match the signalled fingerprint,
    // XEP-0320) is a security error; anything else the engine reports is the transport's.
    std::string w = ascii_lower(why);
    bool security = w.find("dtls") != std::string::npos ||
                    w.find("fingerprint") != std::string::npos ||
                    w.find("certificate") != std::string::npos;
    terminate(c, security ? "security-error" : "failed-transport", why);
  }

  void add_candidates(Call& c, const rtp::Transport& t) {
    if (!c.remote_ufrag.empty() && !t.ufrag.empty() && t.ufrag != c.remote_ufrag)
      return;  // an ICE restart, which this side does not do
    for (const rtp::Candidate& cand : t.candidates) {
      if (c.remote_set && c.media) {
        c.media->add_remote_candidate(to_media(cand));
      } else if (c.pending.size() < kMaxPendingCandidates) {
        c.pending.push_back(to_media(cand));
      }
    }
  }

  // Gives the engine the peer's side, then the candidates that came before it.
  void set_remote(Call& c, const rtp::Transport& t, std::vector<media::Stream> streams) {
    c.remote_ufrag = t.ufrag;
    media::Fingerprint fp{t.fingerprint->hash, t.fingerprint->setup, t.fingerprint->value};
    c.media->set_remote(media::IceCredentials{t.ufrag, t.pwd}, fp, std::move(streams));
    c.remote_set = true;
    std::vector<media::IceCandidate> pending = std::move(c.pending);
    c.pending.clear();
    add_candidates(c, t);
    for (const media::IceCandidate& cand : pending) c.media->add_remote_candidate(cand);
  }

  // ---- outgoing ----

  void start_session(const CallPtr& c) {
    make_media(c, true);
    c->initiator = me();
    rtp::Action a = action(*c, "session-initiate");
    std::vector<media::MediaKind> kinds{media::MediaKind::kAudio};
    if (c->info.video) kinds.push_back(media::MediaKind::kVideo);
    for (media::MediaKind k : kinds) {
      rtp::Content content;
      content.name = media_name(k);
      content.senders = "both";
      rtp::Description d;
      d.media = media_name(k);
      for (const media::Codec& codec : c->media->supported_codecs(k))
        d.payload_types.push_back(to_xml(codec));
      if (d.payload_types.empty()) continue;  // the engine has no codec of this kind
      d.ssrcs.push_back(c->ssrc(k));
      d.cname = c->cname;
      d.rtcp_mux = true;
      content.description = std::move(d);
      content.transport = local_transport(*c, "actpass");
      a.bundle.push_back(content.name);
      a.contents.push_back(std::move(content));
    }
    if (a.contents.empty()) {
      terminate(c, "failed-application", "no codec to offer");
      return;
    }
    c->session = true;
    c->transport_content = a.contents.front().name;
    send_jingle(c, a, true);
    c->media->gather();
  }

  void on_session_accept(const CallPtr& c, const rtp::Action& a) {
    if (c->info.incoming || c->info.state != CallState::kAccepted) return;
    std::vector<media::Stream> streams;
    const rtp::Transport* transport = nullptr;
    for (const rtp::Content& content : a.contents) {
      if (!transport && content.transport) transport = &*content.transport;
      if (!content.description || content.senders == "none") continue;  // declined
      auto kind = kind_of(content.description->media);
      if (!kind) continue;
      std::vector<media::Codec> ours = c->media->supported_codecs(*kind);
      media::Stream s;
      s.kind = *kind;
      s.mid = content.name;
      s.local_ssrc = c->ssrc(*kind);
      s.send = we_send(content.senders, true);
      // The answer's payload types that we offered (XEP-0167 §6.2: a subset, with our ids).
      for (const rtp::PayloadType& p : content.description->payload_types) {
        auto it = std::find_if(ours.begin(), ours.end(),
                               [&](const media::Codec& x) { return x.payload_type == p.id; });
        if (it != ours.end()) s.codecs.push_back(to_media(p));
      }
      if (!content.description->ssrcs.empty()) s.remote_ssrc = content.description->ssrcs[0];
      if (!s.codecs.empty()) streams.push_back(std::move(s));
    }
    if (streams.empty()) {
      terminate(c, "failed-application", "no codec in common");
      return;
    }
    if (!transport || !transport->fingerprint) {
      terminate(c, "security-error", "DTLS-SRTP is required (XEP-0320 fingerprint missing)");
      return;
    }
    set_remote(*c, *transport, std::move(streams));
    set_state(*c, CallState::kConnecting);
  }

  // ---- incoming ----

  void answer(const CallPtr& c) {
    const rtp::Action& offer = *c->offer;
    c->session = true;
    c->initiator = offer.initiator.empty() ? c->info.peer : offer.initiator;
    make_media(c, false);
    rtp::Action accept = action(*c, "session-accept");
    accept.responder = me();
    std::vector<media::Stream> streams;
    const rtp::Transport* transport = nullptr;
    for (const rtp::Content& content : offer.contents) {
      if (!content.description || !content.transport) continue;
      auto kind = kind_of(content.description->media);
      if (!kind) continue;
      std::vector<rtp::PayloadType> common =
          common_codecs(content.description->payload_types, c->media->supported_codecs(*kind));
      rtp::Content out;
      out.name = content.name;
      out.creator = content.creator;
      out.senders = content.senders;
      rtp::Description d;
      d.media = content.description->media;
      d.rtcp_mux = true;
      if (common.empty() || content.senders == "none") {
        // A content we cannot take (no codec in common) is answered all the same, with senders
        // 'none' (XEP-0166: nobody sends on it), not left out: an SDP peer needs an answer for
        // every offered m-line (RFC 3264 §6), 'none' being SDP's a=inactive. Its first offered
        // payload type stands in for the codec list an SDP m-line cannot be without.
        out.senders = "none";
        if (!content.description->payload_types.empty())
          d.payload_types.push_back(content.description->payload_types.front());
        out.description = std::move(d);
        accept.contents.push_back(std::move(out));
        continue;
      }
      if (!transport) transport = &*content.transport;
      media::Stream s;
      s.kind = *kind;
      s.mid = content.name;
      s.local_ssrc = c->ssrc(*kind);
      s.send = we_send(content.senders, false);
      for (const rtp::PayloadType& p : common) s.codecs.push_back(to_media(p));
      if (!content.description->ssrcs.empty()) s.remote_ssrc = content.description->ssrcs[0];
      streams.push_back(std::move(s));
      d.payload_types = std::move(common);
      d.ssrcs.push_back(c->ssrc(*kind));
      d.cname = c->cname;
      out.description = std::move(d);
      accept.contents.push_back(std::move(out));
    }
    if (streams.empty()) {
      // XEP-0167 §6.2: none of the offered payload types is supported.
      terminate(c, "failed-application", "no codec in common");
      return;
    }
    if (!transport->fingerprint) {
      terminate(c, "security-error", "DTLS-SRTP is required (XEP-0320 fingerprint missing)");
      return;
    }
    const std::string setup = answer_setup(transport->fingerprint->setup);
    for (rtp::Content& out : accept.contents) out.transport = local_transport(*c, setup);
    if (!offer.bundle.empty())
      for (const rtp::Content& out : accept.contents) accept.bundle.push_back(out.name);
    c->transport_content = accept.contents.front().name;
    // Candidates in the offer itself, then those trickled meanwhile.
    for (const rtp::Content& content : offer.contents)
      if (content.transport && &*content.transport != transport)
        add_candidates(*c, *content.transport);
    set_remote(*c, *transport, std::move(streams));
    c->offer.reset();
    send_jingle(c, accept, true);
    set_state(*c, CallState::kConnecting);
    c->media->gather();
  }

  // ---- stanzas in ----

  bool on_jingle_iq(const xml::Element& iq) {
    const xml::Element* j = iq.first_child();
    if (!j || !j->is("jingle", rtp::kJingle)) return false;
    std::string from(iq.attr("from"));
    CallPtr c = find(std::string(j->attr("sid")));
    const bool initiate = rtp::is_rtp_initiate(*j);
    if (!initiate && (!c || c->info.peer != from || (!c->session && !c->offer))) return false;
    if (iq.attr("type") != "set") {
      client->send_stanza(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "bad-request"));
      return true;
    }
    std::string why;
    auto a = rtp::parse(*j, why);
    if (!a) {
      client->send_stanza(xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "bad-request", why));
      return true;
    }
    if (initiate) {
      on_initiate(iq, c, std::move(*a));
      return true;
    }
    const std::string& act = a->action;
    if (act == "session-accept" &&
        (c->info.incoming || c->info.state != CallState::kAccepted || c->remote_set)) {
      // XEP-0166 §10: only the responder accepts, once.
      send_jingle_error(iq, "unexpected-request", "out-of-order");
      return true;
    }
    if (act == "session-accept" || act == "transport-info" || act == "session-terminate" ||
        act == "session-info" || act == "description-info" || act == "security-info") {
      client->send_stanza(xmpp::make_iq_result(iq));
    } else {
      // XEP-0166 §7.2: content-add, transport-replace and the rest are not done here.
      client->send_stanza(
          xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "feature-not-implemented"));
      return true;
    }
    if (act == "session-accept") {
      on_session_accept(c, *a);
    } else if (act == "transport-info") {
      for (const rtp::Content& content : a->contents)
        if (content.transport) add_candidates(*c, *content.transport);
    } else if (act == "session-terminate") {
      // XEP-0353 §3.6: both sides send <finish/>.
      if (c->jmi) send_jmi(*c, c->info.peer, "finish", a->reason.empty() ? "success" : a->reason);
      end(c, CallEnd{a->reason.empty() ? "success" : a->reason, a->reason_text, true, {}});
    }
    return true;
  }

  // An IQ error with a XEP-0166 §10 condition beside the stanza one.
  void send_jingle_error(const xml::Element& iq, const char* condition, const char* jingle) {
    xml::Element e = xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, condition);
    if (xml::Element* er = e.child("error")) er->add_child(jingle, rtp::kJingleErrors);
    client->send_stanza(e);
  }

  void on_initiate(const xml::Element& iq, CallPtr c, rtp::Action a) {
    std::string from(iq.attr("from"));
    if (c) {
      // After our proceed (or, from a hasty initiator, while ringing): the session we agreed.
      if (c->info.peer == from && (c->session || c->offer)) {
        // XEP-0166 §10: a second session-initiate in a session that has one.
        send_jingle_error(iq, "unexpected-request", "out-of-order");
        return;
      }
      if (!c->info.incoming || c->info.peer != from) {
        client->send_stanza(xmpp::make_error_reply(iq, xmpp::ErrorType::kCancel, "conflict"));
        return;
      }
      client->send_stanza(xmpp::make_iq_result(iq));
      c->offer = std::move(a);
      if (c->info.state == CallState::kAccepted) answer(c);
      return;
    }
    if (!xmpp::Jid::parse(from) || from.empty()) {
      client->send_stanza(xmpp::make_error_reply(iq, xmpp::ErrorType::kModify, "bad-request"));
      return;
    }
    // A session-initiate without a proposal (XEP-0166 §6.3.1: acknowledged first, then the
    // user decides): it rings like a proposal.
    client->send_stanza(xmpp::make_iq_result(iq));
    c = std::make_shared<Call>();
    c->info.id = a.sid;
    c->info.peer = from;
    c->info.incoming = true;
    c->peer_bare = bare_of(from);
    for (const rtp::Content& content : a.contents)
      if (content.description && content.description->media == "video") c->info.video = true;
    c->info.state = CallState::kRinging;
    c->offer = std::move(a);
    calls[c->info.id] = c;
    if (owner->on_incoming) owner->on_incoming(c->info);
  }

  // A proposal from `bare` while we have a call with them. §3.7 tie-breaking: two proposals
  // crossed; the lower id (i;octet) wins, the party that receives the lower one retracts its
  // own, the other rejects the higher one, both with <tie-break/> and <expired/>. §3.8: a new
  // proposal while a call with the same account is set up means that call is an orphan, ended
  // here. True when the proposal goes on to ring.
  bool resolve_conflicts(const rtp::JingleMessage& m, const std::string& from,
                         const std::string& bare) {
    std::vector<CallPtr> same;
    for (const auto& [id, c] : calls)
      if (c->peer_bare == bare) same.push_back(c);
    for (const CallPtr& c : same) {
      const bool unanswered =
          !c->info.incoming && !c->session &&
          (c->info.state == CallState::kProposed || c->info.state == CallState::kRinging);
      if (unanswered) {
        rtp::JingleMessage tb;
        tb.reason = "expired";
        tb.tie_break = true;
        if (m.id < c->info.id) {
          tb.kind = "retract";
          tb.id = c->info.id;
          send_jmi(c->peer_bare, tb);
          end(c, CallEnd{"expired", "both called at once", false, {}});
        } else {
          tb.kind = "reject";
          tb.id = m.id;
          send_jmi(from, tb);
          return false;
        }
      } else if (c->info.state == CallState::kAccepted || c->info.state == CallState::kConnecting ||
                 c->info.state == CallState::kActive) {
        terminate(c, "success", "replaced by a new call");
      }
    }
    return true;
  }

  enum class Via { kDirect, kReceivedCarbon, kSentCarbon };

  bool on_message(const xml::Element& msg) {
    std::string why;
    auto m = rtp::parse_jmi(msg, why);
    if (!m) return !why.empty();  // a malformed JMI element is dropped, not shown
    if (msg.attr("type") == "error") {
      bounced(msg, *m);
      return true;
    }
    handle_jmi(msg, *m, Via::kDirect);
    return true;
  }

  // Our proposal came back as an error (RFC 6120 §8.3: no such account, or one that does not
  // take our messages): nobody will ring, so the call ends now rather than at the caller's
  // ring timeout. XEP-0166's <gone/>, with the stanza error's condition as the text.
  void bounced(const xml::Element& msg, const rtp::JingleMessage& m) {
    CallPtr c = find(m.id);
    auto f = xmpp::Jid::parse(msg.attr("from"));
    if (!c || !f || c->info.incoming || c->session || m.kind != "propose" ||
        f->bare_str() != c->peer_bare)
      return;
    std::string condition = Client::iq_condition(msg);
    end(c, CallEnd{"gone", condition.empty() ? "undefined-condition" : condition, false, {}});
  }

  bool on_carbon(const xml::Element& msg) {
    const xml::Element* wrapper = msg.child("received", kCarbons);
    Via via = Via::kReceivedCarbon;
    if (!wrapper) {
      wrapper = msg.child("sent", kCarbons);
      via = Via::kSentCarbon;
    }
    const xml::Element* fwd = wrapper ? wrapper->child("forwarded", kForward) : nullptr;
    const xml::Element* inner = fwd ? fwd->child("message") : nullptr;
    if (!inner) return false;
    std::string why;
    auto m = rtp::parse_jmi(*inner, why);
    if (!m) return !why.empty() && msg.attr("from") == my_bare();
    // XEP-0280 §11: only our own account sends carbons.
    if (msg.attr("from") != my_bare()) return true;
    handle_jmi(*inner, *m, via);
    return true;
  }

  void handle_jmi(const xml::Element& msg, const rtp::JingleMessage& m, Via via) {
    const std::string from(msg.attr("from"));
    const std::string to(msg.attr("to"));
    if (via == Via::kSentCarbon) {
      // Another device of ours answered a call that rings here too (§3.4, §3.5): stop ringing.
      CallPtr c = find(m.id);
      if (c && c->info.incoming && c->info.state == CallState::kRinging &&
          bare_of(to) == c->peer_bare && (m.kind == "proceed" || m.kind == "reject")) {
        end(c, CallEnd{m.kind == "proceed" ? "answered-elsewhere" : "rejected-elsewhere",
                       "on another device",
                       false,
                       {}});
      }
      return;
    }
    if (via == Via::kReceivedCarbon) {
      // A copy of what the contact sent to another device of ours: only what went to our bare
      // JID (a proposal, its retraction) concerns this one.
      auto t = xmpp::Jid::parse(to);
      if (!t || !t->is_bare()) return;
    }
    auto f = xmpp::Jid::parse(from);
    if (!f || f->is_bare() || f->bare_str() == my_bare()) return;
    CallPtr c = find(m.id);
    if (m.kind == "propose") {
      if (c) return;  // the same proposal again (direct and as a carbon)
      bool audio = std::find(m.media.begin(), m.media.end(), "audio") != m.media.end();
      bool video = std::find(m.media.begin(), m.media.end(), "video") != m.media.end();
      if (!audio && !video) return;
      if (!resolve_conflicts(m, from, f->bare_str())) return;
      c = std::make_shared<Call>();
      c->info.id = m.id;
      c->info.peer = from;
      c->info.incoming = true;
      c->info.video = video;
      c->info.state = CallState::kRinging;
      c->peer_bare = f->bare_str();
      c->jmi = true;
      calls[c->info.id] = c;
      // §8: telling a stranger that a device of ours rings reveals our presence; only those
      // who see it already (a subscription from us) are told.
      const RosterItem* ri = client->roster_item(c->peer_bare);
      if (owner->send_ringing && ri && (ri->subscription == "from" || ri->subscription == "both"))
        send_jmi(*c, from, "ringing");
      if (owner->on_incoming) owner->on_incoming(c->info);
      return;
    }
    if (!c || f->bare_str() != c->peer_bare) return;
    if (m.kind == "retract") {
      if (c->info.incoming && c->info.peer == from && !c->session)
        end(c, CallEnd{m.reason.empty() ? "cancel" : m.reason, m.reason_text, true, {}});
      // §3.7: our proposal lost a tie-break; the contact's rings here instead.
      else if (!c->info.incoming && m.tie_break && !c->session)
        end(c, CallEnd{"expired", "both called at once", true, {}});
    } else if (m.kind == "ringing") {
      if (!c->info.incoming && c->info.state == CallState::kProposed)
        set_state(*c, CallState::kRinging);
    } else if (m.kind == "proceed") {
      if (c->info.incoming ||
          (c->info.state != CallState::kProposed && c->info.state != CallState::kRinging))
        return;  // a second device answering after the first is not taken
      c->info.peer = from;
      set_state(*c, CallState::kAccepted);
      start_session(c);
    } else if (m.kind == "reject") {
      if (!c->info.incoming && !c->session)
        end(c, CallEnd{m.reason.empty() ? "decline" : m.reason, m.reason_text, true, {}});
    } else if (m.kind == "finish") {
      if (c->info.peer == from)
        end(c, CallEnd{m.reason.empty() ? "success" : m.reason, m.reason_text, true, {}});
    }
  }
};

Calls::Calls(Client& client, MediaFactory factory)
    : impl_(std::make_shared<Impl>(*this, client, std::move(factory))) {
  std::weak_ptr<Impl> w = impl_;
  impl_->tokens.push_back(client.add_iq_handler(rtp::kJingle, [w](const xml::Element& iq) {
    auto self = w.lock();
    return self && self->on_jingle_iq(iq);
  }));
  impl_->tokens.push_back(client.add_message_handler(rtp::kJmi, [w](const xml::Element& m) {
    auto self = w.lock();
    return self && self->on_message(m);
  }));
  impl_->tokens.push_back(client.add_message_handler(kCarbons, [w](const xml::Element& m) {
    auto self = w.lock();
    return self && self->on_carbon(m);
  }));
  for (const char* f : {rtp::kJingle, rtp::kRtp, rtp::kRtpAudio, rtp::kIceUdp, rtp::kDtls,
                        rtp::kGrouping, rtp::kRtcpFb, rtp::kSsma, rtp::kJmi})
    client.add_feature(f);
}

Calls::~Calls() {
  // Every call still up ends as a hang-up would, so no peer waits for a device that is gone;
  // without events (the owner is going away).
  impl_->owner = nullptr;
  std::vector<std::string> ids;
  for (const auto& [id, c] : impl_->calls) ids.push_back(id);
  for (const std::string& id : ids) hang_up(id);
  for (HandlerToken t : impl_->tokens) impl_->client->remove_handler(t);
}

std::string Calls::call(const std::string& jid, bool video) {
  auto j = xmpp::Jid::parse(jid);
  if (!j || j->local().empty()) return {};
  auto c = std::make_shared<Call>();
  c->info.id = call_uuid4();
  c->info.peer = j->str();
  c->info.video = video;
  c->info.state = CallState::kProposed;
  c->peer_bare = j->bare_str();
  c->jmi = true;
  impl_->calls[c->info.id] = c;
  rtp::JingleMessage m;
  m.kind = "propose";
  m.id = c->info.id;
  m.media.push_back("audio");
  if (video) m.media.push_back("video");
  impl_->send_jmi(c->info.peer, std::move(m));
  return c->info.id;
}

void Calls::accept(const std::string& id) {
  CallPtr c = impl_->find(id);
  if (!c || !c->info.incoming || c->info.state != CallState::kRinging) return;
  impl_->set_state(*c, CallState::kAccepted);
  if (c->jmi) impl_->send_jmi(*c, c->info.peer, "proceed");
  if (c->offer) impl_->answer(c);
}

void Calls::reject(const std::string& id, const std::string& reason) {
  CallPtr c = impl_->find(id);
  if (!c || !c->info.incoming || c->info.state != CallState::kRinging) return;
  if (c->offer) {
    // Without a proposal the session exists already: XEP-0166 §6.7 terminates it.
    c->session = true;
    c->initiator = c->offer->initiator.empty() ? c->info.peer : c->offer->initiator;
  }
  if (c->jmi) impl_->send_jmi(*c, c->info.peer, "reject", reason);
  if (c->session) {
    rtp::Action t = impl_->action(*c, "session-terminate");
    t.reason = reason;
    impl_->send_jingle(c, t, false);
  }
  impl_->end(c, CallEnd{reason, {}, false, {}});
}

void Calls::hang_up(const std::string& id) {
  CallPtr c = impl_->find(id);
  if (!c) return;
  if (!c->info.incoming && !c->session) {
    // XEP-0353 §3.3: not answered yet, the proposal is retracted on every device.
    impl_->send_jmi(*c, c->peer_bare, "retract", "cancel");
    impl_->end(c, CallEnd{"cancel", {}, false, {}});
    return;
  }
  if (c->info.incoming && c->info.state == CallState::kRinging) {
    reject(id);
    return;
  }
  impl_->terminate(c, c->session ? "success" : "cancel", {});
}

void Calls::hang_up(const std::string& id, const std::string& reason, const std::string& text) {
  CallPtr c = impl_->find(id);
  if (!c || !c->session || reason.empty()) {
    hang_up(id);
    return;
  }
  impl_->terminate(c, reason, text);
}

std::vector<CallInfo> Calls::calls() const {
  std::vector<CallInfo> out;
  for (const auto& [id, c] : impl_->calls) out.push_back(c->info);
  return out;
}

std::optional<CallInfo> Calls::info(const std::string& id) const {
  auto it = impl_->calls.find(id);
  if (it == impl_->calls.end()) return std::nullopt;
  return it->second->info;
}

std::optional<media::Stats> Calls::stats(const std::string& id) const {
  auto it = impl_->calls.find(id);
  if (it == impl_->calls.end() || !it->second->media) return std::nullopt;
  return it->second->media->stats();
}

awaitable<Error> Calls::fetch_ice_servers() {
  constexpr const char* kExtdisco = "urn:xmpp:extdisco:2";
  auto j = xmpp::Jid::parse(impl_->client->bound_jid());
  if (!j) co_return Error{Errc::kDisconnected, "not connected"};
  xml::Element iq("iq", xmpp::ns::kClient);
  iq.set_attr("type", "get").set_attr("to", j->domain());
  iq.add_child("services", kExtdisco);
  Client* client = impl_->client;
  std::optional<xml::Element> r = co_await client->send_iq(std::move(iq));
  std::string cond = Client::iq_condition(r);
  if (!cond.empty())
    co_return Error{cond == "timeout" ? Errc::kTimeout : Errc::kNotFound,
                    "the server's STUN/TURN services (XEP-0215): " + cond};
  std::vector<media::IceServer> servers;
  if (const xml::Element* s = r->child("services", kExtdisco)) {
    for (const xml::Element* e : s->children("service", kExtdisco)) {
      std::string type(e->attr("type"));
      // TURN over TLS ("turns") is not something the engine speaks: left out.
      if (type != "stun" && type != "turn") continue;
      media::IceServer srv;
      srv.type = type;
      srv.host = std::string(e->attr("host"));
      unsigned port = 3478;
      std::string_view p = e->attr("port");
      if (!p.empty()) {
        auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), port);
        if (ec != std::errc() || end != p.data() + p.size() || port == 0 || port > 65535) continue;
      }
      srv.port = static_cast<std::uint16_t>(port);
      if (e->has_attr("transport")) srv.transport = std::string(e->attr("transport"));
      srv.username = std::string(e->attr("username"));
      srv.password = std::string(e->attr("password"));
      if (srv.host.empty() || srv.host.size() > 255) continue;
      servers.push_back(std::move(srv));
      if (servers.size() == 16) break;
    }
  }
  if (servers.empty())
    co_return Error{Errc::kNotFound, "the server offers no STUN or TURN service"};
  config.ice_servers = std::move(servers);
  co_return Error{};
}

}  // namespace kabar::client
