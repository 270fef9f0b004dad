#include "xml/parser_arena.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

namespace kabar::xml {
namespace {

// Every block starts with this header, so free and realloc know where it came from.
struct alignas(16) Header {
  std::size_t size;  // bytes asked for
  std::size_t in_slot;
};
constexpr std::size_t kHeader = sizeof(Header);
constexpr std::size_t kNone = static_cast<std::size_t>(-1);

std::size_t round16(std::size_t n) { return (n + 15) & ~std::size_t{15}; }

Header& header_of(void* block) { return *reinterpret_cast<Header*>(block); }

// Slots come from 1 MiB mappings and are never unmapped (address space is cheap); a slot given
// back has its pages dropped, except for a few kept warm for the parser made right after
// another is freed (a stream restart after STARTTLS or SASL).
class SlotPool {
 public:
  char* take() {
    std::lock_guard lock(mu_);
    if (warm_.empty() && cold_.empty()) grow();
    auto& from = !warm_.empty() ? warm_ : cold_;
    if (from.empty()) return nullptr;
    char* s = from.back();
    from.pop_back();
    return s;
  }

  void give(char* slot) {
    std::lock_guard lock(mu_);
    if (warm_.size() < kWarmSlots) {
      warm_.push_back(slot);
      return;
    }
    madvise(slot, ParserArena::kSlotBytes, MADV_DONTNEED);
    cold_.push_back(slot);
  }

 private:
  static constexpr std::size_t kChunkBytes = 1024 * 1024;
  static constexpr std::size_t kWarmSlots = 32;

  void grow() {
    void* chunk =
        mmap(nullptr, kChunkBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (chunk == MAP_FAILED) return;
    char* base = static_cast<char*>(chunk);
    for (std::size_t off = kChunkBytes; off >= ParserArena::kSlotBytes;
         off -= ParserArena::kSlotBytes) {
      cold_.push_back(base + off - ParserArena::kSlotBytes);
    }
  }

  std::mutex mu_;
  std::vector<char*> warm_;
  std::vector<char*> cold_;
};

// Never destroyed: parsers may be freed during static destruction.
SlotPool& pool() {
  static SlotPool* p = new SlotPool;
  return *p;
}

thread_local ParserArena* t_current = nullptr;

}  // namespace

struct ArenaFunctions {
  static void* heap_block(std::size_t n) {
    if (n > static_cast<std::size_t>(-1) - kHeader) return nullptr;
    void* p = std::malloc(kHeader + n);
    if (p == nullptr) return nullptr;
    header_of(p) = Header{n, 0};
    return static_cast<char*>(p) + kHeader;
  }

  static void* allocate(std::size_t n) {
    ParserArena* a = t_current;
    if (a != nullptr && n <= ParserArena::kSlotBytes) {
      if (a->slot_ == nullptr) a->slot_ = pool().take();
      const std::size_t need = kHeader + round16(n);
      if (a->slot_ != nullptr && a->used_ + need <= ParserArena::kSlotBytes) {
        char* p = a->slot_ + a->used_;
        header_of(p) = Header{n, 1};
        a->last_ = a->used_;
        a->used_ += need;
        return p + kHeader;
      }
    }
    return heap_block(n);
  }

  static void release(void* ptr) {
    if (ptr == nullptr) return;
    char* p = static_cast<char*>(ptr) - kHeader;
    if (header_of(p).in_slot == 0) {
      std::free(p);
      return;
    }
    // The newest block of the current arena can be given back; others wait for the arena.
    ParserArena* a = t_current;
    if (a != nullptr && a->slot_ != nullptr && a->last_ != kNone && p == a->slot_ + a->last_) {
      a->used_ = a->last_;
      a->last_ = kNone;
    }
  }

  static void* resize(void* ptr, std::size_t n) {
    if (ptr == nullptr) return allocate(n);
    char* p = static_cast<char*>(ptr) - kHeader;
    const std::size_t old = header_of(p).size;
    if (header_of(p).in_slot == 0) {
      if (n > static_cast<std::size_t>(-1) - kHeader) return nullptr;
      void* q = std::realloc(p, kHeader + n);
      if (q == nullptr) return nullptr;
      header_of(q).size = n;
      return static_cast<char*>(q) + kHeader;
    }
    ParserArena* a = t_current;
    if (a != nullptr && a->slot_ != nullptr && a->last_ != kNone && p == a->slot_ + a->last_ &&
        n <= ParserArena::kSlotBytes &&
        a->last_ + kHeader + round16(n) <= ParserArena::kSlotBytes) {
      header_of(p).size = n;  // the newest block grows or shrinks in place
      a->used_ = a->last_ + kHeader + round16(n);
      return ptr;
    }
    void* q = allocate(n);
    if (q == nullptr) return nullptr;
    std::memcpy(q, ptr, std::min(old, n));
    release(ptr);
    return q;
  }
};

namespace {
const XML_Memory_Handling_Suite kSuite = {&ArenaFunctions::allocate, &ArenaFunctions::resize,
                                          &ArenaFunctions::release};
}  // namespace

ParserArena::ParserArena() = default;

ParserArena::~ParserArena() {
  if (t_current == this) t_current = nullptr;
  if (slot_ != nullptr) pool().give(slot_);
}

const XML_Memory_Handling_Suite* ParserArena::suite() { return &kSuite; }

ArenaScope::ArenaScope(ParserArena& arena) : previous_(t_current) { t_current = &arena; }

ArenaScope::~ArenaScope() { t_current = previous_; }

}  // namespace kabar::xml
