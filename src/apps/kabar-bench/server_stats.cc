#include <dirent.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "apps/kabar-bench/bench.h"

namespace kabar::bench {

namespace {

// The steal column of /proc/stat's line for `cpu`, in seconds.
double cpu_steal_s(int cpu) {
  double steal = 0;
  if (FILE* f = std::fopen("/proc/stat", "r")) {
    char line[512];
    char want[16];
    std::snprintf(want, sizeof want, "cpu%d ", cpu);
    while (std::fgets(line, sizeof line, f)) {
      if (std::strncmp(line, want, std::strlen(want)) != 0) continue;
      // cpuN user nice system idle iowait irq softirq steal ...
      unsigned long long v[8] = {};
      if (std::sscanf(line + std::strlen(want), "%llu %llu %llu %llu %llu %llu %llu %llu", &v[0],
                      &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) == 8) {
        steal = static_cast<double>(v[7]) / static_cast<double>(sysconf(_SC_CLK_TCK));
      }
      break;
    }
    std::fclose(f);
  }
  return steal;
}

}  // namespace

ServerSample sample_server(int pid) {
  ServerSample s;
  if (pid <= 0) return s;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
  if (FILE* f = std::fopen(path, "r")) {
    char buf[1024];
    std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    buf[n] = 0;
    const char* p = std::strrchr(buf, ')');  // the command name may hold spaces
    if (p) {
      // Fields after ')' start at 3 (state); utime is 14 and stime 15.
      unsigned long long ut = 0, st = 0;
      int cpu = -1;
      int field = 2;
      for (const char* q = p + 1; *q; ++q) {
        if (*q == ' ') {
          ++field;
          if (field == 14) ut = std::strtoull(q + 1, nullptr, 10);
          if (field == 15) st = std::strtoull(q + 1, nullptr, 10);
          if (field == 39) cpu = static_cast<int>(std::strtol(q + 1, nullptr, 10));
        }
      }
      s.cpu_s = static_cast<double>(ut + st) / static_cast<double>(sysconf(_SC_CLK_TCK));
      if (cpu >= 0) s.steal_s = cpu_steal_s(cpu);
      s.ok = true;
    }
  }
  auto status_value = [](const char* file, const char* key) {
    long v = 0;
    if (FILE* f = std::fopen(file, "r")) {
      char line[256];
      std::size_t klen = std::strlen(key);
      while (std::fgets(line, sizeof line, f))
        if (std::strncmp(line, key, klen) == 0) v += std::strtol(line + klen, nullptr, 10);
      std::fclose(f);
    }
    return v;
  };
  std::snprintf(path, sizeof path, "/proc/%d/status", pid);
  s.rss_kib = status_value(path, "VmRSS:");
  std::snprintf(path, sizeof path, "/proc/%d/task", pid);
  if (DIR* d = opendir(path)) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::string file = std::string(path) + "/" + e->d_name + "/status";
      s.ctx_switches += status_value(file.c_str(), "voluntary_ctxt_switches:");
      s.ctx_switches += status_value(file.c_str(), "nonvoluntary_ctxt_switches:");
    }
    closedir(d);
  }
  return s;
}

}  // namespace kabar::bench
