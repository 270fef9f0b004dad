// Must not compile in the xmpp layer: no I/O there (cmake/Layers.cmake).
#include <boost/asio/ip/tcp.hpp>
