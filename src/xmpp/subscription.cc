#include "xmpp/subscription.h"
