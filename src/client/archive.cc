// XEP-0313 queries of the account's own message archive, paged with XEP-0059.
#include "client/client_impl.h"
#include "xmpp/stanza.h"

namespace kabar::client {

awaitable<ArchivePage> Client::query_archive(ArchiveQuery query) {
  auto self = impl_;
  ArchivePage page;
  const std::string own = self->jid.bare_str();
  const std::string queryid = "q" + self->new_id();
  // The results of this query only, from the account's own archive: §7 forbids unsolicited
  // ones, and anything else claiming to be a result (a contact's forgery) is not taken.
  Impl* impl = self.get();  // not owned: the handler is removed before this returns
  auto token = add_message_handler(kMam, [&page, &own, &queryid, impl](const xml::Element& m) {
    const xml::Element* r = m.child("result", kMam);
    const std::string from(m.attr("from"));
    if (r == nullptr || r->attr("queryid") != queryid || (!from.empty() && from != own))
      return false;
    const xml::Element* fwd = r->child("forwarded", kForward);
    const xml::Element* inner = fwd ? fwd->child("message", ns::kClient) : nullptr;
    if (inner == nullptr) return true;
    ArchivedMessage a;
    a.message = impl->parse_message(*inner);
    a.archive_id = std::string(r->attr("id"));
    if (const xml::Element* d = fwd->child("delay", ns::kDelay))
      a.message.delay = std::string(d->attr("stamp"));
    a.outgoing = bare_of(a.message.from) == own;
    page.messages.push_back(std::move(a));
    return true;
  });

  xml::Element iq("iq", ns::kClient);
  iq.set_attr("type", "set");
  xml::Element& q = iq.add_child("query", kMam);
  q.set_attr("queryid", queryid);
  xml::Element& x = q.add_child("x", "jabber:x:data");
  x.set_attr("type", "submit");
  auto field = [&x](std::string_view var, std::string_view value) {
    xml::Element& f = x.add_child("field", "jabber:x:data");
    f.set_attr("var", var);
    f.add_child("value", "jabber:x:data").add_text(value);
  };
  field("FORM_TYPE", kMam);
  if (!query.with.empty()) field("with", query.with);
  if (query.start_ms) field("start", xmpp::format_datetime(*query.start_ms));
  if (query.end_ms) field("end", xmpp::format_datetime(*query.end_ms));
  xml::Element& set = q.add_child("set", kRsm);
  set.add_child("max", kRsm).add_text(std::to_string(query.max));
  if (!query.after.empty()) set.add_child("after", kRsm).add_text(query.after);
  if (query.before) set.add_child("before", kRsm).add_text(*query.before);

  // The results come before the answer (§4.2), on the same stream: all are in when it is.
  std::optional<xml::Element> reply = co_await self->iq(std::move(iq));
  remove_handler(token);
  const std::string cond = iq_condition(reply);
  if (cond == "service-unavailable" || cond == "feature-not-implemented") {
    page.error = err(Errc::kUnsupported, "the server keeps no message archive (XEP-0313)");
  } else if (Error e = self->iq_error(reply, "the archive query")) {
    page.error = std::move(e);
  }
  if (page.error) {
    page.messages.clear();
    co_return page;
  }
  const xml::Element* fin = reply->child("fin", kMam);
  page.complete =
      fin != nullptr && (fin->attr("complete") == "true" || fin->attr("complete") == "1");
  if (const xml::Element* rs = fin ? fin->child("set", kRsm) : nullptr) {
    page.first = rs->child_text("first", kRsm);
    page.last = rs->child_text("last", kRsm);
  }
  co_return page;
}

}  // namespace kabar::client
