// Typed per-session state a module keeps on a session (`session.ext<T>()`), so the session class
// carries no feature's fields. Touched only on the session's own shard, like the rest of its
// state; a value is made (default-constructed) on first use and lives as long as the session.
#pragma once

#include <memory>
#include <vector>

namespace kabar::server {

class SessionExt {
 public:
  template <typename T>
  T& get() {
    if (T* found = find<T>()) return *found;
    auto made = std::make_unique<T>();
    T& ref = *made;
    entries_.push_back(Entry{key<T>(), Owned(made.release(), &destroy<T>)});
    return ref;
  }

  // The state if a module has made it, or nullptr (reading never allocates).
  template <typename T>
  T* find() const {
    for (const auto& e : entries_) {
      if (e.key == key<T>()) return static_cast<T*>(e.value.get());
    }
    return nullptr;
  }

 private:
  using Owned = std::unique_ptr<void, void (*)(void*)>;
  struct Entry {
    const void* key;
    Owned value;
  };
  // One address per type: the key of T's entry (no RTTI).
  template <typename T>
  static const void* key() {
    static const char tag = 0;
    return &tag;
  }
  template <typename T>
  static void destroy(void* p) {
    delete static_cast<T*>(p);
  }
  // A vector (24 bytes when empty): most sessions of an idle server hold one or two entries.
  std::vector<Entry> entries_;
};

}  // namespace kabar::server
