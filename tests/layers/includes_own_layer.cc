// Must compile in the xml layer: the control for the probes beside it.
#include <string>

#include "xml/element.h"
