// Must not compile in a lower layer: the server is above it (cmake/Layers.cmake).
#include "server/server.h"
