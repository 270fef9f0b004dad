// libFuzzer target: any bytes as the in-flight journal's file (store/inflight_journal.h). The
// file is kabard's own, but one cut by a crash or damaged on disk must decode to its whole
// prefix, never crash: every record read is inside the input, and the prefix read again gives
// the same records.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "store/inflight_journal.h"

using kabar::store::decode_journal;
using kabar::store::InFlightJournal;
using kabar::store::JournalRecord;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // The first byte's low bit puts a valid header before the rest, so the fuzzer reaches the
  // records.
  if (size == 0) return 0;
  std::string bytes;
  if ((data[0] & 1) != 0) bytes = InFlightJournal::kMagic;
  bytes.append(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::size_t records = 0;
  std::uint64_t last_end = 0;
  const auto whole = decode_journal(
      bytes,
      [&](JournalRecord rec, std::uint64_t offset, std::uint32_t length) {
        if (rec.id <= 0 || offset < last_end || offset + length > bytes.size()) std::abort();
        last_end = offset + length;
        ++records;
      },
      [&](std::int64_t) { ++records; });
  if (!whole) return 0;
  if (*whole > bytes.size() || *whole < InFlightJournal::kMagic.size()) std::abort();
  std::size_t again = 0;
  const auto second = decode_journal(
      std::string_view(bytes).substr(0, *whole),
      [&](JournalRecord, std::uint64_t, std::uint32_t) { ++again; },
      [&](std::int64_t) { ++again; });
  if (!second || *second != *whole || again != records) std::abort();
  return 0;
}
