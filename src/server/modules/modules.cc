// The one place kabard's modules are listed. Adding a XEP: a folder under modules/ with its
// module and its test, and one line here (README, "Adding a XEP").
#include "server/core/module.h"
#include "server/features.h"
#include "server/modules/push/push.h"
#include "server/modules/sm/sm.h"
#include "server/modules/time/time.h"

namespace kabar::server {

std::vector<std::unique_ptr<Module>> make_modules() {
  std::vector<std::unique_ptr<Module>> m;
  // Order matters where two modules handle the same event: presence broadcasts a closing
  // session's unavailable presence before basics records the account's last activity.
  m.push_back(make_roster_module());
  // Before presence: a closing session's unacknowledged messages are stored (or sent to another
  // resource) before its contacts see it go unavailable.
  m.push_back(make_sm_module());
  m.push_back(make_csi_module());
  m.push_back(make_presence_module());
  m.push_back(make_offline_module());
  m.push_back(make_carbons_module());
  m.push_back(make_blocking_module());
  m.push_back(make_mam_module());
  m.push_back(make_push_module());
  m.push_back(make_disco_module());
  m.push_back(make_basics_module());
  m.push_back(make_vcard_module());
  m.push_back(make_pep_module());
  m.push_back(make_private_module());
  m.push_back(make_register_module());
  m.push_back(make_extdisco_module());
  m.push_back(make_proxy65_module());
  m.push_back(make_upload_module());
  m.push_back(make_time_module());
  return m;
}

}  // namespace kabar::server
