// libFuzzer target: any bytes as a stored archive chunk (store/archive_index.h), split into its
// correspondents and entries blobs at the first byte's place. A chunk comes from the database,
// not the network, but a damaged file must give a StoreError, never a crash: whatever decodes
// must encode again to blobs that decode to the same run.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "store/archive_index.h"

using kabar::store::IndexRun;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view all(reinterpret_cast<const char*>(data) + 1, size - 1);
  const std::size_t cut = std::min<std::size_t>(data[0], all.size());
  IndexRun run;
  try {
    run = IndexRun::decode(all.substr(0, cut), all.substr(cut));
  } catch (const kabar::store::StoreError&) {
    return 0;
  }
  const std::string withs = run.encode_withs();
  const std::string entries = run.encode_entries();
  const IndexRun again = IndexRun::decode(withs, entries);
  if (again.size() != run.size() || again.withs().size() != run.withs().size() ||
      again.encode_entries() != entries || again.encode_withs() != withs) {
    std::abort();
  }
  std::size_t counted = 0;
  for (const auto& c : run.withs()) counted += c.count;
  if (counted != run.size()) std::abort();
  kabar::store::ArchiveFilter f;
  if (run.count(f) != run.size()) std::abort();
  if (!run.empty()) {
    f.after_seq = run.first_seq();
    if (run.count(f) != run.size() - 1) std::abort();
  }
  return 0;
}
