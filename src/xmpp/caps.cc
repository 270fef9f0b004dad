#include "xmpp/caps.h"

#include <openssl/evp.h>

#include <algorithm>
#include <set>
#include <tuple>
#include <vector>

#include "xmpp/namespaces.h"
#include "xmpp/scram.h"

namespace kabar::xmpp {

std::optional<CapsInfo> caps_of(const xml::Element& presence) {
  const xml::Element* c = presence.child("c", kCaps);
  if (c == nullptr || c->attr("ver").empty() || c->attr("node").empty()) return std::nullopt;
  return CapsInfo{std::string(c->attr("hash")), std::string(c->attr("node")),
                  std::string(c->attr("ver"))};
}

std::optional<std::string> caps_verification_string(const xml::Element& query) {
  using Identity = std::tuple<std::string, std::string, std::string, std::string>;
  std::vector<Identity> identities;
  std::vector<std::string> features;
  struct Form {
    std::string type;
    std::vector<std::pair<std::string, std::vector<std::string>>> fields;
  };
  std::vector<Form> forms;
  for (const xml::Element* e : query.children()) {
    if (e->is("identity", ns::kDiscoInfo)) {
      identities.emplace_back(std::string(e->attr("category")), std::string(e->attr("type")),
                              std::string(e->attr("xml:lang")), std::string(e->attr("name")));
    } else if (e->is("feature", ns::kDiscoInfo)) {
      features.emplace_back(e->attr("var"));
    } else if (e->is("x", ns::kDataForms)) {
      Form f;
      bool has_type = false;
      for (const xml::Element* field : e->children("field", ns::kDataForms)) {
        std::vector<std::string> values;
        for (const xml::Element* v : field->children("value", ns::kDataForms)) {
          values.push_back(v->text());
        }
        if (field->attr("var") == "FORM_TYPE") {
          // §5.4: a FORM_TYPE that is not hidden makes the answer untrustworthy.
          if (field->attr("type") != "hidden" || values.empty()) return std::nullopt;
          f.type = values.front();
          has_type = true;
          continue;
        }
        std::sort(values.begin(), values.end());
        f.fields.emplace_back(std::string(field->attr("var")), std::move(values));
      }
      if (!has_type) continue;  // §5.4: forms without a FORM_TYPE are ignored
      std::sort(f.fields.begin(), f.fields.end());
      forms.push_back(std::move(f));
    }
  }
  std::sort(identities.begin(), identities.end());
  std::sort(features.begin(), features.end());
  std::sort(forms.begin(), forms.end(),
            [](const Form& a, const Form& b) { return a.type < b.type; });
  if (std::adjacent_find(identities.begin(), identities.end()) != identities.end() ||
      std::adjacent_find(features.begin(), features.end()) != features.end() ||
      std::adjacent_find(forms.begin(), forms.end(), [](const Form& a, const Form& b) {
        return a.type == b.type;
      }) != forms.end()) {
    return std::nullopt;
  }
  std::string s;
  for (const auto& [category, type, lang, name] : identities) {
    s += category + '/' + type + '/' + lang + '/' + name + '<';
  }
  for (const auto& f : features) s += f + '<';
  for (const auto& form : forms) {
    s += form.type + '<';
    for (const auto& [var, values] : form.fields) {
      s += var + '<';
      for (const auto& v : values) s += v + '<';
    }
  }
  return s;
}

std::optional<std::string> caps_hash(std::string_view algo, std::string_view s) {
  const EVP_MD* md = nullptr;
  if (algo == "sha-1") {
    md = EVP_sha1();
  } else if (algo == "sha-224") {
    md = EVP_sha224();
  } else if (algo == "sha-256") {
    md = EVP_sha256();
  } else if (algo == "sha-384") {
    md = EVP_sha384();
  } else if (algo == "sha-512") {
    md = EVP_sha512();
  } else {
    return std::nullopt;
  }
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(s.data(), s.size(), out, &len, md, nullptr) != 1) return std::nullopt;
  return base64_encode(std::string_view(reinterpret_cast<const char*>(out), len));
}

bool caps_verify(std::string_view algo, std::string_view ver, const xml::Element& query) {
  if (algo.empty() || ver.empty()) return false;  // legacy caps (no hash): nothing to check
  auto s = caps_verification_string(query);
  if (!s) return false;
  auto h = caps_hash(algo, *s);
  return h && *h == ver;
}

std::optional<std::string> caps_ver(const xml::Element& query) {
  auto s = caps_verification_string(query);
  if (!s) return std::nullopt;
  return caps_hash("sha-1", *s);
}

xml::Element caps_element(std::string_view node, std::string_view ver) {
  xml::Element c("c", kCaps);
  c.set_attr("hash", "sha-1").set_attr("node", node).set_attr("ver", ver);
  return c;
}

}  // namespace kabar::xmpp
