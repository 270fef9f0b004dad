// Memory for one expat parser in one place.
//
// An expat parser makes about 75 small allocations (10-11 KiB in all) that would otherwise be
// scattered over the heap between long-lived objects, so freeing a parser returned nothing to the
// system. Here each parser gets a 16 KiB slot of its own from page-aligned pools; freeing the
// parser hands the slot's pages back (madvise), so an idle connection's parser really goes away
// (StreamParser::hibernate). Allocations that do not fit the slot fall back to malloc.
//
// expat's memory functions take no context, so the arena in use is a thread-local set by an
// ArenaScope around every call into expat for that parser.
#pragma once

#include <expat.h>

#include <cstddef>

namespace kabar::xml {

class ParserArena {
 public:
  ParserArena();
  ~ParserArena();
  ParserArena(const ParserArena&) = delete;
  ParserArena& operator=(const ParserArena&) = delete;

  // The suite to pass to XML_ParserCreate_MM.
  static const XML_Memory_Handling_Suite* suite();

  // Bytes of the slot in use (bump pointer), for tests.
  std::size_t used() const { return used_; }
  static constexpr std::size_t kSlotBytes = 16 * 1024;

 private:
  friend class ArenaScope;
  friend struct ArenaFunctions;
  char* slot_ = nullptr;  // taken lazily at the first allocation
  std::size_t used_ = 0;
  std::size_t last_ = static_cast<std::size_t>(-1);  // offset of the last block, for in-place
};

// Makes `arena` the one expat allocates from on this thread until the scope ends.
class ArenaScope {
 public:
  explicit ArenaScope(ParserArena& arena);
  ~ArenaScope();
  ArenaScope(const ArenaScope&) = delete;
  ArenaScope& operator=(const ArenaScope&) = delete;

 private:
  ParserArena* previous_;
};

}  // namespace kabar::xml
