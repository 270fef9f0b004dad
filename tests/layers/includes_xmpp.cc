// Must not compile in the xml layer: xmpp is above it (cmake/Layers.cmake).
#include "xmpp/jid.h"
