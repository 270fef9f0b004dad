#include "xmpp/jid.h"
