#include "xml/element.h"
