// Must not compile in the xmpp layer: no sockets there (cmake/Layers.cmake).
#include <sys/epoll.h>
