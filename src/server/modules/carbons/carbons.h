// Message Carbons (XEP-0280): the eligibility rules and the copies, for the module and its tests.
#pragma once

#include <string>
#include <string_view>

#include "xml/element.h"

namespace kabar::server {

inline constexpr std::string_view kCarbonsNs = "urn:xmpp:carbons:2";
inline constexpr std::string_view kForwardNs = "urn:xmpp:forward:0";  // XEP-0297

enum class CarbonDirection { kSent, kReceived };

// XEP-0280 §6.1: whether `m` (with from and to) is copied to the account's other resources.
bool carbons_eligible(const xml::Element& m, CarbonDirection direction);
// The copy of `m` for the resource `to_full` of the account `account_bare` (§5.1, §5.2).
xml::Element make_carbon(const xml::Element& m, CarbonDirection direction,
                         const std::string& account_bare, const std::string& to_full);

}  // namespace kabar::server
