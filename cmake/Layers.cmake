# Layers enforced by the compiler (ARCHITECTURE.md: dependencies point one way only).
#
# Each library sees only its own folder and the folders of the libraries it links: instead of
# src/ as one include root shared by all, every layer gets a root of its own under
# ${CMAKE_BINARY_DIR}/layers/<name>/ holding a single link, <name> -> src/<name>, so
# `#include "xml/element.h"` still reads as before but `#include "server/server.h"` from a file in
# xmpp does not compile (xmpp's include path has no server/). The roots are PUBLIC, so a layer
# sees everything below it through target_link_libraries and nothing above it.
#
# The protocol layers (xml, xmpp) do no I/O: they also get a PRIVATE include root, searched
# first, of headers that stop the compile with #error: Asio and Beast (every header of theirs
# Debian ships), socket, poll and event headers, SQLite, libpq, nats.c and OpenSSL's TLS API.
# Reading an address (arpa/inet.h) stays allowed; glibc pulls <sys/socket.h> in for it, so that
# header is not on the list (sockets cannot be used without Asio or the calls below anyway).

set(KABAR_LAYER_ROOTS ${CMAKE_BINARY_DIR}/layers)

# kabar_include_root(<target> <PUBLIC|PRIVATE> <path under src/>)
function(kabar_include_root target scope path)
  string(REPLACE "/" "+" root_name "${path}")
  set(root ${KABAR_LAYER_ROOTS}/${root_name})
  get_filename_component(parent ${root}/${path} DIRECTORY)
  file(MAKE_DIRECTORY ${parent})
  if(NOT EXISTS ${root}/${path})
    file(CREATE_LINK ${PROJECT_SOURCE_DIR}/src/${path} ${root}/${path} SYMBOLIC)
  endif()
  target_include_directories(${target} ${scope} ${root})
endfunction()

# kabar_layer(<target> <folder under src/> [NO_IO])
function(kabar_layer target folder)
  cmake_parse_arguments(L "NO_IO" "" "" ${ARGN})
  kabar_include_root(${target} PUBLIC ${folder})
  if(L_NO_IO)
    kabar_no_io_root(no_io)
    target_include_directories(${target} BEFORE PRIVATE ${no_io})
  endif()
endfunction()

function(kabar_no_io_root out)
  set(dir ${KABAR_LAYER_ROOTS}/_no_io)
  set(${out} ${dir} PARENT_SCOPE)
  if(EXISTS ${dir}/.done)
    return()
  endif()
  set(headers asio.hpp boost/asio.hpp boost/beast.hpp sys/epoll.h poll.h netdb.h
              sqlite3.h libpq-fe.h nats/nats.h nats.h openssl/ssl.h)
  foreach(tree boost/asio boost/beast)
    file(GLOB_RECURSE found RELATIVE /usr/include /usr/include/${tree}/*.hpp)
    list(APPEND headers ${found})
  endforeach()
  foreach(h ${headers})
    file(WRITE ${dir}/${h}
         "#error \"<${h}> is not allowed here: the xml and xmpp layers do no I/O (ARCHITECTURE.md)\"\n")
  endforeach()
  file(WRITE ${dir}/.done "")
endfunction()
