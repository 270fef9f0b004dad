#include "xmpp/scram.h"
