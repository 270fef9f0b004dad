// The expat memory arena: blocks come from the current arena's slot, the newest block can grow,
// shrink or be freed in place, anything bigger than the slot comes from the heap.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "xml/parser_arena.h"

namespace kabar::xml {
namespace {

TEST(ParserArena, BumpAllocatesAndReusesTheNewestBlock) {
  ParserArena arena;
  ArenaScope scope(arena);
  const XML_Memory_Handling_Suite* m = ParserArena::suite();
  void* a = m->malloc_fcn(100);
  ASSERT_NE(a, nullptr);
  const std::size_t after_a = arena.used();
  EXPECT_GE(after_a, 100u);
  void* b = m->malloc_fcn(10);
  std::memset(b, 'b', 10);
  const std::size_t after_b = arena.used();
  EXPECT_GT(after_b, after_a);
  // The newest block grows in place and keeps its bytes.
  void* b2 = m->realloc_fcn(b, 500);
  EXPECT_EQ(b2, b);
  EXPECT_EQ(std::memcmp(b2, "bbbbbbbbbb", 10), 0);
  EXPECT_GT(arena.used(), after_b);
  // Freeing the newest block gives its space back; an older one stays until the arena goes.
  m->free_fcn(b2);
  EXPECT_EQ(arena.used(), after_a);
  m->free_fcn(a);
  EXPECT_EQ(arena.used(), after_a);
}

TEST(ParserArena, OlderBlocksMoveWhenTheyGrowAndBigOnesUseTheHeap) {
  ParserArena arena;
  ArenaScope scope(arena);
  const XML_Memory_Handling_Suite* m = ParserArena::suite();
  char* a = static_cast<char*>(m->malloc_fcn(16));
  std::memcpy(a, "0123456789abcdef", 16);
  void* b = m->malloc_fcn(16);
  char* a2 = static_cast<char*>(m->realloc_fcn(a, 64));
  ASSERT_NE(a2, nullptr);
  EXPECT_NE(a2, a);
  EXPECT_EQ(std::memcmp(a2, "0123456789abcdef", 16), 0);
  const std::size_t used = arena.used();
  // Larger than a slot: from the heap, the slot untouched; it can grow and be freed.
  char* big = static_cast<char*>(m->malloc_fcn(ParserArena::kSlotBytes * 2));
  ASSERT_NE(big, nullptr);
  std::memset(big, 'x', ParserArena::kSlotBytes * 2);
  EXPECT_EQ(arena.used(), used);
  big = static_cast<char*>(m->realloc_fcn(big, ParserArena::kSlotBytes * 4));
  ASSERT_NE(big, nullptr);
  EXPECT_EQ(big[ParserArena::kSlotBytes * 2 - 1], 'x');
  m->free_fcn(big);
  // A full slot spills to the heap instead of failing.
  std::vector<void*> blocks;
  for (int i = 0; i < 64; ++i) {
    void* p = m->malloc_fcn(1024);
    ASSERT_NE(p, nullptr);
    std::memset(p, i, 1024);
    blocks.push_back(p);
  }
  EXPECT_LE(arena.used(), ParserArena::kSlotBytes);
  for (void* p : blocks) m->free_fcn(p);
  m->free_fcn(a2);
  m->free_fcn(b);
}

TEST(ParserArena, OutsideAnyScopeBlocksComeFromTheHeap) {
  const XML_Memory_Handling_Suite* m = ParserArena::suite();
  void* p = m->malloc_fcn(32);
  ASSERT_NE(p, nullptr);
  p = m->realloc_fcn(p, 4096);
  ASSERT_NE(p, nullptr);
  m->free_fcn(p);
  m->free_fcn(nullptr);
}

}  // namespace
}  // namespace kabar::xml
