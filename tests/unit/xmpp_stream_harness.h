// A scripted peer for the stream negotiators, in the style of Swiften's ClientSessionTest: the
// script answers what the negotiator wrote, step by step, through the real xml::StreamParser.
// Each conversation is played once to record what the peer sends, then again with every step's
// bytes split in two at every offset, and once byte by byte: every run must log the same events.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "xml/serializer.h"
#include "xmpp/scram.h"
#include "xmpp/stream/negotiator.h"

namespace kabar::xmpp::stream::testing {

// Deterministic "random" bytes: each negotiator gets its own sequence, the same every run.
inline RandomBytes counting_random() {
  auto counter = std::make_shared<unsigned>(0);
  return [counter](std::size_t n) {
    std::string out;
    for (std::size_t i = 0; i < n; ++i) out += static_cast<char>('a' + ((*counter)++ % 26));
    return out;
  };
}

inline std::string describe(const Event& ev) {
  switch (ev.kind) {
    case Event::Kind::kSend:
      return "send " + ev.data;
    case Event::Kind::kStartTls:
      return "starttls";
    case Event::Kind::kRestartStream:
      return "restart";
    case Event::Kind::kNeedScramCredentials:
      return "need-scram " + ev.user + (ev.hash == ScramHash::kSha1 ? " sha1" : " sha256");
    case Event::Kind::kVerifyPlain:
      return "verify-plain " + ev.user + " " + ev.password;
    case Event::Kind::kAuthFailed:
      return "auth-failed " + ev.user + " " + ev.condition;
    case Event::Kind::kAuthenticated:
      return "authenticated " + ev.user;
    case Event::Kind::kBindRequest:
      return "bind-request " + ev.jid;
    case Event::Kind::kStanza:
      return "stanza " + xml::serialize(*ev.element);
    case Event::Kind::kBound:
      return "bound " + ev.jid;
    case Event::Kind::kReady:
      return "ready";
    case Event::Kind::kClosed:
      return "closed " + ev.condition + (ev.message.empty() ? "" : ": " + ev.message);
  }
  return "?";
}

// The text between `open` and `close` in the last place `open` occurs; empty if absent.
inline std::string last_between(std::string_view s, std::string_view open, std::string_view close) {
  std::size_t p = s.rfind(open);
  if (p == std::string_view::npos) return {};
  p += open.size();
  std::size_t e = s.find(close, p);
  if (e == std::string_view::npos) return {};
  return std::string(s.substr(p, e - p));
}

struct Outcome {
  std::vector<std::string> log;  // every event, in order
  std::string wire;              // every byte the negotiator wrote
  bool contains(std::string_view entry) const {
    for (const std::string& e : log) {
      if (e == entry) return true;
    }
    return false;
  }
  bool closed() const {
    for (const std::string& e : log) {
      if (e.starts_with("closed")) return true;
    }
    return false;
  }
  bool wrote(std::string_view bytes) const { return wire.find(bytes) != std::string::npos; }
};

// One step of a script: given what the negotiator wrote since the previous step, the bytes the
// peer sends next.
using Step = std::function<std::string(const std::string& written)>;
// Answers a question event (server role: credentials, PLAIN, bind).
using Answer = std::function<void(Negotiator&, const Event&)>;

// A step that answers whatever was written with `bytes`.
inline Step send(std::string bytes) {
  return [bytes](const std::string&) { return bytes; };
}

// The server's answer to the last bind request written: `jid` bound.
inline Step bind_result(std::string jid) {
  return [jid](const std::string& written) {
    std::string id = last_between(written, "id='", "'");
    return "<iq type='result' id='" + id +
           "'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>" + jid + "</jid></bind></iq>";
  };
}

// A server's stream header (example.com, stream id s1).
inline constexpr std::string_view kServerHeader =
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='example.com' version='1.0'>";

struct Conversation {
  std::function<std::unique_ptr<Negotiator>()> make;
  std::function<void(Negotiator&)> start;  // e.g. ClientNegotiator::start(); may be empty
  Answer answer;
  // Where kStartTls is answered: the channel binding the "handshake" yields.
  std::string cb_type;
  std::string cb_data;
};

// Plays `conv` against `inputs` (recorded already) or, when `script` is given, records them.
// `split_step`/`split_at`: that step's bytes go in two feeds cut there; split_at 0 means byte
// by byte for every step.
inline Outcome play(const Conversation& conv, std::vector<std::string>& inputs,
                    const std::vector<Step>* script, std::size_t split_step, std::size_t split_at) {
  Outcome out;
  std::unique_ptr<Negotiator> n = conv.make();
  ParsedInput input(*n);
  std::string written;
  bool tls_started = false;  // the rest of the current read was in the clear: dropped
  auto drain = [&] {
    while (n->has_events()) {
      for (Event& ev : n->take_events()) {
        out.log.push_back(describe(ev));
        switch (ev.kind) {
          case Event::Kind::kSend:
            written += ev.data;
            out.wire += ev.data;
            break;
          case Event::Kind::kStartTls:
            n->tls_established(conv.cb_type, conv.cb_data);  // the handshake, done
            tls_started = true;
            break;
          case Event::Kind::kRestartStream:
            input.restart();
            break;
          case Event::Kind::kNeedScramCredentials:
          case Event::Kind::kVerifyPlain:
          case Event::Kind::kBindRequest:
            if (conv.answer) conv.answer(*n, ev);
            break;
          default:
            break;
        }
      }
    }
  };
  if (conv.start) conv.start(*n);
  drain();
  for (std::size_t step = 0;; ++step) {
    if (script != nullptr) {
      if (step >= script->size() || n->closed()) break;
      inputs.push_back((*script)[step](written));
    } else if (step >= inputs.size()) {
      break;
    }
    written.clear();
    tls_started = false;
    const std::string& bytes = inputs[step];
    if (split_at == 0 && script == nullptr) {
      for (std::size_t i = 0; i < bytes.size() && !tls_started; ++i) {
        input.feed(std::string_view(bytes).substr(i, 1));
        drain();
      }
    } else if (step == split_step && split_at < bytes.size()) {
      input.feed(std::string_view(bytes).substr(0, split_at));
      drain();
      if (!tls_started) input.feed(std::string_view(bytes).substr(split_at));
      drain();
    } else {
      input.feed(bytes);
      drain();
    }
  }
  return out;
}

// Plays `script` whole, then split at every byte of every step, then byte by byte; every run
// must log what the whole one did. Returns the whole run's outcome.
inline Outcome converse(const Conversation& conv, const std::vector<Step>& script) {
  std::vector<std::string> inputs;
  Outcome whole = play(conv, inputs, &script, static_cast<std::size_t>(-1), 1);
  for (std::size_t step = 0; step < inputs.size(); ++step) {
    for (std::size_t at = 1; at < inputs[step].size(); ++at) {
      Outcome o = play(conv, inputs, nullptr, step, at);
      if (o.log != whole.log) {
        ADD_FAILURE() << "step " << step << " split at " << at << " of '" << inputs[step]
                      << "' logs differently";
        return whole;
      }
    }
  }
  Outcome bytewise = play(conv, inputs, nullptr, 0, 0);
  EXPECT_EQ(bytewise.log, whole.log) << "byte by byte";
  return whole;
}

inline std::string log_text(const Outcome& o) {
  std::string s;
  for (const std::string& e : o.log) s += e + "\n";
  return s;
}

}  // namespace kabar::xmpp::stream::testing
