// Calls' signalling (XEP-0353, XEP-0166/0167/0176/0320) driven through the client session's
// dispatch() with no connection and a scripted media engine: what is sent stays in the
// session's write queue, and the engine records what the signalling told it.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "client/client_impl.h"
#include "client_stanzas.h"
#include "kabar/call.h"
#include "kabar/filetransfer.h"
#include "xml/serializer.h"
#include "xmpp/jid.h"

namespace kabar::client {
namespace {

using testing::parse_stanzas;
using testing::reply_condition;

constexpr const char* kJingle = "urn:xmpp:jingle:1";
constexpr const char* kRtp = "urn:xmpp:jingle:apps:rtp:1";
constexpr const char* kIce = "urn:xmpp:jingle:transports:ice-udp:1";
constexpr const char* kDtls = "urn:xmpp:jingle:apps:dtls:0";
constexpr const char* kJmi = "urn:xmpp:jingle-message:0";
constexpr const char* kFp =
    "02:1A:CC:54:27:AB:EB:9C:53:3F:3E:4B:65:2E:7D:46:3F:54:42:CD:54:F1:7A:03:A2:7D:F9:B0:7F:46:19:"
    "B2";

// What the signalling did to one media session.
struct Engine {
  media::Config config;
  media::Callbacks callbacks;
  std::optional<media::IceCredentials> remote_credentials;
  std::optional<media::Fingerprint> remote_fingerprint;
  std::vector<media::Stream> streams;
  std::vector<media::IceCandidate> candidates;  // added after set_remote
  std::vector<media::IceCandidate> early;       // added before it
  bool gathering = false;
  bool stopped = false;
};

class FakeSession : public media::Session {
 public:
  explicit FakeSession(std::shared_ptr<Engine> e) : e_(std::move(e)) {}
  media::IceCredentials local_credentials() const override {
    return {"kbuf", "kabarpasswordkabarpassword"};
  }
  media::Fingerprint local_fingerprint() const override {
    return {"sha-256", "actpass", "AB:CD:EF"};
  }
  std::vector<media::Codec> supported_codecs(media::MediaKind kind) const override {
    if (kind == media::MediaKind::kAudio)
      return {media::Codec{111, "opus", 48000, 2, {{"useinbandfec", "1"}}, {}}};
    return {media::Codec{96, "VP8", 90000, 1, {}, {{"nack", "pli"}, {"ccm", "fir"}}},
            media::Codec{97, "rtx", 90000, 1, {{"apt", "96"}}, {}}};
  }
  void gather() override { e_->gathering = true; }
  void set_remote(const media::IceCredentials& c, const media::Fingerprint& f,
                  std::vector<media::Stream> s) override {
    e_->remote_credentials = c;
    e_->remote_fingerprint = f;
    e_->streams = std::move(s);
  }
  void add_remote_candidate(const media::IceCandidate& c) override {
    (e_->remote_credentials ? e_->candidates : e_->early).push_back(c);
  }
  void remote_gathering_done() override {}
  media::Stats stats() const override { return {}; }
  void stop() override { e_->stopped = true; }

 private:
  std::shared_ptr<Engine> e_;
};

class CallTest : public ::testing::Test {
 protected:
  CallTest() {
    impl.roster.push_back(RosterItem{"bob@example.org", "Bob", "both", false, {}});
    calls = std::make_unique<Calls>(client, [this](media::Config c, media::Callbacks cb) {
      auto e = std::make_shared<Engine>();
      e->config = std::move(c);
      e->callbacks = std::move(cb);
      engines.push_back(e);
      return std::make_unique<FakeSession>(e);
    });
    calls->on_incoming = [this](const CallInfo& i) { incoming.push_back(i); };
    calls->on_state = [this](const CallInfo& i) { states.push_back(i.state); };
    calls->on_ended = [this](const CallInfo& i, const CallEnd& e) { ended.emplace_back(i, e); };
  }

  void receive(const std::string& xml) {
    session.dispatch(xml);
    io.poll();
    io.restart();
  }

  // Everything sent since the last call.
  std::vector<xml::Element> sent() {
    io.poll();
    io.restart();
    return session.take();
  }

  static const xml::Element* jingle(const xml::Element& iq) { return iq.child("jingle", kJingle); }

  static std::string reason(const xml::Element& iq) {
    const xml::Element* j = jingle(iq);
    const xml::Element* r = j ? j->child("reason", kJingle) : nullptr;
    const xml::Element* c = r ? r->first_child() : nullptr;
    return c ? c->name() : "";
  }

  // A browser's offer for `sid`: Opus 111 (and PCMU) on content "0", actpass, BUNDLE, no
  // candidates (they trickle).
  static std::string browser_initiate(const std::string& sid, const std::string& codecs =
                                                                  "<payload-type id='111' "
                                                                  "name='opus' clockrate='48000' "
                                                                  "channels='2'/><payload-type "
                                                                  "id='0' name='PCMU' "
                                                                  "clockrate='8000'/>") {
    return "<iq type='set' id='init1' from='bob@example.org/browser' to='alice@example.org/desk'>"
           "<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='" +
           sid +
           "' initiator='bob@example.org/browser'>"
           "<content creator='initiator' name='0' senders='both'>"
           "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>" +
           codecs +
           "<source xmlns='urn:xmpp:jingle:apps:rtp:ssma:0' ssrc='4242'/><rtcp-mux/>"
           "</description>"
           "<transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='Bufr' "
           "pwd='browserpasswordbrowserpw'>"
           "<fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0' hash='sha-256' setup='actpass'>" +
           std::string(kFp) +
           "</fingerprint></transport></content>"
           "<group xmlns='urn:xmpp:jingle:apps:grouping:0' semantics='BUNDLE'>"
           "<content name='0'/></group></jingle></iq>";
  }

  // The browser's ICE transport with its DTLS fingerprint (`setup` actpass in an offer).
  static std::string browser_transport(const std::string& setup, const std::string& fp = kFp) {
    return "<transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='Bufr' "
           "pwd='browserpasswordbrowserpw'>"
           "<fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0' hash='sha-256' setup='" +
           setup + "'>" + fp + "</fingerprint></transport>";
  }

  // A browser's audio (Opus) and video offer for `sid`, BUNDLEd, as content names "0" and "1":
  // `audio_senders` the audio content's senders attribute (none when empty), `video` its
  // payload types and anything else inside its description.
  static std::string browser_av_offer(const std::string& sid, const std::string& audio_senders,
                                      const std::string& video) {
    std::string senders = audio_senders.empty() ? "" : " senders='" + audio_senders + "'";
    return "<iq type='set' id='av' from='bob@example.org/browser'>"
           "<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='" +
           sid +
           "' initiator='bob@example.org/browser'>"
           "<content creator='initiator' name='0'" +
           senders +
           "><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>"
           "<payload-type id='111' name='opus' clockrate='48000' channels='2'/><rtcp-mux/>"
           "</description>" +
           browser_transport("actpass", "AA:BB") +
           "</content><content creator='initiator' name='1'>"
           "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='video'>" +
           video + "<rtcp-mux/></description>" + browser_transport("actpass", "AA:BB") +
           "</content><group xmlns='urn:xmpp:jingle:apps:grouping:0' semantics='BUNDLE'>"
           "<content name='0'/><content name='1'/></group></jingle></iq>";
  }

  static std::string transport_info(const std::string& sid, const std::string& from,
                                    const std::string& port, const std::string& id = "ti1") {
    return "<iq type='set' id='" + id + "' from='" + from +
           "' to='alice@example.org/desk'>"
           "<jingle xmlns='urn:xmpp:jingle:1' action='transport-info' sid='" +
           sid +
           "'><content creator='initiator' name='0'>"
           "<transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='Bufr' "
           "pwd='browserpasswordbrowserpw'>"
           "<candidate component='1' foundation='842163049' ip='192.168.1.5' port='" +
           port +
           "' priority='2122260223' protocol='udp' type='host'/>"
           "<candidate component='1' foundation='1' ip='192.168.1.5' port='9' "
           "priority='1518280447' protocol='tcp' type='host' tcptype='active'/>"
           "</transport></content></jingle></iq>";
  }

  static std::string jmi(const std::string& kind, const std::string& id, const std::string& from,
                         const std::string& to, const std::string& inside = "") {
    return "<message type='chat' from='" + from + "' to='" + to + "'><" + kind +
           " xmlns='urn:xmpp:jingle-message:0' id='" + id + "'>" + inside + "</" + kind +
           "><store xmlns='urn:xmpp:hints'/></message>";
  }

  static std::string carbon(const std::string& dir, const std::string& from,
                            const std::string& inner) {
    return "<message type='chat' from='" + from + "' to='alice@example.org/desk'><" + dir +
           " xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>" +
           // The inner message is in jabber:client like the stream around it.
           inner + "</forwarded></" + dir + "></message>";
  }

  // An incoming proposal from bob/browser, rung here.
  std::string ring(const std::string& id = "call-1") {
    receive(jmi("propose", id, "bob@example.org/browser", "alice@example.org",
                "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/>"));
    return id;
  }

  asio::io_context io;
  testing::OfflineSession session{io, testing::alice_options()};
  Client& client = session.client;
  Client::Impl& impl = session.impl;
  std::unique_ptr<Calls> calls;
  std::vector<std::shared_ptr<Engine>> engines;
  std::vector<CallInfo> incoming;
  std::vector<CallState> states;
  std::vector<std::pair<CallInfo, CallEnd>> ended;
};

TEST_F(CallTest, OutgoingCallFromProposalToHangUp) {
  std::string id = calls->call("bob@example.org");
  ASSERT_FALSE(id.empty());
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  // XEP-0353 §3.1: to the bare JID, type chat, a <store/> hint, one description per media.
  EXPECT_EQ(out[0].name(), "message");
  EXPECT_EQ(out[0].attr("to"), "bob@example.org");
  EXPECT_EQ(out[0].attr("type"), "chat");
  EXPECT_NE(out[0].child("store", "urn:xmpp:hints"), nullptr);
  const xml::Element* p = out[0].child("propose", kJmi);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->attr("id"), id);
  ASSERT_EQ(p->children("description", kRtp).size(), 1u);
  EXPECT_EQ(p->child("description", kRtp)->attr("media"), "audio");

  receive(jmi("ringing", id, "bob@example.org/phone", "alice@example.org/desk"));
  EXPECT_EQ(calls->info(id)->state, CallState::kRinging);
  receive(jmi("proceed", id, "bob@example.org/phone", "alice@example.org/desk"));
  EXPECT_EQ(calls->info(id)->peer, "bob@example.org/phone");

  ASSERT_EQ(engines.size(), 1u);
  Engine& e = *engines[0];
  EXPECT_TRUE(e.config.controlling);  // RFC 8445 §6.1.1: the initiator
  EXPECT_TRUE(e.gathering);
  out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].attr("to"), "bob@example.org/phone");
  const xml::Element* j = jingle(out[0]);
  ASSERT_NE(j, nullptr);
  EXPECT_EQ(j->attr("action"), "session-initiate");
  EXPECT_EQ(j->attr("sid"), id);  // §3.5: the proposal's id
  EXPECT_EQ(j->attr("initiator"), "alice@example.org/desk");
  const xml::Element* c = j->child("content", kJingle);
  ASSERT_NE(c, nullptr);
  const xml::Element* pt = c->child("description", kRtp)->child("payload-type", kRtp);
  EXPECT_EQ(pt->attr("name"), "opus");
  EXPECT_EQ(pt->attr("id"), "111");
  EXPECT_NE(c->child("description", kRtp)->child("rtcp-mux", kRtp), nullptr);
  const xml::Element* t = c->child("transport", kIce);
  EXPECT_EQ(t->attr("ufrag"), "kbuf");
  EXPECT_EQ(t->child("fingerprint", kDtls)->attr("setup"), "actpass");
  EXPECT_NE(j->child("group", "urn:xmpp:jingle:apps:grouping:0"), nullptr);
  std::string init_id(out[0].attr("id"));
  receive("<iq type='result' id='" + init_id + "' from='bob@example.org/phone'/>");

  // Our candidates trickle, one per transport-info.
  e.callbacks.local_candidate(
      media::IceCandidate{"1", 1, "udp", 2130706431, "10.0.0.1", 40000, "host", "", 0, "", 0});
  out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(jingle(out[0])->attr("action"), "transport-info");
  const xml::Element* cand =
      jingle(out[0])->child("content", kJingle)->child("transport", kIce)->child("candidate", kIce);
  ASSERT_NE(cand, nullptr);
  EXPECT_EQ(cand->attr("port"), "40000");

  // A peer candidate before session-accept waits for it.
  receive(transport_info(id, "bob@example.org/phone", "50000"));
  out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].attr("type"), "result");
  EXPECT_FALSE(e.remote_credentials);
  EXPECT_TRUE(e.early.empty());

  receive(
      "<iq type='set' id='acc1' from='bob@example.org/phone' to='alice@example.org/desk'>"
      "<jingle xmlns='urn:xmpp:jingle:1' action='session-accept' sid='" +
      id +
      "' responder='bob@example.org/phone'>"
      "<content creator='initiator' name='audio'>"
      "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>"
      "<payload-type id='111' name='opus' clockrate='48000' channels='2'/><rtcp-mux/>"
      "</description>" +
      browser_transport("active") + "</content></jingle></iq>");
  out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].attr("type"), "result");
  ASSERT_TRUE(e.remote_credentials);
  EXPECT_EQ(e.remote_credentials->ufrag, "Bufr");
  EXPECT_EQ(e.remote_fingerprint->setup, "active");
  EXPECT_EQ(e.remote_fingerprint->value, kFp);
  ASSERT_EQ(e.streams.size(), 1u);
  EXPECT_EQ(e.streams[0].mid, "audio");
  ASSERT_EQ(e.streams[0].codecs.size(), 1u);
  EXPECT_EQ(e.streams[0].codecs[0].payload_type, 111);
  ASSERT_EQ(e.candidates.size(), 1u);  // the buffered one, the TCP one dropped
  EXPECT_EQ(e.candidates[0].port, 50000);
  EXPECT_EQ(calls->info(id)->state, CallState::kConnecting);

  e.callbacks.connected();
  io.poll();
  io.restart();
  EXPECT_EQ(calls->info(id)->state, CallState::kActive);
  EXPECT_EQ(states, (std::vector<CallState>{CallState::kRinging, CallState::kAccepted,
                                            CallState::kConnecting, CallState::kActive}));

  calls->hang_up(id);
  out = sent();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(jingle(out[0])->attr("action"), "session-terminate");
  EXPECT_EQ(reason(out[0]), "success");
  EXPECT_NE(out[1].child("finish", kJmi), nullptr);  // XEP-0353 §3.6
  EXPECT_EQ(out[1].attr("to"), "bob@example.org/phone");
  EXPECT_TRUE(e.stopped);
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0].second.reason, "success");
  EXPECT_FALSE(ended[0].second.by_peer);
  EXPECT_TRUE(calls->calls().empty());
}

// A hang-up with our own reason (kabar call's --connect-timeout): the contact is told it in the
// session-terminate and the finish; before a session exists it is a plain retraction.
TEST_F(CallTest, HangUpWithAReason) {
  std::string early = calls->call("bob@example.org");
  sent();
  calls->hang_up(early, "connectivity-error", "no media path");
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_NE(out[0].child("retract", kJmi), nullptr);
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0].second.reason, "cancel");

  std::string id = calls->call("bob@example.org");
  sent();
  receive(jmi("proceed", id, "bob@example.org/phone", "alice@example.org/desk"));
  sent();  // the session-initiate
  calls->hang_up(id, "connectivity-error", "no media path");
  out = sent();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(jingle(out[0])->attr("action"), "session-terminate");
  EXPECT_EQ(reason(out[0]), "connectivity-error");
  const xml::Element* finish = out[1].child("finish", kJmi);
  ASSERT_NE(finish, nullptr);
  ASSERT_EQ(ended.size(), 2u);
  EXPECT_EQ(ended[1].second.reason, "connectivity-error");
  EXPECT_EQ(ended[1].second.text, "no media path");
  EXPECT_FALSE(ended[1].second.by_peer);
}

TEST_F(CallTest, OutgoingVideoProposesBothMedia) {
  std::string id = calls->call("bob@example.org", true);
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].child("propose", kJmi)->children("description", kRtp).size(), 2u);
  receive(jmi("proceed", id, "bob@example.org/phone", "alice@example.org/desk"));
  out = sent();
  ASSERT_EQ(out.size(), 1u);
  auto contents = jingle(out[0])->children("content", kJingle);
  ASSERT_EQ(contents.size(), 2u);
  EXPECT_EQ(contents[1]->child("description", kRtp)->attr("media"), "video");
  EXPECT_EQ(jingle(out[0])->child("group", "urn:xmpp:jingle:apps:grouping:0")->children().size(),
            2u);
  // XEP-0339: the offer names a distinct SSRC per stream.
  std::vector<std::string> ssrcs;
  for (const xml::Element* c : contents) {
    const xml::Element* src =
        c->child("description", kRtp)->child("source", "urn:xmpp:jingle:apps:rtp:ssma:0");
    ASSERT_NE(src, nullptr);
    ssrcs.emplace_back(src->attr("ssrc"));
  }
  EXPECT_NE(ssrcs[0], ssrcs[1]);
  EXPECT_NE(ssrcs[0], "0");
}

TEST_F(CallTest, IncomingProposalRingsAndIsAccepted) {
  std::string id = ring();
  ASSERT_EQ(incoming.size(), 1u);
  EXPECT_EQ(incoming[0].peer, "bob@example.org/browser");
  EXPECT_TRUE(incoming[0].incoming);
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);  // §3.2: ringing, to the initiator's full JID
  EXPECT_NE(out[0].child("ringing", kJmi), nullptr);
  EXPECT_EQ(out[0].attr("to"), "bob@example.org/browser");
  EXPECT_EQ(out[0].attr("type"), "chat");

  calls->accept(id);
  out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_NE(out[0].child("proceed", kJmi), nullptr);
  EXPECT_NE(out[0].child("store", "urn:xmpp:hints"), nullptr);
  EXPECT_TRUE(engines.empty());

  receive(browser_initiate(id));
  ASSERT_EQ(engines.size(), 1u);
  Engine& e = *engines[0];
  EXPECT_FALSE(e.config.controlling);
  ASSERT_TRUE(e.remote_fingerprint);
  EXPECT_EQ(e.remote_fingerprint->setup, "actpass");
  ASSERT_EQ(e.streams.size(), 1u);
  EXPECT_EQ(e.streams[0].mid, "0");
  EXPECT_EQ(e.streams[0].remote_ssrc, 4242u);
  ASSERT_EQ(e.streams[0].codecs.size(), 1u);  // PCMU is not ours
  EXPECT_EQ(e.streams[0].codecs[0].name, "opus");
  EXPECT_TRUE(e.gathering);
  out = sent();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].attr("type"), "result");
  const xml::Element* j = jingle(out[1]);
  ASSERT_NE(j, nullptr);
  EXPECT_EQ(j->attr("action"), "session-accept");
  EXPECT_EQ(j->attr("responder"), "alice@example.org/desk");
  const xml::Element* c = j->child("content", kJingle);
  EXPECT_EQ(c->attr("name"), "0");  // the offer's content names
  auto pts = c->child("description", kRtp)->children("payload-type", kRtp);
  ASSERT_EQ(pts.size(), 1u);
  EXPECT_EQ(pts[0]->attr("id"), "111");
  // RFC 5763 §5 / XEP-0320: actpass is answered with active.
  EXPECT_EQ(c->child("transport", kIce)->child("fingerprint", kDtls)->attr("setup"), "active");
  EXPECT_NE(j->child("group", "urn:xmpp:jingle:apps:grouping:0"), nullptr);

  // The peer ends it.
  receive(
      "<iq type='set' id='t1' from='bob@example.org/browser'>"
      "<jingle xmlns='urn:xmpp:jingle:1' action='session-terminate' sid='" +
      id + "'><reason><busy/><text>gone</text></reason></jingle></iq>");
  out = sent();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].attr("type"), "result");
  EXPECT_NE(out[1].child("finish", kJmi), nullptr);
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0].second.reason, "busy");
  EXPECT_EQ(ended[0].second.text, "gone");
  EXPECT_TRUE(ended[0].second.by_peer);
  EXPECT_TRUE(e.stopped);
}

TEST_F(CallTest, InitiateWithoutProposalRingsAndBuffersCandidates) {
  receive(browser_initiate("direct-1"));
  ASSERT_EQ(incoming.size(), 1u);
  EXPECT_EQ(incoming[0].id, "direct-1");
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].attr("type"), "result");  // XEP-0166 §6.3.1: acknowledged first
  // Candidates one per transport-info, while it rings.
  receive(transport_info("direct-1", "bob@example.org/browser", "50001", "a"));
  receive(transport_info("direct-1", "bob@example.org/browser", "50002", "b"));
  out = sent();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].attr("type"), "result");
  EXPECT_TRUE(engines.empty());

  calls->accept("direct-1");
  ASSERT_EQ(engines.size(), 1u);
  Engine& e = *engines[0];
  EXPECT_TRUE(e.early.empty());  // none before set_remote
  ASSERT_EQ(e.candidates.size(), 2u);
  EXPECT_EQ(e.candidates[0].port, 50001);
  EXPECT_EQ(e.candidates[1].port, 50002);
  EXPECT_EQ(e.candidates[0].id, "");  // browsers send none
  out = sent();
  ASSERT_EQ(out.size(), 1u);  // no proceed without a proposal: the session-accept only
  EXPECT_EQ(jingle(out[0])->attr("action"), "session-accept");
  // After set_remote, candidates go straight on.
  receive(transport_info("direct-1", "bob@example.org/browser", "50003", "c"));
  EXPECT_EQ(e.candidates.size(), 3u);
}

TEST_F(CallTest, NoCommonCodecEndsWithFailedApplication) {
  std::string id = ring();
  calls->accept(id);
  sent();
  receive(browser_initiate(id, "<payload-type id='0' name='PCMU' clockrate='8000'/>"));
  auto out = sent();
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].attr("type"), "result");
  EXPECT_EQ(jingle(out[1])->attr("action"), "session-terminate");
  // XEP-0167 §6.2: "SHOULD terminate the session and include a Jingle reason of
  // <failed-application/>".
  EXPECT_EQ(reason(out[1]), "failed-application");
  EXPECT_NE(out[2].child("finish", kJmi), nullptr);
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0].second.reason, "failed-application");
  EXPECT_FALSE(ended[0].second.by_peer);
}

TEST_F(CallTest, TransportInfoForAnUnknownSession) {
  receive(transport_info("nosuch", "bob@example.org/browser", "50000"));
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].attr("type"), "error");
  EXPECT_EQ(out[0].attr("id"), "ti1");
  EXPECT_EQ(reply_condition(out[0]), "item-not-found");
  // XEP-0166 §7.2.1
  EXPECT_NE(out[0].child("error")->child("unknown-session", "urn:xmpp:jingle:errors:1"), nullptr);

  // A known session, but from someone else than its peer: unknown to them.
  receive(browser_initiate("s-2"));
  sent();
  receive(transport_info("s-2", "mallory@example.org/x", "50000"));
  out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(reply_condition(out[0]), "item-not-found");
}

TEST_F(CallTest, FingerprintMismatchEndsWithSecurityError) {
  receive(browser_initiate("s-3"));
  calls->accept("s-3");
  sent();
  ASSERT_EQ(engines.size(), 1u);
  engines[0]->callbacks.failed("DTLS: the peer's certificate does not match its fingerprint");
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(jingle(out[0])->attr("action"), "session-terminate");
  EXPECT_EQ(reason(out[0]), "security-error");
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0].second.reason, "security-error");
  EXPECT_TRUE(engines[0]->stopped);
}

TEST_F(CallTest, IceFailureEndsWithFailedTransport) {
  receive(browser_initiate("s-4"));
  calls->accept("s-4");
  sent();
  engines[0]->callbacks.failed("ICE: no candidate pair succeeded");
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(reason(out[0]), "failed-transport");
}

TEST_F(CallTest, AnsweredOnAnotherDeviceStopsRinging) {
  std::string id = ring();
  sent();
  // A forged carbon (not from our bare JID) changes nothing.
  receive(carbon("sent", "bob@example.org",
                 jmi("proceed", id, "alice@example.org/phone", "bob@example.org/browser")));
  EXPECT_TRUE(ended.empty());
  // XEP-0353 §3.4 with XEP-0280: our phone's proceed, seen as a sent carbon.
  receive(carbon("sent", "alice@example.org",
                 jmi("proceed", id, "alice@example.org/phone", "bob@example.org/browser")));
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0].second.reason, "answered-elsewhere");
  EXPECT_TRUE(sent().empty());  // nothing said to the caller from here
  EXPECT_TRUE(calls->calls().empty());
}

TEST_F(CallTest, RejectedOnAnotherDeviceStopsRinging) {
  std::string id = ring();
  sent();
  receive(carbon("sent", "alice@example.org",
                 jmi("reject", id, "alice@example.org/phone", "bob@example.org/browser",
                     "<reason xmlns='urn:xmpp:jingle:1'><busy/></reason>")));
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0].second.reason, "rejected-elsewhere");
}

TEST_F(CallTest, ProposalSeenAsAReceivedCarbonRings) {
  // The server gave the proposal to a device with a higher priority; this one gets the copy.
  receive(carbon("received", "alice@example.org",
                 jmi("propose", "c-9", "bob@example.org/browser", "alice@example.org",
                     "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/>")));
  ASSERT_EQ(incoming.size(), 1u);
  EXPECT_EQ(incoming[0].id, "c-9");
  // And its retraction, copied the same way, stops it.
  receive(carbon("received", "alice@example.org",
                 jmi("retract", "c-9", "bob@example.org/browser", "alice@example.org")));
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0].second.reason, "cancel");
  EXPECT_TRUE(ended[0].second.by_peer);
  // A copy of what the contact sent to another of our devices only is not for this one.
  receive(carbon("received", "alice@example.org",
                 jmi("propose", "c-10", "bob@example.org/browser", "alice@example.org/phone",
                     "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/>")));
  EXPECT_EQ(incoming.size(), 1u);
}

TEST_F(CallTest, NoRingingToStrangers) {
  // XEP-0353 §8: mallory does not see our presence, and our ringing would tell her.
  receive(jmi("propose", "m-1", "mallory@example.org/x", "alice@example.org",
              "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/>"));
  ASSERT_EQ(incoming.size(), 1u);
  EXPECT_TRUE(sent().empty());
  calls->accept("m-1");  // the user's own choice
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_NE(out[0].child("proceed", kJmi), nullptr);
}

// RFC 6120 §8.3: the proposal comes back as an error (no such account): the call ends at once
// with XEP-0166's <gone/>, not at the caller's ring timeout. A stranger's copy of such an error
// ends nothing.
TEST_F(CallTest, ABouncedProposalEndsTheCall) {
  std::string id = calls->call("bob@example.org");
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  std::string propose = xml::serialize(*out[0].child("propose", kJmi));
  auto bounce = [&](const std::string& from) {
    return "<message type='error' from='" + from + "' to='alice@example.org/desk'>" + propose +
           "<error type='cancel'><service-unavailable "
           "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>";
  };
  receive(bounce("mallory@example.net"));
  EXPECT_TRUE(ended.empty());
  receive(bounce("bob@example.org"));
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0].first.id, id);
  EXPECT_EQ(ended[0].second.reason, "gone");
  EXPECT_EQ(ended[0].second.text, "service-unavailable");
  EXPECT_FALSE(ended[0].second.by_peer);
  EXPECT_TRUE(sent().empty());  // nothing goes back to an address that bounces
  EXPECT_TRUE(calls->calls().empty());
}

TEST_F(CallTest, RejectAndRetract) {
  std::string id = ring();
  sent();
  calls->reject(id, "busy");
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  const xml::Element* r = out[0].child("reject", kJmi);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(out[0].attr("to"), "bob@example.org/browser");
  EXPECT_NE(r->child("reason", kJingle)->child("busy", kJingle), nullptr);
  ASSERT_EQ(ended.size(), 1u);

  // Our own proposal, retracted before anyone answers (§3.3: <cancel/>, to the bare JID).
  std::string mine = calls->call("bob@example.org");
  sent();
  calls->hang_up(mine);
  out = sent();
  ASSERT_EQ(out.size(), 1u);
  const xml::Element* x = out[0].child("retract", kJmi);
  ASSERT_NE(x, nullptr);
  EXPECT_EQ(out[0].attr("to"), "bob@example.org");
  EXPECT_NE(x->child("reason", kJingle)->child("cancel", kJingle), nullptr);
  ASSERT_EQ(ended.size(), 2u);
  EXPECT_EQ(ended[1].second.reason, "cancel");
}

TEST_F(CallTest, ThePeersRejectAndStrangersAnswers) {
  std::string id = calls->call("bob@example.org");
  sent();
  // A proceed from someone else than the callee is not an answer.
  receive(jmi("proceed", id, "mallory@example.org/x", "alice@example.org/desk"));
  EXPECT_TRUE(engines.empty());
  EXPECT_EQ(calls->info(id)->state, CallState::kProposed);
  receive(jmi("reject", id, "bob@example.org/phone", "alice@example.org/desk",
              "<reason xmlns='urn:xmpp:jingle:1'><busy/><text>Busy</text></reason>"));
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0].second.reason, "busy");
  EXPECT_EQ(ended[0].second.text, "Busy");
  EXPECT_TRUE(ended[0].second.by_peer);
}

TEST_F(CallTest, SessionInitiateRefusedEndsTheCall) {
  std::string id = calls->call("bob@example.org");
  sent();
  receive(jmi("proceed", id, "bob@example.org/phone", "alice@example.org/desk"));
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  receive("<iq type='error' id='" + std::string(out[0].attr("id")) +
          "' from='bob@example.org/phone'><error type='cancel'><service-unavailable "
          "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>");
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_NE(ended[0].second.text.find("service-unavailable"), std::string::npos);
}

TEST_F(CallTest, AnswerWithoutCommonCodecEndsTheOutgoingCall) {
  std::string id = calls->call("bob@example.org");
  receive(jmi("proceed", id, "bob@example.org/phone", "alice@example.org/desk"));
  sent();
  receive(
      "<iq type='set' id='acc1' from='bob@example.org/phone'>"
      "<jingle xmlns='urn:xmpp:jingle:1' action='session-accept' sid='" +
      id +
      "'><content creator='initiator' name='audio'>"
      "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>"
      "<payload-type id='0' name='PCMU' clockrate='8000'/></description>"
      "<transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='u' pwd='p'/>"
      "</content></jingle></iq>");
  auto out = sent();
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(reason(out[1]), "failed-application");
  ASSERT_EQ(ended.size(), 1u);
}

// Our video call, answered with the video content declined (senders='none') and audio that
// only we send (senders='initiator'): the engine gets the audio stream, sending; no video.
TEST_F(CallTest, AnswerThatDeclinesAContent) {
  std::string id = calls->call("bob@example.org", true);
  receive(jmi("proceed", id, "bob@example.org/phone", "alice@example.org/desk"));
  sent();
  receive(
      "<iq type='set' id='acc1' from='bob@example.org/phone'>"
      "<jingle xmlns='urn:xmpp:jingle:1' action='session-accept' sid='" +
      id +
      "'><content creator='initiator' name='audio' senders='initiator'>"
      "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>"
      "<payload-type id='111' name='opus' clockrate='48000' channels='2'/><rtcp-mux/>"
      "</description>" +
      browser_transport("active") +
      "</content>"
      "<content creator='initiator' name='video' senders='none'>"
      "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='video'>"
      "<payload-type id='96' name='VP8' clockrate='90000'/></description></content>"
      "</jingle></iq>");
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].attr("type"), "result");
  ASSERT_EQ(engines.size(), 1u);
  const Engine& e = *engines[0];
  ASSERT_EQ(e.streams.size(), 1u);
  EXPECT_EQ(e.streams[0].kind, media::MediaKind::kAudio);
  EXPECT_TRUE(e.streams[0].send);
  EXPECT_EQ(calls->info(id)->state, CallState::kConnecting);
}

TEST_F(CallTest, CrossedProposalsTieBreak) {
  // XEP-0353 §3.7: the lower id wins. Ours (a UUID) is higher than "--low": we retract ours
  // and ring for theirs.
  std::string mine = calls->call("bob@example.org");
  sent();
  receive(jmi("propose", "--low", "bob@example.org/phone", "alice@example.org",
              "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/>"));
  auto out = sent();
  ASSERT_EQ(out.size(), 2u);
  const xml::Element* r = out[0].child("retract", kJmi);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->attr("id"), mine);
  EXPECT_NE(r->child("tie-break", kJmi), nullptr);
  EXPECT_NE(r->child("reason", kJingle)->child("expired", kJingle), nullptr);
  EXPECT_NE(out[1].child("ringing", kJmi), nullptr);
  ASSERT_EQ(incoming.size(), 1u);
  EXPECT_EQ(incoming[0].id, "--low");
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0].second.reason, "expired");

  // Theirs is higher: rejected with <tie-break/>, ours goes on.
  calls->reject("--low");
  std::string again = calls->call("carol@example.org");
  sent();
  receive(jmi("propose", "zz-high", "carol@example.org/phone", "alice@example.org",
              "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/>"));
  out = sent();
  ASSERT_EQ(out.size(), 1u);
  const xml::Element* x = out[0].child("reject", kJmi);
  ASSERT_NE(x, nullptr);
  EXPECT_EQ(x->attr("id"), "zz-high");
  EXPECT_NE(x->child("tie-break", kJmi), nullptr);
  EXPECT_EQ(incoming.size(), 1u);
  EXPECT_EQ(calls->info(again)->state, CallState::kProposed);
  // And the contact's retract of theirs with <tie-break/> for ours ends ours the same way.
  receive(jmi("retract", again, "carol@example.org/phone", "alice@example.org/desk",
              "<reason xmlns='urn:xmpp:jingle:1'><expired/></reason><tie-break/>"));
  EXPECT_FALSE(calls->info(again));
}

TEST_F(CallTest, MalformedOfferIsABadRequest) {
  receive(
      "<iq type='set' id='bad1' from='bob@example.org/browser'>"
      "<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='s-bad'>"
      "<content creator='initiator' name='0'>"
      "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>"
      "<payload-type id='999' name='opus'/></description></content></jingle></iq>");
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].attr("type"), "error");
  EXPECT_EQ(reply_condition(out[0]), "bad-request");
  EXPECT_TRUE(incoming.empty());
  EXPECT_TRUE(calls->calls().empty());
}

TEST_F(CallTest, OfferWithoutFingerprintEndsWithSecurityError) {
  std::string offer = browser_initiate("s-nofp");
  auto a = offer.find("<fingerprint");
  auto b = offer.find("</fingerprint>");
  offer.erase(a, b + std::string("</fingerprint>").size() - a);
  receive(offer);
  sent();
  calls->accept("s-nofp");
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(jingle(out[0])->attr("action"), "session-terminate");
  EXPECT_EQ(reason(out[0]), "security-error");  // SRTP keys come only from DTLS here
}

TEST_F(CallTest, BrowserAudioAndVideoWithRtx) {
  std::string offer = browser_av_offer(
      "av-1", "",
      "<payload-type id='96' name='VP8' clockrate='90000'>"
      "<rtcp-fb xmlns='urn:xmpp:jingle:apps:rtp:rtcp-fb:0' type='nack' subtype='pli'/>"
      "<rtcp-fb xmlns='urn:xmpp:jingle:apps:rtp:rtcp-fb:0' type='goog-remb'/></payload-type>"
      "<payload-type id='97' name='rtx' clockrate='90000'><parameter name='apt' value='96'/>"
      "</payload-type>"
      "<payload-type id='98' name='VP9' clockrate='90000'/>"
      "<payload-type id='99' name='rtx' clockrate='90000'><parameter name='apt' value='98'/>"
      "</payload-type>"
      "<source xmlns='urn:xmpp:jingle:apps:rtp:ssma:0' ssrc='777'/>");
  receive(offer);
  ASSERT_EQ(incoming.size(), 1u);
  EXPECT_TRUE(incoming[0].video);
  sent();
  calls->accept("av-1");
  ASSERT_EQ(engines.size(), 1u);
  const Engine& e = *engines[0];
  ASSERT_EQ(e.streams.size(), 2u);
  EXPECT_EQ(e.streams[1].kind, media::MediaKind::kVideo);
  EXPECT_EQ(e.streams[1].mid, "1");
  EXPECT_EQ(e.streams[1].remote_ssrc, 777u);
  // VP8 and its rtx; not VP9 nor the rtx that repairs it.
  ASSERT_EQ(e.streams[1].codecs.size(), 2u);
  EXPECT_EQ(e.streams[1].codecs[0].payload_type, 96);
  EXPECT_EQ(e.streams[1].codecs[1].payload_type, 97);
  // Feedback both sides have: PLI, not REMB.
  EXPECT_EQ(e.streams[1].codecs[0].rtcp_fb,
            (std::vector<std::pair<std::string, std::string>>{{"nack", "pli"}}));
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  auto contents = jingle(out[0])->children("content", kJingle);
  ASSERT_EQ(contents.size(), 2u);
  EXPECT_EQ(contents[0]->attr("name"), "0");
  EXPECT_EQ(contents[1]->attr("name"), "1");
  EXPECT_EQ(contents[1]->child("description", kRtp)->children("payload-type", kRtp).size(), 2u);
  EXPECT_EQ(jingle(out[0])->child("group", "urn:xmpp:jingle:apps:grouping:0")->children().size(),
            2u);
  // XEP-0339: the answer names the SSRC each of our streams sends with, the one the engine got.
  for (std::size_t i = 0; i < 2; ++i) {
    const xml::Element* src =
        contents[i]->child("description", kRtp)->child("source", "urn:xmpp:jingle:apps:rtp:ssma:0");
    ASSERT_NE(src, nullptr);
    EXPECT_EQ(src->attr("ssrc"), std::to_string(e.streams[i].local_ssrc));
    EXPECT_NE(e.streams[i].local_ssrc, 0u);
    // With the CNAME the engine's RTCP uses: browsers ignore a source without one.
    const xml::Element* cname = src->child("parameter", "urn:xmpp:jingle:apps:rtp:ssma:0");
    ASSERT_NE(cname, nullptr);
    EXPECT_EQ(cname->attr("name"), "cname");
    EXPECT_EQ(cname->attr("value"), e.config.cname);
    EXPECT_FALSE(e.config.cname.empty());
  }
  EXPECT_NE(e.streams[0].local_ssrc, e.streams[1].local_ssrc);
}

// A browser offers audio and H.264-only video; we have no H.264. The video content is answered
// with senders='none' (an SDP peer needs every m-line answered), the audio one as usual, and
// the engine gets the audio stream only. senders='initiator' on the audio: we, the responder,
// only receive.
TEST_F(CallTest, AContentWithoutACommonCodecIsAnsweredInactive) {
  std::string offer = browser_av_offer(
      "h264-1", "initiator",
      "<payload-type id='102' name='H264' clockrate='90000'>"
      "<parameter name='profile-level-id' value='42e01f'/></payload-type>"
      "<payload-type id='103' name='rtx' clockrate='90000'><parameter name='apt' value='102'/>"
      "</payload-type>");
  receive(offer);
  ASSERT_EQ(incoming.size(), 1u);
  sent();
  calls->accept("h264-1");
  ASSERT_EQ(engines.size(), 1u);
  const Engine& e = *engines[0];
  ASSERT_EQ(e.streams.size(), 1u);
  EXPECT_EQ(e.streams[0].kind, media::MediaKind::kAudio);
  EXPECT_FALSE(e.streams[0].send);  // senders='initiator': bob sends, we listen
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(jingle(out[0])->attr("action"), "session-accept");
  auto contents = jingle(out[0])->children("content", kJingle);
  ASSERT_EQ(contents.size(), 2u);
  EXPECT_EQ(contents[0]->attr("senders"), "initiator");
  EXPECT_EQ(contents[1]->attr("name"), "1");
  EXPECT_EQ(contents[1]->attr("senders"), "none");
  auto video = contents[1]->child("description", kRtp);
  ASSERT_NE(video, nullptr);
  EXPECT_EQ(video->attr("media"), "video");
  auto pts = video->children("payload-type", kRtp);
  ASSERT_EQ(pts.size(), 1u);
  EXPECT_EQ(pts[0]->attr("id"), "102");
  EXPECT_EQ(video->child("source", "urn:xmpp:jingle:apps:rtp:ssma:0"), nullptr);
  // Both in the BUNDLE group, both with our transport.
  EXPECT_NE(contents[1]->child("transport", "urn:xmpp:jingle:transports:ice-udp:1"), nullptr);
  EXPECT_EQ(jingle(out[0])->child("group", "urn:xmpp:jingle:apps:grouping:0")->children().size(),
            2u);
  EXPECT_EQ(calls->info("h264-1")->state, CallState::kConnecting);
}

TEST_F(CallTest, CandidatesOfAnotherIceGenerationAreIgnored) {
  receive(browser_initiate("s-gen"));
  calls->accept("s-gen");
  sent();
  std::string ti = transport_info("s-gen", "bob@example.org/browser", "50010");
  ti.replace(ti.find("ufrag='Bufr'"), 12, "ufrag='Zzzz'");
  receive(ti);
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].attr("type"), "result");
  EXPECT_TRUE(engines[0]->candidates.empty());  // an ICE restart, not done here
}

TEST_F(CallTest, ActionsOutOfOrder) {
  receive(browser_initiate("s-oo"));
  calls->accept("s-oo");
  sent();
  // XEP-0166 §10: a second session-initiate, or a session-accept sent to the responder.
  receive(browser_initiate("s-oo"));
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(reply_condition(out[0]), "unexpected-request");
  EXPECT_NE(out[0].child("error")->child("out-of-order", "urn:xmpp:jingle:errors:1"), nullptr);
  receive(
      "<iq type='set' id='acc9' from='bob@example.org/browser'>"
      "<jingle xmlns='urn:xmpp:jingle:1' action='session-accept' sid='s-oo'/></iq>");
  out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(reply_condition(out[0]), "unexpected-request");
  EXPECT_EQ(calls->info("s-oo")->state, CallState::kConnecting);
}

TEST_F(CallTest, UnsupportedActionsAreRefused) {
  receive(browser_initiate("s-ca"));
  calls->accept("s-ca");
  sent();
  receive(
      "<iq type='set' id='ca1' from='bob@example.org/browser'>"
      "<jingle xmlns='urn:xmpp:jingle:1' action='content-add' sid='s-ca'>"
      "<content creator='initiator' name='2'/></jingle></iq>");
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(reply_condition(out[0]), "feature-not-implemented");
  EXPECT_EQ(calls->info("s-ca")->state, CallState::kConnecting);  // the call goes on
}

TEST_F(CallTest, ANewProposalReplacesAnOrphanedCall) {
  // XEP-0353 §3.8: bob proposes again while the call with him is up: the old one is ended.
  std::string id = ring("old-1");
  calls->accept(id);
  receive(browser_initiate(id));
  sent();
  ring("new-1");
  auto out = sent();
  ASSERT_GE(out.size(), 2u);
  EXPECT_EQ(jingle(out[0])->attr("action"), "session-terminate");
  EXPECT_EQ(jingle(out[0])->attr("sid"), "old-1");
  EXPECT_NE(out[1].child("finish", kJmi), nullptr);
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0].first.id, "old-1");
  ASSERT_EQ(incoming.size(), 2u);
  EXPECT_EQ(incoming[1].id, "new-1");
}

TEST_F(CallTest, DestroyedCallsHangUp) {
  receive(browser_initiate("s-d"));
  calls->accept("s-d");
  std::string mine = calls->call("bob@example.org");
  sent();
  calls.reset();
  auto out = sent();
  ASSERT_EQ(out.size(), 2u);
  int terminates = 0, retracts = 0;
  for (const auto& el : out) {
    if (jingle(el) && jingle(el)->attr("action") == "session-terminate") ++terminates;
    if (el.child("retract", kJmi)) ++retracts;
  }
  EXPECT_EQ(terminates, 1);
  EXPECT_EQ(retracts, 1);
  EXPECT_TRUE(ended.empty());  // no events from a Calls being destroyed
  EXPECT_TRUE(engines[0]->stopped);
  // The handlers are gone: a Jingle IQ now gets the client's own answer.
  receive(transport_info("s-d", "bob@example.org/browser", "50000"));
  out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].attr("type"), "error");
}

TEST_F(CallTest, FileTransferLeavesRtpSessionsToCalls) {
  // File transfer registered on the same session (after Calls here, and its handler must not
  // take an RTP offer either way).
  FileTransfer ft(client);
  receive(browser_initiate("s-5"));
  ASSERT_EQ(incoming.size(), 1u);
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].attr("type"), "result");
}

TEST_F(CallTest, IceServersFromExtdisco) {
  Error result{Errc::kProtocol, "not run"};
  auto fetch = [&]() -> awaitable<void> { result = co_await calls->fetch_ice_servers(); };
  asio::co_spawn(io, fetch(), asio::detached);
  auto out = sent();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].attr("to"), "example.org");
  EXPECT_NE(out[0].child("services", "urn:xmpp:extdisco:2"), nullptr);
  receive("<iq type='result' id='" + std::string(out[0].attr("id")) +
          "' from='example.org'><services xmlns='urn:xmpp:extdisco:2'>"
          "<service type='stun' host='turn.example.org' port='3478' transport='udp'/>"
          "<service type='turn' host='turn.example.org' port='3478' transport='udp' "
          "username='1700000000:alice@example.org' password='c2VjcmV0' restricted='1'/>"
          "<service type='turns' host='turn.example.org' port='5349' transport='tcp'/>"
          "<service type='socks5' host='proxy.example.org' port='7777' transport='tcp'/>"
          "</services></iq>");
  EXPECT_FALSE(result) << result.message;
  ASSERT_EQ(calls->config.ice_servers.size(), 2u);
  EXPECT_EQ(calls->config.ice_servers[1].type, "turn");
  EXPECT_EQ(calls->config.ice_servers[1].username, "1700000000:alice@example.org");
  EXPECT_EQ(calls->config.ice_servers[1].password, "c2VjcmV0");
}

}  // namespace
}  // namespace kabar::client

namespace kabar::client {
namespace {

// Two kabar clients calling each other through a scripted server that stamps `from` and routes
// by `to` (a bare JID to every device): our own offer and answer must fit each other.
class CallPair : public ::testing::Test {
 protected:
  struct Side {
    Side(asio::io_context& io, const std::string& bare, const std::string& full,
         const std::string& contact, std::vector<std::shared_ptr<Engine>>& engines)
        : session(io, opts(bare), full) {
      impl.roster.push_back(RosterItem{contact, "", "both", false, {}});
      calls = std::make_unique<Calls>(client, [&engines](media::Config c, media::Callbacks cb) {
        auto e = std::make_shared<Engine>();
        e->config = std::move(c);
        e->callbacks = std::move(cb);
        engines.push_back(e);
        return std::make_unique<FakeSession>(e);
      });
      calls->on_incoming = [this](const CallInfo& i) { rang.push_back(i.id); };
      calls->on_ended = [this](const CallInfo&, const CallEnd& e) { ends.push_back(e); };
    }
    static Options opts(const std::string& bare) {
      Options o;
      o.jid = bare;
      return o;
    }
    testing::OfflineSession session;
    Client& client = session.client;
    Client::Impl& impl = session.impl;
    std::unique_ptr<Calls> calls;
    std::vector<std::string> rang;
    std::vector<CallEnd> ends;
  };

  CallPair()
      : alice(io, "alice@example.org", "alice@example.org/desk", "bob@example.org", a_engines),
        bob(io, "bob@example.org", "bob@example.org/phone", "alice@example.org", b_engines) {}

  // Delivers what each side sent to the other until nothing more is sent.
  void pump() {
    for (int round = 0; round < 50; ++round) {
      io.poll();
      io.restart();
      bool any = false;
      for (Side* from : {&alice, &bob}) {
        Side* to = from == &alice ? &bob : &alice;
        for (xml::Element& el : from->session.take()) {
          any = true;
          el.set_attr("from", from->impl.bound);
          to->impl.dispatch(el);
        }
      }
      if (!any) return;
    }
    ADD_FAILURE() << "the two sides never stop talking";
  }

  asio::io_context io;
  std::vector<std::shared_ptr<Engine>> a_engines, b_engines;
  Side alice;
  Side bob;
};

TEST_F(CallPair, KabarCallsKabar) {
  std::string id = alice.calls->call("bob@example.org", true);
  pump();
  ASSERT_EQ(bob.rang, std::vector<std::string>{id});
  EXPECT_EQ(alice.calls->info(id)->state, CallState::kRinging);
  bob.calls->accept(id);
  pump();
  ASSERT_EQ(a_engines.size(), 1u);
  ASSERT_EQ(b_engines.size(), 1u);
  Engine& a = *a_engines[0];
  Engine& b = *b_engines[0];
  EXPECT_TRUE(a.config.controlling);
  EXPECT_FALSE(b.config.controlling);
  // Each engine got the other's credentials and roles that make one DTLS client, one server.
  ASSERT_TRUE(a.remote_fingerprint && b.remote_fingerprint);
  EXPECT_EQ(b.remote_fingerprint->setup, "actpass");
  EXPECT_EQ(a.remote_fingerprint->setup, "active");
  EXPECT_EQ(a.remote_credentials->ufrag, "kbuf");
  ASSERT_EQ(a.streams.size(), 2u);
  ASSERT_EQ(b.streams.size(), 2u);
  EXPECT_EQ(b.streams[0].mid, "audio");
  EXPECT_EQ(b.streams[1].mid, "video");
  EXPECT_EQ(b.streams[1].codecs.size(), 2u);  // VP8 and rtx
  EXPECT_EQ(a.streams[0].codecs[0].name, "opus");
  // Candidates trickle both ways.
  a.callbacks.local_candidate(
      media::IceCandidate{"1", 1, "udp", 100, "127.0.0.1", 40000, "host", "", 0, "c1", 0});
  b.callbacks.local_candidate(
      media::IceCandidate{"2", 1, "udp", 100, "127.0.0.1", 40001, "host", "", 0, "c2", 0});
  pump();
  ASSERT_EQ(b.candidates.size(), 1u);
  EXPECT_EQ(b.candidates[0].port, 40000);
  ASSERT_EQ(a.candidates.size(), 1u);
  EXPECT_EQ(a.candidates[0].port, 40001);
  a.callbacks.connected();
  b.callbacks.connected();
  pump();
  EXPECT_EQ(alice.calls->info(id)->state, CallState::kActive);
  EXPECT_EQ(bob.calls->info(id)->state, CallState::kActive);

  bob.calls->hang_up(id);
  pump();
  ASSERT_EQ(alice.ends.size(), 1u);
  EXPECT_EQ(alice.ends[0].reason, "success");
  EXPECT_TRUE(alice.ends[0].by_peer);
  ASSERT_EQ(bob.ends.size(), 1u);  // alice's <finish/> after it ends nothing twice
  EXPECT_TRUE(a.stopped && b.stopped);
  EXPECT_TRUE(alice.calls->calls().empty());
  EXPECT_TRUE(bob.calls->calls().empty());
}

TEST_F(CallPair, DeclinedAndCancelled) {
  std::string id = alice.calls->call("bob@example.org");
  pump();
  bob.calls->reject(id, "busy");
  pump();
  ASSERT_EQ(alice.ends.size(), 1u);
  EXPECT_EQ(alice.ends[0].reason, "busy");
  EXPECT_TRUE(a_engines.empty());

  std::string id2 = alice.calls->call("bob@example.org");
  pump();
  alice.calls->hang_up(id2);
  pump();
  ASSERT_EQ(bob.ends.size(), 2u);
  EXPECT_EQ(bob.ends[1].reason, "cancel");
  EXPECT_TRUE(bob.ends[1].by_peer);
}

}  // namespace
}  // namespace kabar::client
