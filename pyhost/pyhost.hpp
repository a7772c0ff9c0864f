// The Python host's one entry point: it registers itself as the server's application host
// (server/application.hpp), behind which the master sees only server::Application. main() calls it
// when the host was built (HAVE_PYHOST). Nothing else of ours reaches into pyhost/.
#pragma once

namespace pyhost {

// With --module / --wsgi-file the host starts the embedded interpreter and, unless --lazy-apps, loads
// the application in the master before fork (the workers share its pages copy-on-write); with --pyrun
// it runs the script as __main__ with the uwsgi module serving the caches.
void register_host();

}  // namespace pyhost
