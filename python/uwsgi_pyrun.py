"""`--pyrun FILE` for this server: runs a script inside the server's interpreter (with the `uwsgi`
module and the configured caches) when the master loads the application, then exits with the
script's status. uWSGI's `uwsgi --pyrun FILE` does the same.

    server --socket 127.0.0.1:0 --cache 1000 --module uwsgi_pyrun --env PYRUN=bench/api_bench.py
"""
import os
import runpy
import sys

path = os.environ.get("PYRUN")
if not path:
    sys.exit("uwsgi_pyrun: set PYRUN=FILE (--env PYRUN=FILE)")
status = 0
try:
    runpy.run_path(path, run_name="__main__")
except SystemExit as e:
    status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    if not isinstance(e.code, (int, type(None))):
        print(e.code, file=sys.stderr)
sys.stdout.flush()
sys.stderr.flush()
os._exit(status)  # the server's master exits here: there is nothing to serve
