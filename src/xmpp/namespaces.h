// Namespace URIs used across the protocol layers.
#pragma once

namespace kabar::xmpp::ns {
inline constexpr const char* kStream = "http://etherx.jabber.org/streams";
inline constexpr const char* kClient = "jabber:client";
inline constexpr const char* kServer = "jabber:server";
inline constexpr const char* kStreams = "urn:ietf:params:xml:ns:xmpp-streams";
inline constexpr const char* kStanzas = "urn:ietf:params:xml:ns:xmpp-stanzas";
inline constexpr const char* kTls = "urn:ietf:params:xml:ns:xmpp-tls";
inline constexpr const char* kSasl = "urn:ietf:params:xml:ns:xmpp-sasl";
inline constexpr const char* kSaslCb = "urn:xmpp:sasl-cb:0";  // XEP-0440
inline constexpr const char* kBind = "urn:ietf:params:xml:ns:xmpp-bind";
inline constexpr const char* kSession = "urn:ietf:params:xml:ns:xmpp-session";
inline constexpr const char* kRoster = "jabber:iq:roster";
inline constexpr const char* kRosterVer = "urn:xmpp:features:rosterver";
inline constexpr const char* kPreApproval = "urn:xmpp:features:pre-approval";
inline constexpr const char* kRegister = "jabber:iq:register";
inline constexpr const char* kRegisterFeature = "http://jabber.org/features/iq-register";
inline constexpr const char* kDiscoInfo = "http://jabber.org/protocol/disco#info";
inline constexpr const char* kDiscoItems = "http://jabber.org/protocol/disco#items";
inline constexpr const char* kVersion = "jabber:iq:version";
inline constexpr const char* kLast = "jabber:iq:last";
inline constexpr const char* kVcard = "vcard-temp";
inline constexpr const char* kPing = "urn:xmpp:ping";
inline constexpr const char* kDelay = "urn:xmpp:delay";
inline constexpr const char* kOffline = "msgoffline";
inline constexpr const char* kDataForms = "jabber:x:data";
}  // namespace kabar::xmpp::ns
