// uWSGI's --py-autoreload N: worker 1 checks, every N seconds, the files of the modules Python has
// loaded; when one changed it logs uWSGI's line and asks the master for a graceful reload (SIGHUP).
#pragma once

namespace pyhost {

// Starts the checking thread when interval_s > 0 and this is worker 1 (one checker per server).
void start_autoreloader(int interval_s, int worker_id);

}  // namespace pyhost
