// Must not compile in the xml layer: no database there (cmake/Layers.cmake).
#include <sqlite3.h>
