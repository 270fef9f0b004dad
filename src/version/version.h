// The version every kabar binary prints for --version: "0.1.0 (git 53310f0)" — the CMake project
// version, then `git describe` of the tree it was built from where that was a git checkout.
#pragma once

namespace kabar {

const char* version();

}  // namespace kabar
