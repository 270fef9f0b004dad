// Jingle RTP payloads (XEP-0166/0167/0176/0293/0320/0338/0339) and Jingle Message Initiation
// (XEP-0353): what browsers and other clients send parses, what we build parses back the same,
// and what is out of bounds is refused or cut.
#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "xml/stream_parser.h"
#include "xmpp/jingle_rtp.h"

namespace kabar::xmpp::jingle_rtp {
namespace {

xml::Element parse_xml(const std::string& xml) {
  struct Collect : xml::StreamHandler {
    std::vector<xml::Element> out;
    void on_stream_open(const xml::Element&, std::string_view) override {}
    void on_element(xml::Element&& el) override { out.push_back(std::move(el)); }
    void on_stream_close() override {}
  } collect;
  xml::StreamParser parser(collect);
  auto r = parser.feed(
      "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>" +
      xml);
  EXPECT_EQ(r.status, xml::StreamParser::Status::kOk) << r.message;
  EXPECT_EQ(collect.out.size(), 1u);
  return collect.out.empty() ? xml::Element() : std::move(collect.out.front());
}

// A browser's offer (StanzaJS from Chromium's SDP): content names are mids, Opus 111, VP8 96
// with rtx, every content with credentials and an actpass fingerprint, BUNDLE, no candidates
// yet (they trickle).
constexpr const char* kBrowserOffer = R"(
<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='a73sjjvkla37jfea'
        initiator='juliet@example.org/browser'>
  <content creator='initiator' name='0' senders='both'>
    <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio' ssrc='1234'>
      <payload-type id='111' name='opus' clockrate='48000' channels='2'>
        <parameter name='minptime' value='10'/>
        <parameter name='useinbandfec' value='1'/>
        <rtcp-fb xmlns='urn:xmpp:jingle:apps:rtp:rtcp-fb:0' type='transport-cc'/>
      </payload-type>
      <payload-type id='0' name='PCMU' clockrate='8000'/>
      <rtp-hdrext xmlns='urn:xmpp:jingle:apps:rtp:rtp-hdrext:0' id='1'
                  uri='urn:ietf:params:rtp-hdrext:ssrc-audio-level'/>
      <source xmlns='urn:xmpp:jingle:apps:rtp:ssma:0' ssrc='1234'>
        <parameter name='cname' value='x'/>
      </source>
      <rtcp-mux/>
    </description>
    <transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='Xz3a' pwd='a9f8sdf98a7sdf98asdf7a'>
      <fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0' hash='sha-256' setup='actpass'>
        02:1A:CC:54:27:AB:EB:9C:53:3F:3E:4B:65:2E:7D:46:3F:54:42:CD:54:F1:7A:03:A2:7D:F9:B0:7F:46:19:B2
      </fingerprint>
    </transport>
  </content>
  <content creator='initiator' name='1' senders='both'>
    <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='video'>
      <payload-type id='96' name='VP8' clockrate='90000'>
        <rtcp-fb xmlns='urn:xmpp:jingle:apps:rtp:rtcp-fb:0' type='nack'/>
        <rtcp-fb xmlns='urn:xmpp:jingle:apps:rtp:rtcp-fb:0' type='nack' subtype='pli'/>
        <rtcp-fb xmlns='urn:xmpp:jingle:apps:rtp:rtcp-fb:0' type='ccm' subtype='fir'/>
      </payload-type>
      <payload-type id='97' name='rtx' clockrate='90000'>
        <parameter name='apt' value='96'/>
      </payload-type>
      <source xmlns='urn:xmpp:jingle:apps:rtp:ssma:0' ssrc='5678'/>
      <source xmlns='urn:xmpp:jingle:apps:rtp:ssma:0' ssrc='5679'/>
      <rtcp-mux/>
    </description>
    <transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='Xz3a' pwd='a9f8sdf98a7sdf98asdf7a'>
      <fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0' hash='sha-256' setup='actpass'>02:1A:CC:54:27:AB:EB:9C:53:3F:3E:4B:65:2E:7D:46:3F:54:42:CD:54:F1:7A:03:A2:7D:F9:B0:7F:46:19:B2</fingerprint>
    </transport>
  </content>
  <group xmlns='urn:xmpp:jingle:apps:grouping:0' semantics='BUNDLE'>
    <content name='0'/>
    <content name='1'/>
  </group>
</jingle>)";

TEST(JingleRtp, ParsesABrowserOffer) {
  xml::Element j = parse_xml(kBrowserOffer);
  EXPECT_TRUE(is_rtp_initiate(j));
  std::string why;
  auto a = parse(j, why);
  ASSERT_TRUE(a) << why;
  EXPECT_EQ(a->action, "session-initiate");
  EXPECT_EQ(a->sid, "a73sjjvkla37jfea");
  EXPECT_EQ(a->initiator, "juliet@example.org/browser");
  ASSERT_EQ(a->contents.size(), 2u);
  EXPECT_EQ(a->bundle, (std::vector<std::string>{"0", "1"}));

  const Content& audio = a->contents[0];
  EXPECT_EQ(audio.name, "0");
  ASSERT_TRUE(audio.description);
  EXPECT_EQ(audio.description->media, "audio");
  ASSERT_EQ(audio.description->payload_types.size(), 2u);
  const PayloadType& opus = audio.description->payload_types[0];
  EXPECT_EQ(opus.id, 111);
  EXPECT_EQ(opus.name, "opus");
  EXPECT_EQ(opus.clockrate, 48000u);
  EXPECT_EQ(opus.channels, 2);
  ASSERT_EQ(opus.parameters.size(), 2u);
  EXPECT_EQ(opus.parameters[1], (std::pair<std::string, std::string>{"useinbandfec", "1"}));
  ASSERT_EQ(opus.rtcp_fb.size(), 1u);
  EXPECT_EQ(opus.rtcp_fb[0].first, "transport-cc");
  EXPECT_EQ(audio.description->ssrcs, (std::vector<std::uint32_t>{1234}));
  EXPECT_TRUE(audio.description->rtcp_mux);
  ASSERT_TRUE(audio.transport);
  EXPECT_EQ(audio.transport->ufrag, "Xz3a");
  EXPECT_EQ(audio.transport->pwd, "a9f8sdf98a7sdf98asdf7a");
  EXPECT_TRUE(audio.transport->candidates.empty());
  ASSERT_TRUE(audio.transport->fingerprint);
  EXPECT_EQ(audio.transport->fingerprint->hash, "sha-256");
  EXPECT_EQ(audio.transport->fingerprint->setup, "actpass");
  EXPECT_EQ(audio.transport->fingerprint->value.substr(0, 8), "02:1A:CC");
  EXPECT_EQ(audio.transport->fingerprint->value.size(), 95u);  // trimmed

  const Content& video = a->contents[1];
  ASSERT_TRUE(video.description);
  EXPECT_EQ(video.description->media, "video");
  ASSERT_EQ(video.description->payload_types.size(), 2u);
  EXPECT_EQ(video.description->payload_types[0].id, 96);
  EXPECT_EQ(video.description->payload_types[0].rtcp_fb.size(), 3u);
  EXPECT_EQ(video.description->payload_types[0].rtcp_fb[1],
            (std::pair<std::string, std::string>{"nack", "pli"}));
  EXPECT_EQ(video.description->payload_types[1].name, "rtx");
  EXPECT_EQ(video.description->ssrcs.size(), 2u);
}

TEST(JingleRtp, BuildParsesBackTheSame) {
  std::string why;
  auto a = parse(parse_xml(kBrowserOffer), why);
  ASSERT_TRUE(a) << why;
  a->contents[0].transport->candidates.push_back(
      Candidate{"1", 1, "udp", 2130706431, "10.0.1.1", 8998, "host", "", 0, "el0747fg11", 0, 1});
  a->contents[0].transport->candidates.push_back(Candidate{
      "2", 1, "udp", 1694498815, "192.0.2.3", 45664, "srflx", "10.0.1.1", 8998, "y3", 0, 1});
  a->reason = "success";
  auto again = parse(build(*a), why);
  ASSERT_TRUE(again) << why;
  EXPECT_EQ(again->sid, a->sid);
  EXPECT_EQ(again->bundle, a->bundle);
  EXPECT_EQ(again->reason, "success");
  ASSERT_EQ(again->contents.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    const auto& x = a->contents[i];
    const auto& y = again->contents[i];
    EXPECT_EQ(x.name, y.name);
    EXPECT_EQ(x.senders, y.senders);
    ASSERT_EQ(x.description->payload_types.size(), y.description->payload_types.size());
    for (std::size_t k = 0; k < x.description->payload_types.size(); ++k) {
      EXPECT_EQ(x.description->payload_types[k].id, y.description->payload_types[k].id);
      EXPECT_EQ(x.description->payload_types[k].name, y.description->payload_types[k].name);
      EXPECT_EQ(x.description->payload_types[k].channels, y.description->payload_types[k].channels);
      EXPECT_EQ(x.description->payload_types[k].parameters,
                y.description->payload_types[k].parameters);
      EXPECT_EQ(x.description->payload_types[k].rtcp_fb, y.description->payload_types[k].rtcp_fb);
    }
    EXPECT_EQ(x.description->ssrcs, y.description->ssrcs);
    EXPECT_EQ(x.description->rtcp_mux, y.description->rtcp_mux);
    EXPECT_EQ(x.transport->fingerprint->value, y.transport->fingerprint->value);
    EXPECT_EQ(x.transport->fingerprint->setup, y.transport->fingerprint->setup);
  }
  const auto& cands = again->contents[0].transport->candidates;
  ASSERT_EQ(cands.size(), 2u);
  EXPECT_EQ(cands[1].type, "srflx");
  EXPECT_EQ(cands[1].rel_addr, "10.0.1.1");
  EXPECT_EQ(cands[1].rel_port, 8998);
  EXPECT_EQ(cands[1].priority, 1694498815u);
}

// A trickled candidate as a browser sends it: one per transport-info, without id, generation
// or network; TCP candidates beside it are dropped.
TEST(JingleRtp, TrickledCandidatesWithoutOptionalAttributes) {
  std::string why;
  auto a = parse(parse_xml(R"(
<jingle xmlns='urn:xmpp:jingle:1' action='transport-info' sid='s1'>
  <content creator='initiator' name='0'>
    <transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='Xz3a' pwd='a9f8sdf98a7sdf98asdf7a'>
      <candidate component='1' foundation='842163049' ip='192.168.1.5' port='54321'
                 priority='2122260223' protocol='udp' type='host'/>
      <candidate component='1' foundation='1' ip='192.168.1.5' port='9' priority='1518280447'
                 protocol='tcp' type='host' tcptype='active'/>
      <candidate component='1' foundation='3' ip='192.168.1.5' port='7' priority='1'
                 protocol='udp' type='sideways'/>
      <candidate component='1' foundation='4' ip='192.168.1.5' port='0' priority='1'
                 protocol='udp' type='host'/>
    </transport>
  </content>
</jingle>)"),
                 why);
  ASSERT_TRUE(a) << why;
  ASSERT_EQ(a->contents.size(), 1u);
  EXPECT_FALSE(a->contents[0].description);
  ASSERT_TRUE(a->contents[0].transport);
  const auto& t = *a->contents[0].transport;
  ASSERT_EQ(t.candidates.size(), 1u);
  EXPECT_EQ(t.ignored_candidates, 3u);  // TCP, an unknown type, port 0
  EXPECT_EQ(t.candidates[0].foundation, "842163049");
  EXPECT_EQ(t.candidates[0].port, 54321);
  EXPECT_EQ(t.candidates[0].id, "");
  EXPECT_EQ(t.candidates[0].generation, 0);
  EXPECT_FALSE(is_rtp_initiate(parse_xml(R"(
<jingle xmlns='urn:xmpp:jingle:1' action='transport-info' sid='s1'/>)")));
}

// The answer to an actpass offer (XEP-0320 §3, RFC 5763 §5): setup='active'.
TEST(JingleRtp, AcceptWithActiveSetup) {
  Action a;
  a.action = "session-accept";
  a.sid = "s1";
  a.responder = "romeo@example.org/kabar";
  Content c;
  c.name = "0";
  c.description = Description{"audio", {PayloadType{111, "opus", 48000, 2, {}, {}}}, {}, {}, true};
  c.transport = Transport{
      "ufrg", "pwdpwdpwdpwdpwdpwdpwdpwd", {}, Fingerprint{"sha-256", "active", "AB:CD"}, 0};
  a.contents.push_back(c);
  a.bundle = {"0"};
  xml::Element j = build(a);
  const xml::Element* f =
      j.child("content", kJingle)->child("transport", kIceUdp)->child("fingerprint", kDtls);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->attr("setup"), "active");
  EXPECT_EQ(f->text(), "AB:CD");
  EXPECT_EQ(j.child("group", kGrouping)->attr("semantics"), "BUNDLE");
}

TEST(JingleRtp, RefusesWhatIsMalformed) {
  std::string why;
  // A payload id beyond 127.
  EXPECT_FALSE(
      parse(parse_xml(R"(<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='s'>
    <content creator='initiator' name='a'><description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>
    <payload-type id='300' name='x'/></description></content></jingle>)"),
            why));
  EXPECT_FALSE(why.empty());
  // A description without media.
  EXPECT_FALSE(
      parse(parse_xml(R"(<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='s'>
    <content creator='initiator' name='a'><description xmlns='urn:xmpp:jingle:apps:rtp:1'/></content></jingle>)"),
            why));
  // A fingerprint that is not hex pairs.
  EXPECT_FALSE(
      parse(parse_xml(R"(<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='s'>
    <content creator='initiator' name='a'><transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='u' pwd='p'>
    <fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0' hash='sha-256' setup='actpass'>zz:1</fingerprint>
    </transport></content></jingle>)"),
            why));
  // A bad setup role.
  EXPECT_FALSE(
      parse(parse_xml(R"(<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='s'>
    <content creator='initiator' name='a'><transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='u' pwd='p'>
    <fingerprint xmlns='urn:xmpp:jingle:apps:dtls:0' hash='sha-256' setup='sideways'>AB</fingerprint>
    </transport></content></jingle>)"),
            why));
  // A bad sid, a content without a name.
  EXPECT_FALSE(parse(parse_xml("<jingle xmlns='urn:xmpp:jingle:1' action='x' sid='a b'/>"), why));
  EXPECT_FALSE(parse(parse_xml(R"(<jingle xmlns='urn:xmpp:jingle:1' action='x' sid='s'>
    <content creator='initiator'/></jingle>)"),
                     why));
  // Credentials longer than any ICE agent makes.
  EXPECT_FALSE(parse(parse_xml("<jingle xmlns='urn:xmpp:jingle:1' action='transport-info' sid='s'>"
                               "<content creator='initiator' name='a'><transport xmlns='urn:xmpp:"
                               "jingle:transports:ice-udp:1' ufrag='" +
                               std::string(300, 'u') + "' pwd='p'/></content></jingle>"),
                     why));
}

TEST(JingleRtp, CountsAreBounded) {
  std::string xml =
      "<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='s'>"
      "<content creator='initiator' name='a'>"
      "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>";
  for (int i = 0; i < 100; ++i) xml += "<payload-type id='" + std::to_string(i) + "' name='x'/>";
  for (int i = 0; i < 100; ++i)
    xml += "<source xmlns='urn:xmpp:jingle:apps:rtp:ssma:0' ssrc='" + std::to_string(i) + "'/>";
  xml += "</description><transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='u' pwd='p'>";
  for (int i = 0; i < 100; ++i)
    xml += "<candidate component='1' foundation='f' ip='10.0.0.1' port='" + std::to_string(i + 1) +
           "' priority='1' protocol='udp' type='host'/>";
  xml += "</transport></content>";
  for (int i = 0; i < 20; ++i)
    xml += "<content creator='initiator' name='c" + std::to_string(i) + "'/>";
  xml += "</jingle>";
  std::string why;
  auto a = parse(parse_xml(xml), why);
  ASSERT_TRUE(a) << why;
  EXPECT_EQ(a->contents.size(), kMaxContents);
  EXPECT_EQ(a->contents[0].description->payload_types.size(), kMaxPayloadTypes);
  EXPECT_EQ(a->contents[0].description->ssrcs.size(), kMaxSources);
  EXPECT_EQ(a->contents[0].transport->candidates.size(), kMaxCandidates);
}

TEST(JingleRtp, ReasonsKnownAndUnknown) {
  std::string why;
  auto a = parse(parse_xml(R"(<jingle xmlns='urn:xmpp:jingle:1' action='session-terminate' sid='s'>
    <reason><security-error/><text>fingerprint mismatch</text></reason></jingle>)"),
                 why);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->reason, "security-error");
  EXPECT_EQ(a->reason_text, "fingerprint mismatch");
  a = parse(parse_xml(R"(<jingle xmlns='urn:xmpp:jingle:1' action='session-terminate' sid='s'>
    <reason><made-up/></reason></jingle>)"),
            why);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->reason, "general-error");
  Action t;
  t.action = "session-terminate";
  t.sid = "s";
  t.reason = "not-a-condition";
  EXPECT_NE(build(t).child("reason", kJingle)->child("general-error", kJingle), nullptr);
}

TEST(JingleMessageInitiation, ProposeAsTheXepShowsIt) {
  std::string why;
  auto m = parse_jmi(parse_xml(R"(<message from='romeo@montague.example/orchard'
    to='juliet@capulet.example' type='chat'>
  <propose xmlns='urn:xmpp:jingle-message:0' id='ca3cf894-5325-482f-a412-a6e9f832298d'>
    <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/>
    <description xmlns='urn:xmpp:jingle:apps:rtp:1' media='video'/>
  </propose>
  <store xmlns="urn:xmpp:hints"/>
</message>)"),
                     why);
  ASSERT_TRUE(m) << why;
  EXPECT_EQ(m->kind, "propose");
  EXPECT_EQ(m->id, "ca3cf894-5325-482f-a412-a6e9f832298d");
  EXPECT_EQ(m->media, (std::vector<std::string>{"audio", "video"}));

  m = parse_jmi(parse_xml(R"(<message type='chat'>
  <reject xmlns='urn:xmpp:jingle-message:0' id='abc'>
    <reason xmlns="urn:xmpp:jingle:1"><busy/><text>Busy</text></reason>
    <tie-break/>
  </reject></message>)"),
                why);
  ASSERT_TRUE(m) << why;
  EXPECT_EQ(m->kind, "reject");
  EXPECT_EQ(m->reason, "busy");
  EXPECT_EQ(m->reason_text, "Busy");
  EXPECT_TRUE(m->tie_break);

  // No JMI element: nullopt, no complaint; a bad id: nullopt with a reason.
  EXPECT_FALSE(parse_jmi(parse_xml("<message><body>hi</body></message>"), why));
  EXPECT_TRUE(why.empty());
  EXPECT_FALSE(parse_jmi(
      parse_xml("<message><proceed xmlns='urn:xmpp:jingle-message:0' id=''/></message>"), why));
  EXPECT_FALSE(why.empty());
}

TEST(JingleMessageInitiation, BuiltAsChatWithAStoreHint) {
  JingleMessage m;
  m.kind = "retract";
  m.id = "sid1";
  m.reason = "cancel";
  xml::Element msg = build_jmi(m, "juliet@capulet.example", "m1");
  EXPECT_EQ(msg.attr("type"), "chat");  // §3: every JMI message
  EXPECT_EQ(msg.attr("to"), "juliet@capulet.example");
  EXPECT_EQ(msg.attr("id"), "m1");
  EXPECT_NE(msg.child("store", kHints), nullptr);
  std::string why;
  auto back = parse_jmi(msg, why);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->kind, "retract");
  EXPECT_EQ(back->id, "sid1");
  EXPECT_EQ(back->reason, "cancel");
}

}  // namespace
}  // namespace kabar::xmpp::jingle_rtp
